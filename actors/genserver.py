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

- `init(*args)`: runs inside `spawn`, before it returns. An exception makes `spawn` raise
  `StartError` and leaves no process behind.
- `handle_call(request, caller)`: return the reply, or `NoReply` and answer later with
  `self.reply(caller, value)`.
- `handle_cast(msg)`, `handle_info(msg)`: the return value is ignored. `handle_info` gets
  every message that is neither a call nor a cast (`Exit`, `Down`, `send`s, timers).
- `handle_continue(arg)`: runs before the next message after `self.continue_with(arg)`.
- `handle_idle()`: runs when `idle_timeout` seconds pass with no message (OTP's `timeout`).
- `terminate(reason)`: runs when the server stops itself (`self.stop`), when a callback
  raises, and when it traps exits and its parent sends an exit signal: the parent is the
  process that spawned it (e.g. its supervisor), or, for a server spawned from outside any
  process, the outside (`node.exit`, `node.stop`). Not when it is killed outright, as in
  OTP. It may be `async def`; the server exits when it completes.

Do not override `__init__`: the kernel builds the object; put setup in `init`. The
process's runtime fields are the kernel's: `pid` and `node` are read-only, and a subclass
that assigns one of the kernel's own attributes (`self._timer = ...`) is refused when it
is defined (see `actors.process`).

The extension point for libraries: a subclass that defines `run_turn(self, turn)` has it
called for every turn of the server, with `turn` running that turn (the queued messages,
the next step of a suspended async callback, or an idle timeout) and returning True when
the server is then suspended in an async callback. It must call `turn()` once and let its
exceptions through (`actors.process.ExitNow` is a deliberate stop, anything else a
crash). Storage's `PersistentServer` saves its state there. Servers without it pay nothing.
"""
from __future__ import annotations

from types import CoroutineType
from typing import Any

from .messages import Exit
from .process import CALL, INFO, NONE, ExitNow, From, Process
from .runq import make_runnable
from .scheduler import log_unexpected


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NoReply"


NoReply = _NoReply()
"""Return this from `handle_call` to reply later with `self.reply(caller, value)`."""


class GenServer(Process):
    """Base class of OTP-style servers; see the module docstring for the callbacks."""

    idle_timeout: float | None = None
    """Seconds without a message after which `handle_idle()` runs; None disables it."""

    __slots__ = ("_stop", "_cont", "_idle", "_terminating")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run_turn" in vars(cls):  # wire the extension point in: no cost for the others
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

    # -- kernel side --------------------------------------------------------------------

    def _setup(self, *a: Any) -> None:
        Process._setup(self, *a)
        self._stop = NONE
        self._cont = NONE
        self._idle = None
        self._terminating = False

    def _start(self, args: tuple) -> None:
        self._init_returned(self.init(*args))

    def _init_returned(self, result: Any) -> None:
        """Carry on from what `init` returned (a behaviour built on GenServer, such as
        GenStateMachine, reads the value first)."""
        if type(result) is CoroutineType:
            self._run_async(result, None)
        elif self._stop is not NONE:
            self._exit_with(self._stop)
        elif self._cont is not NONE:
            # handle_continue runs on the server's own turn, after spawn has returned.
            make_runnable(self._node, self)

    def _run(self) -> None:
        """A turn: the suspended callback moved on, then up to `batch` messages handled.
        It counts as one message taken (see `_messages_in`): only a turn that takes
        another number corrects the count, so the commonest turn pays nothing for it."""
        self._turns += 1
        node = self._node
        n = batch = node.batch
        m = self._last
        try:
            if self._coro is not None and not self._advance():
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
                else:
                    r = self.handle_cast(m)
                    if r is not None and type(r) is CoroutineType:
                        self._run_async(r, None)
                if self._halt and self._after_halt():
                    return
        finally:
            if n != batch - 1:
                self._taken += batch - n - 1
                node._scheduler.taken += batch - n - 1
            self._last = m  # the last message taken (crash reports, process_info)
        if mb:
            make_runnable(node, self)
        elif self.idle_timeout is not None and self._coro is None:
            self._idle = node._add_timer(self.idle_timeout, self._on_idle, ())

    def _after_halt(self) -> bool:
        """Handle what a callback asked for; True when the server must stop its turn."""
        while True:
            if self._coro is not None:
                return True  # suspended in an async callback
            if self._stop is not NONE:
                self._exit_with(self._stop)
                return True  # an async terminate is running
            if self._cont is NONE:
                return not self._alive  # halted by a pending exit signal
            self._halt = False
            arg, self._cont = self._cont, NONE
            r = self.handle_continue(arg)
            if type(r) is CoroutineType:
                self._run_async(r, None)
            if not self._halt:
                return False

    def _exit_with(self, reason: Any) -> None:
        """Run terminate, then exit with reason. An async terminate runs as this process's
        coroutine (it may await, e.g. children going down) and the exit follows it."""
        if self._terminating:
            raise ExitNow(reason)
        self._terminating = True
        r = self.terminate(reason)
        if type(r) is not CoroutineType:
            raise ExitNow(reason)
        self._coro = self._exit_after(r, reason)
        self._halt = True
        self._step(None, None)

    async def _exit_after(self, terminating: CoroutineType, reason: Any) -> None:
        await terminating
        raise ExitNow(reason)

    def _on_idle(self) -> None:
        self._idle = None
        self._node._scheduler.run_callback(self, self._idle_callback)

    def _idle_callback(self) -> None:
        self._plain_idle()

    def _plain_idle(self) -> bool:
        r = self.handle_idle()
        if type(r) is CoroutineType:
            self._run_async(r, None)
        elif self._halt:
            self._after_halt()
        return self._coro is not None

    def _run_async(self, coro: CoroutineType, caller: From | None) -> None:
        self._coro = self._finish_async(coro, caller)
        self._halt = True
        self._step(None, None)

    async def _finish_async(self, coro: CoroutineType, caller: From | None) -> None:
        r = await coro
        if caller is not None and r is not NoReply:
            self._node._calls.reply(caller, r)

    def _finished(self) -> None:
        # An async callback completed: carry on with whatever it asked for, then the mailbox.
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
        # A GenServer's selective receive sees only info messages; calls and casts stay
        # queued for their handlers.
        return msg[1] if type(msg) is tuple and msg and msg[0] is INFO else NONE

    def _on_crash(self, reason: Any) -> Any:
        """A callback raised: run terminate, whose own failure replaces the reason. Returns
        NONE while an async terminate is still running (the exit then follows it)."""
        try:
            self._exit_with(reason)
        except ExitNow as done:
            return done.reason
        except Exception as exc:  # noqa: BLE001 - OTP: terminate's crash becomes the reason
            return exc
        return NONE
