"""The gateway's numbers and its routes.

The seeds give the rate limit (100 requests a minute per client), the circuit breaker
(open after 5 consecutive failures, try again after 60 s) and the latency target (API
answers within 200 ms). The bulkhead is Hystrix's default thread pool: 10 calls at once
per dependency.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from apps.common import check_limits


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    budget: float = 0.2
    """Every request is answered within this many seconds of its deadline's start."""
    call_timeout: float = 0.1
    """A downstream call is given up after this (Hystrix's execution timeout)."""
    margin: float = 0.05
    """A request is answered at the latest this long before its deadline (room for a
    retried request, a slow commit on the gateway's node)."""
    rate: float = 100 / 60
    """Tokens per second refilled into each client's bucket."""
    burst: int = 100
    """A client's bucket holds this many tokens (requests in a burst)."""
    failure_threshold: int = 5
    reset_timeout: float = 60.0
    max_concurrent: int = 10
    """Calls in flight per route (the bulkhead); more get the fallback, or `Overloaded`."""
    cache_entries: int = 1_000
    """Last good answers kept per route, for fallbacks."""
    checkpoint_every: float = 1.0
    """Seconds between two saves of the rate-limit buckets."""
    max_clients: int = 100_000
    max_pending: int = 10_000

    def __post_init__(self) -> None:
        check_limits(self, ints=("burst", "failure_threshold", "max_concurrent", "cache_entries", "max_clients",
                                 "max_pending"),
                     seconds=("budget", "call_timeout", "margin", "rate", "reset_timeout", "checkpoint_every"))
        if self.call_timeout + self.margin > self.budget:
            raise ValueError(f"GatewayConfig: call_timeout ({self.call_timeout}) + margin ({self.margin}) "
                             f"exceeds the budget ({self.budget})")


Fetch = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """One downstream: `fetch(proc, arg)` makes the call from a process of the gateway
    (a coroutine: e.g. `lambda proc, user: videos.recommend(proc, user, 10)`); `default(arg)`
    is the answer of last resort (Netflix's non-personalised row), None for none; `cache`
    keeps the last good answer per arg for fallbacks; `max_concurrent` overrides the
    config's bulkhead."""

    name: str
    fetch: Fetch
    default: Callable[[Any], Any] | None = None
    cache: bool = True
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= 64:
            raise ValueError(f"a route name is a non-empty str of at most 64 characters, got {self.name!r:.100}")
        if not callable(self.fetch) or (self.default is not None and not callable(self.default)):
            raise TypeError(f"route {self.name}: fetch (and default, if given) must be callables")
        if self.max_concurrent is not None and (type(self.max_concurrent) is not int or self.max_concurrent < 1):
            raise ValueError(f"route {self.name}: max_concurrent must be a positive int, got {self.max_concurrent!r}")


def take(bucket: list | None, now: float, rate: float, burst: int) -> tuple[bool, list, float]:
    """Token bucket: `bucket` is `[tokens, at]` (None: a full one). Returns whether one
    token was taken, the bucket after, and the seconds until a token is there if not."""
    tokens, at = (float(burst), now) if bucket is None else bucket
    tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
    if tokens >= 1.0:
        return True, [tokens - 1.0, now], 0.0
    return False, [tokens, now], (1.0 - tokens) / rate


def refilled(bucket: list, now: float, rate: float, burst: int) -> bool:
    """Whether `bucket` is full again by `now` (a full bucket need not be kept)."""
    return bucket[0] + max(0.0, now - bucket[1]) * rate >= burst
