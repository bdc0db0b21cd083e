"""The run-time API of `Supervisor` and `DynamicSupervisor`, from a process or from outside.

    pid = await start_child(self, sup, spec)                       # in a process (self/proc)
    pid = await start_child(node, sup, spec)                       # asyncio code, real-time node
    pid = node.run_until_complete(start_child(node, sup, spec))    # deterministic driver

`caller` is the calling process, or the `Node` when the caller is outside any process.
From a process each function returns a coroutine to `await`; from outside, a kernel
`Future`. Failures raise the OTP error results as exceptions: `AlreadyStarted`,
`AlreadyPresent`, `ChildRunning`, `ChildRestarting`, `ChildNotFound`, `MaxChildren`,
`StartChildError` (all `ChildError`s), `BadCombination`, and `ValueError`/`TypeError` for
a request the supervisor cannot take. `timeout` defaults to None (wait as long as the
supervisor takes, OTP's `infinity`: terminating a child may wait out its shutdown time).
"""
from __future__ import annotations

from typing import Any

from actors import Node, Process
from actors.requests import request

__all__ = ["count_children", "delete_child", "request", "restart_child", "start_child", "terminate_child",
           "which_children"]


def start_child(caller: Node | Process, sup: Any, spec: Any, *args: Any, timeout: float | None = None) -> Any:
    """Start a child from `spec`: its pid, or None if its init raised `Ignore`. For a
    DynamicSupervisor, `args` follow the spec's own arguments, and `spec` None means its
    `DynamicFlags.child`."""
    return request(caller, sup, ("start_child", spec, args), timeout)


def terminate_child(caller: Node | Process, sup: Any, child: Any, timeout: float | None = None) -> Any:
    """Stop a child: by id (Supervisor; its spec is kept unless temporary) or by pid
    (DynamicSupervisor; it is forgotten)."""
    return request(caller, sup, ("terminate_child", child), timeout)


def restart_child(caller: Node | Process, sup: Any, child_id: Any, timeout: float | None = None) -> Any:
    """Start a stopped child of a Supervisor again: its pid (None on `Ignore`)."""
    return request(caller, sup, ("restart_child", child_id), timeout)


def delete_child(caller: Node | Process, sup: Any, child_id: Any, timeout: float | None = None) -> Any:
    """Forget the spec of a stopped child of a Supervisor."""
    return request(caller, sup, ("delete_child", child_id), timeout)


def which_children(caller: Node | Process, sup: Any, timeout: float | None = None) -> Any:
    """A list of `ChildInfo(id, pid, type, restarting)`, newest first (OTP's order)."""
    return request(caller, sup, ("which_children",), timeout)


def count_children(caller: Node | Process, sup: Any, timeout: float | None = None) -> Any:
    """`{"specs", "active", "supervisors", "workers"}` counts."""
    return request(caller, sup, ("count_children",), timeout)


def get_childspec(caller: Node | Process, sup: Any, child: Any, timeout: float | None = None) -> Any:
    """The `ChildSpec` of a child: by id (Supervisor) or by pid (DynamicSupervisor, whose
    answer has the arguments that child was started with). `ChildNotFound` if none."""
    return request(caller, sup, ("get_childspec", child), timeout)
