"""The end-of-run report: text a person reads at a glance, or JSON for programs."""
from __future__ import annotations

import shlex
from typing import Any

from .network import MESSAGE_FAULTS
from .runner import Result


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _counts(counts: dict[str, int]) -> list[str]:
    return [f"{k} {_n(v)}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _rows(label: str, head: str, items: list[str], width: int = 96) -> list[str]:
    """`label  head: item · item · ...`, wrapped under itself at `width` columns."""
    lines, line = [], f"  {label:<11} {head}" + (": " if items and head else "")
    for i, item in enumerate(items):
        piece = item if i == 0 else " · " + item
        if len(line) + len(piece) > width and i:
            lines.append(line + " ·")
            line = " " * 14 + item
        else:
            line += piece
    return lines + [line]


def as_json(result: Result, command: str | None = None, shrink: str | None = None) -> dict[str, Any]:
    """The report as plain data (what `--json` prints). `command` reproduces the run,
    `shrink` shrinks it (both default to plain forms without overrides)."""
    failure = result.failure
    return {
        "scenario": result.scenario, "name": result.name, "seed": result.seed,
        "passed": result.passed,
        "failure": None if failure is None else {
            "check": failure.check, "message": failure.message, "time": failure.time,
            "last_events": failure.last_events},
        "events": result.events, "deliveries": result.deliveries,
        "events_per_s": result.events / result.wall if result.wall > 0 else None,
        "simulated_s": result.simulated, "wall_s": result.wall,
        "faults": result.faults, "fault_plan": result.plan, "restarts": result.restarts,
        "crashes": result.crashes,
        "buggify": result.buggify, "checks": result.checks, "latency_s": result.latency,
        "stats": result.stats, "trace_hash": result.trace_hash,
        "reproduce": command or reproduce_command(result),
        "shrink": (shrink or shrink_command(result)) if failure else None,
    }


def reproduce_command(result: Result, extra: str = "") -> str:
    return f"letitcrash sim {shlex.quote(result.scenario)} --seed {result.seed}{extra}"


def shrink_command(result: Result, extra: str = "") -> str:
    stem = result.scenario.rsplit("/", 1)[-1].removesuffix(".toml")
    return (f"letitcrash shrink {shlex.quote(result.scenario)} --seed {result.seed}{extra} "
            f"-o {stem}.seed{result.seed}.shrunk.toml")


def text(result: Result, command: str | None = None, shrink: str | None = None) -> str:
    """The report for people; `command` and `shrink` as for `as_json`."""
    lines = [f"letitcrash sim · {result.name} ({result.scenario}) · seed {result.seed}"]
    failure = result.failure
    checks = result.checks
    if failure is None:
        lines.append(f"PASS  all {len(checks)} checks held")
    else:
        lines.append(f"FAIL  {failure.check} at t={failure.time:.6f} s (seed {result.seed})")
        lines += ["      " + line for line in failure.message.splitlines()]
    lines.append("")
    rate = result.events / result.wall if result.wall > 0 else 0.0
    speed = result.simulated / result.wall if result.wall > 0 else 0.0
    row = "  {:<11} {}".format
    lines.append(row("events", f"{_n(result.events)}  ({_n(rate)} events/s)"))
    lines.append(row("time", f"{result.simulated:.1f} s simulated in {result.wall:.2f} s wall "
                               f"({speed:.1f}x)"))
    faulted = sum(result.faults.get(k, 0) for k in MESSAGE_FAULTS)
    share = f", {100 * faulted / result.deliveries:.1f} % of them faulted" if result.deliveries else ""
    lines.append(row("network", f"{_n(result.deliveries)} deliveries between nodes{share}"))
    total = sum(result.faults.values())
    lines += _rows("faults", f"{_n(total)} injected", _counts(result.faults))
    if result.plan:
        lines += _rows("", "plan", [f"{k} {v['rate']:.3g}" for k, v in result.plan.items()])
    restarts = sum(result.restarts.values())
    lines += _rows("restarts", f"{_n(restarts)} after {_n(result.crashes)} crashes", _counts(result.restarts))
    if result.buggify:
        lines += _rows("buggify", "fired", _counts(result.buggify))
    for i, (system, stats) in enumerate(result.stats.items()):
        lines += _rows("requests" if i == 0 else "", system, [f"{k} {_n(v)}" for k, v in stats.items()])
    for i, (op, p) in enumerate(result.latency.items()):
        lines.append(row("latency" if i == 0 else "",
                         f"{op:<16} p50 {_seconds(p['p50'])}  p90 {_seconds(p['p90'])}  "
                         f"p99 {_seconds(p['p99'])}  max {_seconds(p['max'])}  (n={_n(p['n'])})"))
    width = max((len(name) for name in checks), default=0)
    for i, (name, c) in enumerate(checks.items()):
        state = {True: "ok", False: "FAILED", None: "not run"}[c["ok"]]
        runs = f"  ({_n(c['runs'])} runs)" if c["when"] == "always" and c["runs"] else ""
        lines.append(row("checks" if i == 0 else "", f"{name:<{width}}  {c['when']:<10}  {state}{runs}"))
    lines.append(row("trace", f"blake2b {result.trace_hash}"))
    if failure is not None:
        lines += ["", "  last events before the failure:"]
        lines += ["    " + e for e in failure.last_events]
        lines.append("")
        lines.append(row("reproduce", command or reproduce_command(result)))
        lines.append(row("shrink", shrink or shrink_command(result)))
    return "\n".join(lines)


def summary(results: list[Result], elapsed: float | None = None, jobs: int = 1) -> str:
    """One line per seed, then totals: for `--seeds A..B`. `elapsed` is the true wall
    time of all the runs (default: their sum, as in one process)."""
    lines = []
    for r in results:
        verdict = "ok  " if r.failure is None else f"FAIL {r.failure.check} at t={r.failure.time:.3f} s"
        lines.append(f"  seed {r.seed:<8} {verdict}  {_n(r.events)} events, "
                     f"faults {sum(r.faults.values())}, hash {r.trace_hash[:12]}")
    failed = [r.seed for r in results if not r.passed]
    runs = sum(r.wall for r in results)
    wall = runs if elapsed is None else elapsed
    events = sum(r.events for r in results)
    processes = f" in {jobs} processes (the runs themselves: {runs:.1f} s)" if jobs > 1 else ""
    lines.append(f"{len(results)} seeds: {len(results) - len(failed)} passed, {len(failed)} failed"
                 + (f" (seeds {', '.join(map(str, failed))})" if failed else "")
                 + f"; {_n(events)} events in {wall:.1f} s wall{processes} ({_n(events / wall if wall else 0)} "
                 "events/s)")
    return "\n".join(lines)
