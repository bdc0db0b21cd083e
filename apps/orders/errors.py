"""What the order service and the payment provider answer with; the client API raises them.

A small vocabulary: `BadRequest` (wrong input, or an idempotency key reused with other
parameters: nothing was stored and a retry cannot help), `NotFound`, `OutOfStock`,
`VersionConflict` (an optimistic write lost the race: read again and retry),
`ReservationExpired`, `Declined` (the payment provider refused the charge), `ShipFailed`
(the carrier refused the shipment) and `Unavailable` (a process the request needs cannot
answer now: retry with the same ids, which is always safe).
"""
from __future__ import annotations

from typing import Any


class OrderError(Exception):
    """Base class of every order and payment error."""


class BadRequest(OrderError, ValueError):
    """The request is wrong; nothing was stored."""


class NotFound(OrderError, LookupError):
    """No such order (or charge)."""


class OutOfStock(OrderError):
    """Fewer items of `sku` are available than the order asks for."""

    def __init__(self, sku: Any, wanted: int, available: int) -> None:
        super().__init__(f"sku {sku!r}: {wanted} wanted, {available} available")
        self.sku, self.wanted, self.available = sku, wanted, available


class VersionConflict(OrderError):
    """A write conditioned on `expected` found the stock at `version`: read again, retry."""

    def __init__(self, sku: Any, expected: int, version: int) -> None:
        super().__init__(f"sku {sku!r} is at version {version}, not {expected}")
        self.sku, self.expected, self.version = sku, expected, version


class ReservationExpired(OrderError):
    """The order's hold on `sku` lapsed before it was committed."""


class Declined(OrderError):
    """The payment provider refused the charge; `code` says why (Stripe's decline codes)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"payment declined: {code}")
        self.code = code


class ShipFailed(OrderError):
    """The carrier refused the shipment (an address it does not deliver to)."""


class Unavailable(OrderError):
    """Cannot answer now; retry (with the same order id, idempotency key...)."""
