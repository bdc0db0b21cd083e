"""A request to a server from a process or from outside, its failures raised as exceptions.

    pid = await request(self, server, ("start", spec))               # in a process (self/proc)
    pid = await request(node, server, ("start", spec))               # asyncio code, real-time node
    pid = node.run_until_complete(request(node, server, ("start", spec)))   # deterministic driver

`caller` is the calling process, or the `Node` when the caller is outside any process.
From a process it returns a coroutine to `await`; from outside, a kernel `Future`. A
server answers a failure with an exception object as its reply: the caller raises it.
The libraries' client functions (supervision, global names, process groups) are built
on it. `run_in_process(caller, fn, *args)` gives any async function of a process the same
two faces (a hot code upgrade, a cluster's membership change).
"""
from __future__ import annotations

import types
from typing import Any

from .future import Future
from .node import Node
from .process import Process


@types.coroutine
def _from_process(proc: Process, server: Any, message: tuple, timeout: float | None) -> Any:
    # A generator rather than an async def: one frame less on every call from a process.
    value = yield from proc.call(server, message, timeout)
    if isinstance(value, Exception):  # the server answers a failure with the exception
        try:
            raise value
        finally:
            # The traceback holds this frame; without this reference to the exception
            # there is no cycle, and refcounting frees them both (not the collector).
            del value
    return value


def _from_outside(node: Node, server: Any, message: tuple, timeout: float | None) -> Future:
    answer = Future()

    def done(call: Future) -> None:
        exc = call.exception()
        value = None if exc is not None else call.result()
        if exc is None and isinstance(value, Exception):
            exc = value
        if exc is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(value)

    node.call(server, message, timeout).add_done_callback(done)
    return answer


def request(caller: Node | Process, server: Any, message: tuple, timeout: float | None = None) -> Any:
    """Send `message` to `server` and wait for its answer (see the module docstring)."""
    if isinstance(caller, Process):
        return _from_process(caller, server, message, timeout)
    if isinstance(caller, Node):
        return _from_outside(caller, server, message, timeout)
    raise TypeError(f"caller must be the calling process or a Node (from outside), not {caller!r:.200}")


def run_in_process(caller: Node | Process, fn: Any, *args: Any) -> Any:
    """`fn(proc, *args)`, an async function, run in `caller` (a process: the coroutine to
    await) or, from outside (a `Node`), in a new process of that node: a `Future` of its
    result, failed if `fn` raises or the process is stopped before `fn` returns."""
    if isinstance(caller, Process):
        return fn(caller, *args)
    if isinstance(caller, Node):
        answer = Future()
        caller.spawn(_run_for, answer, fn, *args)
        return answer
    raise TypeError(f"caller must be the calling process or a Node (from outside), not {caller!r:.200}")


async def _run_for(proc: Process, answer: Future, fn: Any, *args: Any) -> None:
    try:
        answer.set_result(await fn(proc, *args))
    except BaseException as exc:  # an exit signal too: the waiting caller must hear of it
        if not answer.done():
            answer.set_exception(exc if isinstance(exc, Exception) else RuntimeError(
                f"the process running {getattr(fn, '__qualname__', fn)} was stopped"))
        raise
