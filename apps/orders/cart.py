"""One process per customer: the cart, and its checkout into an order.

    ("set", sku, qty)                      -> the cart   (0 removes the sku: a PUT, safe to retry)
    ("view",)                              -> {"customer", "lines", "orders"}
    ("checkout", order, method, address)   -> order      (the order id is the idempotency key)

A checkout places the cart's lines as order `order` with the desk and empties the cart
only once the desk has stored the order. A retried checkout of an order already placed
answers the same id (the cart remembers its newest checkouts), so a client retries with
the same id until it gets an answer, and never places two orders.
"""
from __future__ import annotations

from typing import Any

from storage import PersistentServer
from supervision.client import request

from .context import OrdersContext
from .errors import BadRequest

MAX_CHECKOUTS = 100  # order ids a cart remembers


class Cart(PersistentServer):
    """`init(store, ("cart", customer))`; `ctx` comes with the class (`apps.common.bind`)."""

    ctx: OrdersContext

    def initial_state(self) -> dict[str, Any]:
        return {"lines": {}, "orders": {}}

    def view(self) -> dict[str, Any]:
        lines = sorted(self.state["lines"].items(), key=lambda kv: str(kv[0]))
        return {"customer": self.key[1], "lines": [list(kv) for kv in lines], "orders": list(self.state["orders"])}

    def handle_call(self, req: tuple, caller: Any) -> Any:
        tag = req[0]
        if tag == "set":
            return self._set(req[1], req[2])
        if tag == "view":
            return self.view()
        if tag == "checkout":
            return self._checkout(*req[1:])
        return BadRequest(f"cart: unknown request {req!r:.200}")

    def _set(self, sku: Any, qty: int) -> Any:
        lines = self.state["lines"]
        if qty == 0:
            lines.pop(sku, None)
        elif sku in lines or len(lines) < self.ctx.config.max_lines:
            lines[sku] = qty
        else:
            return BadRequest(f"a cart holds at most {self.ctx.config.max_lines} skus")
        return self.view()

    async def _checkout(self, order: Any, method: str, address: dict) -> Any:
        s = self.state
        if order in s["orders"]:
            return order  # placed already: a retry
        if not s["lines"]:
            return BadRequest(f"the cart of customer {self.key[1]!r} is empty")
        lines = self.view()["lines"]
        try:
            await request(self, self.ctx.desk, ("place", order, self.key[1], lines, method, address),
                          self.ctx.config.step_timeout)
        except Exception as exc:  # noqa: BLE001 - the client hears it (and retries what is retryable)
            return exc
        s["orders"][order] = self.now()
        if len(s["orders"]) > MAX_CHECKOUTS:
            del s["orders"][next(iter(s["orders"]))]
        s["lines"] = {}
        return order
