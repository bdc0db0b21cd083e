"""Amazon-style orders as supervised, persistent processes.

Modules: `config` (numbers and input checks), `errors`, `stock` (one process per sku:
versioned stock and reservations), `cart` (one per customer), `shipping` (one per
shipment), `saga` (one per order: reserve -> pay -> ship, with compensations), `payments`
(the payment provider, an external service with idempotency keys), `service` (the tree,
the desk, the API), `sim` (the simulated system for scenarios).
"""
from .config import OrderConfig
from .errors import (BadRequest, Declined, NotFound, OrderError, OutOfStock, ReservationExpired, ShipFailed,
                     Unavailable, VersionConflict)
from .payments import PaymentService, ProviderConfig
from .service import OrderService

__all__ = ["BadRequest", "Declined", "NotFound", "OrderConfig", "OrderError", "OrderService", "OutOfStock",
           "PaymentService", "ProviderConfig", "ReservationExpired", "ShipFailed", "Unavailable",
           "VersionConflict"]
