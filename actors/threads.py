"""The thread bridge: a real-time node used from threads other than its loop's.

A node's state belongs to its loop's thread. Other threads (a WSGI worker, a script, a
pykka actor) hand work to that thread with `loop.call_soon_threadsafe` and, for the
blocking calls, wait on a pykka future with a timeout, so a stopped loop fails the
caller instead of hanging it. `start_thread` gives a node a thread and loop of its own.
Calling a blocking bridge function on the node's own thread is refused (it would wait
for itself forever).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable

from .errors import NoProc
from .future import Future

if TYPE_CHECKING:
    from .clock import LoopClock
    from .node import Node

log = logging.getLogger("actors")


class ThreadBridge:
    """The `*_from_thread` calls and `start_thread`; see the module docstring."""

    __slots__ = ("node", "runner", "quit")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runner: threading.Thread | None = None  # start_thread's
        self.quit: asyncio.Event | None = None

    @property
    def clock(self) -> LoopClock:
        clock = self.node._clock
        assert not clock.virtual, "the thread bridge serves real-time nodes only"
        return clock  # type: ignore[return-value]

    def start(self, name: str) -> Node:
        node = self.node
        if node._clock.virtual:
            raise RuntimeError("a deterministic node (seed given) is driven by node.run(), not a thread")
        if self.clock.loop is not None:
            raise RuntimeError(f"{node!r} already runs on a loop")
        ready = threading.Event()

        async def main() -> None:
            async with node:
                self.quit = asyncio.Event()
                ready.set()
                await self.quit.wait()

        def run() -> None:
            try:
                asyncio.run(main())
            finally:
                ready.set()  # also when it failed to start: start_thread must not wait forever

        self.runner = threading.Thread(target=run, name=name, daemon=True)
        self.runner.start()
        ready.wait()
        loop = self.clock.loop
        if loop is None or loop.is_closed():
            raise RuntimeError(f"{node!r} failed to start on its thread (see the log)")
        return node

    def stop(self, timeout: float | None) -> None:
        runner = self.runner
        if runner is None:
            raise RuntimeError(f"{self.node!r} was not started with start_thread()")
        loop = self.clock.loop
        if runner.is_alive() and loop is not None and not loop.is_closed() and self.quit is not None:
            loop.call_soon_threadsafe(self.quit.set)
        runner.join(timeout)
        if runner.is_alive():
            raise TimeoutError(f"{self.node!r} did not stop within {timeout} s")

    def run(self, fn: Callable[..., Any], args: tuple, timeout: float | None) -> Any:
        import pykka

        loop = self.check_foreign_thread("run_from_thread")
        done: Any = pykka.ThreadingFuture()

        def finish(fut: Future) -> None:
            exc = fut.exception()
            if exc is None:
                done.set(fut.result())
            else:
                done.set_exception((type(exc), exc, exc.__traceback__))

        def start() -> None:
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception((type(exc), exc, exc.__traceback__))
                return
            if isinstance(value, Future):
                value.add_done_callback(finish)
            else:
                done.set(value)

        loop.call_soon_threadsafe(start)
        try:
            return done.get(timeout=timeout)
        except pykka.Timeout:
            raise TimeoutError(f"{getattr(fn, '__name__', fn)!r} did not finish on {self.node!r} "
                               f"within {timeout} s") from None

    def send(self, dest: Any, msg: Any) -> None:
        self.check_foreign_thread("send_from_thread").call_soon_threadsafe(self.send_or_log, dest, msg)

    def send_or_log(self, dest: Any, msg: Any) -> None:
        try:
            self.node.send(dest, msg)
        except NoProc:
            log.warning("send_from_thread to %r: no such process; message dropped", dest)

    def cast(self, dest: Any, msg: Any) -> None:
        self.check_foreign_thread("cast_from_thread").call_soon_threadsafe(self.node.cast, dest, msg)

    def check_foreign_thread(self, what: str) -> asyncio.AbstractEventLoop:
        """The node's loop, for a caller on another thread; refuses the node's own thread."""
        clock = self.node._clock
        loop = None if clock.virtual else self.clock.loop
        if loop is None:
            raise RuntimeError(f"{what} needs a real-time node attached to a running loop")
        if loop.is_closed():
            raise RuntimeError(f"{what}: {self.node!r} has stopped (its loop is closed)")
        if threading.get_ident() == self.clock.thread:
            raise RuntimeError(f"{what} called on the node's own thread would deadlock; "
                               "use node.call / node.send there")
        return loop
