"""Messages the kernel itself delivers, and the rules on exit reasons.

Exit reasons follow Erlang: `"normal"`, `"shutdown"`, `("shutdown", term)`, `"kill"` (which
a target receives as `"killed"`), `"noproc"`, `"noconnection"` (the other process's node
was disconnected), and a crash, whose reason is the exception
object that ended the process (its `__traceback__` is kept).
"""
from __future__ import annotations

from typing import Any, NamedTuple

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILL = "kill"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"


class Exit(NamedTuple):
    """Delivered to a process that traps exits when a linked process exits, or when
    someone sends it an exit signal. `pid` is the sender (None: from outside the node)."""

    pid: Any
    reason: Any


class Down(NamedTuple):
    """Delivered once to the owner of a monitor when the monitored process exits."""

    ref: Any
    pid: Any
    reason: Any


class NodeUp(NamedTuple):
    """Delivered to a process watching every node when a connection to node `node` is up."""

    node: str


class NodeDown(NamedTuple):
    """Delivered when the connection to node `node` goes (Erlang's nodedown): `reason` is
    "connection_closed", "disconnect", "net_tick_timeout", "overloaded", "noconnection"..."""

    node: str
    reason: str


def is_normal_exit(reason: Any) -> bool:
    """True for the reasons a transient child or a trapping peer treats as a clean stop:
    `normal`, `shutdown` and `("shutdown", anything)`."""
    return (reason == NORMAL or reason == SHUTDOWN
            or (type(reason) is tuple and len(reason) == 2 and reason[0] == SHUTDOWN))
