"""One process per order's shipment: the carrier's side of the last step.

    ("ship", lines, address)   -> {"status": "shipped", "tracking", ...}  | ShipFailed
    ("view",)                  -> the shipment

Shipping is idempotent by order: a retry answers the same shipment, and a refusal (an
address the carrier does not deliver to) is remembered and answered again.
"""
from __future__ import annotations

from typing import Any

from storage import PersistentServer

from .config import OrderConfig
from .errors import BadRequest, ShipFailed


class Shipment(PersistentServer):
    """`init(store, ("shipment", order))`; `config` comes with the class."""

    config: OrderConfig

    def initial_state(self) -> dict[str, Any]:
        return {"order": self.key[1], "status": None, "tracking": None, "lines": None, "country": None,
                "at": None, "reason": None}

    def handle_call(self, req: tuple, caller: Any) -> Any:
        if req[0] == "ship":
            return self._ship(req[1], req[2])
        if req[0] == "view":
            return dict(self.state)
        return BadRequest(f"shipment: unknown request {req!r:.200}")

    def _ship(self, lines: list, address: dict) -> Any:
        s = self.state
        if s["status"] is None:
            s["lines"], s["country"], s["at"] = lines, address["country"], self.now()
            if address["country"] in self.config.ship_to:
                s["status"], s["tracking"] = "shipped", f"TRK-{self.key[1]}"
            else:
                s["status"], s["reason"] = "failed", f"the carrier does not deliver to {address['country']}"
        if s["status"] == "failed":
            return ShipFailed(s["reason"])
        return dict(s)
