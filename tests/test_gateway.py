"""The API gateway on the deterministic driver with a real LMDB store, in front of a
dependency the tests steer (answers, fails, is slow, refuses, is gone) and of the order
service: routing, rate limits, the circuit breaker, the bulkhead, deadlines, fallbacks,
crashes of the gateway's own parts, and bad input."""
from __future__ import annotations

import pytest

from actors import CallExit, GenServer, Node, NoReply
from apps.gateway import (Answer, GatewayConfig, GatewayService, RateLimited, Route, Unavailable,
                          UnknownRoute)
from apps.orders import OrderService
from storage import Store
from supervision.client import request

DEFAULT = {"title": None}


class Catalog(GenServer):
    """The dependency: answers `("get", arg)` per its mode: "ok", "fail" (an error),
    "refuse" (a bad request), "slow" (after `delay` seconds)."""

    def init(self) -> None:
        self.mode, self.delay, self.version, self.calls = "ok", 0.0, 1, 0

    def handle_call(self, req, caller):
        if req[0] == "mode":
            self.mode, self.delay, self.version = req[1], req[2], self.version + 1
            return "ok"
        self.calls += 1
        if self.mode == "fail":
            return RuntimeError("catalog failed")
        if self.mode == "refuse":
            return ValueError(f"no title {req[1]!r}")
        answer = {"title": req[1], "version": self.version}
        if self.mode == "slow":
            self.send_after(self.delay, self.pid, ("$reply", caller, answer))
            return NoReply
        return answer

    def handle_info(self, msg):
        self.reply(msg[1], msg[2])


def fetch(proc, arg):
    return request(proc, "catalog", ("get", arg), 5.0)


class Edge:
    def __init__(self, path, *, default=True, cache=True, clock=0.0, creation=0, **config):
        self.node = Node(seed=1, creation=creation)
        self.node.advance(clock)
        self.store = Store(path, self.node, mode="process")
        self.catalog = self.node.spawn(Catalog, name="catalog")
        route = Route("titles", fetch, default=(lambda arg: DEFAULT) if default else None, cache=cache)
        self.config = GatewayConfig(**{"reset_timeout": 1.0, "failure_threshold": 3, **config})
        self.gateway = GatewayService(self.node, self.store, [route], self.config)
        self.gateway.start()

    def run(self, fut):
        return self.node.run_until_complete(fut)

    def get(self, arg, client="c1", deadline=None):
        return self.run(self.gateway.get(self.node, client, "titles", arg, deadline))

    def mode(self, mode, delay=0.0):
        self.run(self.node.call(self.catalog, ("mode", mode, delay)))

    def calls(self):
        return self.node.get_process(self.catalog).calls


@pytest.fixture
def edge(tmp_path):
    edge = Edge(tmp_path / "edge")
    yield edge
    edge.store.close()


def test_a_request_is_routed_and_answered_live(edge):
    assert edge.get(7) == Answer("titles", {"title": 7, "version": 1}, "live", None)
    assert edge.gateway.breaker("titles") == ("closed", 0, 0)
    stats = edge.run(edge.gateway.stats(edge.node, "titles"))
    assert (stats["calls"], stats["ok"], stats["state"], stats["inflight"]) == (1, 1, "closed", 0)


def test_a_failing_dependency_opens_the_circuit_falls_back_and_closes_again(edge):
    edge.get(1)  # a good answer to fall back on
    edge.mode("fail")
    for _ in range(3):  # the threshold: 3 consecutive failures
        assert edge.get(1) == Answer("titles", {"title": 1, "version": 1}, "cache", "error")
    assert edge.gateway.breaker("titles") == ("open", 1, 0)
    calls = edge.calls()
    assert edge.get(1).reason == "circuit_open" and edge.get(2) == Answer("titles", DEFAULT, "default", "circuit_open")
    assert edge.calls() == calls  # an open circuit sends nothing
    edge.node.run_for(1.0)
    assert edge.get(1).reason == "error"  # the trial call failed: open again
    assert edge.gateway.breaker("titles") == ("open", 2, 0) and edge.calls() == calls + 1
    edge.mode("ok")
    edge.node.run_for(1.0)
    assert edge.get(1) == Answer("titles", {"title": 1, "version": 3}, "live", None)  # the trial succeeded
    assert edge.gateway.breaker("titles") == ("closed", 2, 1)


def test_a_slow_dependency_is_answered_by_the_fallback_within_the_budget(edge):
    edge.get(1)
    edge.mode("slow", 1.0)
    start = edge.node.now()
    answer = edge.get(1)
    assert answer.source == "cache" and answer.reason == "timeout"
    assert edge.node.now() - start == pytest.approx(edge.config.call_timeout)
    stats = edge.run(edge.gateway.stats(edge.node, "titles"))
    assert stats["timeouts"] == 1 and stats["inflight"] == 0  # the call was given up, and its process killed


def test_the_bulkhead_sheds_what_it_cannot_hold(tmp_path):
    edge = Edge(tmp_path / "edge", default=False, cache=False, max_concurrent=2)
    edge.mode("slow", 1.0)
    futures = [edge.gateway.get(edge.node, f"c{i}", "titles", i) for i in range(5)]
    edge.node.run_for(0.5)
    errors = [type(fut.exception()).__name__ for fut in futures]
    assert errors == ["Unavailable", "Unavailable", "Overloaded", "Overloaded", "Overloaded"]
    assert "too many calls in flight" in str(futures[2].exception())
    edge.store.close()


def test_an_overloaded_route_with_a_fallback_answers_with_it(tmp_path):
    edge = Edge(tmp_path / "edge", max_concurrent=1)
    edge.mode("slow", 1.0)
    first, second = (edge.gateway.get(edge.node, f"c{i}", "titles", i) for i in range(2))
    edge.node.run_for(0.5)
    assert (first.result().reason, second.result()) == ("timeout", Answer("titles", DEFAULT, "default", "overloaded"))
    edge.store.close()


def test_a_refusal_by_the_dependency_reaches_the_client_and_counts_no_failure(edge):
    edge.mode("refuse")
    for _ in range(5):
        with pytest.raises(ValueError, match="no title 3"):
            edge.get(3)
    assert edge.gateway.breaker("titles") == ("closed", 0, 0)


def test_each_client_has_its_own_token_bucket(tmp_path):
    edge = Edge(tmp_path / "edge", burst=3, rate=1.0)
    for _ in range(3):
        edge.get(1)
    with pytest.raises(RateLimited, match="client 'c1' is over its rate limit") as refused:
        edge.get(1)
    assert refused.value.retry_after == pytest.approx(1.0)
    assert edge.get(1, client="c2").source == "live"  # another client is not affected
    edge.node.run_for(1.0)
    assert edge.get(1).source == "live"  # one token came back
    with pytest.raises(RateLimited):
        edge.get(1)
    edge.store.close()


def test_a_request_with_no_time_left_gets_its_fallback_at_once(edge):
    calls = edge.calls()
    answer = edge.get(5, deadline=edge.node.now() + edge.config.margin)
    assert answer == Answer("titles", DEFAULT, "default", "timeout") and edge.calls() == calls


def test_a_killed_front_fails_its_callers_at_once_and_keeps_the_buckets(tmp_path):
    edge = Edge(tmp_path / "edge", burst=3, rate=0.1)
    node = edge.node
    for _ in range(3):
        edge.get(1, client="greedy")
    node.run_for(1.5)  # a checkpoint saved the empty bucket
    edge.mode("slow", 1.0)
    deadline = node.now() + edge.config.budget
    waiting = edge.gateway.get(node, "c2", "titles", 1, deadline)
    node.run_for(0.01)
    assert not waiting.done()
    node.exit(node.whereis("gateway.front"), "kill")
    with pytest.raises(CallExit):
        edge.run(waiting)
    node.run_for(0.001)  # its supervisor restarts it
    assert edge.get(1, client="c2", deadline=deadline).reason == "timeout"  # the retry keeps its deadline
    assert node.now() <= deadline
    with pytest.raises(RateLimited):  # the restarted front loaded the saved buckets
        edge.get(1, client="greedy")
    edge.store.close()


def test_requests_whose_pool_died_are_answered_at_their_deadline(edge):
    edge.get(1)
    edge.mode("slow", 1.0)
    start = edge.node.now()
    waiting = edge.gateway.get(edge.node, "c1", "titles", 1)
    edge.node.run_for(0.01)
    assert not waiting.done()
    edge.node.exit(edge.node.whereis("gateway.pool.titles"), "kill")
    answer = edge.run(waiting)
    assert answer.source == "cache" and answer.reason == "timeout"
    assert edge.node.now() - start == pytest.approx(edge.config.call_timeout)
    assert edge.get(1).reason == "timeout"  # the restarted pool takes calls again


def test_fallback_answers_survive_a_restart_of_the_gateway(tmp_path):
    edge = Edge(tmp_path / "edge", default=False)
    edge.get(1)
    edge.node.run_for(0.1)
    clock = edge.node.now()
    edge.store.crash()
    again = Edge(tmp_path / "edge", default=False, clock=clock, creation=1)
    again.mode("fail")
    assert again.get(1) == Answer("titles", {"title": 1, "version": 1}, "cache", "error")
    with pytest.raises(Unavailable, match="route titles: error, and no fallback for 2"):
        again.get(2)
    again.store.close()


def test_routes_to_a_real_service(tmp_path):
    node = Node(seed=2)
    store = Store(tmp_path / "shop", node, mode="process")
    shop = OrderService(node, store)
    shop.start()
    node.run_until_complete(shop.receive_stock(node, "book", "r1", 4, price=1999))
    gateway = GatewayService(node, store, [Route("stock", lambda proc, sku: shop.stock(proc, sku))])
    gateway.start()
    answer = node.run_until_complete(gateway.get(node, "c1", "stock", "book"))
    assert answer.source == "live" and answer.value["available"] == 4
    node.run_until_complete(shop.stop())
    assert node.run_until_complete(gateway.get(node, "c1", "stock", "book")) == Answer(
        "stock", answer.value, "cache", "error")
    store.close()


def test_bad_input_is_refused_before_anything_is_sent(edge):
    node, gateway = edge.node, edge.gateway
    calls = edge.calls()
    with pytest.raises(UnknownRoute, match="no route 'movies'; routes: titles"):
        gateway.get(node, "c1", "movies", 1)
    with pytest.raises(ValueError, match="client id must be"):
        gateway.get(node, "", "titles", 1)
    with pytest.raises(ValueError, match="route titles argument must be"):
        gateway.get(node, "c1", "titles", [1])
    with pytest.raises(ValueError, match="deadline must be a time of the node's clock"):
        gateway.get(node, "c1", "titles", 1, deadline="soon")
    with pytest.raises(UnknownRoute):
        gateway.breaker("movies")
    assert edge.calls() == calls


def test_config_routes_and_service_are_checked():
    with pytest.raises(ValueError, match=r"call_timeout \(0.2\) \+ margin \(0.05\) exceeds the budget \(0.2\)"):
        GatewayConfig(call_timeout=0.2)
    with pytest.raises(ValueError, match="GatewayConfig.burst must be a positive int"):
        GatewayConfig(burst=0)
    with pytest.raises(ValueError, match="a route name is a non-empty str"):
        Route("", fetch)
    with pytest.raises(TypeError, match="must be callables"):
        Route("x", "not a function")
    node = Node(seed=1)
    with pytest.raises(ValueError, match="route names must be distinct"):
        GatewayService(node, None, [Route("a", fetch), Route("a", fetch)])
    with pytest.raises(ValueError, match="routes must be 1..100 Route objects"):
        GatewayService(node, None, [])
