"""The node's clock strategy: virtual time driven step by step, or an asyncio loop.

Both drivers run the same core (`actors.scheduler`); only the clock and what wakes the
scheduler differ:

- `VirtualClock` (`Node(seed=...)`): time moves only when the driver moves it. `run`,
  `run_for` and `run_until_complete` jump the clock to the next timer whenever nothing is
  runnable; a simulation of several nodes moves each clock itself with `step`/`advance`.
  Nothing is ever scheduled on a loop.
- `LoopClock` (`Node()`): the loop's monotonic time. Attached to a running loop, the
  node runs in ticks of at most 4096 turns scheduled with `call_soon`, then yields so
  sockets and tasks get their turn; when idle, one `call_at` wakes it for its next
  timer, and the first process made runnable schedules a tick (`node._wake`).

Contract: `now()` never goes back; the deterministic driver never reads the wall clock.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .future import Future
    from .node import Node


class VirtualClock:
    """Virtual time for the deterministic driver; see the module docstring."""

    virtual = True
    __slots__ = ("node", "time")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.time = 0.0

    def now(self) -> float:
        return self.time

    def timer_added(self) -> None:
        """Nothing to arm: the driver asks for the next deadline itself."""

    def run(self, until: float | None, max_turns: int | None) -> int:
        return self.drive(lambda: False, until, max_turns)

    def run_until_complete(self, fut: Future, max_turns: int | None) -> Any:
        self.drive(fut.done, None, max_turns, chunk=1)
        if not fut.done():
            raise RuntimeError(f"node went idle before the future completed (virtual time {self.time})")
        return fut.result()

    def drive(self, done: Callable[[], bool], until: float | None, max_turns: int | None,
              chunk: int = 1024) -> int:
        node = self.node
        budget = max_turns if max_turns is not None else sys.maxsize
        turns = 0
        while not done() and turns < budget:
            if node._runq:
                turns += node._scheduler.run_ready(min(chunk, budget - turns))
                continue
            deadline = node.next_deadline()
            if deadline is None or (until is not None and deadline > until):
                break
            self.time = max(self.time, deadline)
            node._scheduler.fire_due(self.time)
        if until is not None and self.time < until and not node._runq and not done():
            self.time = until
        return turns

    def advance(self, now: float) -> None:
        assert now >= self.time, f"virtual time cannot go back ({now} < {self.time})"
        self.time = now
        self.node._scheduler.fire_due(now)


class LoopClock:
    """Real time on an asyncio loop; see the module docstring."""

    virtual = False
    __slots__ = ("node", "loop", "thread", "tick_handle", "timer_handle", "timer_at")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: int | None = None  # the loop's thread
        self.tick_handle: Any = None
        self.timer_handle: Any = None
        self.timer_at: float | None = None

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        node = self.node
        self.loop = loop
        node.now = loop.time  # type: ignore[method-assign]  # now() from here on: one call less
        self.thread = threading.get_ident()
        node._idle = True
        if node._runq:
            self.schedule_tick()
        self.arm_timer_wakeup()

    def schedule_tick(self) -> None:
        """`node._wake`: the idle node got a runnable process."""
        if self.loop is not None:
            self.node._idle = False
            self.tick_handle = self.loop.call_soon(self.tick)

    def tick(self) -> None:
        node = self.node
        loop = self.loop
        assert loop is not None, "ticks run on the attached loop"
        self.tick_handle = None
        try:
            node._scheduler.fire_due(loop.time())
            node._scheduler.run_ready(4096)  # then yield to the loop so sockets and tasks run
        finally:  # even a kernel bug must not leave the node never ticking again
            if node._runq:
                self.tick_handle = loop.call_soon(self.tick)
            else:
                node._idle = True
                self.arm_timer_wakeup()

    def timer_added(self) -> None:
        """A timer was added while the node is idle: it may be the next to fire."""
        if self.loop is not None:
            self.arm_timer_wakeup()

    def arm_timer_wakeup(self) -> None:
        deadline = self.node.next_deadline()
        if deadline == self.timer_at:
            return
        if self.timer_handle is not None:
            self.timer_handle.cancel()
            self.timer_handle = None
        self.timer_at = deadline
        if deadline is not None and self.loop is not None:
            self.timer_handle = self.loop.call_at(deadline, self.on_timer_wakeup)

    def on_timer_wakeup(self) -> None:
        self.timer_handle = None
        self.timer_at = None
        if self.node._idle:
            self.node._idle = False
            self.tick()
