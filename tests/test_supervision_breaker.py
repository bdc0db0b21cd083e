"""CircuitBreaker on the node clock, driving calls to a flaky process."""
import logging

import pytest

from actors import CallTimeout, GenServer, Node, NoReply
from supervision import CircuitBreaker, CircuitOpen


class Flaky(GenServer):
    """Answers calls while `up[0]`; otherwise never answers (the call times out)."""

    def init(self, up):
        self.up = up

    def handle_call(self, request, caller):
        return request if self.up[0] else NoReply


def call(node, breaker, pid, request):
    return node.run_until_complete(breaker.call(node, pid, request, timeout=1.0))


def transitions(caplog):
    return [r.report for r in caplog.records if getattr(r, "report", "").startswith("circuit_")]


def test_opens_after_consecutive_failures_and_fails_fast(caplog):
    up = [False]
    node = Node(seed=1)
    pid = node.spawn(Flaky, up)
    breaker = CircuitBreaker(node, failure_threshold=3, reset_timeout=10.0, name="flaky")
    for _ in range(3):
        with pytest.raises(CallTimeout):
            call(node, breaker, pid, "x")
    assert breaker.state == "open" and node.now() == 3.0
    with pytest.raises(CircuitOpen) as info:
        call(node, breaker, pid, "x")
    assert info.value.retry_at == 13.0 and node.now() == 3.0  # refused without calling
    assert transitions(caplog) == ["circuit_opened"]


def test_a_success_resets_the_count():
    up = [False]
    node = Node(seed=1)
    pid = node.spawn(Flaky, up)
    breaker = CircuitBreaker(node, failure_threshold=2)
    with pytest.raises(CallTimeout):
        call(node, breaker, pid, "x")
    up[0] = True
    assert call(node, breaker, pid, "ok") == "ok"
    up[0] = False
    with pytest.raises(CallTimeout):
        call(node, breaker, pid, "x")
    assert breaker.state == "closed" and breaker.failure_count == 1


def test_half_open_trial_closes_or_reopens(caplog):
    caplog.set_level(logging.INFO, "supervision")
    up = [False]
    node = Node(seed=1)
    pid = node.spawn(Flaky, up)
    breaker = CircuitBreaker(node, failure_threshold=1, reset_timeout=5.0)
    with pytest.raises(CallTimeout):
        call(node, breaker, pid, "x")
    node.run_for(5.0)
    with pytest.raises(CallTimeout):  # the trial fails: open again, for another 5 s
        call(node, breaker, pid, "x")
    assert breaker.state == "open"
    node.run_for(4.0)
    with pytest.raises(CircuitOpen):
        call(node, breaker, pid, "x")
    node.run_for(1.0)
    up[0] = True
    assert call(node, breaker, pid, "ok") == "ok"
    assert breaker.state == "closed"
    assert transitions(caplog) == ["circuit_opened", "circuit_half_open", "circuit_opened",
                                   "circuit_half_open", "circuit_closed"]


def test_only_one_trial_at_a_time_from_processes():
    up = [False]
    outcomes = []

    async def client(proc, breaker, server, tag):
        try:
            outcomes.append((tag, await breaker.call(proc, server, tag, timeout=1.0)))
        except (CircuitOpen, CallTimeout) as exc:
            outcomes.append((tag, type(exc).__name__))

    node = Node(seed=1)
    server = node.spawn(Flaky, up)
    breaker = CircuitBreaker(node, failure_threshold=1, reset_timeout=2.0)
    breaker.record_failure()
    node.run_for(2.0)
    up[0] = True
    for tag in ("a", "b", "c"):
        node.spawn(client, breaker, server, tag)
    node.run()
    results = dict(outcomes)
    assert len(results) == 3 and [r for r in results.values() if r == "CircuitOpen"] == ["CircuitOpen"] * 2
    assert sum(1 for tag, r in results.items() if r == tag) == 1  # the trial went through
    assert breaker.state == "closed"


def test_a_lost_trial_frees_its_slot_after_the_reset_timeout():
    node = Node(seed=1)
    breaker = CircuitBreaker(node, failure_threshold=1, reset_timeout=2.0)
    breaker.record_failure()
    node.run_for(2.0)
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # the trial's caller never reports back...
    node.run_for(2.0)
    assert breaker.allow()  # ...so another trial is allowed later
    breaker.record_success()  # a late success while open would change nothing; half-open closes
    assert breaker.state == "closed"


def test_bad_configuration_is_named():
    node = Node(seed=1)
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(node, failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker(node, reset_timeout=float("inf"))
    with pytest.raises(TypeError, match="Node"):
        CircuitBreaker("node")
    with pytest.raises(TypeError, match="exception classes"):
        CircuitBreaker(node, failures=(ValueError, "x"))
