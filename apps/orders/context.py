"""What the order service's processes share on one node: the config, the registered
names of its routers, the registry of running sagas and where the payment provider is."""
from __future__ import annotations

from typing import Any

from actors import Node, Registry

from .config import OrderConfig


class OrdersContext:
    stock = "orders.stock"
    carts = "orders.carts"
    shipments = "orders.shipments"
    sagas = "orders.sagas"
    desk = "orders.desk"

    def __init__(self, node: Node, config: OrderConfig, payments: Any) -> None:
        self.config = config
        self.payments = payments  # the provider's API process: a name, a pid or a RemoteName
        self.registry = Registry(node, "orders")  # ("order", id) -> its running saga
