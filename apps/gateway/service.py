"""The gateway service: its supervision tree and the client API.

    routes = [Route("recommendations", lambda proc, user: videos.recommend(proc, user, 10), default=lambda user: []),
              Route("timeline", lambda proc, user: timelines.read_page(proc, user))]
    gateway = GatewayService(node, store, routes, GatewayConfig())
    gateway.start()
    answer = node.run_until_complete(gateway.get(node, "client-1", "recommendations", 42))
    answer.value, answer.source            # [...], "live" | "cache" | "default"

`get` takes the caller first: a process (it returns a coroutine to await) or the `Node`
from outside (a `Future`). It raises `UnknownRoute` or `ValueError` for bad input before
anything is sent, `RateLimited`, `Overloaded` or `Unavailable` when the gateway has no
answer to give, the dependency's own refusal of a bad request, and `CallExit` / `NoProc`
if the front died or is restarting (retry at once, with the same `deadline`).

Tree (one_for_one: each part restarts alone; the front never waits on the others):

    gateway_sup
    ├─ gateway.cache    FallbackCache: the last good answers (node table + LMDB)
    ├─ gateway.limits   Limits: the saved rate-limit buckets (LMDB)
    ├─ gateway.pools    Supervisor of one Pool per route ("gateway.pool.NAME"): the
    │                   route's circuit breaker and bulkhead; each call is a process
    └─ gateway.front    Front: rate limits, routing, deadlines, fallbacks
"""
from __future__ import annotations

from typing import Any

from actors import Node, Process
from supervision import ChildSpec, Flags, Supervisor

from apps.common import TreeService, check_id

from .cache import NAME as CACHE, FallbackCache
from .config import GatewayConfig, Route
from .errors import UnknownRoute
from .front import LIMITS, LIMITS_KEY, Answer, Front, Limits
from .pool import Pool, breaker_of, pool_name

FRONT = "gateway.front"
MAX_ROUTES = 100


class GatewayService(TreeService):
    """The API; see the module docstring."""

    name = "gateway_sup"

    def __init__(self, node: Node, store: Any, routes: list[Route], config: GatewayConfig | None = None, *,
                 max_restarts: int = 100) -> None:
        if not isinstance(routes, (list, tuple)) or not 0 < len(routes) <= MAX_ROUTES \
                or not all(isinstance(r, Route) for r in routes):
            raise ValueError(f"routes must be 1..{MAX_ROUTES} Route objects, got {routes!r:.200}")
        by_name = {r.name: r for r in routes}
        if len(by_name) != len(routes):
            raise ValueError(f"route names must be distinct, got {[r.name for r in routes]}")
        super().__init__(node, store, max_restarts)
        self.routes = by_name
        self.config = config or GatewayConfig()

    def children(self) -> list[ChildSpec]:
        cfg, store = self.config, self.store
        pools = [ChildSpec(name, Pool, args=(route, cfg), options={"name": pool_name(name), "trap_exit": True})
                 for name, route in self.routes.items()]
        return [
            ChildSpec("cache", FallbackCache, args=(store, ("gateway", "cache"), cfg.cache_entries),
                      options={"name": CACHE}),
            ChildSpec("limits", Limits, args=(store, LIMITS_KEY), options={"name": LIMITS}),
            ChildSpec("pools", Supervisor, args=(pools, Flags("one_for_one", 100, 5.0)),
                      options={"name": "gateway.pools"}),
            ChildSpec("front", Front, args=(store, cfg, self.routes), options={"name": FRONT}),
        ]

    def get(self, caller: Node | Process, client: Any, route: str, arg: Any, deadline: float | None = None) -> Any:
        """Ask route `route` for `arg` on behalf of `client`: an `Answer`, within the
        budget (by `deadline`, in the node's time, when given: a retry keeps its first)."""
        check_id(client, "client id")
        if route not in self.routes:
            raise UnknownRoute(f"no route {route!r:.100}; routes: {', '.join(self.routes)}")
        check_id(arg, f"route {route} argument")
        now = caller.now()
        if deadline is None:
            deadline = now + self.config.budget
        elif type(deadline) not in (int, float) or not now - 3600 < deadline < now + 3600:
            raise ValueError(f"deadline must be a time of the node's clock, within an hour, got {deadline!r}")
        return self._call(caller, FRONT, ("get", client, route, arg, deadline), max(deadline - now, 1e-6))

    def breaker(self, route: str) -> tuple[str, int, int] | None:
        """(state, times opened, times closed) of the route's circuit breaker on this node,
        read without a message; None while its pool restarts (counts start over then)."""
        if route not in self.routes:
            raise UnknownRoute(f"no route {route!r:.100}")
        return breaker_of(self.node, route)

    def stats(self, caller: Node | Process, route: str | None = None) -> Any:
        """The front's counters, or with `route` its pool's (calls, ok, errors, timeouts,
        overloaded, short_circuited, opened, closed, state, inflight)."""
        if route is None:
            return self._call(caller, FRONT, ("stats",))
        if route not in self.routes:
            raise UnknownRoute(f"no route {route!r:.100}")
        return self._call(caller, pool_name(route), ("stats",))


