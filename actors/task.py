"""Tasks: Elixir's Task on kernel processes, for a process's coroutine code (a coroutine
process, or a GenServer's async callback).

    task = async_task(self, crc32, data)             # Task.async: linked, monitored
    digest = await await_task(self, task)            # Task.await (5 s by default)
    pages = await await_many(self, [async_task(self, fetch, u) for u in urls])
    outcome = await yield_task(self, task, 1.0)      # Task.yield: ("ok", v), ("exit", why) or None
    outcome = outcome or await shutdown_task(self, task)
    async for outcome in async_stream(self, items, work, max_concurrency=4, on_timeout="kill_task"):
        ...                                           # ("ok", v) or ("exit", why), in input order

A task is a process that runs `fn(*args)` once and sends the result to its owner, the
process that started it; an `async def fn` runs as the task's own coroutine and gets
the task's process first, `fn(proc, *args)`, so that it can `await proc.call(...)`. The
owner monitors the task (`Task.ref`); only the owner may await it. A task under a task
supervisor (`supervision.async_nolink`) is not linked to its owner.

Semantics (Elixir's task.ex), with one deviation:
- `async_task` links the task to its owner: either one crashing takes the other down.
- `await_task` returns the result, raises `TaskExit` (with the task's exit reason) if the
  task died first, or `TaskTimeout` after `timeout` seconds. Elixir's await makes the
  caller exit, and a linked task with it; here the exception can be caught, so the task
  is killed before it is raised (it can never answer late). `await_many` likewise, for
  all of them within one timeout, results in the tasks' order.
- `yield_task` returns None on timeout and leaves the task running (yield again later).
- `shutdown_task` unlinks and stops the task ("shutdown", then "kill" after `shutdown`
  seconds, or "brutal_kill" at once) and returns ("ok", v) if its reply came meanwhile,
  ("exit", reason) if it had died of something else, else None.
- `async_stream` runs `fn(item)` for each item, at most `max_concurrency` at once
  (default 8), each within `timeout` seconds of its start. A task over its time is
  killed; then `on_timeout="exit"` (default) raises `TaskTimeout` (after killing the
  others), `"kill_task"` gives ("exit", "timeout") for it. Results come in input order
  (`ordered=True`), else as they finish. Leaving the loop early kills the tasks still
  running. The tasks are linked to the caller, as Elixir's.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, AsyncIterator, Callable, Iterable, NamedTuple

from .errors import ActorError, ReceiveTimeout
from .ids import Pid, Ref
from .messages import KILL, KILLED, NOPROC, SHUTDOWN, Down
from .process import Process


class Task(NamedTuple):
    """A running task: its pid, the owner's monitor of it (also its reply's tag) and the owner."""

    pid: Pid
    ref: Ref
    owner: Pid


class TaskReply(NamedTuple):
    """What a task sends its owner: the result, tagged with the task's `ref`."""

    ref: Ref
    value: Any


class _Go(NamedTuple):
    """The owner's word to a new task: its monitor ref, to tag the reply with."""

    ref: Ref


class TaskExit(ActorError):
    """The task exited before replying; `reason` is its exit reason."""

    def __init__(self, task: Task, reason: Any) -> None:
        super().__init__(f"task {task.pid!r} exited with {reason!r:.300} before replying")
        self.task, self.reason = task, reason


class TaskTimeout(ActorError, TimeoutError):
    """No reply within the timeout; the task was killed."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(f"task {task.pid!r} did not reply within {timeout} s")
        self.task, self.timeout = task, timeout


async def task_body(proc: Process, owner: Pid, fn: Callable[..., Any], args: tuple) -> None:
    """A task process: wait for the owner's go, run `fn`, send the result. It stops at
    once if the owner dies first (a supervisor started it, the owner never monitored it)."""
    watch = proc.monitor(owner)
    go = await proc.receive(lambda m: type(m) is _Go or (type(m) is Down and m.ref == watch))
    if type(go) is Down:
        return
    proc.demonitor(watch)
    result = fn(proc, *args) if inspect.iscoroutinefunction(fn) else fn(*args)
    if inspect.isawaitable(result):
        result = await result
    proc.send(owner, TaskReply(go.ref, result))


def attach(owner: Process, pid: Pid) -> Task:
    """Make `owner` the owner of the task process `pid`: monitor it and let it start."""
    ref = owner.monitor(pid)
    owner.send(pid, _Go(ref))
    return Task(pid, ref, owner.pid)


def async_task(proc: Process, fn: Callable[..., Any], *args: Any) -> Task:
    """Start `fn(*args)` in a task linked to and monitored by `proc` (Elixir's Task.async)."""
    _check_fn(fn)
    return attach(proc, proc.spawn_link(task_body, proc.pid, fn, args))


async def await_task(proc: Process, task: Task, timeout: float | None = 5.0) -> Any:
    """The task's result (Elixir's Task.await); see the module docstring."""
    _check(proc, task, timeout)
    try:
        msg = await proc.receive(_answer_of({task.ref}), timeout)
    except ReceiveTimeout:
        _kill(proc, task)
        raise TaskTimeout(task, timeout or 0.0) from None
    return _result(proc, task, msg)


async def await_many(proc: Process, tasks: list[Task], timeout: float | None = 5.0) -> list[Any]:
    """Every task's result, in order, within `timeout` seconds in all (Elixir's
    Task.await_many); the first to exit or the timeout kills the others and raises."""
    for task in tasks:
        _check(proc, task, timeout)
    by_ref = {task.ref: task for task in tasks}
    results: dict[Ref, Any] = {}
    deadline = None if timeout is None else proc.now() + timeout
    try:
        while len(results) < len(tasks):
            left = None if deadline is None else max(0.0, deadline - proc.now())
            msg = await proc.receive(_answer_of(by_ref.keys() - results.keys()), left)
            results[msg.ref] = _result(proc, by_ref[msg.ref], msg)
    except (ReceiveTimeout, TaskExit) as exc:
        for task in tasks:
            if task.ref not in results:
                _kill(proc, task)
        if type(exc) is ReceiveTimeout:
            raise TaskTimeout(next(t for t in tasks if t.ref not in results), timeout or 0.0) from None
        raise
    return [results[task.ref] for task in tasks]


async def yield_task(proc: Process, task: Task, timeout: float | None = 5.0) -> tuple[str, Any] | None:
    """("ok", result), ("exit", reason), or None if neither came within `timeout`: the
    task then keeps running (Elixir's Task.yield)."""
    _check(proc, task, timeout)
    try:
        msg = await proc.receive(_answer_of({task.ref}), timeout)
    except ReceiveTimeout:
        return None
    return _outcome(proc, msg)


async def shutdown_task(proc: Process, task: Task, shutdown: float | str = 5.0) -> tuple[str, Any] | None:
    """Unlink and stop the task, then ("ok", result) if it replied meanwhile, ("exit",
    reason) if it died of something else, else None (Elixir's Task.shutdown)."""
    brutal = shutdown == "brutal_kill"
    _check(proc, task, None if brutal else shutdown)
    proc.unlink(task.pid)
    watch = proc.monitor(task.pid)
    proc.exit(task.pid, KILL if brutal else SHUTDOWN)
    expected = {KILLED} if brutal else {SHUTDOWN}
    down_of = _answer_of({watch})
    try:
        down = await proc.receive(down_of, None if brutal else shutdown)  # type: ignore[arg-type]
    except ReceiveTimeout:
        proc.exit(task.pid, KILL)
        expected = {KILLED}
        down = await proc.receive(down_of)
    reply = proc._take(lambda m: type(m) is TaskReply and m.ref == task.ref)
    reason = down.reason
    if reason == NOPROC:  # gone before: its own Down says how
        own = proc._take(lambda m: type(m) is Down and m.ref == task.ref)
        reason = own.reason if type(own) is Down else NOPROC
    proc.demonitor(task.ref, flush=True)
    if type(reply) is TaskReply:
        return ("ok", reply.value)
    return None if reason in expected else ("exit", reason)


async def async_stream(proc: Process, items: Iterable[Any], fn: Callable[..., Any], *,
                       max_concurrency: int = 8, ordered: bool = True, timeout: float | None = 5.0,
                       on_timeout: str = "exit") -> AsyncIterator[tuple[str, Any]]:
    """Run `fn(item)` for each item in tasks, at most `max_concurrency` at once; yields
    ("ok", result) or ("exit", reason) per item (Elixir's Task.async_stream; see the
    module docstring)."""
    if type(max_concurrency) is not int or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
    if on_timeout not in ("exit", "kill_task"):
        raise ValueError(f"on_timeout must be 'exit' or 'kill_task', got {on_timeout!r}")
    _check_timeout(timeout)
    _check_fn(fn)
    source = iter(items)
    running: dict[Ref, tuple[int, Task, float]] = {}  # ref -> (position, task, deadline)
    finished: dict[int, tuple[str, Any]] = {}  # ordered: outcomes waiting for those before them
    started = delivered = 0
    more = True
    try:
        while True:
            while more and len(running) < max_concurrency:
                item = next(source, _END)
                if item is _END:
                    more = False
                    break
                task = async_task(proc, fn, item)
                running[task.ref] = (started, task, math.inf if timeout is None else proc.now() + timeout)
                started += 1
            if not running:
                return
            soonest = min(deadline for _, _, deadline in running.values())
            try:
                msg = await proc.receive(_answer_of(running.keys()),
                                         None if soonest == math.inf else max(0.0, soonest - proc.now()))
            except ReceiveTimeout:
                late = [entry for entry in running.values() if entry[2] <= proc.now()]
                for position, task, _ in late:
                    del running[task.ref]
                    _kill(proc, task)
                    if on_timeout == "exit":
                        raise TaskTimeout(task, timeout or 0.0) from None
                    finished[position] = ("exit", "timeout")
            else:
                position, task, _ = running.pop(msg.ref)
                finished[position] = _outcome(proc, msg)
            if not ordered:
                for position in list(finished):
                    yield finished.pop(position)
            while delivered in finished:
                yield finished.pop(delivered)
                delivered += 1
    finally:  # left early, or failed: no task outlives the stream (a dying caller's die by the link)
        if proc._alive:
            for _, task, _ in running.values():
                _kill(proc, task)


_END = object()


def _answer_of(refs: Any) -> Callable[[Any], bool]:
    """Matches a task's reply or Down for one of `refs` (a set, or a dict's keys)."""
    return lambda m: (type(m) is TaskReply or type(m) is Down) and m.ref in refs


def _result(proc: Process, task: Task, msg: Any) -> Any:
    if type(msg) is Down:
        raise TaskExit(task, msg.reason)
    proc.demonitor(task.ref, flush=True)
    return msg.value


def _outcome(proc: Process, msg: Any) -> tuple[str, Any]:
    if type(msg) is Down:
        return ("exit", msg.reason)
    proc.demonitor(msg.ref, flush=True)
    return ("ok", msg.value)


def _kill(proc: Process, task: Task) -> None:
    """Kill a task and forget it: no link, no monitor, no reply left in the mailbox."""
    proc.unlink(task.pid)
    proc.exit(task.pid, KILL)
    proc.demonitor(task.ref, flush=True)
    proc._take(lambda m: type(m) is TaskReply and m.ref == task.ref)


def _check(proc: Process, task: Task, timeout: Any) -> None:
    if type(task) is not Task:
        raise TypeError(f"expected a Task (from async_task or async_nolink), got {task!r:.200}")
    if task.owner != proc.pid:
        raise ValueError(f"task {task.pid!r} belongs to {task.owner!r}; only its owner may wait for it, "
                         f"not {proc.pid!r}")
    _check_timeout(timeout)


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (type(timeout) not in (int, float) or not 0 <= timeout < math.inf):
        raise ValueError(f"timeout must be None or finite seconds >= 0, got {timeout!r}")


def _check_fn(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"a task runs a function, not {fn!r:.200}")
