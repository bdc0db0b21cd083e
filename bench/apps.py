#!/usr/bin/env python
"""The case studies' benchmarks in one run: chat, timeline, rides, video, playlists, photos, orders, gateway.

    python bench/apps.py              # full sizes, a table
    python bench/apps.py --quick      # smaller sizes, under a minute
    python bench/apps.py --json       # one JSON object per line
    python bench/apps.py --only chat_msgs_per_s,timeline_read_p99

Each `bench/apps_<app>.py` exports `WORKLOADS: dict[name, (quick: bool) -> list[dict]]`;
every dict has "system", "workload", "value" and "unit", and may say its "goal" and
whether it was "met", with details (sizes, CPU seconds...). A module that cannot be
imported is reported and skipped. Each workload runs in a fresh interpreter, one after
another: a memory figure or a latency percentile is only honest in a process whose heap
and garbage collector were not already worked by the workloads before it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the apps_* modules
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

MODULES = ("apps_chat", "apps_timeline", "apps_rides", "apps_video", "apps_playlists", "apps_photos",
           "apps_orders", "apps_gateway")
CORE = ("system", "workload", "value", "unit", "goal", "met")


def collect(modules: tuple[str, ...] = MODULES) -> tuple[dict[str, Callable[[bool], list[dict]]], list[str]]:
    """Every workload of the modules that import, and why the others did not."""
    workloads: dict[str, Callable[[bool], list[dict]]] = {}
    skipped: list[str] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - another app's bench may not exist yet
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for workload, fn in module.WORKLOADS.items():
            assert workload not in workloads, f"workload {workload} defined twice"
            workloads[workload] = fn
    return workloads, skipped


def _table(lines: list[dict]) -> str:
    rows = [("workload", "value", "unit", "goal", "met", "details")]
    for line in lines:
        details = " ".join(f"{k}={v}" for k, v in line.items() if k not in CORE)
        met = "" if "met" not in line else ("yes" if line["met"] else "NO")
        rows.append((line["workload"], f"{line['value']:,.1f}", line["unit"], str(line.get("goal", "")), met, details))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    out = []
    for row in rows:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5])
    return "\n".join(out)


def _isolated(name: str, quick: bool) -> list[dict]:
    """Run workload `name` in a fresh interpreter; its stderr passes through."""
    command = [sys.executable, __file__, "--worker", name] + (["--quick"] if quick else [])
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"workload {name} exited with status {done.returncode}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute in all")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--only", help="comma-separated workload names")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # run one workload here
    args = parser.parse_args(argv)
    workloads, skipped = collect()
    if args.worker:
        for line in workloads[args.worker](args.quick):
            print(json.dumps(line), flush=True)
        return 0
    chosen = list(workloads)
    if args.only:
        chosen = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in chosen if w not in workloads]
        if unknown:
            print(f"unknown workload(s) {unknown}; known: {', '.join(workloads)}", file=sys.stderr)
            return 2
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    lines: list[dict] = []
    failed = False
    for name in chosen:
        try:
            results = _isolated(name, args.quick)
        except RuntimeError as exc:  # one broken workload must not hide the others
            failed = True
            print(exc, file=sys.stderr)
            continue
        for line in results:
            lines.append(line)
            if args.json:
                print(json.dumps(line), flush=True)
    if not args.json:
        print(_table(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
