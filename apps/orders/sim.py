"""Orders as a simulated system (scenarios name it `orders`, or `"apps.orders.sim:OrdersSystem"`).

Node "shop" runs the order service and node "bank" the payment provider, each on a real
LMDB store (sync mode); the provider is slow at times, fails some requests (503) and
loses some answers after charging. Node "shoppers" (spared by random faults) runs one
shopper per customer: each fills its cart and checks out, or buys at once, with its own
order ids, retrying every request until it is answered (a retry reuses the ids, so it is
always safe); some pay with a card the provider declines, some ship abroad where the
carrier does not go. A stock clerk receives new stock now and then (receipt ids, retried
until answered). Skus are few and stock is short, so orders race for the same items and
some find them gone.

Checks:
- always: no sku is oversold (0 <= reserved <= on hand, sold <= received, and the shipped
  orders' items are within what was sold); no order is charged twice (per order, at
  most one charge captured or refunded at the provider, for the order's amount) and a
  shipped order's charge is captured;
- eventually: every acknowledged order ended shipped (its items sold, its charge
  captured, its shipment out) or cancelled and fully compensated (no live hold, nothing
  sold, its charge refunded or never made); no order is left open; some orders shipped.
"""
from __future__ import annotations

from typing import Any

from actors import Node, RemoteName
from sim.core import buggify
from sim.schema import Field
from sim.system import System, check
from storage import Store, StorageError

from apps.common import RETRYABLE, ServerNodes, ServerSystem, stored_state, top_restarts

from . import stock as stock_state
from .config import OrderConfig
from .errors import BadRequest, Unavailable
from .payments import PaymentService, ProviderConfig
from .saga import TERMINAL
from .service import OrderService, apply_desk

RETRY = (*RETRYABLE, Unavailable, StorageError)
HOME = {"street": "410 Terry Ave N", "city": "Seattle", "country": "US"}
ABROAD = {"street": "1 Rue de Rivoli", "city": "Nowhere", "country": "ZZ"}
DECLINING = "pm_card_chargeDeclined"
GOOD = "pm_card_visa"


class OrdersSystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "skus": Field.int(6, 1, 10_000, "skus in the catalogue"),
        "stock": Field.int(12, 0, 1_000_000, "items of each sku received at the start"),
        "hold": Field.seconds(20.0, 0.5, 86_400.0, "how long a reservation holds stock"),
        "step_timeout": Field.seconds(0.5, 0.01, 60.0, "the saga's call timeout"),
        "reserve_limit": Field.seconds(10.0, 0.1, 3600.0, "an order not reserved by then is cancelled"),
        "pay_limit": Field.seconds(8.0, 0.1, 3600.0, "an order not paid by then is cancelled"),
        "retry_max": Field.seconds(1.0, 0.01, 60.0, "the saga's longest wait between retries"),
        "pay_latency": Field.range((0.005, 0.3), 0.0, 60.0, "the provider's answer time"),
        "pay_errors": Field.float(0.05, 0.0, 1.0, "share of requests the provider fails (503)"),
        "pay_lost": Field.float(0.03, 0.0, 1.0, "share of answers the provider loses after acting"),
        "top_restarts": top_restarts(50),
    }
    workload_options = {
        "shoppers": Field.int(16, 1, 100_000, "shoppers, one customer each, on node 'shoppers'"),
        "rate": Field.float(0.3, 0.001, 1000.0, "orders per second per shopper"),
        "declined": Field.float(0.1, 0.0, 1.0, "share of orders paid with a card the provider declines"),
        "abroad": Field.float(0.08, 0.0, 1.0, "share of orders shipped where the carrier does not go"),
        "cart": Field.float(0.5, 0.0, 1.0, "share of orders placed through the cart (the rest: buy now)"),
        "restock": Field.seconds(2.0, 0.01, 3600.0, "seconds between two receipts of new stock"),
        "timeout": Field.seconds(1.0, 0.01, 60.0, "a client's call timeout"),
        "backoff": Field.seconds(0.2, 0.0, 60.0, "mean wait before a client's retry"),
    }

    def setup(self) -> None:
        opts = self.config
        self.orders_config = OrderConfig(hold=opts["hold"], step_timeout=opts["step_timeout"],
                                         reserve_limit=opts["reserve_limit"], pay_limit=opts["pay_limit"],
                                         retry_max=opts["retry_max"], retry_min=min(0.05, opts["retry_max"]))
        lo, hi = opts["pay_latency"]
        self.provider = ProviderConfig(latency=(lo, hi), error_rate=opts["pay_errors"],
                                       lost_rate=opts["pay_lost"], seed=self.sim.seed)
        self.skus = [f"sku{n}" for n in range(opts["skus"])]
        self.acked: dict[str, dict] = {}  # order -> {"customer", "lines"}: answered to its shopper
        self.customers: dict[str, None] = {}
        self.violations: list[str] = []
        self.outcomes: dict[str, int] = {}
        self.counts = dict.fromkeys(("orders", "acked", "carts", "receipts", "retries", "twice"), 0)
        self.nodes = ServerNodes(self, ["shop", "bank"], self._serve)
        self.nodes.add()
        self.sim.add_node("shoppers", self._start_clients, targets=False)

    def _serve(self, node: Node, store: Store, resolve: Any) -> Any:
        restarts = self.config["top_restarts"]
        if node.name == "bank":
            return PaymentService(node, store, self.provider, max_restarts=restarts)
        return OrderService(node, store, self.orders_config, payments=RemoteName(PaymentService.api, "bank"),
                            max_restarts=restarts)

    def _shop(self) -> OrderService:
        return self.nodes.serving("shop")

    # -- clients -------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        self.spawn_clients(node, 1, self._clerk)
        self.spawn_clients(node, self.load["shoppers"], self._shopper)

    async def _until_answered(self, proc: Any, rng: Any, what: str, request: Any) -> Any:
        while True:
            try:
                return await request(self._shop())
            except BadRequest as exc:
                self.violations.append(f"{what} refused as a bad request: {exc}")
                return None
            except RETRY:
                self.counts["retries"] += 1
                await proc.sleep(rng.uniform(0.0, 2.0 * self.load["backoff"]) + 0.01)

    async def _clerk(self, proc: Any, _: int) -> None:
        """Receives the first stock of every sku, then a little more now and then."""
        rng = self.sim.stream("workload/clerk")
        for n, sku in enumerate(self.skus):
            price = 100 * (5 + n)
            await self._until_answered(proc, rng, "receipt", lambda s: s.receive_stock(
                proc, sku, f"first-{sku}", max(1, self.config["stock"]), price))
            self.counts["receipts"] += 1
        seq = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.5, 1.5) * self.load["restock"])
            if not self.workload_on:
                continue
            seq += 1
            sku = self.skus[rng.below(len(self.skus))]
            await self._until_answered(proc, rng, "receipt", lambda s: s.receive_stock(
                proc, sku, f"r{seq}", 1 + rng.below(3)))
            self.counts["receipts"] += 1

    async def _shopper(self, proc: Any, i: int) -> None:
        rng = self.sim.stream(f"workload/shopper-{i}")
        load = self.load
        customer = f"c{i}"
        self.customers[customer] = None
        n = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / load["rate"]))
            if not self.workload_on:
                continue
            n += 1
            order = f"o{i}-{n}"
            picks = {self.skus[rng.below(len(self.skus))]: 1 + rng.below(2) for _ in range(1 + rng.below(2))}
            lines = [[sku, qty] for sku, qty in sorted(picks.items())]
            method = DECLINING if rng.random() < load["declined"] else GOOD
            address = ABROAD if rng.random() < load["abroad"] else HOME
            self.counts["orders"] += 1
            if rng.random() < load["cart"]:
                self.counts["carts"] += 1
                for sku, qty in lines:
                    await self._until_answered(proc, rng, "cart", lambda s: s.set_item(proc, customer, sku, qty))
                place = lambda s: s.checkout(proc, customer, order, method, address)  # noqa: E731
            else:
                place = lambda s: s.place_order(proc, order, customer, lines, method, address)  # noqa: E731
            answer = await self._until_answered(proc, rng, f"order {order}", place)
            if answer is None:
                continue
            if buggify("orders.place_twice"):  # a client retrying after its answer: the same order
                again = await self._until_answered(proc, rng, f"order {order} again", place)
                self.counts["twice"] += 1
                if again != order:
                    self.violations.append(f"order {order} placed again answered {again!r}")
            if answer != order:
                self.violations.append(f"order {order} answered {answer!r}")
            self.acked[order] = {"customer": customer, "lines": lines}
            self.counts["acked"] += 1

    # -- what the stores hold -----------------------------------------------------------------

    def _stores(self) -> tuple[Store, Store] | None:
        shop, bank = self.nodes.store("shop"), self.nodes.store("bank")
        if any(s is None or s.closed or s.crashed for s in (shop, bank)):
            return None
        return shop, bank

    def _skus(self, shop: Store) -> dict[str, dict] | None:
        retention = self.orders_config.retention
        out = {}
        for sku in self.skus:
            state = stored_state(shop, ("stock", sku), stock_state.empty,
                                 lambda s, e: stock_state.apply(s, e, retention))
            if state is None:
                return None
            out[sku] = state
        return out

    def _sagas(self, shop: Store) -> dict[str, dict]:
        """The stored state of every acknowledged order; tallies their outcomes for the
        report (the stores are closed when it is made)."""
        found = {}
        for order in self.acked:
            stored = shop.read(("order", order))
            if stored is not None:
                found[order] = stored[1]
        ended = [s for s in found.values() if s["status"] in TERMINAL]
        self.outcomes = {"shipped": sum(s["status"] == "shipped" for s in ended)}
        for word in ("wanted", "declined", "deliver", "lapsed", "timed out", "conflicts"):
            self.outcomes[f"cancelled_{word.replace(' ', '_')}"] = sum(word in (s["reason"] or "") for s in ended)
        return found

    def _charges(self, bank: Store) -> dict[Any, list[dict]]:
        """Every charge at the provider, by the order it is for."""
        by_order: dict[Any, list[dict]] = {}
        for customer in self.customers:
            stored = bank.read(("account", customer))
            for charge in (stored[1]["charges"].values() if stored is not None else ()):
                by_order.setdefault(charge["order"], []).append(charge)
        return by_order

    # -- checks ---------------------------------------------------------------------------------

    @check("always")
    def clients_answered_consistently(self) -> str | None:
        """Every answer a client got named its own order (a retry never made a second one),
        and no client crashed (an error the API should not raise)."""
        return self.violations[0] if self.violations else None

    @check("always")
    def never_oversold(self) -> str | None:
        """Per sku: 0 <= reserved <= on hand, sold <= received, and the items of the
        shipped orders are within what was sold."""
        stores = self._stores()
        skus = self._skus(stores[0]) if stores is not None else None
        if skus is None:
            return None  # a store is down: looked at again at the next check
        shipped: dict[str, int] = {}
        for saga in self._sagas(stores[0]).values():
            if saga["status"] == "shipped":
                for sku, qty in saga["lines"]:
                    shipped[sku] = shipped.get(sku, 0) + qty
        for sku, s in skus.items():
            if not 0 <= s["reserved"] <= s["on_hand"] or not 0 <= s["sold"] <= s["received"]:
                return (f"sku {sku}: reserved {s['reserved']}, on hand {s['on_hand']}, sold {s['sold']}, "
                        f"received {s['received']}")
            if shipped.get(sku, 0) > s["sold"]:
                return f"sku {sku}: orders shipped {shipped[sku]} items, {s['sold']} were sold"
        return None

    @check("always")
    def never_charged_twice(self) -> str | None:
        """Per order, at most one charge was ever captured (captured, or refunded since),
        for the order's own amount; a shipped order's charge stands."""
        stores = self._stores()
        if stores is None:
            return None
        sagas = self._sagas(stores[0])
        charges = self._charges(stores[1])
        for order, made in charges.items():
            taken = [c for c in made if c["status"] in ("captured", "refunded")]
            if len(taken) > 1:
                return f"order {order} was charged {len(taken)} times: {[c['id'] for c in taken]}"
            saga = sagas.get(order)
            if taken and saga is not None and saga["amount"] is not None and taken[0]["amount"] != saga["amount"]:
                return f"order {order} costs {saga['amount']} but was charged {taken[0]['amount']}"
        for order, saga in sagas.items():
            statuses = [c["status"] for c in charges.get(order, ())]
            if saga["status"] == "shipped" and statuses != ["captured"]:
                return f"order {order} shipped with charges {statuses}"
        return None

    @check("eventually")
    def every_order_settled(self) -> str | None:
        """Every acknowledged order is shipped, or cancelled with nothing left behind."""
        stores = self._stores()
        if stores is None:
            return "a store is down after heal"
        shop, bank = stores
        skus = self._skus(shop)
        sagas = self._sagas(shop)
        by_order = self._charges(bank)
        now = self.sim.now
        for order in self.acked:
            saga = sagas.get(order)
            if saga is None or saga["status"] not in TERMINAL:
                return f"order {order} was acknowledged but is {saga['status'] if saga else 'not stored'}"
            charges = [c["status"] for c in by_order.get(order, ())]
            for sku, qty in saga["lines"]:
                s = skus[sku]
                hold = s["holds"].get(order)
                mark = s["marks"].get(order)
                if saga["status"] == "shipped" and (mark is None or mark[:2] != ["sold", qty]):
                    return f"order {order} shipped but sku {sku} has {mark} for it"
                if saga["status"] == "cancelled":
                    if hold is not None and hold[1] > now:
                        return f"order {order} was cancelled but still holds {hold[0]} of sku {sku}"
                    if mark is not None and mark[0] == "sold":
                        return f"order {order} was cancelled but its {mark[1]} of sku {sku} stay sold"
            if saga["status"] == "shipped":
                shipment = shop.read(("shipment", order))
                if charges != ["captured"] or shipment is None or shipment[1]["status"] != "shipped":
                    return f"order {order} shipped with charges {charges} and shipment {shipment}"
            elif "captured" in charges:
                return f"order {order} was cancelled ({saga['reason']}) but its charge stands"
        desk = stored_state(shop, ("orders", "desk"), lambda: {"open": {}}, apply_desk)
        if desk is not None and desk["open"]:
            return f"orders still open at the desk: {sorted(desk['open'])[:5]}"
        return None

    @check("eventually")
    def some_orders_shipped(self) -> str | None:
        """The shop works at all: of 5 or more acknowledged orders, one at least shipped
        (the checks above also hold for a shop that cancels everything)."""
        stores = self._stores()
        if stores is None:
            return "a store is down after heal"
        sagas = self._sagas(stores[0])
        if len(self.acked) >= 5 and not any(s["status"] == "shipped" for s in sagas.values()):
            return f"none of {len(self.acked)} acknowledged orders shipped"
        return None

    def stats(self) -> dict[str, int]:
        return {**self.counts, **self.outcomes}
