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
  `IN_FLIGHT` requests waiting for a match; riders are many, so a request does not wait
  for the previous one's acknowledgement, and "unanswered" counts the requests never
  acknowledged): the drivers' phones (`PHONES` processes of the same node, each serving
  its drivers one offer at a time) accept every offer at once, so most matches settle
  three claims; a request counts when its driver holds the trip. Meanwhile every driver
  keeps reporting its location every `REPORT_EVERY` seconds (100k drivers: 5k
  updates/s). It runs with rarer full collections (`apps_common.GC_THRESHOLDS`; the
  line says so).

Once the city is up (every driver located), the heap is frozen (`apps_common.freeze`),
as a long-running server does after boot: with 100k drivers the cyclic collector would
otherwise traverse about a million long-lived objects at every full collection (measured
before the thresholds of `apps_common`: 153 matches/s without, 386 with, 3,000 requests).
`cpu_s` and `gc_s` cover the measured part; other load on the machine shows as `wall_s`
above `cpu_s`.

`WORKLOADS` maps each name to a function `(quick) -> [{"system", "workload", "value",
"unit", ...}]` (bench/apps.py runs them).
"""
from __future__ import annotations

import asyncio
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from apps_common import GC_THRESHOLDS, Clocks, cli, freeze, settle, workload  # noqa: E402 - bench/ is on the path (bench/apps.py, or run here)

SIZES = {"full": {"drivers": 100_000, "updates": 300_000, "rides": 10_000, "km": 30.0},
         "quick": {"drivers": 20_000, "updates": 60_000, "rides": 2_000, "km": 14.0}}
CENTER = (37.7749, -122.4194)
PHONES = 2048  # driver phones (processes on the node), each handling its offers one at a time
REPORT_EVERY = 20.0  # seconds between two location updates of one phone in the match bench
IN_FLIGHT = 200  # unmatched requests at once: beyond the city's capacity offers time out and rides re-search


def _points(n: int, km: float, rng: random.Random) -> list[tuple[float, float]]:
    half = km / 2 / 111.195
    coslat = math.cos(math.radians(CENTER[0]))
    return [(CENTER[0] + rng.uniform(-half, half), CENTER[1] + rng.uniform(-half, half) / coslat)
            for _ in range(n)]


async def _city(node: Any, path: str, drivers: list[tuple[float, float]], phones: list) -> Any:
    from apps.rides import MatchConfig, RideService
    from storage import Store

    store = Store(path, node, mode="process")
    rides = RideService(node, store, MatchConfig(match_limit=60.0))
    rides.start()
    for i, (lat, lon) in enumerate(drivers):
        rides.driver_update(node, i, lat, lon, 0.0, phones[i % len(phones)] if phones else None)
        if i % 5000 == 4999:
            await settle(node)
    await settle(node)
    freeze()  # see the module docstring
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
            with Clocks() as clocks:
                for k, (i, dlat, dlon) in enumerate(moves):
                    lat, lon = drivers[i]
                    rides.driver_update(node, i, lat + dlat, lon + dlon, 90.0)
                    if k % 2000 == 1999:
                        await asyncio.sleep(0)  # let the node run, as a server's socket reads would
                await settle(node)
            await node.stop()
            store.close()
    return {"value": n / clocks.wall, "unit": "updates/s", "n": n, "drivers": len(drivers),
            "wall_s": round(clocks.wall, 3), **clocks.details()}


async def _keep_reporting(node: Any, rides: Any, drivers: list[tuple[float, float]]) -> None:
    """The phones keep reporting, each every `REPORT_EVERY` seconds (real ones do every
    ~4 s): a driver silent for 30 s goes offline, and a bench that outlives that would
    measure a city emptying itself (the full size did: matches fell to a few per second).
    Paced by the clock, so a busy node gets the updates it is due all the same."""
    start, sent = time.perf_counter(), 0
    while True:
        due = int((time.perf_counter() - start) * len(drivers) / REPORT_EVERY)
        for k in range(sent, due):
            rides.driver_update(node, k % len(drivers), *drivers[k % len(drivers)], 0.0)
        sent = due
        await asyncio.sleep(0.05)


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
            phones = [node.spawn(Phone, None, won) for _ in range(PHONES)]
            rides, store = await _city(node, tmp, drivers, phones)
            for pid in phones:
                node.get_process(pid).rides = rides
            n = min(size["rides"], size["drivers"] // 4)
            pickups = _points(n, size["km"] * 0.8, rng)
            feeder = asyncio.create_task(_keep_reporting(node, rides, drivers))
            acks = []
            with Clocks() as clocks:
                for k, pickup in enumerate(pickups):  # closed loop: at most IN_FLIGHT unmatched requests
                    while k - len(won) >= IN_FLIGHT and clocks.elapsed() < 120.0:
                        await asyncio.sleep(0.001)
                    # Riders are many: a request does not wait for the previous one's answer.
                    acks.append(rides.request_ride(node, f"r{k}", f"u{k}", pickup, CENTER, None))
                while len(won) < n and clocks.elapsed() < 120.0:  # bounded: a bench stops by itself
                    await asyncio.sleep(0.005)
            refused = [fut.exception() for fut in acks if fut.done() and fut.exception() is not None]
            assert not refused, f"{len(refused)} requests refused, the first with {refused[0]!r}"
            feeder.cancel()
            await node.stop()
            store.close()
    return {"value": len(won) / clocks.wall, "unit": "matches/s", "n": len(won), "requested": n,
            "unanswered": sum(not fut.done() for fut in acks),
            "drivers": len(drivers), "wall_s": round(clocks.wall, 3), **clocks.details()}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "rides_location_updates_per_s": workload("rides_location_updates_per_s", _updates, SIZES, (20_000.0, ">=")),
    "rides_matches_per_s": workload("rides_matches_per_s", _matches, SIZES, (2_000.0, ">="), GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
