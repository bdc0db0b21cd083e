"""CircuitBreaker: stop calling a flaky process for a while instead of piling up timeouts.

    breaker = CircuitBreaker(node, failure_threshold=5, reset_timeout=10.0, name="payments")
    try:
        receipt = await breaker.call(self, payments, ("charge", order))
    except CircuitOpen:
        ...                                   # fail fast: the service is known to be down

Three states, on the node clock (Hystrix's and Akka's circuit breaker, with Akka's
counting: `failure_threshold` consecutive failures, not an error rate):

- closed: calls go through; a failure (by default `CallTimeout`, `CallExit`, `NoProc`)
  adds to a count that any success resets. At `failure_threshold` it opens.
- open: calls fail at once with `CircuitOpen` until `reset_timeout` seconds have passed.
- half-open: one trial call goes through; its success closes the circuit, its failure
  opens it again for another `reset_timeout`. Other calls meanwhile get `CircuitOpen`; a
  trial that never reports (its caller died) frees the slot after `reset_timeout`.

A breaker is a plain object owned by the process(es) that call through it (on one node,
so state changes never race). Transitions are logged on logger "supervision" with
`extra={"report": "circuit_opened" | "circuit_half_open" | "circuit_closed", "circuit":
name, "failures": count}`. `allow()`, `record_success()` and `record_failure()` drive
it by hand around anything that is not a call.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from actors import CallExit, CallTimeout, Future, Node, NoProc, Process

from .errors import CircuitOpen

log = logging.getLogger("supervision")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """See the module docstring."""

    def __init__(self, node: Node, *, failure_threshold: int = 5, reset_timeout: float = 30.0,
                 failures: tuple[type[BaseException], ...] = (CallTimeout, CallExit, NoProc),
                 name: Any = None) -> None:
        if not isinstance(node, Node):
            raise TypeError(f"CircuitBreaker needs the Node whose clock it runs on, not {node!r:.200}")
        if type(failure_threshold) is not int or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if type(reset_timeout) not in (int, float) or not (reset_timeout > 0 and math.isfinite(reset_timeout)):
            raise ValueError(f"reset_timeout must be a positive number of seconds, got {reset_timeout!r}")
        if not (isinstance(failures, tuple) and failures
                and all(isinstance(f, type) and issubclass(f, BaseException) for f in failures)):
            raise TypeError(f"failures must be a non-empty tuple of exception classes, got {failures!r}")
        self.node = node
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.failures = failures
        self.name = name
        self.state = CLOSED
        self.failure_count = 0
        self._until = 0.0  # open: when a trial is allowed; half-open: when the trial slot frees

    def allow(self) -> bool:
        """May a call go through now? In half-open this takes the trial slot."""
        if self.state == CLOSED:
            return True
        now = self.node.now()
        if now < self._until:
            return False
        if self.state == OPEN:
            self._move(HALF_OPEN)
        self._until = now + self.reset_timeout
        return True

    def record_success(self) -> None:
        """A call succeeded: reset the count, and close a half-open circuit. (A late
        success while open changes nothing: the trial decides.)"""
        if self.state == OPEN:
            return
        if self.state == HALF_OPEN:
            self._move(CLOSED)
        self.failure_count = 0

    def record_failure(self) -> None:
        """A call failed: count it; open at the threshold, or again if half-open."""
        self.failure_count += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failure_count >= self.failure_threshold):
            self._until = self.node.now() + self.reset_timeout
            self._move(OPEN)

    def call(self, caller: Node | Process, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """Call `dest` through the breaker: a coroutine from a process, a Future from
        outside. Raises `CircuitOpen` (at once) when the circuit refuses the call."""
        if isinstance(caller, Process):
            return self._call_from(caller, dest, request, timeout)
        if not isinstance(caller, Node):
            raise TypeError(f"caller must be the calling process or a Node, not {caller!r:.200}")
        answer = Future()
        if not self.allow():
            answer.set_exception(CircuitOpen(self.name, self._until))
            return answer

        def done(call: Future) -> None:
            exc = call.exception()
            if exc is None:
                self.record_success()
                answer.set_result(call.result())
                return
            if isinstance(exc, self.failures):
                self.record_failure()
            answer.set_exception(exc)

        caller.call(dest, request, timeout).add_done_callback(done)
        return answer

    async def _call_from(self, proc: Process, dest: Any, request: Any, timeout: float | None) -> Any:
        if not self.allow():
            raise CircuitOpen(self.name, self._until)
        try:
            result = await proc.call(dest, request, timeout)
        except self.failures:
            self.record_failure()
            raise
        self.record_success()
        return result

    def _move(self, state: str) -> None:
        assert state != self.state
        self.state = state
        kind = {OPEN: "circuit_opened", HALF_OPEN: "circuit_half_open", CLOSED: "circuit_closed"}[state]
        log.log(logging.WARNING if state == OPEN else logging.INFO,
                "circuit %r is %s (%d consecutive failures)", self.name, state, self.failure_count,
                extra={"report": kind, "circuit": self.name, "failures": self.failure_count})
