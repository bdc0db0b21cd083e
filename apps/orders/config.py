"""The order service's numbers, and the checks on what clients send.

Money is in integer cents (as payment APIs take it); a sku, customer or order id is what
`apps.common.check_id` accepts; an address is a dict of non-empty strings with at least
"street", "city" and a two-letter "country".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.common import check_id, check_limits

from .errors import BadRequest

MAX_PRICE = 10_000_000  # cents per item
MAX_ORDER_AMOUNT = 100_000_000  # cents per order (a million)
ADDRESS_FIELDS = ("street", "city", "country")
MAX_FIELD = 200


@dataclass(frozen=True, slots=True)
class OrderConfig:
    """How an order's saga runs; the defaults are production numbers."""

    hold: float = 900.0
    """Seconds a reservation holds stock before it lapses (a 15-minute checkout hold)."""
    step_timeout: float = 2.0
    """Timeout of one call to the stock, the carrier or the payment provider."""
    reserve_limit: float = 60.0
    """An order that could not reserve its items by then is cancelled."""
    pay_limit: float = 60.0
    """An order whose charge has no answer by then is cancelled (and its charge voided)."""
    retry_min: float = 0.05
    retry_max: float = 2.0
    """Transient failures are retried after min(retry_max, retry_min * 2**n) * (1 + jitter)."""
    reserve_attempts: int = 50
    """Version conflicts an order takes on one sku before it gives up (heavy contention)."""
    max_lines: int = 50
    max_qty: int = 100
    max_open: int = 100_000
    retention: float = 86_400.0
    """Seconds an order's mark stays on a sku (what makes a late retry harmless)."""
    ship_to: tuple[str, ...] = ("US", "CA", "MX", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "JP", "AU")
    """Countries the carrier delivers to; any other address fails the shipping step."""

    def __post_init__(self) -> None:
        check_limits(self, ints=("reserve_attempts", "max_lines", "max_qty", "max_open"),
                     seconds=("hold", "step_timeout", "reserve_limit", "pay_limit", "retry_min",
                              "retry_max", "retention"))
        if self.retry_max < self.retry_min:
            raise ValueError(f"OrderConfig.retry_max ({self.retry_max}) is below retry_min ({self.retry_min})")
        if not self.ship_to or not all(type(c) is str and len(c) == 2 for c in self.ship_to):
            raise ValueError(f"OrderConfig.ship_to must be two-letter country codes, got {self.ship_to!r:.200}")


def check_qty(qty: Any, most: int, least: int = 0) -> int:
    if type(qty) is not int or not least <= qty <= most:
        raise BadRequest(f"quantity must be an int in {least}..{most}, got {qty!r:.50}")
    return qty


def check_price(price: Any) -> int:
    if type(price) is not int or not 0 < price <= MAX_PRICE:
        raise BadRequest(f"price must be an int of cents in 1..{MAX_PRICE}, got {price!r:.50}")
    return price


def check_ident(value: Any, what: str) -> Any:
    """`check_id`, raising BadRequest."""
    try:
        return check_id(value, what)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def check_lines(lines: Any, config: OrderConfig) -> list[list]:
    """`[[sku, qty], ...]` sorted by sku (as a string), each sku once, qty >= 1."""
    if not isinstance(lines, (list, tuple)) or not 1 <= len(lines) <= config.max_lines:
        raise BadRequest(f"an order needs 1..{config.max_lines} lines of (sku, quantity), got {lines!r:.100}")
    seen: dict[Any, int] = {}
    for line in lines:
        if not isinstance(line, (list, tuple)) or len(line) != 2:
            raise BadRequest(f"an order line is a (sku, quantity) pair, got {line!r:.100}")
        sku = check_ident(line[0], "sku")
        if sku in seen:
            raise BadRequest(f"sku {sku!r} appears twice in the order")
        seen[sku] = check_qty(line[1], config.max_qty, 1)
    return [[sku, qty] for sku, qty in sorted(seen.items(), key=lambda kv: str(kv[0]))]


def check_address(address: Any) -> dict[str, str]:
    if not isinstance(address, dict) or not all(f in address for f in ADDRESS_FIELDS):
        raise BadRequest(f"an address is a dict with {', '.join(ADDRESS_FIELDS)}, got {address!r:.100}")
    if len(address) > 10 or not all(type(k) is str and type(v) is str and 0 < len(v) <= MAX_FIELD
                                    for k, v in address.items()):
        raise BadRequest(f"address fields must be at most 10 non-empty strings of at most {MAX_FIELD} "
                         f"characters, got {address!r:.100}")
    if len(address["country"]) != 2:
        raise BadRequest(f"address country must be a two-letter code, got {address['country']!r:.20}")
    return dict(address)


def check_method(method: Any) -> str:
    if type(method) is not str or not 0 < len(method) <= 100:
        raise BadRequest(f"payment method must be a non-empty str of at most 100 characters, got {method!r:.50}")
    return method


def check_amount(amount: Any) -> int:
    if type(amount) is not int or not 0 < amount <= MAX_ORDER_AMOUNT:
        raise BadRequest(f"amount must be an int of cents in 1..{MAX_ORDER_AMOUNT}, got {amount!r:.50}")
    return amount


def backoff(config: OrderConfig, attempt: int, jitter: float) -> float:
    """Seconds before retry `attempt` (0-based); `jitter` in [0, 1) from a seeded stream."""
    base = config.retry_max if attempt > 60 else min(config.retry_max, config.retry_min * 2 ** attempt)
    return base * (1.0 + 0.5 * jitter)

