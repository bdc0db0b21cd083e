#!/usr/bin/env python
"""Gateway benchmarks on the real-time driver (`async with Node()`), public API only.

    python bench/apps_gateway.py            # full sizes
    python bench/apps_gateway.py --quick    # smaller, < 1 min
    python bench/apps_gateway.py --json     # one JSON object per line

One node runs the gateway in front of the order service (route "stock": a sku's stock,
read from its process), the store in a temporary directory in mode "process". The rate
limit is set out of the way and the bulkhead holds every client's call (the figures are
the gateway's own cost, not its refusals).
`clients` processes on the node ask in a closed loop, each for random skus.

- gateway_requests_per_s: answers per wall second, every one live: rate limit, route,
  the pool's breaker and bulkhead, a call process, the dependency, the answer and its
  copy in the fallback cache. p50 and p99 of the answer time alongside (µs).
- gateway_fallbacks_per_s: the same with the order service stopped: after the first
  failures the circuit is open and every answer is the cached one, at once (what the
  gateway costs when a dependency is down).

`WORKLOADS` maps each name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import GC_THRESHOLDS, Clocks, cli, settle, workload  # noqa: E402

SIZES = {"full": {"requests": 200_000, "clients": 200, "skus": 1_000},
         "quick": {"requests": 30_000, "clients": 100, "skus": 300}}


async def _run(size: dict, down: bool) -> dict:
    from actors import Node
    from apps.gateway import GatewayConfig, GatewayService, Route
    from apps.orders import OrderService
    from storage import Store

    skus = [f"sku{i}" for i in range(size["skus"])]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, node, mode="process")
            shop = OrderService(node, store)
            shop.start()
            for sku in skus:
                await shop.receive_stock(node, sku, "first", 10, price=999)
            # Real time: a call has 0.5 s, well above the dependency's worst answer here.
            # The bulkhead holds every client's call: none is shed.
            config = GatewayConfig(budget=1.0, call_timeout=0.5, margin=0.1, rate=1e9, burst=1_000_000_000,
                                   cache_entries=size["skus"], max_concurrent=size["clients"])
            gateway = GatewayService(node, store, [Route("stock", lambda proc, sku: shop.stock(proc, sku))], config)
            gateway.start()
            for sku in skus:  # every sku's answer in the fallback cache
                await gateway.get(node, "warm", "stock", sku)
            if down:
                await shop.stop()
            await settle(node)
            per_client = size["requests"] // size["clients"]
            samples: list[float] = []
            sources: dict[str, int] = {}
            left = [size["clients"]]
            done = asyncio.Event()

            async def client(proc: Any, n: int) -> None:
                rng = random.Random(n)
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    answer = await gateway.get(proc, f"c{n}", "stock", skus[rng.randrange(len(skus))])
                    samples.append(time.perf_counter() - t0)
                    sources[answer.source] = sources.get(answer.source, 0) + 1
                left[0] -= 1
                if not left[0]:
                    done.set()

            with Clocks() as clocks:
                for n in range(size["clients"]):
                    node.spawn(client, n)
                await asyncio.wait_for(done.wait(), 900)
            breaker = gateway.breaker("stock")
            await node.stop()
            store.close()
    n = per_client * size["clients"]
    us = np.asarray(samples) * 1e6
    p50, p99 = np.percentile(us, [50, 99])
    want = "cache" if down else "live"
    assert sources.get(want, 0) >= n - 10, sources  # (down: the first calls fail before the circuit opens)
    return {"value": n / clocks.wall, "unit": "requests/s", "n": n, "clients": size["clients"],
            "p50_us": round(float(p50), 1), "p99_us": round(float(p99), 1), "sources": sources,
            "breaker": breaker[0], **clocks.details()}


async def _requests(size: dict) -> dict:
    return await _run(size, down=False)


async def _fallbacks(size: dict) -> dict:
    return await _run(size, down=True)


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "gateway_requests_per_s": workload("gateway_requests_per_s", _requests, SIZES, None, GC_THRESHOLDS),
    "gateway_fallbacks_per_s": workload("gateway_fallbacks_per_s", _fallbacks, SIZES, None, GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
