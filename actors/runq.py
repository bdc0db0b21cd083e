"""The run queue, and the one function that makes a process runnable.

Contract:
- A process is runnable while it is in its node's run queue, and `proc._queued` says so;
  it is queued at most once. `make_runnable` is the one function that queues a process
  (the hottest paths, a message's arrival and a call's reply, inline it and say so).
- Real time takes runnable processes in FIFO order. The deterministic driver takes a
  seeded random one, drawing only when there is a choice, so one seed gives one order.
- A real-time node idle on its loop is woken (`node._wake`) by the first process queued.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .node import Node
    from .process import Process


class FifoQueue(deque):
    """The real-time run queue: first queued, first run."""

    take = deque.popleft


class SeededQueue(list):
    """The deterministic run queue: a seeded draw picks the next process."""

    __slots__ = ("rand",)

    def __init__(self, rand: Callable[[], float]) -> None:
        super().__init__()
        self.rand = rand  # only random() repeats across Python versions

    def take(self) -> Any:
        if len(self) == 1:
            return self.pop()  # no choice to make: no draw
        i = int(self.rand() * len(self))
        self[i], self[-1] = self[-1], self[i]
        return self.pop()


def make_runnable(node: Node, proc: Process) -> None:
    """Queue `proc` for a turn unless it is queued already, waking an idle real-time loop."""
    if not proc._queued:
        proc._queued = True
        node._runq.append(proc)
        if node._idle:
            node._wake()
