"""The gateway as a simulated system (scenarios name it `gateway`, or `"apps.gateway.sim:GatewaySystem"`).

Node "edge" runs the gateway and its clients (their connections: a client there is what
a device's connection process would be); it is spared by random process and node faults
(its disk and its links are not), and the scenario kills its parts on purpose. Behind it,
each on its own LMDB-backed node, three of the other case studies: "video" (the
recommendations route), "social" (home timelines) and "shop" (stock levels). A writer
posts tweets, so timelines change. Clients ask random routes for random users and skus,
each request with its deadline (`budget` from its start); one greedy client goes well
over its rate. A client whose front died retries at once with the same deadline.

Checks:
- always: every request was answered (live, fallback, or a clear refusal) within the
  budget, in simulated time; every cached answer is one the route gave live for that
  argument before, and every default is the route's default; a client within its rate
  is never refused, and the greedy one gets no more than its bucket allows (plus what a
  restart of the gateway's parts can give back);
- eventually: every route's circuit breaker is closed; some breaker opened during the
  run (the scenario's outages make sure), and after its last refusal by an open circuit
  each route answered live again.
"""
from __future__ import annotations

from typing import Any

from actors import CallExit, CallTimeout, Node, NoProc, packb
from sim.schema import Field
from sim.system import System, check
from storage import StorageError

from apps.common import RETRYABLE, ServerNodes, ServerSystem, top_restarts
from apps.orders import OrderService
from apps.timeline import TimelineConfig, TimelineService, Unavailable as TimelineUnavailable
from apps.video import VideoService

from .config import GatewayConfig, Route
from .errors import GatewayError, RateLimited
from .service import GatewayService

POPULAR = ["top-1", "top-2", "top-3"]  # the recommendations row of last resort
EMPTY_PAGE = [[], None]
SKUS = ["sku0", "sku1", "sku2", "sku3"]
ROUTES = ("recommendations", "timeline", "stock")
RETRY = (*RETRYABLE, TimelineUnavailable, StorageError)


class GatewaySystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "budget": Field.seconds(0.2, 0.01, 60.0, "every request is answered within this"),
        "call_timeout": Field.seconds(0.1, 0.005, 60.0, "a downstream call is given up after this"),
        "margin": Field.seconds(0.05, 0.0, 60.0, "answers leave at the latest this long before the deadline"),
        "reset_timeout": Field.seconds(60.0, 0.1, 3600.0, "an open circuit tries a call again after this"),
        "failure_threshold": Field.int(5, 1, 1000, "consecutive failures that open a circuit"),
        "max_concurrent": Field.int(10, 1, 10_000, "calls in flight per route (the bulkhead)"),
        "per_minute": Field.int(100, 1, 1_000_000, "requests a minute per client (the bucket refills at that rate)"),
        "top_restarts": top_restarts(100),
    }
    workload_options = {
        "clients": Field.int(12, 1, 100_000, "clients within their rate, on node 'edge'"),
        "rate": Field.float(1.0, 0.001, 1000.0, "requests per second per client"),
        "greedy": Field.float(8.0, 0.0, 1000.0, "requests per second of the greedy client (0: none)"),
        "users": Field.int(16, 1, 100_000, "user ids the clients ask about"),
        "posts": Field.float(2.0, 0.0, 1000.0, "tweets per second the writer posts"),
    }

    def setup(self) -> None:
        opts = self.config
        self.gw_config = GatewayConfig(budget=opts["budget"], call_timeout=opts["call_timeout"], margin=opts["margin"],
                                       reset_timeout=opts["reset_timeout"], failure_threshold=opts["failure_threshold"],
                                       max_concurrent=opts["max_concurrent"], rate=opts["per_minute"] / 60.0,
                                       burst=opts["per_minute"])
        self.violations: list[str] = []
        self.live: dict[tuple, dict[bytes, None]] = {}  # (route, arg) -> the answers it gave live
        self.opened_at: dict[str, float] = {}  # route -> its last "circuit_open" answer
        self.live_at: dict[str, float] = {}  # route -> its last live answer
        self.admitted: dict[str, int] = {}  # client -> requests not refused by the rate limit
        self.busy: dict[str, float] = {}  # client -> when its request under way began
        self.started = 0.0
        self.counts = dict.fromkeys(("requests", "live", "cache", "default", "refused", "rate_limited",
                                     "retried", "posts", "late"), 0)
        self.nodes = ServerNodes(self, ["edge", "video", "social", "shop"], self._serve, spared=("edge",))
        self.nodes.add()

    # -- the nodes -----------------------------------------------------------------------------

    def _serve(self, node: Node, store: Any, resolve: Any) -> Any:
        restarts = self.config["top_restarts"]
        if node.name == "video":
            return VideoService(node, store, regions=("eu",), max_restarts=restarts)
        if node.name == "social":
            return TimelineService(node, store, TimelineConfig(nodes=("social",), call_timeout=1.0),
                                   max_restarts=restarts)
        if node.name == "shop":
            return OrderService(node, store, max_restarts=restarts)
        self._start_clients(node)
        return GatewayService(node, store, self._routes(), self.gw_config, max_restarts=restarts)

    def _routes(self) -> list[Route]:
        serving = self.nodes.serving
        return [Route("recommendations", lambda proc, user: serving("video").recommend(proc, user, 10),
                      default=lambda user: POPULAR),
                Route("timeline", lambda proc, user: serving("social").read_page(proc, user),
                      default=lambda user: EMPTY_PAGE),
                Route("stock", lambda proc, sku: serving("shop").stock(proc, sku))]

    def _gateway(self) -> GatewayService:
        return self.nodes.serving("edge")

    # -- clients -------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        self.spawn_clients(node, self.load["clients"] + (self.load["greedy"] > 0), self._device)
        self.spawn_clients(node, 1, self._writer)

    async def _device(self, proc: Any, i: int) -> None:
        """Client `i`; the one after the polite ones is the greedy one."""
        greedy = i == self.load["clients"]
        client, rate = ("greedy", self.load["greedy"]) if greedy else (f"c{i}", self.load["rate"])
        rng = self.sim.stream(f"workload/{client}")
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / rate))
            if not self.workload_on:
                continue
            route = ROUTES[rng.below(len(ROUTES))]
            arg = SKUS[rng.below(len(SKUS))] if route == "stock" else rng.below(self.load["users"])
            await self._request(proc, client, route, arg)

    async def _request(self, proc: Any, client: str, route: str, arg: Any) -> None:
        start = proc.now()
        deadline = start + self.gw_config.budget
        self.busy[client] = start
        self.counts["requests"] += 1
        while True:
            try:
                outcome: Any = await self._gateway().get(proc, client, route, arg, deadline)
            except (CallExit, NoProc):  # the front died or restarts: again at once, same deadline
                if proc.now() < deadline:
                    self.counts["retried"] += 1
                    await proc.sleep(0.001)
                    continue
                outcome = None
            except CallTimeout:
                outcome = None
            except (GatewayError, ValueError) as refusal:
                outcome = refusal
            break
        del self.busy[client]
        took = proc.now() - start
        self.sim.record_latency(f"gateway.{route}", took)
        if outcome is None or took > self.gw_config.budget:
            self.counts["late"] += 1
            self.violations.append(f"{client}: {route}({arg!r}) answered after {took * 1000:.1f} ms "
                                   f"({outcome!r:.100}), budget {self.gw_config.budget * 1000:.0f} ms")
            return
        self._observe(client, route, arg, outcome, proc.now())

    def _observe(self, client: str, route: str, arg: Any, outcome: Any, now: float) -> None:
        if isinstance(outcome, RateLimited):
            self.counts["rate_limited"] += 1
            if client != "greedy":
                self.violations.append(f"{client}, within its rate, was refused: {outcome}")
            return
        self.admitted[client] = self.admitted.get(client, 0) + 1
        if isinstance(outcome, Exception):
            self.counts["refused"] += 1
            return
        self.counts[outcome.source] += 1
        blob = packb(outcome.value)
        if outcome.source == "live":
            self.live.setdefault((route, arg), {})[blob] = None
            self.live_at[route] = now
        elif outcome.source == "cache" and blob not in self.live.get((route, arg), {}):
            self.violations.append(f"{route}({arg!r}) fell back to {outcome.value!r:.100}, never answered live")
        elif outcome.source == "default" and outcome.value != {"recommendations": POPULAR,
                                                                 "timeline": EMPTY_PAGE}.get(route):
            self.violations.append(f"{route}({arg!r}) fell back to default {outcome.value!r:.100}")
        if outcome.reason == "circuit_open":
            self.opened_at[route] = now

    async def _writer(self, proc: Any, _: int) -> None:
        """Users follow the next two; then tweets, now and then (each retried until stored)."""
        rng = self.sim.stream("workload/writer")
        users = self.load["users"]
        for user in range(users):
            for author in ((user + 1) % users, (user + 2) % users):
                if author != user:
                    await self._until_stored(proc, lambda s: s.follow(proc, user, author))
        seq = 0
        while self.load["posts"] > 0:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / self.load["posts"]))
            if self.workload_on:
                seq += 1
                author = rng.below(users)
                await self._until_stored(proc, lambda s: s.post(proc, author, f"tweet {seq}", cid=seq))
                self.counts["posts"] += 1

    async def _until_stored(self, proc: Any, request: Any) -> None:
        while True:
            try:
                await request(self.nodes.serving("social"))
                return
            except RETRY:
                await proc.sleep(0.2)

    # -- checks ---------------------------------------------------------------------------------

    @check("always")
    def answered_within_budget(self) -> str | None:
        """Every request got an answer (live, fallback or a refusal) within the budget,
        and every fallback was real (a cached answer the route gave live before, or the
        route's default); a client within its rate was never refused; no client crashed."""
        for client, began in self.busy.items():
            if self.sim.now - began > self.gw_config.budget + 1.0:  # the client's own timeout lets it go
                return f"{client}'s request of t={began:.3f} is still unanswered"
        return self.violations[0] if self.violations else None

    @check("always")
    def greedy_client_limited(self) -> str | None:
        """The greedy client got no more than its bucket allows: the burst, the refill
        since, and a burst more for each restart on the edge (a restarted front loads the
        buckets of its last checkpoint, up to a second old)."""
        admitted = self.admitted.get("greedy", 0)
        restarts = sum(n for who, n in self.sim.restarts.items() if who.endswith("@edge"))
        cfg = self.gw_config
        allowed = cfg.burst * (1 + restarts) + cfg.rate * self.sim.now
        if admitted > allowed:
            return f"the greedy client got {admitted} requests through, its bucket allows {allowed:.0f}"
        return None

    @check("eventually")
    def breakers_opened_and_closed(self) -> str | None:
        """Some route's circuit opened; every route's circuit is closed now, and each one
        answered live after its last refusal by an open circuit."""
        if not self.opened_at:
            return "no circuit opened (the scenario's outages should open one)"
        gateway = self.nodes.up("edge")
        for route in ROUTES:
            breaker = gateway.breaker(route) if gateway is not None else None
            if breaker is None or breaker[0] != "closed":
                return f"route {route}: its circuit is {breaker and breaker[0]} after the faults stopped"
            if route in self.opened_at and self.live_at.get(route, -1.0) < self.opened_at[route]:
                return f"route {route}: no live answer since its circuit refused a call at {self.opened_at[route]:.3f}"
        return None

    def stats(self) -> dict[str, int]:
        return {**self.counts, "opened_routes": len(self.opened_at)}
