"""The order service: its supervision tree, the desk and the public API.

    store = Store(path, node)
    bank = PaymentService(node, store); bank.start()          # or on another node
    shop = OrderService(node, store, OrderConfig())           # payments="payments.api" by default
    shop.start()
    run(shop.receive_stock(node, "book", "r1", 10, price=1999))
    run(shop.set_item(node, "alice", "book", 2))
    run(shop.checkout(node, "alice", "o1", "pm_card_visa", {"street": "1 Main St", "city": "Boston", "country": "US"}))
    run(shop.order(node, "o1"))["status"]                     # "reserving" ... "shipped"

Every method takes the caller first: a process (calls return a coroutine to await) or the
`Node` from outside (a `Future`). Bad input raises `BadRequest` before anything is sent;
refusals raise the server's error (see `errors`); `CallTimeout`, `CallExit`, `NoProc` and
`Unavailable` mean "retry with the same ids", which is always safe: an order id, a
receipt id and a cart quantity are idempotent.

Tree (rest_for_one: the desk, last, restarts whenever something it uses did):

    orders_sup
    ├─ orders.stock      Entities of Stock     (key ("stock", sku)): versioned stock, reservations
    ├─ orders.carts      Entities of Cart      (key ("cart", customer))
    ├─ orders.shipments  Entities of Shipment  (key ("shipment", order)): the carrier
    ├─ orders.sagas      DynamicSupervisor of OrderSaga (transient; registry key ("order", id))
    └─ orders.desk       OrderDesk: places orders (idempotent by id), starts each one's saga
                         once the order is stored, and starts again every open order whose
                         saga is not running (at boot, and every `SWEEP_EVERY` seconds)
"""
from __future__ import annotations

from typing import Any

from actors import Node, Process
from storage import Entities, EventSourcedServer, LimitExceeded, Store, entity_call
from supervision import Backoff, ChildSpec, DynamicFlags, DynamicSupervisor, start_child

from apps.common import TreeService, bind

from .cart import Cart
from .config import (OrderConfig, check_address, check_ident, check_lines, check_method, check_price,
                     check_qty)
from .context import OrdersContext
from .errors import BadRequest, NotFound
from .saga import TERMINAL, OrderSaga
from .shipping import Shipment
from .stock import MAX_RECEIVE, Stock

ENTITY_IDLE = 60.0  # seconds an unused sku, cart or shipment process lives on
SWEEP_EVERY = 2.0
_SWEEP, _STARTED, _LAUNCH = ("$sweep",), "$started", "$launch"
PUBLIC = ("id", "customer", "lines", "status", "placed_at", "amount", "receipt", "tracking", "reason",
          "done_at", "history")


def apply_desk(state: dict[str, Any], event: list) -> None:
    """Fold an event of the desk's journal into its state (checks read it with this)."""
    if event[0] == "open":
        state["open"][event[1]] = event[2]
    else:
        state["open"].pop(event[1], None)


def _same(known: dict, req: dict) -> bool:
    """Whether a place request is the one an order was placed with (a retry)."""
    return all(known[k] == req[k] for k in ("customer", "lines", "method", "address"))


class OrderDesk(EventSourcedServer):
    """`init(store, key, ctx)`. State: the open orders' requests, by order id."""

    snapshot_every = 1000

    def init(self, store: Store, key: Any, ctx: OrdersContext) -> None:
        super().init(store, key)
        self.ctx = ctx
        # Backoff: a saga that crashes on every start (a full disk) must not spin the node.
        self.spec = ChildSpec("order", OrderSaga, args=(store,), restart="transient",
                              backoff=Backoff(min_delay=0.05, max_delay=2.0))
        self.starting: dict[Any, None] = {}
        self.send_after(0, self.pid, _SWEEP)

    def initial_state(self) -> dict[str, Any]:
        return {"open": {}}

    def apply(self, event: list) -> None:
        apply_desk(self.state, event)

    def handle_call(self, req: tuple, caller: Any) -> Any:
        tag = req[0]
        if tag == "place":
            return self._place(*req[1:])
        if tag == "order":
            return self._order(req[1])
        if tag == "open":
            return list(self.state["open"])
        return BadRequest(f"orders.desk: unknown request {req!r:.200}")

    def handle_cast(self, msg: tuple) -> None:
        if msg[0] == "closed" and msg[1] in self.state["open"]:
            self.persist(["close", msg[1]])

    def handle_info(self, msg: Any) -> None:
        if msg == _SWEEP:
            self._sweep()
            self.send_after(SWEEP_EVERY, self.pid, _SWEEP)
        elif type(msg) is tuple and msg[0] == _STARTED:
            self.starting.pop(msg[1], None)
        elif type(msg) is tuple and msg[0] == _LAUNCH and msg[1] in self.state["open"]:
            self._launch(msg[1], self.state["open"][msg[1]])
        else:
            super().handle_info(msg)

    def _stored(self, order: Any) -> dict | None:
        found = self.store.read(("order", order))
        return None if found is None else found[1]

    def _place(self, order: Any, customer: Any, lines: list, method: str, address: dict) -> Any:
        req = {"customer": customer, "lines": lines, "method": method, "address": address, "at": self.now()}
        known = self.state["open"].get(order)
        if known is None:
            stored = self._stored(order)
            if stored is not None:  # its saga ran; if it has not finished, the order is open
                known = {k: stored[k] for k in ("customer", "lines", "method", "address")}
                known["at"] = stored["placed_at"]
                if stored["status"] not in TERMINAL and _same(known, req):
                    self._open(order, known)  # the event that opened it was lost (a failed commit)
        if known is not None:
            return order if _same(known, req) else BadRequest(f"order id {order!r} was used for another order")
        if len(self.state["open"]) >= self.ctx.config.max_open:
            return LimitExceeded(f"{self.ctx.config.max_open} orders are open; order {order!r} refused")
        self._open(order, req)
        return order

    def _open(self, order: Any, req: dict) -> None:
        """Store the order as open, then start its saga: the message to itself leaves only
        once the event is stored, so no saga runs for an order the desk could forget."""
        self.persist(["open", order, req])
        self.send(self.pid, (_LAUNCH, order))

    def _launch(self, order: Any, req: dict) -> None:
        """Start the order's saga without waiting for it (places must not queue behind
        each other's starts). A start that fails is tried again by the next sweep."""
        if order in self.starting or self.ctx.registry.lookup(("order", order)) is not None:
            return
        self.starting[order] = None
        me, node = self.pid, self.node
        start_child(node, self.ctx.sagas, self.spec, ("order", order), req, self.ctx.config, self.ctx
                    ).add_done_callback(lambda _: node.send(me, (_STARTED, order)))

    def _sweep(self) -> None:
        """Every open order has a running saga, or is closed if its saga has finished."""
        for order, req in list(self.state["open"].items()):
            if self.ctx.registry.lookup(("order", order)) is None and order not in self.starting:
                stored = self._stored(order)
                if stored is not None and stored["status"] in TERMINAL:
                    self.persist(["close", order])
                else:
                    self._launch(order, req)

    def _order(self, order: Any) -> Any:
        stored = self._stored(order)
        if stored is not None:
            return {k: stored[k] for k in PUBLIC}
        req = self.state["open"].get(order)
        if req is None:
            return NotFound(f"no order {order!r}")
        return {"id": order, "customer": req["customer"], "lines": req["lines"], "status": "placed",
                "placed_at": req["at"], "amount": None, "receipt": None, "tracking": None, "reason": None,
                "done_at": None, "history": []}


class OrderService(TreeService):
    """The API; see the module docstring. `payments`: where the provider's `payments.api`
    process is (a name on this node, a pid, or a `RemoteName`)."""

    name = "orders_sup"
    strategy = "rest_for_one"

    def __init__(self, node: Node, store: Store, config: OrderConfig | None = None, *,
                 payments: Any = "payments.api", max_restarts: int = 100) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or OrderConfig()
        self.ctx = OrdersContext(node, self.config, payments)

    def children(self) -> list[ChildSpec]:
        store, ctx, config = self.store, self.ctx, self.config
        return [
            ChildSpec("stock", Entities, args=(store, bind(Stock, config=config), ENTITY_IDLE),
                      options={"name": ctx.stock}),
            ChildSpec("carts", Entities, args=(store, bind(Cart, ctx=ctx), ENTITY_IDLE), options={"name": ctx.carts}),
            ChildSpec("shipments", Entities, args=(store, bind(Shipment, config=config), ENTITY_IDLE),
                      options={"name": ctx.shipments}),
            ChildSpec("sagas", DynamicSupervisor, args=(DynamicFlags(max_restarts=100, max_seconds=5.0,
                                                                     max_children=config.max_open),),
                      options={"name": ctx.sagas}),
            ChildSpec("desk", OrderDesk, args=(store, ("orders", "desk"), ctx), options={"name": ctx.desk}),
        ]

    # -- stock ------------------------------------------------------------------------------

    def receive_stock(self, caller: Node | Process, sku: Any, receipt: Any, qty: int, price: int | None = None) -> Any:
        """Inbound stock: `qty` more items of `sku` (and its price from now on, in cents).
        Idempotent by `receipt`. Resolves to the sku's view (see `stock`)."""
        check_ident(receipt, "receipt id")
        check_qty(qty, MAX_RECEIVE, 1)
        if price is not None:
            check_price(price)
        return self._stock(caller, sku, ("receive", receipt, qty, price))

    def stock(self, caller: Node | Process, sku: Any) -> Any:
        """`{"sku", "available", "on_hand", "reserved", "price", "version", "received", "sold"}`."""
        return self._stock(caller, sku, ("read",))

    def _stock(self, caller: Node | Process, sku: Any, req: tuple) -> Any:
        key = ("stock", check_ident(sku, "sku"))
        return entity_call(caller, self.pid(self.ctx.stock), key, req, self.config.step_timeout)

    # -- carts ------------------------------------------------------------------------------

    def set_item(self, caller: Node | Process, customer: Any, sku: Any, qty: int) -> Any:
        """Put `qty` of `sku` in the cart (0 takes it out); resolves to the cart."""
        check_ident(sku, "sku")
        check_qty(qty, self.config.max_qty)
        return self._cart(caller, customer, ("set", sku, qty))

    def cart(self, caller: Node | Process, customer: Any) -> Any:
        """`{"customer", "lines": [[sku, qty], ...], "orders": [recent order ids]}`."""
        return self._cart(caller, customer, ("view",))

    def checkout(self, caller: Node | Process, customer: Any, order: Any, method: str, address: dict) -> Any:
        """Place the cart as order `order` (the idempotency key: retry with the same id),
        paid with `method`, shipped to `address`; resolves to the id once it is stored."""
        check_ident(order, "order id")
        return self._cart(caller, customer, ("checkout", order, check_method(method), check_address(address)))

    def _cart(self, caller: Node | Process, customer: Any, req: tuple) -> Any:
        key = ("cart", check_ident(customer, "customer id"))
        return entity_call(caller, self.pid(self.ctx.carts), key, req, 2 * self.config.step_timeout)

    # -- orders -----------------------------------------------------------------------------

    def place_order(self, caller: Node | Process, order: Any, customer: Any, lines: list, method: str,
                    address: dict) -> Any:
        """Place `[[sku, qty], ...]` as order `order` without a cart ("buy now")."""
        req = ("place", check_ident(order, "order id"), check_ident(customer, "customer id"),
               check_lines(lines, self.config), check_method(method), check_address(address))
        return self._call(caller, self.ctx.desk, req, self.config.step_timeout)

    def order(self, caller: Node | Process, order: Any) -> Any:
        """The order as last stored: `{"id", "customer", "lines", "status", "amount",
        "receipt", "tracking", "reason", "history", ...}`; status is one of placed,
        reserving, paying, shipping, shipped, compensating, cancelled."""
        return self._call(caller, self.ctx.desk, ("order", check_ident(order, "order id")), self.config.step_timeout)

    def open_orders(self, caller: Node | Process) -> Any:
        return self._call(caller, self.ctx.desk, ("open",), self.config.step_timeout)
