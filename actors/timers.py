"""The node's timer heap: `(deadline, seq, timer)` entries, ties broken by a counter.

Cancelling only marks a timer; the heap is rebuilt once cancelled entries outnumber live
ones, so timers cancelled early (receive and call timeouts) cost O(log n) each and the
heap never holds more than twice the live timers.
"""
from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any, Callable

# Rebuilding is O(n); below this many dead entries it is cheaper to let them expire.
_COMPACT_MIN = 1024


class Timer:
    """One armed timer. `fire()` runs `action(*args)`; `ref` is what `cancel_timer` takes."""

    __slots__ = ("deadline", "action", "args", "cancelled", "ref")

    def __init__(self, deadline: float, action: Callable[..., Any], args: tuple, ref: Any) -> None:
        self.deadline = deadline
        self.action = action
        self.args = args
        self.cancelled = False
        self.ref = ref


class TimerHeap:
    __slots__ = ("_heap", "_seq", "_dead", "limit")

    def __init__(self, limit: int) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._dead = 0
        self.limit = limit

    def __len__(self) -> int:
        return len(self._heap) - self._dead

    def add(self, deadline: float, action: Callable[..., Any], args: tuple, ref: Any = None) -> Timer:
        if len(self._heap) - self._dead >= self.limit:
            raise OverflowError(f"timer limit of {self.limit} live timers reached")
        timer = Timer(deadline, action, args, ref)
        self._seq += 1
        heappush(self._heap, (deadline, self._seq, timer))
        return timer

    def cancel(self, timer: Timer) -> None:
        if timer.cancelled:
            return
        timer.cancelled = True
        self._dead += 1
        if self._dead > _COMPACT_MIN and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[2].cancelled]
            heapify(self._heap)
            self._dead = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Timer | None:
        """Remove and return the earliest live timer due at or before `now`, else None."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heappop(heap)[2]
            if timer.cancelled:
                self._dead -= 1
                continue
            timer.cancelled = True  # fired: a later cancel_timer must report False
            return timer
        return None
