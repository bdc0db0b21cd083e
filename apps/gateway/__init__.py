"""A Netflix-style API gateway (Zuul with Hystrix) as a supervision tree in front of
the other case studies: per-client rate limits, routes with a circuit breaker and a
bulkhead each, fallbacks to the last good answer or a default, and a latency budget
every request is answered within.

Modules: `config` (numbers, routes, the token bucket), `errors`, `front` (rate limits,
routing, deadlines, fallbacks), `pool` (one per route: breaker, bulkhead, calls as
processes), `cache` (the fallback answers), `service` (the tree and the API), `sim` (the
simulated system for scenarios).
"""
from .config import GatewayConfig, Route
from .errors import GatewayError, Overloaded, RateLimited, Unavailable, UnknownRoute
from .front import Answer
from .service import GatewayService

__all__ = ["Answer", "GatewayConfig", "GatewayError", "GatewayService", "Overloaded", "RateLimited", "Route",
           "Unavailable", "UnknownRoute"]
