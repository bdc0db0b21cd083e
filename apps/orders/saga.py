"""One process per order: the saga reserve -> pay -> ship, with a compensation for every
way it can fail.

    reserving    reserve each line at its sku (optimistic: read the version, reserve at
                 it, on a conflict retry at the version the conflict names); the price of
                 each line is the sku's price when it was reserved
    paying       charge the total with the order id as the idempotency key, so a retry
                 (after a timeout, a crash, a partition) is the same charge
    shipping     commit each reservation (it becomes a sale), then hand the shipment to
                 the carrier
    shipped      done
    compensating undo every line at its sku (a hold released, a sale returned), void the
                 charge (the provider refunds it, or refuses the key from then on if it
                 never saw it), then
    cancelled    done, with the reason

Failures that end in compensation: a sku out of stock, too many version conflicts,
reserving past `reserve_limit`, a declined charge, no answer from the provider by
`pay_limit`, a reservation that lapsed before it was committed, a shipment the carrier
refuses. Anything else (a timeout, a process restarting) is retried with backoff; the
compensations themselves are retried until they are done.

The state is stored after every turn, before any message of that turn leaves (the saga
is one async callback: its changes are stored at the end of every scheduler pass in
which it waits). A crashed saga restarts (a transient child, with backoff) from what was
stored and runs its current step again; every step is idempotent at the other end (the
order's marks at the skus, the idempotency key at the provider, the shipment per order),
so nothing is reserved, charged or shipped twice.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from actors import CallExit, CallTimeout, NoProc, seed_for
from storage import PersistentServer, StorageError, entity_call
from supervision.client import request

from .config import MAX_ORDER_AMOUNT, OrderConfig, backoff
from .context import OrdersContext
from .errors import Declined, OutOfStock, ReservationExpired, ShipFailed, Unavailable, VersionConflict

TERMINAL = ("shipped", "cancelled")
TRANSIENT = (CallTimeout, CallExit, NoProc, StorageError, Unavailable)
_STOP = ("$stop",)


class GiveUp(Exception):
    """The order cannot go on: compensate, with this reason."""


class OrderSaga(PersistentServer):
    """`init(store, ("order", id), request, config, ctx)`; the request is what the desk
    stored: `{"customer", "lines", "method", "address", "at"}`."""

    def init(self, store: Any, key: Any, req: dict, config: OrderConfig, ctx: OrdersContext) -> None:
        self.id = key[1]
        self.config = config  # before the state: initial_state reads it
        self.ctx = ctx
        super().init(store, key, req)
        self.jitter = random.Random(seed_for(self.revision, f"orders.saga/{self.id!r}")).random
        ctx.registry.register(("order", self.id), self.pid)
        self.continue_with("run")

    def initial_state(self, req: dict) -> dict[str, Any]:
        at = req["at"]
        return {"id": self.id, "customer": req["customer"], "lines": req["lines"], "method": req["method"],
                "address": req["address"], "placed_at": at, "status": "reserving",
                "until": at + self.config.reserve_limit, "history": [["reserving", at]],
                "held": {}, "amount": None, "charged": False, "receipt": None, "sold": [], "tracking": None,
                "undone": [], "voided": None, "reason": None, "done_at": None}

    # -- the run ---------------------------------------------------------------------------

    async def handle_continue(self, arg: str) -> None:
        assert arg == "run", arg
        s = self.state
        steps = {"reserving": self._reserve, "paying": self._pay, "shipping": self._ship,
                 "compensating": self._compensate}
        while s["status"] not in TERMINAL:
            try:
                await steps[s["status"]]()
            except GiveUp as why:
                self._to("compensating", None)
                s["reason"] = str(why)
        self.cast(self.ctx.desk, ("closed", self.id))
        # Stopped from a message of its own: a stop at the end of an async callback would
        # skip saving the state (see apps.rides.matcher).
        self.send_after(0, self.pid, _STOP)

    def handle_info(self, msg: Any) -> None:
        if msg == _STOP:
            self.stop()
        else:
            super().handle_info(msg)

    def _to(self, status: str, limit: float | None) -> None:
        s = self.state
        now = self.now()
        s["status"] = status
        s["until"] = None if limit is None else now + limit
        s["history"].append([status, now])
        if status in TERMINAL:
            s["done_at"] = now

    async def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """`await attempt()` until it does not fail transiently; GiveUp past the step's limit."""
        n = 0
        while True:
            try:
                return await attempt()
            except TRANSIENT:
                until = self.state["until"]
                if until is not None and self.now() >= until:
                    raise GiveUp(f"{self.state['status']} timed out") from None
                await self.sleep(backoff(self.config, n, self.jitter()))
                n += 1

    def _stock(self, sku: Any, req: tuple) -> Any:
        return self._retrying(lambda: entity_call(self, self.ctx.stock, ("stock", sku), req, self.config.step_timeout))

    # -- the steps ---------------------------------------------------------------------------

    async def _reserve(self) -> None:
        s = self.state
        for sku, qty in s["lines"]:
            if sku not in s["held"]:
                s["held"][sku] = await self._hold(sku, qty)
        s["amount"] = sum(qty * s["held"][sku] for sku, qty in s["lines"])
        if s["amount"] > MAX_ORDER_AMOUNT:
            raise GiveUp(f"the order comes to {s['amount']} cents, above {MAX_ORDER_AMOUNT}")
        self._to("paying", self.config.pay_limit)

    async def _hold(self, sku: Any, qty: int) -> int:
        """Reserve `qty` of `sku` at the version read (optimistic concurrency); its price."""
        version = None
        for _ in range(self.config.reserve_attempts):
            try:
                if version is None:
                    version = (await self._stock(sku, ("read",)))["version"]
                return (await self._stock(sku, ("reserve", self.id, qty, version)))["price"]
            except VersionConflict as lost:
                version = lost.version
            except (OutOfStock, ReservationExpired) as refused:
                raise GiveUp(str(refused)) from None
        raise GiveUp(f"sku {sku!r}: {self.config.reserve_attempts} version conflicts in a row")

    async def _pay(self) -> None:
        s = self.state
        s["charged"] = True  # stored before the charge leaves: a compensation voids it
        charge = ("charge", s["customer"], self.id, s["amount"], s["method"], self.id)
        try:
            receipt = await self._retrying(
                lambda: request(self, self.ctx.payments, charge, self.config.step_timeout))
        except Declined as refused:
            raise GiveUp(str(refused)) from None
        if receipt["status"] != "captured":
            raise GiveUp(f"the charge is {receipt['status']}")
        s["receipt"] = receipt["id"]
        self._to("shipping", None)

    async def _ship(self) -> None:
        s = self.state
        for sku, _ in s["lines"]:
            if sku not in s["sold"]:
                try:
                    await self._stock(sku, ("commit", self.id))
                except ReservationExpired as lapsed:
                    raise GiveUp(str(lapsed)) from None
                s["sold"].append(sku)
        ship = ("ship", s["lines"], s["address"])
        try:
            shipment = await self._retrying(lambda: entity_call(
                self, self.ctx.shipments, ("shipment", self.id), ship, self.config.step_timeout))
        except ShipFailed as refused:
            raise GiveUp(str(refused)) from None
        s["tracking"] = shipment["tracking"]
        self._to("shipped", None)

    async def _compensate(self) -> None:
        s = self.state
        for sku, _ in s["lines"]:  # every line: a late reservation is refused from now on
            if sku not in s["undone"]:
                await self._stock(sku, ("undo", self.id))
                s["undone"].append(sku)
        if s["charged"] and s["voided"] is None:
            void = ("cancel", s["customer"], self.id)
            s["voided"] = (await self._retrying(
                lambda: request(self, self.ctx.payments, void, self.config.step_timeout)))["status"]
        self._to("cancelled", None)
