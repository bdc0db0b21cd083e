"""Process identifiers and references.

A `Pid` names one process on one node; a `Ref` is a unique token (monitor references,
timer references, call tags). Both compare by value, so a pid decoded from msgpack equals
the live one, and both hash by their integer serial, which is the same in every
interpreter whatever `PYTHONHASHSEED` is.
"""
from __future__ import annotations

from typing import Any


class _Id:
    """A value identified by `(node name, serial)`; hashes by its serial alone."""

    __slots__ = ("node_name", "serial")
    node_name: str
    serial: int

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (type(other) is type(self) and other.serial == self.serial
                and other.node_name == self.node_name)

    def __hash__(self) -> int:
        return self.serial


class Pid(_Id):
    """The address of a process: `(node name, serial)`.

        pid = node.spawn(Counter)
        node.send(pid, "hello")

    A pid stays valid after its process dies (sending to it is then a no-op), as in Erlang.
    """

    __slots__ = ("_proc",)

    def __init__(self, node_name: str, serial: int, proc: Any = None) -> None:
        self.node_name = node_name
        self.serial = serial
        self._proc = proc  # the live process on this node, or None for a foreign/dead pid

    def __repr__(self) -> str:
        return f"<{self.node_name}.{self.serial}>"


class Ref(_Id):
    """A unique reference, like Erlang's `make_ref()`: monitors, timers and calls use them."""

    __slots__ = ()

    def __init__(self, node_name: str, serial: int) -> None:
        self.node_name = node_name
        self.serial = serial

    def __repr__(self) -> str:
        return f"#Ref<{self.node_name}.{self.serial}>"
