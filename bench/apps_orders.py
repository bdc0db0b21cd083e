#!/usr/bin/env python
"""Order benchmarks on the real-time driver (`async with Node()`), public API only.

    python bench/apps_orders.py            # full sizes
    python bench/apps_orders.py --quick    # smaller, < 1 min
    python bench/apps_orders.py --json     # one JSON object per line

One node runs the order service and the payment provider (no latency, no failures), the
store in a temporary directory in mode "process" (LMDB without fsync): the figure is the
actors, the sagas and LMDB, not the disk.

- orders_per_s: orders carried through the whole saga (reserve each line at its sku with
  optimistic concurrency, charge with an idempotency key, commit the stock, ship) per
  wall second. Orders of 1..3 lines of 1..2 items over `skus` skus with stock enough for
  all are placed `batch` at a time; the next batch goes once the desk has no order open.
  Every order is then read back: all must have shipped, and the stock sold must equal
  the items ordered. Conflicts between orders on one sku are retried (the `hot` detail
  says how many skus the orders share).

`WORKLOADS` maps each name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import GC_THRESHOLDS, Clocks, cli, settle, workload  # noqa: E402

SIZES = {"full": {"orders": 20_000, "batch": 1_000, "skus": 1_000},
         "quick": {"orders": 3_000, "batch": 500, "skus": 300}}
ADDRESS = {"street": "410 Terry Ave N", "city": "Seattle", "country": "US"}


async def _orders(size: dict) -> dict:
    from actors import Node
    from apps.orders import OrderService, PaymentService
    from storage import Store

    rng = random.Random(5)
    skus = [f"sku{i}" for i in range(size["skus"])]
    orders = [[[sku, 1 + rng.randrange(2)] for sku in sorted(rng.sample(skus, 1 + rng.randrange(3)))]
              for _ in range(size["orders"])]
    wanted: dict[str, int] = {}
    for lines in orders:
        for sku, qty in lines:
            wanted[sku] = wanted.get(sku, 0) + qty
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, node, mode="process")
            PaymentService(node, store).start()
            shop = OrderService(node, store)
            shop.start()
            for sku in skus:
                await shop.receive_stock(node, sku, "first", wanted.get(sku, 0) + 1, price=999)
            await settle(node)
            with Clocks() as clocks:
                for i in range(0, len(orders), size["batch"]):
                    placed = [shop.place_order(node, f"o{n}", f"c{n % 500}", orders[n], "pm_card_visa", ADDRESS)
                              for n in range(i, min(len(orders), i + size["batch"]))]
                    for fut in placed:
                        await fut
                    while await shop.open_orders(node):
                        await asyncio.sleep(0.002)
            statuses = [(await shop.order(node, f"o{n}"))["status"] for n in range(len(orders))]
            sold = {sku: (await shop.stock(node, sku))["sold"] for sku in skus}
            await node.stop()
            store.close()
    assert statuses.count("shipped") == len(orders), {s: statuses.count(s) for s in set(statuses)}
    assert all(sold[sku] == wanted.get(sku, 0) for sku in skus), "the stock sold is not what was ordered"
    lines = sum(len(o) for o in orders)
    return {"value": len(orders) / clocks.wall, "unit": "orders/s", "n": len(orders), "lines": lines,
            "hot": size["skus"], "batch": size["batch"], "wall_s": round(clocks.wall, 3), **clocks.details()}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "orders_per_s": workload("orders_per_s", _orders, SIZES, None, GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
