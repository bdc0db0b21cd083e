"""System messages: OTP's `sys` (and `gen_server:stop`) for GenServers.

    from actors.system import get_state, get_status, replace_state, resume, stop, suspend

    state = await get_state(self, pid)                        # inside a process
    state = await get_state(node, pid)                        # asyncio code, real-time node
    state = node.run_until_complete(get_state(node, pid))     # deterministic driver

`caller` is the calling process, or the `Node` when the caller is outside any process
(as in `supervision.client`): from a process each function returns a coroutine to
`await`, from outside a kernel `Future`.

Contract (OTP's sys and proc_lib:stop):
- The server answers a system message itself, in mailbox order (behind what was queued
  before it), with no user code: every `GenServer` does, and so does every behaviour
  built on it, which only says what its state is (`system_get_state`,
  `system_replace_state`; by default a dict of the server's own attributes). While the
  server is inside an async callback, a system message waits, as any message does.
- `get_state`: the state. `replace_state(fun)`: runs `fun(state)` in the server; the result
  becomes the state (a persistent server stores it like any change) and is returned; if
  `fun` raises, the state is kept and the caller raises that exception.
- `suspend`: from then on the server handles only system messages and its parent's exit
  signal; calls, casts, other messages and its idle timeout wait for `resume`.
- `get_status`: a dict with `pid`, `class`, `vsn`, `status` ("running" or "suspended"),
  `parent`, `registered_name`, `trap_exit`, `mailbox_len` and `state` (as the server's
  `format_status` shows it).
- `stop(dest, reason="normal", timeout=None)`: the server runs `terminate(reason)` and
  exits with `reason` (suspended or not); returns once it has exited. `NoProc` if there
  is no such process, `CallTimeout` after `timeout` seconds (the server is not killed: it
  may still be terminating), `CallExit` if it exited with another reason (its
  `terminate` crashed).
- Timeouts default to OTP's: 5 s, and no limit for `stop`. Errors: `NoProc` for a missing
  process; `TypeError` for a process that takes no system messages (a coroutine process,
  a thread worker: OTP's would time out); `ValueError` for a process of another node
  (system messages do not cross nodes yet).
"""
from __future__ import annotations

import types
from typing import Any, Callable

from .errors import CallExit, CallTimeout
from .future import Future
from .genserver import Failed, GenServer
from .node import Node
from .process import SYS, WAIT, Process
from .registry import Dest

__all__ = ["get_state", "get_status", "replace_state", "resume", "stop", "suspend"]


def get_state(caller: Any, dest: Dest, timeout: float | None = 5.0) -> Any:
    """The server's state (`sys:get_state`)."""
    return request(caller, dest, ("get_state",), timeout)


def replace_state(caller: Any, dest: Dest, fun: Callable[[Any], Any], timeout: float | None = 5.0) -> Any:
    """Replace the server's state with `fun(state)`, run in the server; the new state."""
    if not callable(fun):
        raise TypeError(f"replace_state takes a function of the state, not {fun!r:.200}")
    return request(caller, dest, ("replace_state", fun), timeout)


def suspend(caller: Any, dest: Dest, timeout: float | None = 5.0) -> Any:
    """Suspend the server: it handles only system messages until `resume`."""
    return request(caller, dest, ("suspend",), timeout)


def resume(caller: Any, dest: Dest, timeout: float | None = 5.0) -> Any:
    """Resume a suspended server: its queued messages are handled, in order."""
    return request(caller, dest, ("resume",), timeout)


def get_status(caller: Any, dest: Dest, timeout: float | None = 5.0) -> Any:
    """A dict describing the server (see the module docstring)."""
    return request(caller, dest, ("get_status",), timeout)


def stop(caller: Any, dest: Dest, reason: Any = "normal", timeout: float | None = None) -> Any:
    """Stop the server with `reason` and wait until it has exited (`gen_server:stop`)."""
    asked = request(caller, dest, ("terminate", reason), timeout)
    if isinstance(asked, Future):
        stopped = Future()
        asked.add_done_callback(lambda done: _stopped(done.exception(), reason, stopped))
        return stopped
    return _stop_from_process(asked, reason)


@types.coroutine
def _stop_from_process(asked: Any, reason: Any) -> Any:
    try:
        yield from asked
    except CallExit as exc:
        if exc.reason is not reason and exc.reason != reason:
            raise
    return None


def _stopped(exc: BaseException | None, reason: Any, stopped: Future) -> None:
    if isinstance(exc, CallExit) and (exc.reason is reason or exc.reason == reason):
        stopped.set_result(None)
    else:
        stopped.set_exception(exc or AssertionError("a stopped server answered"))


def request(caller: Any, dest: Dest, message: tuple, timeout: float | None) -> Any:
    """Send the system message `message` to `dest` from `caller` (a Process, or the Node
    from outside); the functions above build `message`."""
    if isinstance(caller, Process):
        return _from_process(caller, dest, message, timeout)
    if isinstance(caller, Node):
        return _from_outside(caller, dest, message, timeout)
    raise TypeError(f"caller must be the calling process or a Node (from outside), not {caller!r:.200}")


def _check_target(node: Node, dest: Dest) -> None:
    where = node._names.where(dest)
    if type(where) is tuple:
        raise ValueError(f"system messages go to processes of this node; {dest!r} is on node {where[0]!r}")
    if where is not None and where._alive and not isinstance(where, GenServer):
        raise TypeError(f"{dest!r} is a {type(where).__name__}: only GenServers take system messages")


@types.coroutine
def _from_process(proc: Process, dest: Dest, message: tuple, timeout: float | None) -> Any:
    node = proc._node
    _check_target(node, dest)
    node._calls.start(proc, dest, message, timeout, SYS)
    try:
        answer = yield WAIT
    except CallTimeout:
        raise CallTimeout(dest, message, timeout or 0.0) from None
    if type(answer) is Failed:
        raise answer.error
    return answer


def _from_outside(node: Node, dest: Dest, message: tuple, timeout: float | None) -> Future:
    answer = Future()
    try:
        _check_target(node, dest)
    except (TypeError, ValueError) as exc:
        answer.set_exception(exc)
        return answer

    def done(call: Future) -> None:
        exc = call.exception()
        value = None if exc is not None else call.result()
        if type(value) is Failed:
            exc = value.error
        if exc is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(value)

    node._calls.call(dest, message, timeout, SYS).add_done_callback(done)
    return answer
