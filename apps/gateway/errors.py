"""What the gateway answers with when it has no answer to give; the client API raises them."""
from __future__ import annotations


class GatewayError(Exception):
    """Base class of every gateway error."""


class UnknownRoute(GatewayError, ValueError):
    """No route of that name (HTTP's 404); nothing was sent anywhere."""


class RateLimited(GatewayError):
    """The client is over its rate (HTTP's 429): `retry_after` seconds until it may send again."""

    def __init__(self, client: object, retry_after: float) -> None:
        super().__init__(f"client {client!r:.100} is over its rate limit; retry after {retry_after:.3f} s")
        self.client, self.retry_after = client, retry_after


class Overloaded(GatewayError):
    """The route's bulkhead is full and it has no fallback (HTTP's 503): shed load."""


class Unavailable(GatewayError):
    """The route's dependency failed (or its circuit is open) and it has no fallback."""
