"""Waiting from outside: asyncio code, tests and other threads watch a process's exit
without writing a process to collect it.

    reason = await node.wait_exit(pid)                        # asyncio code on the node's loop
    reason = node.run_until_complete(node.wait_exit(pid))     # the deterministic driver
    reason = node.wait_exit_from_thread(pid, timeout=5.0)     # another thread, blocking
    watch = node.monitor(pid)              # a Future of Down(watch.ref, pid, reason)
    watch.demonitor()                      # it then never resolves

Contract: an outside monitor is a process's monitor whose owner is outside the node. It
resolves once, with `Down(ref, pid, reason)`: at once with "noproc" for a process that is
gone (or a name nobody holds), with "noconnection" if the node of a process of another
node is or gets disconnected. `wait_exit(dest, timeout)` gives the reason alone, or
raises `TimeoutError` after `timeout` seconds on the node's clock (its monitor is then
removed). The node keeps nothing for a watch once it resolved or was demonitored.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .boundary import Monitor, RemoteTarget
from .future import Future
from .ids import Ref
from .messages import NOPROC, Down

if TYPE_CHECKING:
    from .node import Node
    from .process import Process


class ExitWatch(Future):
    """An outside monitor: a `Future` of the watched process's `Down`; see the module docstring."""

    __slots__ = ("ref", "_node", "target")
    pid = None  # it is no process (introspection lists no monitoring pid for it)

    def __init__(self, node: Node, ref: Ref) -> None:
        super().__init__()
        self.ref = ref
        self._node = node
        self.target: Process | RemoteTarget | None = None

    def _on_down(self, ref: Any, pid: Any, reason: Any) -> None:
        if self._forget():
            self.set_result(Down(self.ref, pid, reason))

    def demonitor(self) -> None:
        """Stop watching: the watch never resolves (unless it already has)."""
        target = self.target
        if self._forget() and type(target) is RemoteTarget:
            target.release(self._node, self.ref.serial)  # the far node drops its half

    def _forget(self) -> bool:
        """Drop the node's references to this watch; False if it had ended already."""
        if self.done() or self.target is None:
            return False
        target, self.target = self.target, None
        if type(target) is RemoteTarget:
            self._node._calls.remote_waiters.pop(self.ref.serial, None)
        elif target._watchers is not None:
            target._watchers.pop(self.ref, None)
        return True


def monitor(node: Node, dest: Any) -> ExitWatch:
    """`node.monitor`: watch `dest` (a pid, a name, a via, a `RemoteName`) from outside."""
    ref = node.make_ref()
    watch = ExitWatch(node, ref)
    where = node._names.where(dest)
    if type(where) is tuple:  # a process of another node: found again by its ref, as a call by its tag
        dst, to = where
        watch.target = RemoteTarget(to, dst)
        node._calls.remote_waiters[ref.serial] = watch  # type: ignore[assignment]
        node._boundary.out(dst, Monitor(to, None, ref))
    elif where is None or not where._alive:
        watch.set_result(Down(ref, dest, NOPROC))
    else:
        watch.target = where
        if where._watchers is None:
            where._watchers = {}
        where._watchers[ref] = watch
    return watch


def wait_exit(node: Node, dest: Any, timeout: float | None) -> Future:
    """`node.wait_exit`: a Future of `dest`'s exit reason; see the module docstring."""
    if timeout is not None and (type(timeout) not in (int, float) or not 0 <= timeout < math.inf):
        raise ValueError(f"timeout must be None or finite seconds >= 0, got {timeout!r}")
    watch = monitor(node, dest)
    reason = Future()
    timer = None

    def exited(done: Future) -> None:
        if timer is not None:
            node._timers.cancel(timer)
        reason.set_result(done.result().reason)

    def expired() -> None:
        watch.demonitor()
        reason.set_exception(TimeoutError(f"{dest!r} had not exited after {timeout} s"))

    if timeout is not None and not watch.done():
        timer = node._add_timer(timeout, expired, ())
    watch.add_done_callback(exited)
    return reason

