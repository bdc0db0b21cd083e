"""Spawning: a new process, from a GenServer class, an async function or a ThreadWorker.

Contract:
- Options are checked before anything is created: `name` (a str, or a `via`),
  `trap_exit`, `mailbox_limit` (messages) with `overflow` "crash" or "drop". Unknown
  options, bad limits and the node's `max_processes` are refused with a clear error.
- A GenServer's `init(*args)` runs inside `spawn`, as the new process's own turn: if it
  raises (or stops), `spawn` raises `StartError`, no process is left behind, and no exit
  signal goes through the new link (the spawner has the exception; OTP would send both).
- `spawn` never waits: an `async def init` that awaits has not finished when `spawn`
  returns the pid; it finishes on the server's own turns, and if it fails then, the
  process exits with the reason (its links and monitors hear it, as for any exit).
- `start` / `start_link` (a process's, awaited) and `node.start` (outside, a `Future`) are
  OTP's synchronous start: they return the pid once `init` has finished, an async one
  included, and raise `StartError` if it fails, with no exit signal through the link
  either. With a `timeout` (seconds) a start not finished by then is killed (unlinked
  first) and fails with the reason "timeout".
- A coroutine process's body is called at once (bad arguments fail here, before anything
  is registered) and first runs on its own turn.
- After a hot code upgrade (`actors.upgrade`), spawning a class that was upgraded starts
  its new version (`redirect`): a supervisor's child spec or any other holder of the old
  class object restarts children on the new code, as OTP's code server would.
"""
from __future__ import annotations

import inspect
import sys
import types
from typing import TYPE_CHECKING, Any

from .calls import ExternalCall
from .errors import CallExit, CallTimeout, NoProc, StartError, SystemLimit
from .future import Future
from .genserver import STARTING, GenServer, StartWaiter
from .ids import Pid
from .messages import KILL, NOPROC
from .process import WAIT, CoroutineProcess, ExitNow, Process
from .runq import make_runnable

if TYPE_CHECKING:
    from .node import Node

new_pid = Pid.__new__
OPTIONS = frozenset({"name", "trap_exit", "mailbox_limit", "overflow"})
OVERFLOW = ("crash", "drop")
redirect: dict[type, type] = {}
"""Upgraded GenServer classes: old class -> its current version (see `actors.upgrade`)."""


def spawn(node: Node, target: Any, args: tuple, options: dict, parent: Process | None = None,
          link: bool = False) -> Pid:
    """Start a process (see `Node.spawn`): its pid."""
    limit, overflow = mailbox_options(options) if options else (sys.maxsize, "crash")
    if len(node._procs) >= node.max_processes:
        raise SystemLimit(f"node {node.name} is at its limit of {node.max_processes} processes")
    proc: Process
    if type(target) is type and not redirect and issubclass(target, GenServer):
        proc, server = target.__new__(target), True  # new_process's commonest case, one call less
    else:
        proc, args = new_process(target, args)
        server = isinstance(proc, GenServer)
    serial = node._serial = node._serial + 1
    pid = new_pid(Pid)  # Pid's fields set here, not by its __init__: one call less
    pid.node_name = node.name
    pid.serial = serial
    pid._proc = proc
    proc._setup(node, pid, parent._pid if parent is not None else None, limit, overflow)
    if options and options.get("trap_exit", False):
        proc._trap = True
    if not server:
        proc._coro = target(proc, *args)  # bad arguments fail here, before anything is registered
    node._procs[serial] = proc
    name = options.get("name") if options else None
    if name is not None:
        try:
            node._names.register(name, proc)
        except BaseException:
            del node._procs[node._serial]
            raise
    if node.tracer is not None:  # after its name: a tracer following a name sees the new holder
        node.tracer("spawn", pid, getattr(target, "__qualname__", repr(target)))
    if link:
        assert parent is not None, "spawn_link is a process's"
        node._signals.add_link(parent, proc)
    if server:
        start_server(node, proc, target, args, parent)  # type: ignore[arg-type]  # a GenServer here
    else:
        proc._resume = None
        make_runnable(node, proc)
    return pid


def mailbox_options(options: dict) -> tuple[int, str]:
    """Check spawn's options (see the module docstring): the mailbox limit and overflow."""
    if not OPTIONS.issuperset(options):  # no set made on the common path
        unknown = options.keys() - OPTIONS
        raise TypeError(f"spawn got unknown option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    limit = options.get("mailbox_limit")
    overflow = options.get("overflow", "crash")
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValueError(f"mailbox_limit must be a positive int, got {limit!r}")
    return limit or sys.maxsize, overflow


def new_process(target: Any, args: tuple) -> tuple[Process, tuple]:
    """The process object for `target`, and the arguments its code starts with."""
    if redirect:
        target = redirect.get(target, target)
    if isinstance(target, type) and issubclass(target, GenServer):
        return target.__new__(target), args
    if inspect.iscoroutinefunction(target):
        return CoroutineProcess(), args
    from .bridge import ThreadWorker, ThreadWorkerProcess
    if isinstance(target, type) and issubclass(target, ThreadWorker):
        return ThreadWorkerProcess.__new__(ThreadWorkerProcess), (target, *args)
    raise TypeError(f"spawn takes a GenServer subclass, an async def function or a "
                    f"ThreadWorker subclass, not {target!r}")


def start_server(node: Node, proc: GenServer, target: Any, args: tuple, parent: Process | None) -> None:
    """Run a GenServer's `init` as its first turn; `StartError` if it fails."""
    previous, node._current = node._current, proc
    try:
        proc._start(args)
        return
    except ExitNow as exc:
        reason = exc.reason
    except Exception as exc:  # noqa: BLE001 - init's failure is the start error
        reason = exc
    finally:
        node._current = previous
    # A failed start is reported once, to the spawner, as StartError; not also as an
    # exit signal through the link (OTP sends both; a Python caller has the exception).
    if parent is not None and parent._links is not None and proc._links is not None:
        parent._links.pop(proc, None)
        proc._links.pop(parent, None)
    if previous is None:
        # Outside any process the init's turn is over: the exits it caused (children it
        # started, then stopped) take effect now, so their names are free for a retry.
        node._signals.drain_exits()
    proc._terminate(reason)
    raise StartError(target, reason) from (reason if isinstance(reason, BaseException) else None)


def _starting(node: Node, pid: Pid) -> GenServer | None:
    """The server of `pid` if its init has not finished; `StartError` if it is failing."""
    server = pid._proc
    if not isinstance(server, GenServer) or server._phase is not STARTING:
        return None
    if not server._alive:  # doomed during its init's first steps: its exit is pending
        reason = next((r for p, r in node._signals.exits if p is server), NOPROC)
        raise StartError(type(server), reason)
    return server


@types.coroutine
def start_from(proc: Process, target: Any, args: tuple, options: dict, timeout: float | None,
               link: bool) -> Any:
    """`proc.start` / `proc.start_link`: spawn, then wait for the server's init."""
    node = proc._node
    try:
        pid = spawn(node, target, args, options, proc, link)
    except StartError:
        if node._signals.exits:  # the failed init stopped processes: they exit after this
            yield from proc.sleep(0.0)  # turn, and the start returns once they are gone
        raise
    if getattr(pid._proc, "_phase", None) is not STARTING:
        return pid  # init has finished (or it is no GenServer)
    server = _starting(node, pid)
    assert server is not None
    server._phase = StartWaiter(node._calls.start(proc, pid, None, timeout, None))  # init replies
    try:
        return (yield WAIT)
    except (CallExit, NoProc) as exc:
        raise StartError(target, getattr(exc, "reason", NOPROC)) from None
    except CallTimeout:
        if link:
            proc.unlink(pid)  # then killed, as OTP's proc_lib does
        node._signals.send_exit(proc, pid, KILL)
        raise StartError(target, "timeout") from None


def start_outside(node: Node, target: Any, args: tuple, options: dict, timeout: float | None) -> Future:
    """`node.start`: spawn from outside any process; a Future of the pid once init is done."""
    started = Future()
    try:
        pid = spawn(node, target, args, options)
        server = _starting(node, pid)
    except StartError as exc:
        started.set_exception(exc)
        return started
    if server is None:
        started.set_result(pid)
        return started
    waiter = ExternalCall(node, pid, "start")
    server._phase = StartWaiter(node._calls.watch(waiter, server, timeout))  # init replies

    def done(init: Future) -> None:
        exc = init.exception()
        if exc is None:
            started.set_result(init.result())
            return
        if isinstance(exc, CallTimeout):
            node._signals.send_exit(None, pid, KILL)
            exc = StartError(target, "timeout")
        else:
            exc = StartError(target, getattr(exc, "reason", NOPROC))
        started.set_exception(exc)

    waiter.future.add_done_callback(done)
    return started
