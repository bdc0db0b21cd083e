"""One process per sku: its stock, versioned, with the orders' reservations on it.

Optimistic concurrency, as an inventory table with a version column does it: a reader
gets `{"available", "version", "price", ...}`; a reservation names the version it read
and is refused with `VersionConflict` (carrying the current version) if anything changed
the sku since. The saga then tries again with the new version.

    ("read",)                          -> the view
    ("reserve", order, qty, version)   -> {"version", "price", "expires"}   | VersionConflict | OutOfStock
    ("commit", order)                  -> {"sold": qty}   (the reservation becomes a sale) | ReservationExpired
    ("undo", order)                    -> {"undone": order}  (release the hold or return the sale)
    ("receive", receipt, qty, price)   -> the view   (inbound stock, idempotent by receipt id)

A reservation holds its quantity for `config.hold` seconds, then lapses: it stops counting
against what is available. Every message is idempotent for its order: a reservation
retried is the same reservation, a commit retried is the same sale, an undo retried is a
no-op. Each order leaves a mark (sold, or undone) for `config.retention` seconds, so a
stale reservation from a crashed saga arriving after its order was undone is refused
rather than held forever, and a retried commit of a sold order is answered again.

Invariants asserted on every event: 0 <= reserved <= on_hand, 0 <= sold <= received. A
sku is never oversold: a sale only ever turns a live hold into a sale, and a hold is only
taken while the quantity is available.
"""
from __future__ import annotations

from typing import Any

from storage import EventSourcedServer

from .config import OrderConfig, check_ident, check_price, check_qty
from .errors import BadRequest, OutOfStock, ReservationExpired, Unavailable, VersionConflict

MAX_HOLDS = 100_000  # live reservations per sku
MAX_MARKS = 200_000  # orders remembered per sku (besides the retention)
MAX_RECEIPTS = 10_000
MAX_RECEIVE = 1_000_000  # items per receipt


def empty() -> dict[str, Any]:
    """A sku nothing happened to."""
    return {"on_hand": 0, "reserved": 0, "received": 0, "sold": 0, "price": None, "version": 0,
            "holds": {}, "marks": {}, "receipts": {}}


def apply(s: dict[str, Any], event: list, retention: float) -> None:
    """Fold one event into a sku's state `s` (pure: it runs again on every recovery, and
    checks read a sku's stored state with it)."""
    kind = event[0]
    if kind == "hold":
        _, order, qty, expires = event
        s["holds"][order] = [qty, expires]
        s["reserved"] += qty
    elif kind == "expire":
        for order in event[1]:
            s["reserved"] -= s["holds"].pop(order)[0]
    elif kind == "commit":
        _, order, at = event
        qty = s["holds"].pop(order)[0]
        s["reserved"] -= qty
        s["on_hand"] -= qty
        s["sold"] += qty
        _mark(s["marks"], order, ["sold", qty, at], retention)
    elif kind == "undo":
        _, order, at = event
        hold = s["holds"].pop(order, None)
        mark = s["marks"].get(order)
        if hold is not None:
            s["reserved"] -= hold[0]
        elif mark is not None and mark[0] == "sold":  # the sale comes back to the shelf
            s["on_hand"] += mark[1]
            s["sold"] -= mark[1]
        _mark(s["marks"], order, ["undone", 0, at], retention)
    elif kind == "receive":
        _, receipt, qty, price = event
        s["on_hand"] += qty
        s["received"] += qty
        if price is not None:
            s["price"] = price
        s["receipts"][receipt] = qty
        if len(s["receipts"]) > MAX_RECEIPTS:
            del s["receipts"][next(iter(s["receipts"]))]
    else:
        raise AssertionError(f"unknown stock event {event!r:.200}")
    s["version"] += 1


def _mark(marks: dict, order: Any, mark: list, retention: float) -> None:
    """Note what became of `order` here, newest last; drop the oldest marks beyond
    MAX_MARKS or `retention` seconds."""
    marks.pop(order, None)
    marks[order] = mark
    at = mark[2]
    while marks:
        oldest = next(iter(marks))
        if len(marks) <= MAX_MARKS and marks[oldest][2] >= at - retention:
            return
        del marks[oldest]


class Stock(EventSourcedServer):
    """See the module docstring. Started by `Entities` as `init(store, ("stock", sku))`;
    `config` comes with the class (`apps.common.bind`)."""

    snapshot_every = 200
    config: OrderConfig

    def initial_state(self) -> dict[str, Any]:
        return empty()

    @property
    def sku(self) -> Any:
        return self.key[1]

    def apply(self, event: list) -> None:
        s = self.state
        apply(s, event, self.config.retention)
        assert 0 <= s["reserved"] <= s["on_hand"], (self.key, s["reserved"], s["on_hand"])
        assert 0 <= s["sold"] <= s["received"], (self.key, s["sold"], s["received"])

    # -- requests -----------------------------------------------------------------------------

    def handle_call(self, req: tuple, caller: Any) -> Any:
        self._lapse()
        tag = req[0]
        if tag == "read":
            return self.view()
        if tag == "reserve":
            return self._reserve(*req[1:])
        if tag == "commit":
            return self._commit(req[1])
        if tag == "undo":
            return self._undo(req[1])
        if tag == "receive":
            return self._receive(*req[1:])
        return BadRequest(f"stock {self.sku!r}: unknown request {req!r:.200}")

    def view(self) -> dict[str, Any]:
        s = self.state
        return {"sku": self.sku, "available": s["on_hand"] - s["reserved"], "on_hand": s["on_hand"],
                "reserved": s["reserved"], "price": s["price"], "version": s["version"],
                "received": s["received"], "sold": s["sold"]}

    def _lapse(self) -> None:
        """Reservations past their time stop holding stock. Holds are taken with one hold
        time, so they expire in the order they were taken: only the oldest are looked at."""
        now = self.now()
        lapsed = []
        for order, (_, expires) in self.state["holds"].items():
            if expires > now:
                break
            lapsed.append(order)
        if lapsed:
            self.persist(["expire", lapsed])

    def _hold_view(self, order: Any) -> dict[str, Any]:
        s = self.state
        return {"version": s["version"], "price": s["price"], "expires": s["holds"][order][1]}

    def _reserve(self, order: Any, qty: int, version: int) -> Any:
        s = self.state
        hold = s["holds"].get(order)
        if hold is not None:  # a retry
            if hold[0] != qty:
                return BadRequest(f"order {order!r} holds {hold[0]} of sku {self.sku!r}, not {qty}")
            return self._hold_view(order)
        mark = s["marks"].get(order)
        if mark is not None:  # a late retry of an order already sold or undone
            if mark[0] == "sold":
                return {"version": s["version"], "price": s["price"], "expires": None}
            return ReservationExpired(f"order {order!r} was released from sku {self.sku!r}")
        if version != s["version"]:
            return VersionConflict(self.sku, version, s["version"])
        available = s["on_hand"] - s["reserved"]
        if qty > available:
            return OutOfStock(self.sku, qty, available)
        if len(s["holds"]) >= MAX_HOLDS:
            return Unavailable(f"sku {self.sku!r} has {MAX_HOLDS} reservations; retry")
        self.persist(["hold", order, qty, self.now() + self.config.hold])
        return self._hold_view(order)

    def _commit(self, order: Any) -> Any:
        s = self.state
        if order in s["holds"]:
            self.persist(["commit", order, self.now()])
        mark = s["marks"].get(order)
        if mark is not None and mark[0] == "sold":
            return {"sold": mark[1]}
        return ReservationExpired(f"order {order!r} holds nothing of sku {self.sku!r} (lapsed or released)")

    def _undo(self, order: Any) -> Any:
        s = self.state
        mark = s["marks"].get(order)
        if order in s["holds"] or mark is None or mark[0] == "sold":
            self.persist(["undo", order, self.now()])  # also a mark for an order never seen here
        return {"undone": order}

    def _receive(self, receipt: Any, qty: Any, price: Any) -> Any:
        try:
            check_ident(receipt, "receipt id")
            check_qty(qty, MAX_RECEIVE, 1)
            if price is not None:
                check_price(price)
            elif self.state["price"] is None:
                raise BadRequest(f"sku {self.sku!r} has no price yet: its first receipt needs one")
        except BadRequest as exc:
            return exc
        if receipt not in self.state["receipts"]:
            self.persist(["receive", receipt, qty, price])
        return self.view()
