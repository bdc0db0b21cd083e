"""Processes: the kernel's unit of isolation.

A process is an object with a mailbox, scheduled by its `Node`; it is never a thread or an
asyncio task. Its code is either a `GenServer` subclass (see `actors.genserver`) or a
coroutine function `async def body(proc, *args)`. Any of that code may `await`
`proc.receive(...)`, `proc.call(...)` or `proc.sleep(...)`: the node drives the coroutine
itself (`coro.send`), so a suspended process costs one coroutine frame and the simulator
can drive it exactly like the real-time loop does.

A process's runtime fields belong to the kernel and are safe from its subclass: `pid`
and `node` are read-only, and a subclass from another package is refused when it is
defined if it redefines one of its bases' private names or if one of its methods
assigns `self.pid`, `self.node` or a base's private field (`self._timer = ...`): the
error names the method and the field. Private names are the kernel's own extension
points for its parts; libraries use the public ones (`GenServer.run_turn`).
"""
from __future__ import annotations

import dis
import logging
import os
import sys
import types
from collections import deque
from itertools import islice
from typing import Any, Callable, NamedTuple

from .errors import CallExit, CallTimeout, NoProc, ReceiveTimeout
from .ids import Pid, Ref
from .messages import NOPROC, Down
from .registry import Dest, Name
from .runq import make_runnable

log = logging.getLogger("actors")


class _Tag:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Mailbox entries. A cast is queued bare: on the hottest path nothing is allocated, so a
# million queued casts cost the cyclic GC nothing. Calls, and in a GenServer the messages
# for handle_info, are tuples tagged with these sentinels.
CALL = _Tag("$call")
INFO = _Tag("$info")
SYS = _Tag("$system")  # a system message for a GenServer (see actors.system): (SYS, request, caller)
NONE = _Tag("$none")  # "no value" where None is a valid message or result

# What a suspended coroutine yields to the node.
RECEIVE = _Tag("$receive")
WAIT = _Tag("$wait")  # a call reply or a sleep: resumed by the kernel, not by a message


def _accept_any(msg: Any) -> bool:
    return True


def visible(entry: Any) -> Any:
    """A mailbox entry as its process's code sees it: a call as `Call(request, caller)`,
    anything else as it was sent (a GenServer's info messages unwrapped)."""
    if type(entry) is tuple and entry:
        if entry[0] is CALL:
            return Call(entry[1], entry[2])
        if entry[0] is INFO:
            return entry[1]
    return entry


class Call(NamedTuple):
    """How a call reaches a coroutine process: answer it with `proc.reply(caller, value)`."""

    request: Any
    caller: "From"


class From:
    """The caller of a call: pass it to `reply()` to answer later. `pid` is None when the
    caller is outside the node (asyncio code or another thread)."""

    __slots__ = ("owner", "serial", "deadline")

    def __init__(self, owner: Any, serial: int) -> None:
        self.owner = owner  # a Process, or an external waiter with the same _on_reply/_on_down
        self.serial = serial
        self.deadline = 0.0

    @property
    def pid(self) -> Pid | None:
        return getattr(self.owner, "pid", None)

    def __repr__(self) -> str:
        return f"From({self.pid!r}, {self.serial})"


def call_failure(pid: Pid, reason: Any) -> Exception:
    """What a caller raises when the server exited before replying."""
    return NoProc(pid) if reason == NOPROC else CallExit(pid, reason)


def _assigned_on_self(code: types.CodeType) -> set[str]:
    """The attributes a method assigns or deletes on its first argument (`self.x = ...`),
    nested functions included: how a subclass would overwrite the kernel's fields."""
    first = code.co_varnames[0] if code.co_argcount else None
    found: set[str] = set()
    previous = None
    for ins in dis.get_instructions(code):
        if (ins.opname in ("STORE_ATTR", "DELETE_ATTR") and previous is not None
                and previous.opname in ("LOAD_FAST", "LOAD_DEREF") and previous.argval in (first, "self")):
            found.add(ins.argval)
        previous = ins
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _assigned_on_self(const)
    return found


def _check_fields(cls: type, kernel: list[type]) -> None:
    """Refuse a subclass that replaces a private name of `kernel`, its bases from another
    package, or assigns one of their fields (see the module docstring)."""
    # A kernel class without slots (so that it mixes with others: GenStateMachine)
    # lists its private fields in `_fields`.
    reserved = {"pid", "node"}.union(*(  # and the private fields of those bases
        [slot for slot in (*getattr(b, "__slots__", ()), *vars(b).get("_fields", ()))
         if slot[:1] == "_"] for b in kernel))
    for name, value in vars(cls).items():
        if name[:1] == "_" and name[:2] != "__":
            base = next((b for b in kernel if name in vars(b) and not hasattr(vars(b)[name], "copy_of")), None)
            if base is not None:
                raise TypeError(f"{cls.__qualname__}.{name} would replace {base.__qualname__}."
                                f"{name}, which {base.__module__} reserves; use another name")
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        for attr in _assigned_on_self(code) & reserved if code is not None else ():
            raise TypeError(f"{cls.__qualname__}.{name} assigns self.{attr}, a runtime field of "
                            f"the process that its base classes reserve; use another name")


def _inherited(cls: type, name: str) -> types.FunctionType:
    """The method `name` that `cls` inherits, its bases' copies aside: with two process
    classes as bases, the copy in one must not hide the other's own method."""
    return next(vars(base)[name] for base in cls.__mro__
                if name in vars(base) and not hasattr(vars(base)[name], "copy_of"))


def _own_copy(function: types.FunctionType, owner: type) -> types.FunctionType:
    """`function` with a code object of its own, for `owner`. CPython (3.11+) caches an
    attribute's place per bytecode instruction, for one class: a kernel method shared by
    servers of many classes that take turns would miss that cache on most of its reads and
    writes of the process's fields (about three times the cost of a hit). A copy per class
    keeps every one of its instructions seeing one class. Its code is named
    "NAME of OWNER" (as tracebacks and profilers show it): cProfile keys a function by
    file, line and code name, so copies of one name would overwrite each other's counts."""
    code = function.__code__.replace(co_name=f"{function.__name__} of {owner.__qualname__}")
    copy = types.FunctionType(code, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__qualname__, copy.__doc__ = function.__qualname__, function.__doc__
    copy.__kwdefaults__, copy.__module__ = function.__kwdefaults__, function.__module__
    copy.copy_of = function  # type: ignore[attr-defined]
    return copy


class ExitNow(BaseException):
    """Unwinds a process that exits on purpose; a BaseException so `except Exception` in user
    code cannot swallow it. `report`: log a stop report as the process exits (a GenServer
    that stopped with an abnormal reason): `ExitNow(reason, True)`. It has no Python
    `__init__` (made in C, it costs a fifth as much): every process that ends itself
    raises one."""

    @property
    def reason(self) -> Any:
        return self.args[0]

    @property
    def report(self) -> bool:
        return len(self.args) > 1 and self.args[1] is True


class Process:
    """Kernel state of one process, and the API its code calls (`self.` in a GenServer,
    `proc.` in a coroutine process)."""

    __slots__ = (
        "_pid", "_node", "_mbox", "_queued", "_alive", "_halt",
        "_coro", "_match", "_scan", "_resume", "_resume_exc", "_wait_ref", "_wait_target", "_timer",
        "_links", "_watchers", "_watching", "_names", "_trap", "_limit", "_overflow",
        "_dropped", "_parent", "_last", "_held", "_turns", "_taken", "_sent", "_tracer", "_fast_below",
    )
    # The kernel's fields (set by _setup; see the module docstring of actors.node's parts).
    _pid: Pid
    _node: Any  # its Node
    _mbox: deque | None
    _queued: bool
    _alive: bool
    _halt: bool
    _coro: Any  # the suspended coroutine, or None
    _match: Callable[[Any], bool] | None
    _scan: int
    _resume: Any
    _resume_exc: BaseException | None
    _wait_ref: From | None
    _wait_target: Any  # the called Process, or a boundary.RemoteTarget
    _timer: Any
    _links: dict | None
    _watchers: dict | None
    _watching: dict | None
    _names: list | None
    _trap: bool
    _limit: int
    _overflow: str
    _dropped: int
    _parent: Pid | None
    _last: Any
    _held: list | None
    _turns: int
    _taken: int
    _sent: int
    _tracer: Callable[[str, Pid, Any], None] | None
    _fast_below: int

    # The kernel methods every turn, delivery, spawn or exit runs on the process itself:
    # each subclass gets copies of its own (see _own_copy).
    _per_class: tuple[str, ...] = ("_setup", "_setup_process", "_deliver", "_deliver_slow", "_on_reply",
                                   "_clear_wait", "_wake", "cast", "_exit_own_turn", "_terminate")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        package = cls.__module__.partition(".")[0]
        kernel = [b for b in cls.__mro__[1:] if b.__module__.partition(".")[0] != package
                  and isinstance(b, type) and issubclass(b, Process)]
        if kernel:
            _check_fields(cls, kernel)
        for name in cls._per_class:
            if name not in vars(cls):
                setattr(cls, name, _own_copy(_inherited(cls, name), cls))

    def _setup(self, node: Any, pid: Pid, parent: Pid | None, limit: int, overflow: str) -> None:
        self._pid = pid
        self._node = node
        self._mbox = None  # made on first message: idle processes stay small
        self._queued = False
        self._alive = True
        self._halt = False
        self._coro = None
        self._match = None
        self._scan = 0
        self._resume = NONE  # the value to resume the suspended coroutine with, or NONE
        self._resume_exc = None  # or the exception to throw into it
        self._wait_ref = None
        self._wait_target = None
        self._timer = None
        self._links = None  # linked process (here) or pid (of another node) -> None
        self._watchers = None  # monitor ref / call From -> watcher
        self._watching = None  # monitor ref -> watched process, or its address on another node
        self._names = None
        self._trap = False
        self._limit = limit
        self._overflow = overflow
        self._dropped = 0
        self._parent = parent
        self._last = NONE  # the last message taken (crash reports, process_info)
        self._held = None  # outgoing messages held until node.release_output
        self._turns = 0  # turns the scheduler gave it ("reductions"); see actors.scheduler
        self._taken = 0  # messages taken (a GenServer's: less one a turn; see _messages_in)
        self._sent = 0  # messages sent, casts, call requests and replies (counted by the sender)
        self._tracer = None  # see Node.trace
        self._fast_below = limit  # the mailbox length from which a delivery takes _deliver_slow

    _setup_process = _setup  # what a subclass's _setup calls first: a copy per class too

    # -- kernel internals -------------------------------------------------------------

    def _deliver(self, msg: Any) -> None:
        mb = self._mbox
        if mb is None:  # the first message: the mailbox is made here unless traced
            if not self._fast_below:
                self._deliver_slow(msg)
                return
            mb = self._mbox = deque()
        elif len(mb) >= self._fast_below:
            self._deliver_slow(msg)
            return
        mb.append(msg)
        if not self._queued:  # inlined copy of actors.scheduler.make_runnable: every message's path
            self._queued = True
            node = self._node
            node._runq.append(self)
            if node._idle:
                node._wake()

    def _deliver_slow(self, msg: Any) -> None:
        """A delivery off the fast path: a full mailbox, or a traced process (its
        `_fast_below` is 0: untraced ones pay nothing)."""
        mb = self._mbox
        if mb is None:
            mb = self._mbox = deque()
        elif len(mb) >= self._limit:
            self._node._overflowed(self, msg)
            return
        if self._tracer is not None:
            self._tracer("receive", self._pid, visible(msg))
        mb.append(msg)
        if not self._queued:  # inlined copy of actors.scheduler.make_runnable: every first message
            self._queued = True
            node = self._node
            node._runq.append(self)
            if node._idle:
                node._wake()

    def _post(self, msg: Any) -> None:
        """Deliver a plain message (a send, a timer, `Exit`, `Down`)."""
        self._deliver(msg)

    def _clear_wait(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            self._node._timers.cancel(timer)
        self._match = None

    def _wake(self, value: Any, exc: BaseException | None) -> None:
        """Resume the suspended coroutine with `value` (or throw `exc`) on its next turn."""
        self._clear_wait()
        self._resume = value
        self._resume_exc = exc
        make_runnable(self._node, self)

    def _run(self) -> None:
        """A turn: move the suspended coroutine on (a GenServer's also serves its mailbox).
        Its messages are counted as it takes them: the turn is counted apart, so the
        node's count of messages stays exact (see actors.scheduler)."""
        self._turns += 1  # counted here, not in the scheduler's loop: this code is quickened sooner
        self._node._scheduler.other_turns += 1
        if self._coro is not None:
            self._advance()

    def _advance(self) -> bool:
        """Move a suspended coroutine on if it can; True once it has finished."""
        value = self._resume
        if value is not NONE:
            self._resume = NONE
            exc, self._resume_exc = self._resume_exc, None
            self._step(value, exc)
        elif self._match is not None:
            msg = self._take(self._match, self._scan)
            if msg is NONE:
                self._scan = len(self._mbox) if self._mbox else 0
                return False
            self._clear_wait()
            self._step(msg, None)
        else:
            return False
        return self._coro is None

    def _step(self, value: Any, exc: BaseException | None) -> None:
        coro = self._coro
        try:
            req = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration as done:
            self._coro = None
            self._finished(done.value)
            return
        if req is not WAIT:  # a call or a sleep: the commonest wait
            self._suspend(req)

    def _suspend(self, req: Any) -> None:
        """The coroutine yielded `req`, other than WAIT: wait as it asks."""
        if type(req) is tuple and req[0] is RECEIVE:
            self._match = req[1] if req[1] is not None else _accept_any
            self._scan = len(self._mbox) if self._mbox else 0
            if req[2] is not None:
                self._timer = self._node._add_timer(
                    req[2], self._wake, (None, ReceiveTimeout(f"no message in {req[2]} s")))
        else:
            raise TypeError(f"a process may only await its own receive/call/sleep (driven by the node, "
                            f"not asyncio), not {req!r:.200}")

    def _finished(self, result: Any) -> None:
        """The process's coroutine returned `result`: a coroutine process exits normally."""
        raise ExitNow("normal")

    def _exit_own_turn(self, reason: Any) -> None:
        """The process's own code ended it (see Scheduler.exit_self): it exits now, or after
        the turn of another process running, or after the exit being drained."""
        node = self._node
        signals = node._signals
        if signals.draining or (node._current is not None and node._current is not self):
            node._exits.appendleft((self, reason))  # the first exit drained, after the turn
            return
        signals.draining = True  # what drain_exits would do first, in one call less
        try:
            self._terminate(reason)
        finally:
            signals.draining = False
        if node._exits:
            signals.drain_exits()

    def _terminate(self, reason: Any) -> None:
        """Remove the process and send its exit to its links and monitors (see
        actors.signals). A method of the process, so that its reads of the process's fields
        are made in code of the process's class (see _own_copy)."""
        node = self._node
        pid = self._pid
        if pid._proc is None:
            return  # already gone
        self._alive = False
        del node._procs[pid.serial]
        if node.tracer is not None:
            node.tracer("exit", pid, reason)
        if self._tracer is not None:
            self._tracer("exit", pid, reason)
            self._tracer = None
        pid._proc = None
        if self._names:
            for table, key in self._names:
                table.pop(key, None)
        if self._coro is not None:
            coro, self._coro = self._coro, None
            try:
                coro.close()
            except BaseException:  # noqa: BLE001 - a dying process's finally blocks cannot veto
                log.exception("process %r raised while being closed", pid)
        if self._wait_ref is not None:
            self._end_call(self._wait_ref)
        if self._timer is not None or self._match is not None:
            self._clear_wait()
        self._release()
        if node._tables.owned:
            node._tables.drop_owned(self)
        signals = node._signals
        if self._watching:
            for ref, target in self._watching.items():
                signals.unwatch(ref, target)
        self._mbox = self._watching = None
        if self._held:
            self._held.append((signals.notify_exit, (self, reason)))  # after what it sent
        elif self._links or self._watchers:
            signals.notify_exit(self, reason)
        else:
            self._links = self._watchers = None  # as notify_exit leaves them: nobody to tell
        if signals.stopping is not None:
            signals.stopped(pid)

    def _on_crash(self, reason: Any) -> Any:
        """Last words of a crashing process; returns the reason it exits with."""
        return reason

    def _release(self) -> None:
        """Free what the process holds outside the kernel (called once, as it exits)."""

    def _initial_call(self) -> str:
        """What the process was spawned to run (Erlang's `initial_call`), for process_info."""
        return type(self).__qualname__

    def _messages_in(self) -> int:
        """Messages the process has taken from its mailbox."""
        return self._taken

    def _take(self, match: Callable[[Any], bool] | None, start: int = 0) -> Any:
        """Remove and return the first message at or after `start` that `match` accepts."""
        mb = self._mbox
        if not mb or start >= len(mb):
            return NONE
        for i, msg in enumerate(islice(mb, start, None), start):
            msg = self._unwrap(msg)
            if msg is not NONE and (match is None or match(msg)):
                del mb[i]
                self._taken += 1
                self._node._scheduler.taken += 1
                self._last = msg
                return msg
        return NONE

    def _unwrap(self, msg: Any) -> Any:
        """What `receive` sees of a queued message: a coroutine process gets sends and
        casts alike, and calls as `Call(request, caller)`."""
        return visible(msg)

    def _on_reply(self, ref: From, value: Any) -> None:
        if self._wait_ref is ref:  # the hot half of every call: _end_call and _wake inlined
            self._wait_ref = None
            watchers = self._wait_target._watchers
            if watchers is not None:
                watchers.pop(ref, None)
            self._wait_target = None
            if self._timer is not None:
                self._node._timers.cancel(self._timer)
                self._timer = None
            self._taken += 1  # a reply is a message received, as in Erlang
            self._node._scheduler.taken += 1
            if self._tracer is not None:
                self._tracer("receive", self._pid, (ref, value))  # the reply, as Erlang's {Tag, Reply}
            self._resume = value
            if not self._queued:  # inlined copy of actors.scheduler.make_runnable
                self._queued = True
                node = self._node
                node._runq.append(self)
                if node._idle:
                    node._wake()
        # else: the call already timed out or ended; a late reply is dropped (OTP 24+).

    def _on_down(self, ref: Any, pid: Pid, reason: Any) -> None:
        if self._wait_ref is ref and ref is not None:
            self._end_call(ref)
            self._wake(None, call_failure(pid, reason))
            return
        if self._watching is None or self._watching.pop(ref, None) is None:
            return  # demonitored while the Down travelled from another node: never seen
        self._post(Down(ref, pid, reason))

    def _end_call(self, ref: From) -> None:
        self._wait_ref = None
        target = self._wait_target
        self._wait_target = None
        if target._watchers is not None:
            target._watchers.pop(ref, None)
        elif not isinstance(target, Process):  # a server on another node (boundary.RemoteTarget)
            target.release(self._node, ref.serial)

    # -- the API process code uses --------------------------------------------------------

    @property
    def pid(self) -> Pid:
        """This process's pid."""
        return self._pid

    @pid.setter
    def pid(self, value: Any) -> None:
        _reserved(self, "pid")

    @property
    def node(self) -> Any:
        """The `Node` this process runs on."""
        return self._node

    @node.setter
    def node(self, value: Any) -> None:
        _reserved(self, "node")

    @property
    def trap_exit(self) -> bool:
        """When True, exit signals (but `kill`) arrive as `Exit(pid, reason)` messages."""
        return self._trap

    @trap_exit.setter
    def trap_exit(self, flag: bool) -> None:
        self._trap = bool(flag)

    def now(self) -> float:
        """The node's clock in seconds (virtual time under the deterministic driver)."""
        return self._node.now()

    def send(self, dest: Dest, msg: Any) -> None:
        """Send `msg` to a pid, a registered name or a `via` key; never blocks."""
        self._node.send(dest, msg)

    def cast(self, dest: Dest, msg: Any) -> None:
        """Send `msg` to a GenServer's `handle_cast`. Always returns, even if dest is gone."""
        node = self._node
        current = node._current
        if type(dest) is Pid and current is not None and current._held is None and current._tracer is None:
            proc = dest._proc  # inlined copy of Node.cast's local fast path: one call less
            if proc is not None and proc._node is node:
                current._sent += 1
                if proc._alive:
                    proc._deliver(msg)
                return
        node.cast(dest, msg)

    @types.coroutine
    def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None):
        """Take the first queued message `match` accepts (any message if None), waiting up
        to `timeout` seconds (None: forever; 0: only look). Others stay queued in order.

            msg = await proc.receive(lambda m: m[0] == "result", timeout=1.0)
        """
        msg = self._take(match)
        if msg is not NONE:
            return msg
        if timeout is not None and timeout <= 0:
            raise ReceiveTimeout("no matching message")
        return (yield (RECEIVE, match, timeout))

    @types.coroutine
    def sleep(self, seconds: float):
        """Suspend this process for `seconds` of node time; its messages stay queued."""
        self._timer = self._node._add_timer(seconds, self._wake, (None, None))
        return (yield WAIT)

    @types.coroutine
    def call(self, dest: Dest, request: Any, timeout: float | None = 5.0):
        """Send `request` to a GenServer and wait for its reply.

        Raises `NoProc` if dest does not exist, `CallTimeout` after `timeout` seconds,
        `CallExit` if the server exits first, `CallingSelf` if dest is this process.

            total = await self.call(counter, "get")
        """
        self._node._calls.start(self, dest, request, timeout)
        try:
            return (yield WAIT)
        except CallTimeout:
            raise CallTimeout(dest, request, timeout or 0.0) from None

    def reply(self, caller: From, value: Any) -> None:
        """Answer a call later (its handler returned `NoReply`, or a coroutine got a `Call`)."""
        self._node._calls.reply(caller, value)

    def spawn(self, target: Any, *args: Any, **options: Any) -> Pid:
        """Start a process (see `Node.spawn`); it is not linked to this one."""
        return self._node._spawn(target, args, options, parent=self)

    def spawn_link(self, target: Any, *args: Any, **options: Any) -> Pid:
        """Start a process linked to this one, atomically."""
        return self._node._spawn(target, args, options, parent=self, link=True)

    def start(self, target: Any, *args: Any, timeout: float | None = None, **options: Any) -> Any:
        """Start a process (as `spawn`) and wait until its `init` has finished, an async
        `init` included (OTP's start): `pid = await self.start(Server, arg)`. A failed
        `init` raises `StartError`; after `timeout` seconds (None: no limit) the process
        is killed and `StartError` has the reason "timeout"."""
        return self._node._start_from(self, target, args, options, timeout, False)

    def start_link(self, target: Any, *args: Any, timeout: float | None = None, **options: Any) -> Any:
        """`start`, linked to this process (OTP's start_link). A failed `init` raises
        `StartError` here and sends no exit signal through the link."""
        return self._node._start_from(self, target, args, options, timeout, True)

    def spawn_monitor(self, target: Any, *args: Any, **options: Any) -> tuple[Pid, Ref]:
        """Start a process monitored by this one, atomically: returns `(pid, ref)`."""
        pid = self._node._spawn(target, args, options, parent=self)
        return pid, self.monitor(pid)

    def link(self, dest: Dest) -> None:
        """Link to dest (both ways; once per pair). Linking a dead process raises `NoProc`,
        or, when trapping exits, delivers `Exit(dest, "noproc")` instead."""
        self._node._signals.link(self, dest)

    def unlink(self, dest: Dest) -> None:
        """Remove the link to dest, if any."""
        self._node._signals.unlink(self, dest)

    def monitor(self, dest: Dest) -> Ref:
        """Watch dest: one `Down(ref, pid, reason)` arrives when it exits (at once, with
        reason "noproc", if it is already gone)."""
        return self._node._signals.monitor(self, dest)

    def demonitor(self, ref: Ref, flush: bool = False) -> None:
        """Stop watching; with `flush`, also drop a `Down` for ref already queued."""
        self._node._signals.demonitor(self, ref, flush)

    def monitor_nodes(self, flag: bool = True) -> None:
        """Get `NodeUp(name)` and `NodeDown(name, reason)` for every node (see `Node.monitor_nodes`)."""
        self._node._boundary.watch_nodes(self, flag)

    def monitor_node(self, name: str, flag: bool = True) -> None:
        """Get one `NodeDown(name, reason)` when node `name` goes (see `Node.monitor_node`)."""
        self._node._boundary.watch_node(self, name, flag)

    def exit(self, dest: Dest, reason: Any) -> None:
        """Send an exit signal (Erlang's `exit/2`); sent to oneself it ends this process,
        even with reason "normal", unless trapping exits."""
        self._node._signals.send_exit(self, dest, reason)

    def register(self, name: Name) -> None:
        """Register this process under `name` (see `Node.register`)."""
        self._node.register(name, self._pid)

    def send_after(self, delay: float, dest: Dest, msg: Any) -> Ref:
        """Deliver `msg` to dest after `delay` seconds (never synchronously)."""
        return self._node.send_after(delay, dest, msg)

    def cancel_timer(self, ref: Ref) -> float | bool:
        """Cancel a `send_after` timer: seconds it had left, or False if it already fired."""
        return self._node.cancel_timer(ref)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._pid!r}>"


def _reserved(proc: Process, name: str) -> None:
    raise AttributeError(f"{type(proc).__qualname__}.{name} is the kernel's (this process's "
                         f"{'pid' if name == 'pid' else 'Node'}) and cannot be assigned; "
                         f"give yours another name")


class CoroutineProcess(Process):
    """A process whose code is `async def body(proc, *args)`; it exits normally when the
    body returns and crashes when it raises."""

    __slots__ = ()

    def _initial_call(self) -> str:
        return self._coro.__qualname__ if self._coro is not None else type(self).__qualname__


# -- introspection (Node.process_info): bounded work, never on a turn's path ---------------------

KERNEL_FILES = os.path.dirname(os.path.abspath(__file__)) + os.sep  # frames here are the kernel's
MAX_AWAIT_DEPTH = 64  # links of an await chain (or frames of a stack) looked at
MEMORY_SAMPLE = 32  # mailbox entries and attributes measured; the rest count at their mean


def current_function(proc: Process) -> str | None:
    """Where `proc`'s own code is: `module.qualname:line` of the innermost frame outside the
    kernel, of its stack if it is running (the code that asked, as Erlang's
    `process_info(self(), current_function)`), else of its suspended coroutine's await
    chain (`cr_await`); None when it is neither (a GenServer waiting for its next message)."""
    frame = None
    if proc._node._current is proc:
        caller: types.FrameType | None = sys._getframe(1)
        for _ in range(MAX_AWAIT_DEPTH):
            if caller is None or not caller.f_code.co_filename.startswith(KERNEL_FILES):
                frame = caller
                break
            caller = caller.f_back
    else:
        link = proc._coro
        for _ in range(MAX_AWAIT_DEPTH):
            at = getattr(link, "cr_frame", None) or getattr(link, "gi_frame", None)
            if at is None:
                break
            if not at.f_code.co_filename.startswith(KERNEL_FILES):
                frame = at
            link = getattr(link, "cr_await", None) if hasattr(link, "cr_await") else getattr(link, "gi_yieldfrom", None)
    if frame is None:
        return None
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}:{frame.f_lineno}"


def memory_estimate(proc: Process) -> int:
    """Bytes `proc` holds, estimated from shallow sizes (`sys.getsizeof`): the process
    object, its `__dict__` and the values in it (its state), its suspended coroutine, its
    link and monitor tables, its mailbox and the entries in it (a tuple's items too). Of a
    large mailbox or `__dict__`, `MEMORY_SAMPLE` entries are measured and the rest counted
    at their mean: the work is bounded whatever the process holds."""
    size = sys.getsizeof(proc) + sum(sys.getsizeof(table) for table in (
        proc._links, proc._watchers, proc._watching, proc._coro) if table is not None)
    attrs = getattr(proc, "__dict__", None)
    if attrs:
        size += sys.getsizeof(attrs) + _sampled(attrs.values(), len(attrs), sys.getsizeof)
    mb = proc._mbox
    if mb is not None:
        size += sys.getsizeof(mb) + _sampled(mb, len(mb), _entry_size)
    return size


def _sampled(values: Any, count: int, size_of: Callable[[Any], int]) -> int:
    if not count:
        return 0
    measured = [size_of(v) for v in islice(values, MEMORY_SAMPLE)]
    return sum(measured) * count // len(measured)


def _entry_size(entry: Any) -> int:
    size = sys.getsizeof(entry)
    if type(entry) is tuple:
        size += sum(sys.getsizeof(item) for item in entry[:8])
    return size
