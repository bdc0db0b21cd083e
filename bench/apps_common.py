"""What the case studies' benchmarks share (`bench/apps_<app>.py`): waiting for a
real-time node to go idle, the JSON line of a workload, and the command line of a module.

    WORKLOADS = {"chat_msgs_per_s": workload("chat_msgs_per_s", _messages, SIZES, (300_000.0, ">="))}
    if __name__ == "__main__":
        sys.exit(cli(__doc__, WORKLOADS))
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import time
from typing import Any, Awaitable, Callable

LOGGERS = ("actors", "supervision", "storage", "apps")  # crash reports would be timed too
# The cyclic collector's thresholds for the workloads that ask: a full collection (which
# traverses every live, unfrozen object) after 1,000 second-generation ones instead of
# CPython's 10. With 100k sessions and their shards' state in the heap, the default
# spends more CPU in full collections than in the chat itself (measured: 12.2 s of CPU
# with the defaults, 7.0 s with these, for the same 40k messages).
GC_THRESHOLDS = (700, 10, 1000)


async def settle(node: Any) -> None:
    """Wait until the real-time `node` has nothing left to run."""
    while node.runnable():
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    while node.runnable():
        await asyncio.sleep(0)


class Clocks:
    """Wall, CPU and cyclic-garbage-collector seconds (wall, and CPU of the collecting
    thread: `gc_cpu`) of the block it opens:

        with Clocks() as clocks:
            ...                                   # clocks.elapsed() inside
        rate = n / clocks.wall; details = clocks.details()

    The collector's share matters: with a million long-lived processes in the heap, its
    full collections traverse them all."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.gc = self.gc_cpu = 0.0
        self.collections = 0
        self._gc_started = self._gc_cpu_started = 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started, self._gc_cpu_started = time.perf_counter(), time.thread_time()
        else:
            self.gc += time.perf_counter() - self._gc_started
            self.gc_cpu += time.thread_time() - self._gc_cpu_started
            self.collections += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self._wall0

    def __enter__(self) -> Clocks:
        gc.callbacks.append(self._on_gc)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = self.elapsed(), time.process_time() - self._cpu0
        gc.callbacks.remove(self._on_gc)

    def details(self) -> dict[str, Any]:
        return {"cpu_s": round(self.cpu, 3), "gc_s": round(self.gc, 3), "gc_runs": self.collections}


def freeze() -> None:
    """Move every live object out of the cyclic collector's sight (`gc.freeze()`), as a
    server holding many long-lived objects does after warming up: its full collections
    would otherwise traverse them all, again and again. Collected first (only what is
    not frozen yet), so that no garbage is frozen for good."""
    gc.collect()
    gc.freeze()


def workload(name: str, body: Callable[[dict], Awaitable[dict]], sizes: dict[str, dict],
             goal: tuple[float, str] | None = None,
             gc_thresholds: tuple[int, int, int] | None = None) -> Callable[[bool], list[dict]]:
    """`(quick) -> [line]`: runs `body(sizes["quick" or "full"])`, which returns "value",
    "unit" and details, as one line with `goal` (target, ">=" or "<=") and whether it is
    met. With `gc_thresholds` (e.g. GC_THRESHOLDS) the collector runs with those, and the
    line says so; else with CPython's defaults."""
    def run(quick: bool) -> list[dict]:
        for logger in LOGGERS:
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        if gc_thresholds is not None:
            gc.set_threshold(*gc_thresholds)
        out = asyncio.run(body(sizes["quick" if quick else "full"]))
        value = out.pop("value")
        line = {"system": "letitcrash", "workload": name, "value": round(value, 1), "unit": out.pop("unit")}
        if goal is not None:
            target, sense = goal
            assert sense in (">=", "<="), goal
            line.update(goal=f"{sense} {target:g}", met=value >= target if sense == ">=" else value <= target)
        if gc_thresholds is not None:
            out["gc_thresholds"] = list(gc_thresholds)
        return [{**line, **out}]
    return run


def cli(doc: str, workloads: dict[str, Callable[[bool], list[dict]]], argv: list[str] | None = None) -> int:
    """The command line of one benchmark module: `--quick`, `--json`, `--only NAME`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--only", choices=sorted(workloads))
    args = parser.parse_args(argv)
    for name, run in workloads.items():
        if args.only is None or name == args.only:
            for line in run(args.quick):
                print(json.dumps(line) if args.json else line, flush=True)
    return 0
