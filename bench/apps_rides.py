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
- rides_match_cpu_us: the same matches on the deterministic driver (`Node(seed=1)`,
  virtual time: the same work at every run, whatever else loads the machine), without
  location updates: the process's CPU µs per match, with "writes_per_match" (values the
  store wrote). The goal is what a match may cost for 2,000 matches/s on one core. Its
  breakdown ("cost", printed too): the collector's µs, the rest by layer (from a
  profiled second pass of PROFILED more rides, as below), and counts per match.

The match line breaks the cost of a match down ("cost", printed as a table too). The
location updates are a load paced by the wall clock (5k/s at full size), so the fewer
matches a second a loaded machine allows, the more updates each match carries: after one
round of updates (REPORT_EVERY seconds, so that every driver is online again), CALIBRATE_S
seconds of updates alone, before the rides, give what one costs ("update_us"), and the
figures below take the updates out where they say so.
- CPU µs per match: "cpu" (the process), "node_thread" (the thread running the node,
  asyncio and the benchmark's phones and feeder), "store_thread" (the rest: the store's
  writer thread committing to LMDB), "gc" (the cyclic collector, on the node thread), all
  measured on the run above, without any profiler; "updates" sent per match, and
  "match_cpu": "cpu" less their cost ("updates_us"), the steadier figure on a shared machine.
- The match's node thread µs outside the collector and the updates, by layer: a second
  pass of PROFILED rides (at most PROFILE_LIMIT_S seconds, updates paused) runs under
  cProfile, whose own time per layer (actors/ = kernel, apps/rides = rides, storage/ and
  the codec = storage, numpy's Python wrappers = numpy, asyncio = loop, bench/ = the
  phones; a C function counts for the layer of its caller, so numpy's C code called by
  the rides code counts as rides) gives each layer's share, applied to the unprofiled
  figure. cProfile's own cost per call inflates layers of many small calls a little:
  shares, not exact times.
- Counts per match: "turns" and "messages" (taken by processes), "writes" (values the
  store wrote), less the updates' share of each, and "commits", over the measured run;
  from the profiled pass: "deliveries", "held" (outputs held until a commit), "timers"
  started, "encodes" (msgpack packs) and "saves" (writes processes handed to the store;
  see `profile_layers.kernel_counts`).

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
import cProfile
import math
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from apps_common import GC_THRESHOLDS, Clocks, cli, freeze, settle, workload  # noqa: E402 - bench/ is on the path (bench/apps.py, or run here)
from profile_layers import cpu_by_layer, kernel_counts, layer_by  # noqa: E402

SIZES = {"full": {"drivers": 100_000, "updates": 300_000, "rides": 10_000, "km": 30.0},
         "quick": {"drivers": 20_000, "updates": 60_000, "rides": 2_000, "km": 14.0}}
CENTER = (37.7749, -122.4194)
PHONES = 2048  # driver phones (processes on the node), each handling its offers one at a time
REPORT_EVERY = 20.0  # seconds between two location updates of one phone in the match bench
IN_FLIGHT = 200  # unmatched requests at once: beyond the city's capacity offers time out and rides re-search
PROFILED = 0.2  # the profiled pass requests this share of the measured pass's rides
PROFILE_LIMIT_S = 8.0  # at most, as the updates pause meanwhile (a driver silent for 30 s goes offline)
CALIBRATE_S = 3.0  # seconds of location updates alone, before the rides, to measure what one costs
LAYERS = (("/actors/codec.py", "storage"), ("/actors/", "kernel"), ("/apps/rides/", "rides"),
          ("/storage/", "storage"), ("/supervision/", "supervision"), ("/numpy/", "numpy"),
          ("/asyncio/", "loop"), ("selectors.py", "loop"), ("/bench/", "bench"))
"""(part of a file's path, its layer), first match wins; else "other"."""
layer_of = layer_by(LAYERS)


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


async def _keep_reporting(node: Any, rides: Any, drivers: list[tuple[float, float]], feed: dict) -> None:
    """The phones keep reporting, each every `REPORT_EVERY` seconds (real ones do every
    ~4 s): a driver silent for 30 s goes offline, and a bench that outlives that would
    measure a city emptying itself (the full size did: matches fell to a few per second).
    Paced by the clock, so a busy node gets the updates it is due all the same;
    `feed["sent"]` counts those sent, and while `feed["paused"]` those due are skipped."""
    start, due = time.perf_counter(), 0
    while True:
        last, due = due, int((time.perf_counter() - start) * len(drivers) / REPORT_EVERY)
        if not feed["paused"]:
            for k in range(last, due):
                rides.driver_update(node, k % len(drivers), *drivers[k % len(drivers)], 0.0)
            feed["sent"] += due - last
        await asyncio.sleep(0.05)


def _phone() -> type:
    """The drivers' phone of the match workloads."""
    from actors import GenServer

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

    return Phone


async def _match_cpu(size: dict) -> dict:
    """rides_match_cpu_us: see the module docstring."""
    from actors import Node
    from apps.rides import MatchConfig, RideService
    from storage import Store

    rng = random.Random(2)
    drivers = _points(size["drivers"], size["km"], rng)
    n = min(size["rides"], size["drivers"] // 4)
    pickups = _points(n + int(n * PROFILED), size["km"] * 0.8, rng)  # the first n as ever, then the profiled pass's
    won: list = []
    node = Node(seed=1)

    def request_all(first: int, count: int) -> int:
        """Request rides first..first+count, IN_FLIGHT at a time; the matches made."""
        before = len(won)
        for k in range(first, first + count):
            rides.request_ride(node, f"r{k}", f"u{k}", pickups[k], CENTER, None)
            if (k - first) % IN_FLIGHT == IN_FLIGHT - 1:
                node.run_for(0.5)
        for _ in range(120):  # bounded: a minute of virtual time
            if len(won) - before >= count:
                break
            node.run_for(0.5)
        return len(won) - before

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, node, mode="process")
        rides = RideService(node, store, MatchConfig(match_limit=60.0))
        rides.start()
        phones = [node.spawn(_phone(), rides, won) for _ in range(PHONES)]
        for i, (lat, lon) in enumerate(drivers):
            rides.driver_update(node, i, lat, lon, 0.0, phones[i % len(phones)])
            if i % 5000 == 4999:
                node.run_for(0.1)
        node.run_for(1.0)
        freeze()
        start = _counts(node, store)
        with Clocks() as clocks:
            matched = request_all(0, n)
        counted = {key: value - start[key] for key, value in _counts(node, store).items()}
        profile = cProfile.Profile()
        profile.enable()
        profiled = request_all(n, len(pickups) - n)
        profile.disable()
        store.close()
    cost = cpu_breakdown(clocks, counted, matched, pstats.Stats(profile).stats, profiled)
    print_cpu_cost(cost)
    return {"value": clocks.cpu * 1e6 / max(matched, 1), "unit": "us/match", "n": matched, "requested": n,
            "drivers": len(drivers), "writes_per_match": cost["writes"], **clocks.details(), "cost": cost}


def _counts(node: Any, store: Any) -> dict[str, int]:
    stats = node.statistics()
    return {"turns": stats["turns"], "messages": stats["messages"], "writes": store.writes, "commits": store.commits}


def cpu_breakdown(clocks: Clocks, counted: dict[str, int], matched: int, stats: dict, profiled: int) -> dict[str, Any]:
    """The deterministic match's cost: CPU µs per match, the collector's part, the rest
    split by the layers of the profile `stats` of a second pass that made `profiled`
    matches (shares applied to the unprofiled figure, as `breakdown` does), and counts
    per match (`counted` over the measured pass; deliveries, encodes... from the profile)."""
    per = 1e6 / max(matched, 1)
    rest = (clocks.cpu - clocks.gc_cpu) * per
    own = cpu_by_layer(stats, layer_of)
    total = sum(own.values()) or 1.0
    cost: dict[str, Any] = {
        "cpu": round(clocks.cpu * per, 1), "gc": round(clocks.gc_cpu * per, 1),
        "layers_us": {k: round(rest * v / total, 1) for k, v in sorted(own.items(), key=lambda kv: -kv[1])}}
    cost.update({key: round(value / max(matched, 1), 3 if key == "commits" else 2) for key, value in counted.items()})
    cost.update({key: round(value / max(profiled, 1), 2) for key, value in kernel_counts(stats).items()})
    cost["profiled_matches"] = profiled
    return cost


def print_cpu_cost(cost: dict[str, Any]) -> None:
    """The deterministic breakdown as a few lines on stderr (the JSON line has it as "cost")."""
    out = sys.stderr
    print(f"rides match CPU µs per match (deterministic, no location updates): {cost['cpu']}, of which gc "
          f"{cost['gc']}; outside gc by layer: " + ", ".join(f"{k} {v}" for k, v in cost["layers_us"].items()),
          file=out)
    print(f"  per match: {cost['turns']} turns taking {cost['messages']} messages, {cost['deliveries']} deliveries "
          f"({cost['held']} held until a commit), {cost['timers']} timers, {cost['encodes']} msgpack encodes, "
          f"{cost['saves']} saves writing {cost['writes']} values in {cost['commits']} commits", file=out, flush=True)


async def _matches(size: dict) -> dict:
    from actors import Node

    rng = random.Random(2)
    drivers = _points(size["drivers"], size["km"], rng)
    won: list = []
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            phones = [node.spawn(_phone(), None, won) for _ in range(PHONES)]
            rides, store = await _city(node, tmp, drivers, phones)
            for pid in phones:
                node.get_process(pid).rides = rides
            n = min(size["rides"], size["drivers"] // 4)
            pickups = _points(n + int(n * PROFILED), size["km"] * 0.8, rng)
            feed = {"sent": 0, "paused": False}
            feeder = asyncio.create_task(_keep_reporting(node, rides, drivers, feed))
            acks: list = []

            async def request_all(first: int, count: int, clocks: Clocks, limit: float = 120.0) -> int:
                """Request rides first..first+count, closed loop (at most IN_FLIGHT unmatched
                requests), for at most `limit` seconds; the matches made meanwhile."""
                before = len(won)
                for k in range(first, first + count):
                    while k - first - (len(won) - before) >= IN_FLIGHT and clocks.elapsed() < limit:
                        await asyncio.sleep(0.001)
                    if clocks.elapsed() >= limit:
                        break
                    # Riders are many: a request does not wait for the previous one's answer.
                    acks.append(rides.request_ride(node, f"r{k}", f"u{k}", pickups[k], CENTER, None))
                while len(won) - before < count and clocks.elapsed() < limit:  # bounded: a bench stops by itself
                    await asyncio.sleep(0.005)
                return len(won) - before

            # One round of updates first: setting up a big city on a loaded machine can take
            # longer than OFFLINE_AFTER, and drivers gone offline meanwhile come back (and
            # are started again) with their next update, which is no update's usual cost.
            await asyncio.sleep(REPORT_EVERY)
            with Clocks() as updating:  # the updates alone, to take them out of a match's cost
                counters = Counters(node, store, feed)
                await asyncio.sleep(CALIBRATE_S)
            per_update = counters.per_update(updating)
            with Clocks() as clocks:
                counters = Counters(node, store, feed)
                matched = await request_all(0, n, clocks)
                counted = counters.since()
            profile = cProfile.Profile()
            feed["paused"] = True  # the match path alone (bounded: no driver is silent for 30 s)
            with Clocks() as profiled_clocks:
                profile.enable()
                profiled = await request_all(n, len(pickups) - n, profiled_clocks, PROFILE_LIMIT_S)
                profile.disable()
            refused = [fut.exception() for fut in acks if fut.done() and fut.exception() is not None]
            assert not refused, f"{len(refused)} requests refused, the first with {refused[0]!r}"
            feeder.cancel()
            await node.stop()
            store.close()
    cost = breakdown(clocks, counted, per_update, matched, pstats.Stats(profile).stats, profiled)
    print_cost(cost)
    return {"value": matched / clocks.wall, "unit": "matches/s", "n": matched, "requested": n,
            "unanswered": sum(not fut.done() for fut in acks),
            "drivers": len(drivers), "wall_s": round(clocks.wall, 3), **clocks.details(), "cost": cost}


class Counters:
    """The counters of a span that need no profiler: the node's turns and messages taken,
    the store's commits and values written, the location updates sent, and the CPU of the
    node's thread (the store's writer thread commits on its own)."""

    KEYS = ("turns", "messages", "commits", "writes", "updates", "node_thread")

    def __init__(self, node: Any, store: Any, feed: dict) -> None:
        self.node, self.store, self.feed = node, store, feed
        self.start = self.read()

    def read(self) -> dict[str, float]:
        stats = self.node.statistics()
        return dict(zip(self.KEYS, (stats["turns"], stats["messages"], self.store.commits, self.store.writes,
                                    self.feed["sent"], time.thread_time())))

    def since(self) -> dict[str, float]:
        now = self.read()
        return {key: now[key] - self.start[key] for key in self.KEYS}

    def per_update(self, clocks: Clocks) -> dict[str, float]:
        """What one location update cost since the start (nothing else ran): the
        process's CPU seconds (`clocks`, closed just before), turns, messages, values written."""
        counted = self.since()
        sent = max(counted["updates"], 1)
        return {"cpu": clocks.cpu / sent, **{key: counted[key] / sent for key in ("turns", "messages", "writes")}}


def breakdown(clocks: Clocks, counted: dict[str, float], per_update: dict[str, float], matched: int,
              stats: dict, profiled: int) -> dict[str, Any]:
    """The cost of a match (see the module docstring): CPU µs measured, in all and less
    the location updates sent meanwhile (at `per_update`'s cost each), whose node-thread
    part outside the collector is split by the layers of the profile `stats` (pstats'
    table) of a pass that made `profiled` matches; counts per match from `counted` (the
    measured span's `Counters.since`), less the updates' share, and from the profile."""
    per = 1e6 / max(matched, 1)
    updates = counted["updates"] / max(matched, 1)
    updates_us = updates * per_update["cpu"] * 1e6
    gc_us = clocks.gc_cpu * per
    rest = max(counted["node_thread"] * per - updates_us - gc_us, 0.0)
    own = cpu_by_layer(stats, layer_of)
    total = sum(own.values()) or 1.0
    per_profiled = 1 / max(profiled, 1)
    cost: dict[str, Any] = {
        "cpu": round(clocks.cpu * per, 1), "match_cpu": round(max(clocks.cpu * per - updates_us, 0.0), 1),
        "updates": round(updates, 2), "updates_us": round(updates_us, 1),
        "update_us": round(per_update["cpu"] * 1e6, 1), "node_thread": round(counted["node_thread"] * per, 1),
        "store_thread": round(max(clocks.cpu - counted["node_thread"], 0.0) * per, 1), "gc": round(gc_us, 1),
        "layers_us": {k: round(rest * v / total, 1) for k, v in sorted(own.items(), key=lambda kv: -kv[1])}}
    cost.update({key: round(counted[key] / max(matched, 1) - updates * per_update[key], 2)
                 for key in ("turns", "messages", "writes")})
    cost["commits"] = round(counted["commits"] / max(matched, 1), 3)
    cost.update({key: round(value * per_profiled, 2) for key, value in kernel_counts(stats).items()})
    cost["profiled_matches"] = profiled
    return cost


def print_cost(cost: dict[str, Any]) -> None:
    """The breakdown as a few lines on stderr (the JSON line has it as "cost")."""
    out = sys.stderr
    print(f"rides match cost, CPU µs per match: {cost['cpu']} in all = node thread {cost['node_thread']} "
          f"(of which gc {cost['gc']}) + store thread {cost['store_thread']}; {cost['updates']} location updates "
          f"meanwhile at {cost['update_us']} µs each, so the match itself {cost['match_cpu']}", file=out)
    print("  the match's node thread outside gc, by layer (µs): "
          + ", ".join(f"{k} {v}" for k, v in cost["layers_us"].items()), file=out)
    print(f"  per match, updates left out: {cost['turns']} turns taking {cost['messages']} "
          f"messages, {cost['deliveries']} deliveries ({cost['held']} held until a commit), {cost['timers']} timers, "
          f"{cost['encodes']} msgpack encodes, {cost['saves']} saves writing {cost['writes']} values in "
          f"{cost['commits']} commits", file=out, flush=True)


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "rides_location_updates_per_s": workload("rides_location_updates_per_s", _updates, SIZES, (20_000.0, ">=")),
    "rides_matches_per_s": workload("rides_matches_per_s", _matches, SIZES, (2_000.0, ">="), GC_THRESHOLDS),
    "rides_match_cpu_us": workload("rides_match_cpu_us", _match_cpu, SIZES, (500.0, "<="), GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
