#!/usr/bin/env python
"""Simulator benchmark: how fast the deterministic simulator runs the counter scenario.

    python bench/sim.py            # readable table (about two minutes)
    python bench/sim.py --quick    # fewer seeds, under a minute
    python bench/sim.py --json     # one JSON object per line

Workloads (value and unit per JSON line):
- events_per_s: trace events (process turns, spawns, exits, network sends and arrivals,
  commits, faults) per wall second, over the shipped scenarios/counter.toml with its
  faults on, seeds 1..n, the trace hashed but not written;
- events_per_s_64_clients: the same with 64 clients instead of 16 (denser instants);
- events_per_s_core: the simulator without storage or application logic: 20 clients on
  one node calling an echo GenServer on another, with message faults (drop, duplicate,
  delay, reorder) on, for 30 simulated seconds;
- speedup: simulated seconds per wall second on the same runs;
- seeds_per_min: whole scenario runs (30 simulated seconds each) per wall minute, one
  process;
- events_per_s_recorded: as events_per_s, with the trace written to a file (msgpack, one
  record per event, checkpoint hashes);
- trace_cost: how much slower recording makes a run, in % of events_per_s;
- outside_share: the share of CPU time spent outside the system under test, in the
  simulator's own code: its driver (sim/core.py, sim/runner.py), network model, fault
  injection (sim/faults.py, sim/disk.py), checks (everything under a check call) and
  trace (sim/trace.py with its msgpack and blake2b calls); the split is in the line's
  "parts". Measured by sampling the stack every millisecond of CPU time (SIGPROF) over
  one pass of the events_per_s seeds, in a pass of its own; a sample goes to the
  innermost frame of this repository's code, so the kernel, supervision, storage and the
  counter system count as the system under test even when the driver called them;
  "us_per_event" gives each part (and the system under test) in CPU microseconds per
  event, CPU time rather than wall time so that a busy machine does not inflate it;
- events_per_try: what one event is: trace events per client try (a request or one of its
  retries) over the events_per_s seeds, recorded and read back; its "mix" gives each kind
  of event per try: process turns, sends and arrivals of messages and replies, signals
  (exit and down signals sent and arriving), commits, spawns and exits, the rest (faults,
  checks, buggify, phases), and "context": the trace's time and node records, written
  but not counted as events. us_per_event (outside_share) times events_per_try is the
  CPU one try costs, by part;
- jobs_wall_1, jobs_wall_2: true wall seconds of `letitcrash sim counter.toml --seeds
  1..2n --jobs 1` and `--jobs 2` (subprocesses, interpreter start included);
  jobs_speedup: their ratio (at most 2 on two idle cores);
- events_per_s_codec_off: as events_per_s with `[network] codec = false` (what crosses
  between nodes is not put through the wire's codec);
- codec_cost: how much slower the codec makes a run, in % of events_per_s_codec_off.
Each figure takes the fastest of `reps` passes over the seeds, the kinds of pass
interleaved (other processes on the machine only ever slow a pass down); `cpu_share`
appears when this process got less than 90 % of a core, and then the figures are low.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from actors import CallTimeout, GenServer  # noqa: E402
from sim.core import Simulation  # noqa: E402
from sim.runner import Result, run  # noqa: E402
from sim.scenario import Scenario, load  # noqa: E402
from sim.trace import TraceReader  # noqa: E402

SCENARIO = ROOT / "scenarios" / "counter.toml"
MODES = {"full": (10, 3), "quick": (3, 2), "tiny": (1, 1)}  # seeds, reps
TINY = [("phases", [{"name": "chaos", "duration": 2.0, "faults": True},
                    {"name": "quiesce", "duration": 2.0, "workload": False}])]
GOALS = {"events_per_s": (">=", 200_000), "trace_cost": ("<=", 20.0)}
OUTSIDE = {"sim/core.py": "driver", "sim/runner.py": "driver", "sim/network.py": "network",
           "sim/faults.py": "faults", "sim/disk.py": "faults", "sim/trace.py": "trace"}


def counter_pass(scenario: Scenario, seeds: range, record: bool) -> dict[str, float]:
    """One pass over `seeds`: events, simulated and wall seconds, the CPU share."""
    events = simulated = wall = 0.0
    cpu = time.process_time()
    for seed in seeds:
        result = _run(scenario, seed, record)
        assert result.passed, f"seed {seed} failed {result.failure}: a benchmark of a broken run"
        events += result.events
        simulated += result.simulated
        wall += result.wall
    return {"events": events, "simulated": simulated, "wall": wall, "runs": len(seeds),
            "cpu_share": (time.process_time() - cpu) / wall}


def _run(scenario: Scenario, seed: int, record: bool) -> Result:
    if not record:
        return run(scenario, seed)
    with tempfile.TemporaryFile() as out:
        return run(scenario, seed, out=out)


def core_pass(seeds: range, duration: float) -> dict[str, float]:
    """One pass of the echo workload of `events_per_s_core` over `seeds`."""
    events = wall = 0.0
    cpu = time.process_time()
    for seed in seeds:
        sim = Simulation(seed, resolution=0.001)
        sim.network.set_rates({"drop": 0.01, "duplicate": 0.01, "delay": 0.01, "reorder": 0.01},
                              {"duplicate": 0.01, "delay": 0.2, "reorder": 0.02})
        server: dict[str, Any] = {}
        sim.add_node("server", lambda node: server.setdefault("pid", node.spawn(Echo)))
        sim.add_node("clients", lambda node: [node.spawn(_echo_client, server) for _ in range(20)])
        started = time.perf_counter()
        sim.run(duration)
        wall += time.perf_counter() - started
        events += sim.trace.events
        sim.close()
    return {"events": events, "wall": wall, "runs": len(seeds),
            "cpu_share": (time.process_time() - cpu) / wall}


class Echo(GenServer):
    def handle_call(self, request: Any, caller: Any) -> Any:
        return request


async def _echo_client(proc: Any, server: dict[str, Any]) -> None:
    n = 0
    while True:
        try:
            n = await proc.call(server["pid"], n + 1, 0.05)
        except CallTimeout:
            pass  # a dropped request or reply: ask again


def outside_pass(scenario: Scenario, seeds: range) -> dict[str, Any]:
    """Where the CPU time of runs goes: samples by part (see the module docstring)."""
    root = str(ROOT) + "/"
    samples: dict[str, int] = {}

    def part(frame: Any) -> str:
        found = None  # decided by the innermost frame of this repository's code
        while frame is not None:
            code = frame.f_code
            if code.co_qualname == "_Checks.run":
                return "checks"
            if found is None and code.co_filename.startswith(root):
                found = OUTSIDE.get(code.co_filename[len(root):], "system")
            frame = frame.f_back
        return found or "system"

    def sample(signum: int, frame: Any) -> None:
        key = part(frame)
        samples[key] = samples.get(key, 0) + 1

    previous = signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    try:
        p = counter_pass(scenario, seeds, record=False)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    total = sum(samples.values()) or 1
    parts = {k: round(100 * samples.get(k, 0) / total, 1) for k in ("driver", "network", "faults", "checks",
                                                                      "trace")}
    cpu_us = 1e6 * p["wall"] * p["cpu_share"] / max(p["events"], 1)
    us = {k: round(cpu_us * samples.get(k, 0) / total, 2) for k in (*parts, "system")}
    return {**p, "share": round(sum(parts.values()), 1), "parts": parts, "us_per_event": us, "samples": total}


MIX = ("turns", "sends", "arrivals", "signals", "commits", "spawns_exits", "other", "context")


def mix_pass(scenario: Scenario, seeds: range) -> dict[str, Any]:
    """Trace events per client try, by kind (see the module docstring), from recorded runs."""
    counts = dict.fromkeys(MIX, 0)
    tries = events = 0
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.trace"
            with open(path, "wb") as out:
                result = run(scenario, seed, out=out)
            reader = TraceReader(str(path))
            try:
                for rec in reader.records():
                    counts[_mix_kind(rec)] += 1
            finally:
                reader.close()
        stats = result.stats["counter"]
        tries += stats["increments"] + stats["reads"] + stats["retries"]
        events += result.events
    assert events == sum(counts.values()) - counts["context"], "every event has a kind"
    return {"runs": len(seeds), "cpu_share": 1.0, "per_try": events / max(tries, 1),
            "mix": {k: round(v / max(tries, 1), 2) for k, v in counts.items()}}


def _mix_kind(rec: Any) -> str:
    if type(rec) is int:
        return "turns"
    what = rec[0]
    if what in ("send", "arr"):
        kind = rec[4] if what == "send" else rec[3]
        return "signals" if kind not in ("msg", "reply") else "sends" if what == "send" else "arrivals"
    return {"t": "context", "@": "context", "commit": "commits", "spawn": "spawns_exits",
            "exit": "spawns_exits"}.get(what, "other")


def jobs_pass(scenario: Scenario, seeds: int, jobs: int) -> dict[str, float]:
    """True wall seconds of the CLI running `seeds` seeds in `jobs` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(scenario.to_toml())
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "sim.cli", "sim", str(path), "--seeds", f"1..{seeds}",
                              "--jobs", str(jobs)], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - started
    assert out.returncode == 0, out.stderr[-2000:]
    return {"wall": wall, "runs": seeds, "cpu_share": 1.0}


def line(workload: str, value: float, unit: str, p: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"system": "letitcrash", "workload": workload, "value": float(f"{value:.4g}"),
                           "unit": unit, "n": int(p["runs"])}
    if p["cpu_share"] < 0.9:
        out["cpu_share"] = round(p["cpu_share"], 2)
    if workload in GOALS:
        op, goal = GOALS[workload]
        out["goal"] = f"{op} {goal:g}"
        out["met"] = value >= goal if op == ">=" else value <= goal
    return out


def measure(mode: str) -> list[dict[str, Any]]:
    n, reps = MODES[mode]
    extra = TINY if mode == "tiny" else []
    seeds = range(1, n + 1)
    plain, dense = load(SCENARIO, extra), load(SCENARIO, [*extra, ("systems.counter.workload.clients", 64)])
    raw = load(SCENARIO, [*extra, ("network.codec", False)])
    passes = {
        "plain": lambda: counter_pass(plain, seeds, record=False),
        "raw": lambda: counter_pass(raw, seeds, record=False),
        "recorded": lambda: counter_pass(plain, seeds, record=True),
        "dense": lambda: counter_pass(dense, seeds, record=False),
        "core": lambda: core_pass(seeds, 4.0 if mode == "tiny" else 30.0),
        "jobs1": lambda: jobs_pass(plain, 2 * n, 1),
        "jobs2": lambda: jobs_pass(plain, 2 * n, 2),
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(reps):  # interleaved: a burst of load elsewhere slows every kind alike
        for name, one in passes.items():
            p = one()
            if name not in best or p["wall"] < best[name]["wall"]:
                best[name] = p
    outside = outside_pass(plain, seeds)
    mix = mix_pass(plain, seeds)
    plain_p, recorded_p = best["plain"], best["recorded"]
    rate = plain_p["events"] / plain_p["wall"]
    recorded_rate = recorded_p["events"] / recorded_p["wall"]
    raw_rate = best["raw"]["events"] / best["raw"]["wall"]
    return [
        line("events_per_s", rate, "events/s", plain_p),
        line("events_per_s_64_clients", best["dense"]["events"] / best["dense"]["wall"], "events/s",
             best["dense"]),
        line("events_per_s_core", best["core"]["events"] / best["core"]["wall"], "events/s", best["core"]),
        line("speedup", plain_p["simulated"] / plain_p["wall"], "x", plain_p),
        line("seeds_per_min", 60 * plain_p["runs"] / plain_p["wall"], "runs/min", plain_p),
        line("events_per_s_recorded", recorded_rate, "events/s", recorded_p),
        line("trace_cost", max(0.0, 100 * (1 - recorded_rate / rate)), "%", recorded_p),
        {**line("outside_share", outside["share"], "%", outside), "parts": outside["parts"],
         "us_per_event": outside["us_per_event"], "samples": outside["samples"]},
        {**line("events_per_try", mix["per_try"], "events", mix), "mix": mix["mix"]},
        line("jobs_wall_1", best["jobs1"]["wall"], "s", best["jobs1"]),
        line("jobs_wall_2", best["jobs2"]["wall"], "s", best["jobs2"]),
        line("jobs_speedup", best["jobs1"]["wall"] / best["jobs2"]["wall"], "x", best["jobs2"]),
        line("events_per_s_codec_off", raw_rate, "events/s", best["raw"]),
        line("codec_cost", max(0.0, 100 * (1 - rate / raw_rate)), "%", plain_p),
    ]


def table(lines: list[dict[str, Any]]) -> str:
    rows = [f"{'workload':<26} {'value':>12}  {'unit':<9} {'goal':<12} met"]
    for d in lines:
        met = {True: "yes", False: "NO"}.get(d.get("met"), "")
        value = f"{d['value']:,.0f}" if d["value"] >= 1000 else f"{d['value']:.4g}"
        us = d.get("us_per_event", {})
        parts = ", ".join(f"{k} {v:g} % ({us[k]:g} µs)" for k, v in d.get("parts", {}).items())
        mix = ", ".join(f"{k} {v:g}" for k, v in d.get("mix", {}).items())
        rows.append(f"{d['workload']:<26} {value:>12}  {d['unit']:<9} {d.get('goal', ''):<12} {met}"
                    + (f"  (cpu share {d['cpu_share']})" if "cpu_share" in d else "")
                    + (f"  ({parts}; the rest: the system under test, {us['system']:g} µs;"
                       " CPU µs per event)" if parts else "")
                    + (f"  (per try: {mix})" if mix else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--quick", action="store_true", help="fewer seeds (under a minute)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    args = ap.parse_args(argv)
    lines = measure("tiny" if args.tiny else "quick" if args.quick else "full")
    if args.json:
        for d in lines:
            print(json.dumps(d))
    else:
        print(table(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
