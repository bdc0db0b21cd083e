"""Calls: a request, one reply, and what ends a call without one.

Contract (OTP's gen:call):
- A call monitors the server: the monitor's tag is the call's `From`, which the server
  answers with `reply(caller, value)`. It ends at the first of: the reply, the server's
  exit (`CallExit`, or `NoProc` when there was no such process), the timeout
  (`CallTimeout`), or the caller's own exit. A late reply is dropped (OTP 24+).
- Timeouts are armed lazily: a call's deadline is only noted, and goes on the timer heap
  before the heap is read or fired past the earliest noted deadline, so most calls
  (answered in time) never cost a timer and none times out late.
  `CALL_WAITS_LIMIT` bounds the deadlines noted but not armed.
- A call from outside any process (`node.call`) has an `ExternalCall` as its caller: a
  `Future` the caller awaits or runs the node until.
- A process's call, a forward and a reply are its output: held like its messages while
  its output is held (see `actors.output`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .boundary import CallRequest, RemoteTarget
from .errors import CallingSelf, CallTimeout, NoProc
from .future import Future
from .ids import Pid, Ref
from .messages import NOCONNECTION
from .output import defer
from .process import CALL, NONE, From, Process, call_failure

if TYPE_CHECKING:
    from .node import Node
    from .timers import Timer

new_from = From.__new__
CALL_WAITS_LIMIT = 4096  # unarmed call timeouts kept before they are armed anyway (memory bound)


class ExternalCall:
    """The caller side of `node.call` made from outside any process."""

    __slots__ = ("_node", "future", "target", "timer", "dest", "request", "ref")

    def __init__(self, node: Node, dest: Any, request: Any) -> None:
        self._node = node
        self.future = Future()
        self.target: Process | RemoteTarget | None = None
        self.timer: Timer | None = None
        self.dest = dest
        self.request = request
        self.ref: From | None = None

    def wait_ref(self) -> From | None:
        """The call's `From` while it waits (kept for a call to another node only)."""
        return self.ref

    def _on_reply(self, ref: From, value: Any) -> None:
        if self._finish(ref):
            self.future.set_result(value)

    def _on_down(self, ref: From, pid: Pid, reason: Any) -> None:
        if self._finish(ref):
            self.future.set_exception(call_failure(pid, reason))

    def _on_timeout(self, ref: From, timeout: float) -> None:
        self.timer = None
        if self._finish(ref):
            self.future.set_exception(CallTimeout(self.dest, self.request, timeout))

    def _finish(self, ref: From) -> bool:
        if self.future.done():
            return False  # a late reply after the timeout: dropped
        if self.timer is not None:
            self._node._timers.cancel(self.timer)
            self.timer = None  # the timer's args hold this waiter: no cycle left for the GC
        target = self.target
        if self.ref is not None:  # its From went to another node
            self.ref = None  # it refers to this waiter: no cycle left for the GC either
            self._node._calls.remote_waiters.pop(ref.serial, None)
        if type(target) is RemoteTarget:
            target.release(self._node, ref.serial)
        elif target is not None and target._watchers is not None:
            target._watchers.pop(ref, None)
        return True


class Calls:
    """The node's side of calls; see the module docstring."""

    __slots__ = ("node", "waits", "waits_due", "remote_waiters")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.waits: list[From] = []  # call timeouts not yet on the timer heap
        self.waits_due = math.inf  # the earliest deadline among them
        # Outside callers whose From went to another node, by tag: where replies find them.
        self.remote_waiters: dict[int, ExternalCall] = {}

    def call(self, dest: Any, request: Any, timeout: float | None, tag: Any = CALL) -> Future:
        """`node.call`: a call from outside any process (`tag` SYS: a system message)."""
        node = self.node
        waiter = ExternalCall(node, dest, request)
        where = node._names.where(dest)
        if type(where) is tuple:
            return self.call_remote(waiter, where, timeout)
        target = where if where is not None and where._alive else None
        if target is None:
            waiter.future.set_exception(NoProc(dest))
            return waiter.future
        target._deliver((tag, request, self.watch(waiter, target, timeout)))
        return waiter.future

    def watch(self, waiter: ExternalCall, target: Process, timeout: float | None) -> From:
        """An outside caller waits on a live `target` of this node: it monitors it, the
        monitor's tag being the `From` a reply answers, and its timeout is armed."""
        node = self.node
        node._refs += 1
        ref = From(waiter, node._refs)
        if target._watchers is None:
            target._watchers = {}
        target._watchers[ref] = waiter
        waiter.target = target
        if timeout is not None:
            waiter.timer = node._add_timer(timeout, waiter._on_timeout, (ref, timeout))
        return ref

    def call_remote(self, waiter: ExternalCall, where: tuple[str, Any], timeout: float | None) -> Future:
        node = self.node
        dst, to = where
        serial = node._refs + 1  # taken only if the call goes out, as for a local call
        tag = Ref(node.name, serial)
        ref = waiter.ref = From(waiter, serial)
        waiter.target = RemoteTarget(to, dst)
        self.remote_waiters[serial] = waiter
        node._boundary.out(dst, CallRequest(to, None, tag, True, waiter.request))  # with its monitor
        if waiter.future.done():
            return waiter.future  # answered at once: no such process there, or no connection
        node._refs = serial
        if timeout is not None:
            waiter.timer = node._add_timer(timeout, waiter._on_timeout, (ref, timeout))
        return waiter.future

    def start(self, caller: Process, dest: Any, request: Any, timeout: float | None, tag: Any = CALL) -> From:
        """`proc.call`: send the request and note what the caller now waits for. `tag`: SYS
        for a system message; None sends nothing (a start waiting for a server's init,
        which replies to the `From` itself)."""
        node = self.node
        target = dest._proc if type(dest) is Pid else None  # the local fast path of Names.where
        if target is None or target._node is not node:
            target = node._names.where(dest)
        if target is caller:
            raise CallingSelf(f"{caller._pid!r} called itself with {request!r:.200}")
        remote = type(target) is tuple
        if remote:
            ref = self.start_remote(caller, target, request)
        elif target is None or not target._alive:
            raise NoProc(dest)
        else:  # the call monitors the server, and the monitor's tag doubles as the reply tag
            node._refs += 1
            ref = new_from(From)  # From's fields set here, not by its __init__: one call less
            ref.owner = caller
            ref.serial = node._refs
            watchers = target._watchers
            if watchers is None:
                watchers = target._watchers = {}
            watchers[ref] = caller
            caller._wait_target = target
            caller._wait_ref = ref
        if timeout is None:
            ref.deadline = 0.0
        else:  # noted here, armed later (see the module docstring)
            ref.deadline = deadline = node.now() + timeout
            waits = self.waits
            waits.append(ref)
            if deadline < self.waits_due:
                self.waits_due = deadline
            if len(waits) > CALL_WAITS_LIMIT:
                self.arm_timeouts()
        if tag is not None and not remote:  # None: a start waiting for an init, which replies itself
            entry = (tag, request, ref)
            caller._sent += 1
            if caller._held is None and caller._tracer is None:  # inlined test of defer: one call less
                target._deliver(entry)
            elif not defer(caller, target._deliver, (entry,), target._pid, entry):
                target._deliver(entry)
        return ref

    def start_remote(self, caller: Process, where: tuple[str, Any], request: Any) -> From:
        """A call to a process of another node: the request carries the call's monitor
        (see `actors.boundary`)."""
        node = self.node
        dst, to = where
        serial = node._refs + 1  # taken only if the call goes out, as for a local call
        tag = Ref(node.name, serial)
        ref = From(caller, serial)
        caller._wait_target = RemoteTarget(to, dst)
        caller._wait_ref = ref
        delivery = CallRequest(to, caller._pid, tag, True, request)
        caller._sent += 1
        if not defer(caller, node._boundary.out, (dst, delivery), to, (CALL, request, ref)):
            queued, caller._queued = caller._queued, True  # an answer now must not queue the caller
            try:
                node._boundary.out(dst, delivery)
            finally:
                caller._queued = queued
            if caller._wait_ref is not ref:  # answered at once: no such process there, or no connection
                exc, caller._resume, caller._resume_exc = caller._resume_exc, NONE, None
                assert exc is not None, "a call that ended at once ends with its failure"
                raise exc
        node._refs = serial
        return ref

    def forward(self, dest: Any, request: Any, caller: From) -> None:
        node = self.node
        entry = (CALL, request, caller)
        current = node._current
        if current is not None:
            current._sent += 1
            if defer(current, self.forward, (dest, request, caller), dest, entry):
                return
        where = node._names.where(dest)
        if type(where) is tuple:
            pid, tag = node._boundary.call_tag(caller)
            node._boundary.out(where[0], CallRequest(where[1], pid, tag, False, request))  # the monitor stays
        elif where is not None and where._alive:
            where._deliver(entry)

    def reply(self, caller: From, value: Any) -> None:
        """Deliver a reply: the one copy of reply delivery (GenServer's turn inlines its
        local, unheld case and says so)."""
        node = self.node
        current = node._current
        if current is not None:
            current._sent += 1
            if defer(current, self.reply, (caller, value), caller, value):  # to the caller's tag
                return
        owner = caller.owner
        if owner._node is node:
            owner._on_reply(caller, value)
        else:
            node._boundary.reply(caller, value)

    def break_connection(self, name: str) -> None:
        """Calls from outside any process waiting on node `name` fail with noconnection."""
        for waiter in list(self.remote_waiters.values()):
            target = waiter.target
            if type(target) is RemoteTarget and target.node_name == name and waiter.ref is not None:
                target.cleared = True
                waiter._on_down(waiter.ref, target._pid, NOCONNECTION)

    def arm_timeouts(self) -> None:
        """Put the timeouts of calls still unanswered on the timer heap, at their original
        deadlines (see the module docstring)."""
        waits, self.waits = self.waits, []
        self.waits_due = math.inf
        add = self.node._timers.add
        for ref in waits:
            caller = ref.owner
            if caller._wait_ref is ref:
                caller._timer = add(ref.deadline, self.timed_out, (caller, ref))

    def timed_out(self, caller: Process, ref: From) -> None:
        if caller._wait_ref is ref:
            caller._timer = None
            caller._end_call(ref)
            caller._wake(None, CallTimeout(None, None, 0))  # call() fills in dest and request
