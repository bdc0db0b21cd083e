"""GenServer: OTP's gen_server as a Python class. State lives on `self`.

    class Counter(GenServer):
        def init(self, start=0):
            self.n = start

        def handle_call(self, request, caller):
            if request == "get":
                return self.n                 # the reply

        def handle_cast(self, msg):
            self.n += msg

    pid = node.spawn(Counter, 10)
    node.cast(pid, 5)

Callbacks (each may be `async def` and then `await self.call(...)`, `self.receive(...)`,
`self.sleep(...)`; while one is suspended the server handles nothing else, as in OTP):

- `init(*args)`: runs inside `spawn`, before it returns. If it raises or calls
  `self.stop(reason)`, the start fails: `spawn` raises `StartError`, no process is left
  behind and `terminate` is not called (OTP's `{stop, Reason}` from init). An `async def
  init` that awaits finishes on the server's own turns (messages wait meanwhile): `spawn`
  has then returned its pid and a failure after the first `await` ends the process with
  that reason, seen through its links and monitors; `await self.start(...)` /
  `self.start_link(...)` in a process and `node.start(...)` outside wait for the whole
  `init` and raise `StartError` instead (see `actors.spawn`).
- `handle_call(request, caller)`: return the reply, or `NoReply` and answer later with
  `self.reply(caller, value)`.
- `handle_cast(msg)`, `handle_info(msg)`: the return value is ignored. `handle_info` gets
  every message that is neither a call nor a cast (`Exit`, `Down`, `send`s, timers).
- `handle_continue(arg)`: runs before the next message after `self.continue_with(arg)`.
- `handle_idle()`: runs when `idle_timeout` seconds pass with no message, counted from
  the end of `init` too (OTP's `{ok, State, Timeout}` and `timeout`).
- `terminate(reason)`: runs when the server stops itself (`self.stop`), when a callback
  raises, when it is stopped from outside (`actors.system.stop`), and when it traps exits
  and its parent sends an exit signal: the parent is the process that spawned it (e.g.
  its supervisor), or, for a server spawned from outside any process, the outside
  (`node.exit`, `node.stop`). Not when it is killed outright, nor when `init` fails, as
  in OTP. It may be `async def`; the server exits when it completes. A stop with a reason
  other than "normal", "shutdown" or ("shutdown", x) logs a stop report on logger "actors"
  (a crash logs its crash report instead).
- `code_change(old_vsn, state, extra)`: returns the state moved to the new code, during a
  hot code upgrade (`actors.upgrade`); raising keeps the server on its old code.
- `on_hibernate()`: drop what can be rebuilt, as the server hibernates (after
  `self.hibernate()`, or `hibernate_after` seconds without a message); its empty mailbox
  is freed too. The next message wakes it. Must not change the state.
- `format_status(state)`: what `actors.system.get_status` shows of the state (hide secrets).

System messages (OTP's `sys`; see `actors.system`): `get_state`, `replace_state`,
`suspend`, `resume`, `get_status`, `stop` and the upgrade's `change_code` are answered by
`GenServer` itself, in mailbox order, without user code; while suspended a server handles
only system messages (and its parent's exit signal), the others wait. A behaviour built
on GenServer (a state machine) inherits this: it only defines what its state is, with
`system_get_state()` and `system_replace_state(state)` (by default, a dict of the
server's own attributes).

Do not override `__init__`: the kernel builds the object; put setup in `init`. The
process's runtime fields are the kernel's: `pid` and `node` are read-only, and a subclass
that assigns one of the kernel's own attributes (`self._timer = ...`) is refused when it
is defined (see `actors.process`).

The extension point for libraries: a subclass that defines `run_turn(self, turn)` has it
called for every turn of the server, with `turn` running that turn (the queued messages,
system messages included, the next step of a suspended async callback, or an idle
timeout) and returning True when the server is then suspended in an async callback. It
must call `turn()` once and let its exceptions through (`actors.process.ExitNow` is a
deliberate stop, anything else a crash). Storage's `PersistentServer` saves its state
there. Servers without it pay nothing.
"""
from __future__ import annotations

from types import CoroutineType
from typing import Any

from .messages import Exit, is_normal_exit
from .process import CALL, INFO, NONE, SYS, WAIT, ExitNow, From, Process, _Tag
from .runq import make_runnable
from .scheduler import log_unexpected


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NoReply"


NoReply = _NoReply()
"""Return this from `handle_call` to reply later with `self.reply(caller, value)`."""

# A server's _phase: None while it runs, or the From an async handle_call answers when it
# returns; while its init runs, STARTING, or a StartWaiter; SUSPENDED by the system message;
# TERMINATING while its terminate runs. One field for all: it is in every idle server.
STARTING = _Tag("$starting")
SUSPENDED = _Tag("$suspended")
TERMINATING = _Tag("$terminating")


class StartWaiter:
    """The phase of a server whose init a start waits for (see `actors.spawn`): `caller`
    gets the pid when init returns."""

    __slots__ = ("caller",)

    def __init__(self, caller: From) -> None:
        self.caller = caller


class Failed:
    """A system message's answer when the server could not do it: the client raises `error`."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class GenServer(Process):
    """Base class of OTP-style servers; see the module docstring for the callbacks."""

    idle_timeout: float | None = None
    """Seconds without a message after which `handle_idle()` runs; None disables it. This and
    `hibernate_after` are read as `init` returns (and after a code upgrade)."""

    hibernate_after: float | None = None
    """Seconds without a message after which the server hibernates; None: never on its own."""

    vsn: Any = None
    """The code's version, passed as `old_vsn` to the next version's `code_change`."""

    __slots__ = ("_stop", "_cont", "_idle", "_phase", "_quiet")
    _per_class = (*Process._per_class, "_start", "_init_result", "_run", "_after_halt", "_exit_with",
                  "stop", "continue_with", "_finished", "_run_async", "_release", "_post")
    _exits_in_turn = True  # a stop ends the turn without raising ExitNow (see _exit_with)
    _stop: Any  # the reason of a pending stop, or NONE
    _cont: Any  # the argument of a pending handle_continue, or NONE
    _idle: Any  # the Timer of the next quiet event (idle timeout, hibernation), or None
    _phase: Any  # None or a From, STARTING or a StartWaiter, SUSPENDED, TERMINATING (see above)
    _quiet: bool  # idle_timeout or hibernate_after is set (see _init_result)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run_turn" in vars(cls):  # wire the extension point in: no cost for the others
            cls._exits_in_turn = False  # run_turn sees a stop as ExitNow
            cls._start = GenServer._hooked_start  # type: ignore[method-assign]
            cls._run = GenServer._hooked_run  # type: ignore[method-assign]
            cls._idle_callback = GenServer._hooked_idle  # type: ignore[method-assign]

    # -- callbacks (defaults) -----------------------------------------------------------

    def init(self, *args: Any) -> Any:
        """Set up state from the spawn arguments."""
        if args:
            raise TypeError(f"{type(self).__name__}.init takes no arguments, got {args!r}")

    def handle_call(self, request: Any, caller: From) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no handle_call for {request!r:.200}")

    def handle_cast(self, msg: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no handle_cast for {msg!r:.200}")

    def handle_info(self, msg: Any) -> Any:
        """By default unexpected messages are logged and dropped, as in OTP."""
        log_unexpected(self, msg)

    def handle_continue(self, arg: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no handle_continue for {arg!r:.200}")

    def handle_idle(self) -> Any:
        """Called after `idle_timeout` seconds without messages; does nothing by default."""

    def terminate(self, reason: Any) -> Any:
        """Clean up before the server exits with `reason` (may be `async def`)."""

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Return `state` (from `system_get_state`, made by code `old_vsn`) for this code;
        raise to stay on the old code. Runs on the new class, during `actors.upgrade`."""
        return state

    def on_hibernate(self) -> None:
        """Called as the server hibernates: drop what can be rebuilt."""

    def format_status(self, state: Any) -> Any:
        """What `get_status` shows of the state; the state itself by default."""
        return state

    def system_get_state(self) -> Any:
        """The state system messages see (`get_state`, `replace_state`, `code_change`): by
        default a dict of the server's own attributes, a copy."""
        return dict(getattr(self, "__dict__", ()))

    def system_replace_state(self, state: Any) -> None:
        """Make `state` (a changed `system_get_state()`) the server's state."""
        attributes = getattr(self, "__dict__", None)
        if type(state) is not dict or (attributes is None and state):
            raise TypeError(f"{type(self).__name__}'s state is a dict of its attributes; got {state!r:.200}")
        if attributes is not None:
            attributes.clear()
            attributes.update(state)

    # -- the extension point for libraries (see the module docstring) ---------------------------

    def _hooked_start(self, args: tuple) -> None:
        self.run_turn(lambda: self._plain_start(args))  # type: ignore[attr-defined]

    def _plain_start(self, args: tuple) -> bool:
        GenServer._start(self, args)
        return self._coro is not None

    def _hooked_run(self) -> None:
        self.run_turn(self._plain_run)  # type: ignore[attr-defined]

    def _hooked_idle(self) -> None:
        self.run_turn(self._plain_idle)  # type: ignore[attr-defined]

    def _plain_run(self) -> bool:
        GenServer._run(self)
        return self._coro is not None

    # -- actions ----------------------------------------------------------------------

    def stop(self, reason: Any = "normal") -> None:
        """Stop after the current callback returns (a call's reply is still sent)."""
        self._stop = reason
        self._halt = True

    def continue_with(self, arg: Any) -> None:
        """Run `handle_continue(arg)` after the current callback, before any message."""
        self._cont = arg
        self._halt = True

    def hibernate(self) -> None:
        """Hibernate once the current callback returns, if no message is waiting (OTP's
        `hibernate`): see `on_hibernate`."""
        if self._idle is not None:
            self._node._timers.cancel(self._idle)
        self._idle = self._node._add_timer(0.0, self._on_quiet, (0.0, True))

    # -- kernel side --------------------------------------------------------------------

    def _setup(self, node: Any, pid: Any, parent: Any, limit: int, overflow: str) -> None:
        self._setup_process(node, pid, parent, limit, overflow)
        self._stop = NONE
        self._cont = NONE
        self._idle = None
        self._phase = None

    def _start(self, args: tuple) -> None:
        self._phase = STARTING
        self._init_result(self.init(*args))

    def _init_result(self, result: Any) -> None:
        """Carry on from what `init` returned (a behaviour built on GenServer, such as
        GenStateMachine, reads the value first)."""
        # Whether it has quiet events, read once here (and after a code upgrade): every
        # turn's end tests it, and a slot is read far faster than a class attribute.
        self._quiet = self.idle_timeout is not None or self.hibernate_after is not None
        if type(result) is CoroutineType:
            self._coro = result  # _finished knows init's end by the phase
            self._halt = True
            self._step(None, None)
        else:
            if self._stop is not NONE:
                self._exit_with(self._stop)  # a failed start: no terminate
            self._phase = None  # nobody waits yet: a waiting start registers after spawn
            if self._cont is not NONE:
                make_runnable(self._node, self)  # handle_continue: its own turn, after spawn
                return
        if self._quiet and self._coro is None and self._idle is None:
            self._arm_quiet(None)  # OTP's {ok, State, Timeout}: the quiet starts after init

    def _init_returned(self) -> None:
        """`init` has returned: stop if it asked to (no terminate), else the server runs and
        a start waiting for it gets the pid."""
        if self._stop is not NONE:
            self._exit_with(self._stop)
        starter, self._phase = self._phase, None
        if starter is not STARTING:
            self._node._calls.reply(starter.caller, self._pid)

    def _run(self) -> None:
        """A turn: the suspended callback moved on, then up to `batch` messages handled.
        It counts as one message taken (see `_messages_in`): only a turn that takes
        another number corrects the count, so the commonest turn pays nothing for it."""
        self._turns += 1
        node = self._node
        n = batch = node.batch
        m = self._last
        try:
            coro = self._coro
            if coro is not None:
                value = self._resume
                if value is NONE or self._resume_exc is not None:
                    if not self._advance():
                        return
                else:  # a call's reply (or a sleep's end): inlined copy of Process._advance and _step
                    self._resume = NONE
                    try:
                        req = coro.send(value)
                    except StopIteration as done:
                        self._coro = None
                        self._finished(done.value)
                    else:
                        if req is not WAIT:
                            self._suspend(req)
                        return
                    if self._coro is not None:
                        return
            if self._idle is not None:
                node._timers.cancel(self._idle)
                self._idle = None
            if self._halt and self._after_halt():
                return
            mb = self._mbox
            while mb and n:
                n -= 1
                m = mb.popleft()
                tag = m[0] if type(m) is tuple and m else None
                if tag is CALL:
                    r = self.handle_call(m[1], m[2])
                    if type(r) is CoroutineType:
                        self._run_async(r, m[2])
                    elif r is not NoReply:
                        caller = m[2]  # inlined copy of actors.calls.Calls.reply:
                        if self._held is None and self._tracer is None and caller.owner._node is node:
                            self._sent += 1
                            caller.owner._on_reply(caller, r)  # local, not held, not traced
                        else:
                            node._calls.reply(caller, r)
                elif tag is INFO:
                    info = m[1]
                    if type(info) is Exit and self._trap and info.pid == self._parent:
                        self._exit_with(info.reason)  # raises, or runs an async terminate
                    else:
                        r = self.handle_info(info)
                        if r is not None and type(r) is CoroutineType:
                            self._run_async(r, None)
                elif tag is SYS:
                    self._system(m[1], m[2])
                else:
                    r = self.handle_cast(m)
                    if r is not None and type(r) is CoroutineType:
                        self._run_async(r, None)
                if self._halt and self._after_halt(self._exits_in_turn):
                    return
        finally:
            if n != batch - 1:
                self._taken += batch - n - 1
                node._scheduler.taken += batch - n - 1
            self._last = m  # the last message taken (crash reports, process_info)
        if mb:
            make_runnable(node, self)
        elif self._quiet and self._coro is None and self._idle is None:  # most servers: one test
            self._arm_quiet(None)

    def _after_halt(self, in_turn: bool = False) -> bool:
        """Handle what a callback asked for; True when the server must stop its turn.
        `in_turn`: see `_exit_with`."""
        while True:
            if self._coro is not None:
                return True  # suspended in an async callback
            if self._stop is not NONE:
                self._exit_with(self._stop, False, in_turn)
                return True  # it has exited, or an async terminate is running
            if self._cont is NONE:
                if self._phase is SUSPENDED and self._serve_suspended():
                    return True
                return not self._alive  # halted by a pending exit signal
            self._halt = False
            arg, self._cont = self._cont, NONE
            r = self.handle_continue(arg)
            if type(r) is CoroutineType:
                self._run_async(r, None)
            if not self._halt:
                return False

    def _exit_with(self, reason: Any, crashed: bool = False, in_turn: bool = False) -> None:
        """Run terminate, then exit with reason. An async terminate runs as this process's
        coroutine (it may await, e.g. children going down) and the exit follows it. A
        failed init exits at once (OTP calls no terminate then). `in_turn`: called from
        the turn itself (`_run`), which returns at once after, so a stop with nothing to
        report exits here without raising (the commonest end of a server)."""
        phase = self._phase
        if phase is TERMINATING:
            raise ExitNow(reason)
        report = not crashed and reason != "normal" and not is_normal_exit(reason)  # the commonest first
        if phase is STARTING:  # init failed and nobody waits for this start: log it
            raise ExitNow(reason, report)
        if type(phase) is StartWaiter:  # init failed: the start gets StartError, no exit signal
            owner = phase.caller.owner
            if self._links is not None and owner in self._links:
                del self._links[owner]
                del owner._links[self]
            raise ExitNow(reason)
        self._phase = TERMINATING
        r = self.terminate(reason)
        if type(r) is not CoroutineType:
            if in_turn and not report:
                self._exit_own_turn(reason)  # what Scheduler.exit_self does with no report or crash
                return
            raise ExitNow(reason, report)
        self._coro = self._exit_after(r, reason, report)
        self._halt = True
        self._step(None, None)

    async def _exit_after(self, terminating: CoroutineType, reason: Any, report: bool) -> None:
        await terminating
        raise ExitNow(reason, report)

    # -- quiet: idle_timeout and hibernation ---------------------------------------------

    def _arm_quiet(self, done: float | None, hibernated: bool = False) -> None:
        """Arm the timer of the next quiet event, counted from the last message: the idle
        timeout, and hibernation unless it `hibernated` already in this quiet period.
        `done`: the seconds of quiet already handled (None: none)."""
        due = None
        for after in (self.idle_timeout, None if hibernated else self.hibernate_after):
            if after is not None and (done is None or after > done) and (due is None or after < due):
                due = after
        if due is not None:
            self._idle = self._node._add_timer(due - (done or 0.0), self._on_quiet, (due, False))

    def _on_quiet(self, quiet: float, asked: bool) -> None:
        """`quiet` seconds passed without a message (`asked`: `hibernate()` was called)."""
        self._idle = None
        hibernate = asked or self.hibernate_after == quiet
        self._arm_quiet(quiet, hibernate)
        run = self._node._scheduler.run_callback
        if not asked and self.idle_timeout == quiet:
            run(self, self._idle_callback)
        if hibernate:
            run(self, self._hibernate_now)

    def _idle_callback(self) -> None:
        self._plain_idle()

    def _plain_idle(self) -> bool:
        r = self.handle_idle()
        if type(r) is CoroutineType:
            self._run_async(r, None)
        elif self._halt:
            self._after_halt()
        return self._coro is not None

    def _hibernate_now(self) -> None:
        if self._coro is None and not self._mbox and not self._halt:
            self._mbox = None  # an empty deque still holds a block of memory
            self._last = NONE
            self.on_hibernate()

    # -- system messages (see actors.system): the one place behaviours get them from -------

    def _system(self, request: tuple, caller: From | None) -> None:
        """Answer a system message: `(kind, *args)` from actors.system."""
        kind = request[0]
        if kind == "terminate":
            self._exit_with(request[1])  # raises, or runs an async terminate
            return
        try:
            if kind == "get_state":
                answer = self.system_get_state()
            elif kind == "replace_state":
                answer = request[1](self.system_get_state())
                self.system_replace_state(answer)
            elif kind == "get_status":
                answer = self._status()
            elif kind == "suspend":
                answer = None
                self._phase = SUSPENDED
                self._halt = True
                self._scan = 0
            elif kind == "resume":
                answer = None
                if self._phase is SUSPENDED:
                    self._phase = None
            elif kind == "change_code":
                answer = self._change_code(request[1], request[2])
            else:
                raise ValueError(f"unknown system message {request!r:.200}")
        except Exception as exc:  # noqa: BLE001 - the server carries on; the caller raises it
            answer = Failed(exc)
        if caller is not None:
            self._node._calls.reply(caller, answer)

    def _serve_suspended(self) -> bool:
        """While suspended, handle only system messages and the parent's exit signal, in
        mailbox order, the others staying queued (OTP's sys suspend loop); True while still
        suspended. `_scan` keeps where the scan stopped: the messages before it are not
        system messages."""
        mb = self._mbox
        while mb and self._scan < len(mb):
            m = mb[self._scan]
            tag = m[0] if type(m) is tuple and m else None
            if tag is SYS:
                self._take_at(self._scan, m)
                self._system(m[1], m[2])
                if self._coro is not None:
                    return True  # an async terminate is running
                if self._phase is not SUSPENDED:
                    self._halt = not self._alive
                    return False
            elif tag is INFO and type(m[1]) is Exit and self._trap and m[1].pid == self._parent:
                self._take_at(self._scan, m)
                self._exit_with(m[1].reason)  # raises, or runs an async terminate
                return True
            else:
                self._scan += 1
        return True

    def _take_at(self, i: int, m: Any) -> None:
        """Take the mailbox's message `m` at index `i`, counted as every message taken is."""
        mb = self._mbox
        assert mb is not None and mb[i] is m, "takes a message it has just seen"
        del mb[i]
        self._taken += 1
        self._node._scheduler.taken += 1
        self._last = m

    def _status(self) -> dict[str, Any]:
        cls = type(self)
        return {"pid": self._pid, "class": f"{cls.__module__}.{cls.__qualname__}", "vsn": cls.vsn,
                "status": "suspended" if self._phase is SUSPENDED else "running", "parent": self._parent,
                "registered_name": self._node._names.name_of(self), "trap_exit": self._trap,
                "mailbox_len": len(self._mbox) if self._mbox else 0,
                "state": self.format_status(self.system_get_state())}

    def _change_code(self, new: type[GenServer], extra: Any) -> tuple[Any, Any]:
        """Move this suspended server to class `new` (the same class, reloaded) through its
        `code_change`; on any failure it stays on its old class with its old state."""
        if self._phase is not SUSPENDED:
            raise RuntimeError(f"{self._pid!r} must be suspended to change code")
        old = type(self)
        state = self.system_get_state()
        try:
            self.__class__ = new  # refused (TypeError) if the new class lays its slots out anew
            self.system_replace_state(self.code_change(old.vsn, state, extra))
            self._quiet = self.idle_timeout is not None or self.hibernate_after is not None
        except BaseException:
            self.__class__ = old
            self.system_replace_state(state)
            raise
        return old.vsn, new.vsn

    # -- async callbacks ------------------------------------------------------------------

    def _run_async(self, coro: CoroutineType, caller: From | None) -> None:
        if caller is not None:
            assert self._phase is None, f"an async handle_call in phase {self._phase!r}"
            self._phase = caller
        self._coro = coro
        self._halt = True
        self._step(None, None)

    def _finished(self, result: Any) -> None:
        # An async callback (or init) returned: answer its caller, then carry on with
        # whatever it asked for, then the mailbox.
        phase = self._phase
        if type(phase) is From:
            self._phase = None
            if result is not NoReply:
                self._node._calls.reply(phase, result)
        elif phase is not None:  # init returned: no other phase has a callback return
            self._init_returned()
        self._halt = self._stop is not NONE or self._cont is not NONE or not self._alive
        if self._halt:
            self._after_halt()

    def _release(self) -> None:
        if self._idle is not None:
            self._node._timers.cancel(self._idle)
            self._idle = None

    def _post(self, msg: Any) -> None:
        self._deliver((INFO, msg))

    def _messages_in(self) -> int:
        return self._turns + self._taken  # _taken: less one a turn (see _run)

    def _unwrap(self, msg: Any) -> Any:
        # A GenServer's selective receive sees only info messages; calls, casts and system
        # messages stay queued for their handlers.
        return msg[1] if type(msg) is tuple and msg and msg[0] is INFO else NONE

    def _on_crash(self, reason: Any) -> Any:
        """A callback raised: run terminate, whose own failure replaces the reason. Returns
        NONE while an async terminate is still running (the exit then follows it)."""
        try:
            self._exit_with(reason, crashed=True)
        except ExitNow as done:
            return done.reason
        except Exception as exc:  # noqa: BLE001 - OTP: terminate's crash becomes the reason
            return exc
        return NONE

