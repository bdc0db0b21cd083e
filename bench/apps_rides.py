#!/usr/bin/env python
"""Ride-matching benchmarks on the real-time driver (`async with Node()`), public API only.

    python bench/apps_rides.py            # readable lines, full sizes
    python bench/apps_rides.py --quick    # smaller city, < 1 min
    python bench/apps_rides.py --json     # one JSON object per line

Workloads (one city: drivers spread uniformly over a square around San Francisco, the
store in a temporary directory with mode "process": LMDB without fsync, so the figures
are the actors and the matching, not the disk):
- rides_location_updates_per_s: location updates (driver -> its cell) per wall second,
  once every driver has reported once;
- rides_matches_per_s: ride requests matched per wall second, closed loop (at most
  `IN_FLIGHT` requests waiting for a match): every driver's phone accepts its offers at
  once (the phones are processes of the same node); a request counts when its driver
  holds the trip.

`WORKLOADS` maps each name to a function `(quick) -> [{"system", "workload", "value",
"unit", ...}]` (bench/apps.py runs them).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

GOALS = {"rides_location_updates_per_s": 20_000.0, "rides_matches_per_s": 2_000.0}
SIZES = {"full": {"drivers": 100_000, "updates": 300_000, "rides": 10_000, "km": 30.0},
         "quick": {"drivers": 20_000, "updates": 60_000, "rides": 2_000, "km": 14.0}}
CENTER = (37.7749, -122.4194)
IN_FLIGHT = 200  # unmatched requests at once: beyond the city's capacity offers time out and rides re-search


def _points(n: int, km: float, rng: random.Random) -> list[tuple[float, float]]:
    half = km / 2 / 111.195
    coslat = math.cos(math.radians(CENTER[0]))
    return [(CENTER[0] + rng.uniform(-half, half), CENTER[1] + rng.uniform(-half, half) / coslat)
            for _ in range(n)]


async def _settle(node: Any) -> None:
    """Wait until the node has nothing left to run."""
    while node.runnable():
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    while node.runnable():
        await asyncio.sleep(0)


async def _city(node: Any, path: str, drivers: list[tuple[float, float]], phones: list) -> Any:
    from apps.rides import MatchConfig, RideService
    from storage import Store

    store = Store(path, node, mode="process")
    rides = RideService(node, store, MatchConfig(match_limit=60.0))
    rides.start()
    for i, (lat, lon) in enumerate(drivers):
        rides.driver_update(node, i, lat, lon, 0.0, phones[i % len(phones)] if phones else None)
        if i % 5000 == 4999:
            await _settle(node)
    await _settle(node)
    return rides, store


async def _updates(size: dict) -> dict:
    from actors import Node

    rng = random.Random(1)
    drivers = _points(size["drivers"], size["km"], rng)
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            rides, store = await _city(node, tmp, drivers, [])
            n = size["updates"]
            moves = [(rng.randrange(len(drivers)), rng.uniform(-0.0005, 0.0005), rng.uniform(-0.0005, 0.0005))
                     for _ in range(n)]
            wall, cpu = time.perf_counter(), time.process_time()
            for k, (i, dlat, dlon) in enumerate(moves):
                lat, lon = drivers[i]
                rides.driver_update(node, i, lat + dlat, lon + dlon, 90.0)
                if k % 2000 == 1999:
                    await asyncio.sleep(0)  # let the node run, as a server's socket reads would
            await _settle(node)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            await node.stop()
            store.close()
    return {"value": n / wall, "unit": "updates/s", "n": n, "drivers": len(drivers), "cpu_s": round(cpu, 3)}


async def _matches(size: dict) -> dict:
    from actors import GenServer, Node

    class Phone(GenServer):
        """Accepts every offer at once; counts the wins."""

        def init(self, rides: Any, won: list) -> None:
            self.rides, self.won = rides, won

        async def handle_info(self, msg: tuple) -> None:
            if msg[2] == "offer":
                try:
                    if await self.rides.accept(self, msg[1], msg[3]) == "accepted":
                        self.won.append(msg[3])
                except Exception:  # noqa: BLE001 - another driver won this ride
                    pass

    rng = random.Random(2)
    drivers = _points(size["drivers"], size["km"], rng)
    won: list = []
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            phones = [node.spawn(Phone, None, won) for _ in range(256)]
            rides, store = await _city(node, tmp, drivers, phones)
            for pid in phones:
                node.get_process(pid).rides = rides
            n = min(size["rides"], size["drivers"] // 4)
            pickups = _points(n, size["km"] * 0.8, rng)
            wall, cpu = time.perf_counter(), time.process_time()
            for k, pickup in enumerate(pickups):  # closed loop: at most IN_FLIGHT unmatched requests
                while k - len(won) >= IN_FLIGHT and time.perf_counter() - wall < 120.0:
                    await asyncio.sleep(0.001)
                await rides.request_ride(node, f"r{k}", f"u{k}", pickup, CENTER, None)
            while len(won) < n and time.perf_counter() - wall < 120.0:  # bounded: a bench stops by itself
                await asyncio.sleep(0.005)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            await node.stop()
            store.close()
    return {"value": len(won) / wall, "unit": "matches/s", "n": len(won), "requested": n,
            "drivers": len(drivers), "cpu_s": round(cpu, 3)}


def _run(name: str, body: Callable[[dict], Any]) -> Callable[[bool], list[dict]]:
    def workload(quick: bool) -> list[dict]:
        logging.getLogger("actors").setLevel(logging.CRITICAL)
        logging.getLogger("supervision").setLevel(logging.CRITICAL)
        out = asyncio.run(body(SIZES["quick" if quick else "full"]))
        value = out.pop("value")
        return [{"system": "letitcrash", "workload": name, "value": round(value, 1), "unit": out.pop("unit"),
                 "goal": GOALS[name], "met": value >= GOALS[name], **out}]
    return workload


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "rides_location_updates_per_s": _run("rides_location_updates_per_s", _updates),
    "rides_matches_per_s": _run("rides_matches_per_s", _matches),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=sorted(WORKLOADS))
    args = parser.parse_args(argv)
    for name, workload in WORKLOADS.items():
        if args.only and name != args.only:
            continue
        for line in workload(args.quick):
            print(json.dumps(line) if args.json else
                  f"{line['workload']:32} {line['value']:>12,.1f} {line['unit']:10} "
                  f"(goal {line['goal']:,.0f}: {'met' if line['met'] else 'NOT met'}) n={line['n']}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
