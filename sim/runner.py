"""Run a scenario with one seed: build the world, go through the phases, check, report.

    result = run(load("scenarios/counter.toml"), seed=7)
    print(result.passed, result.trace_hash)
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from supervision import add_report_listener, remove_report_listener

from .core import Failure, Samples, Simulation
from .faults import KINDS, Injector, plan as fault_plan
from .scenario import Scenario
from .system import System
from .trace import Divergence, Trace, TraceError, TraceReader

Progress = Callable[["Simulation", str, float], None]


@dataclass(repr=False)
class Result:
    """What one run did; `report.text(result)` and `report.as_json(result)` show it."""

    scenario: str
    name: str
    seed: int
    failure: Failure | None
    events: int
    deliveries: int  # between nodes, through the network
    wall: float  # seconds of wall-clock time (for the report only)
    simulated: float
    faults: dict[str, int]
    plan: dict[str, dict[str, Any]]
    restarts: dict[str, int]
    crashes: int
    checks: dict[str, dict[str, Any]]
    latency: dict[str, dict[str, float]]
    stats: dict[str, dict[str, int]]
    buggify: dict[str, int]
    trace_hash: str
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    # Client latencies over virtual time, by operation: {"width": s, "counts": completions
    # per `width` seconds, "times" and "values": at most SERIES_POINTS samples}.
    series: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failure is None

    def __repr__(self) -> str:  # short: pytest prints it when an assertion on a run fails
        verdict = "passed" if self.failure is None else f"failed {self.failure.check} at t={self.failure.time:.6f}"
        return (f"<Result {self.scenario} seed {self.seed}: {verdict}, {self.events} events, "
                f"hash {self.trace_hash}>")


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the simulator runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run(scenario: Scenario, seed: int | None = None, *, out: BinaryIO | None = None,
        expect: TraceReader | None = None, progress: Progress | None = None) -> Result:
    """Run `scenario` with `seed` (default: the scenario's). `out` records the trace;
    `expect` replays against a recorded one (raising `trace.Divergence`)."""
    seed = scenario.seed if seed is None else seed
    trace = Trace(scenario.data["run"]["checkpoint"], out=out, expect=expect)
    trace.write_header({"seed": seed, "python": platform.python_version(), "git": git_commit(),
                        "path": scenario.path, "scenario": scenario.to_toml()})
    sim = Simulation(seed, trace=trace, resolution=scenario.data["run"]["resolution"])
    sim.buggify_on = scenario.data["run"]["buggify"]
    data_dir = Path(tempfile.mkdtemp(prefix="letitcrash-sim-", dir=scratch_root()))
    systems: dict[str, System] = {}
    quiet = _Quiet(sim)
    started = time.perf_counter()  # wall clock: for the report only
    try:
        quiet.attach()
        injector = _build(sim, scenario, systems, data_dir)
        checks = _Checks(sim, systems, scenario.checks())
        try:
            _phases(sim, scenario, list(systems.values()), injector, checks, progress)
        except (Divergence, TraceError):  # the recording's verdict, not this run's
            raise
        except Exception as exc:  # noqa: BLE001 - a broken assertion or a livelock is this run's failure
            sim.fail("error", _error(exc))
        failure = sim.failure
        trace.finish({"faults": injector.log,
                      "failure": None if failure is None else {"check": failure.check, "time": failure.time}})
    finally:
        sim.close()
        quiet.detach()
        for system in systems.values():
            system.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    wall = time.perf_counter() - started  # wall clock: for the report only
    return Result(
        scenario=scenario.path, name=scenario.name, seed=seed, failure=failure, events=trace.events,
        deliveries=sim.network.sent, wall=wall, simulated=sim.now, faults=dict(sim.injected),
        plan=injector.kinds, restarts=dict(sim.restarts), crashes=trace.crashes, checks=checks.summary(),
        latency=_percentiles(sim.latencies), stats={n: s.stats() for n, s in systems.items()},
        buggify=dict(sim.fired), trace_hash=trace.digest(), fault_log=injector.log,
        series=_series(sim.latencies))


MIN_SCRATCH_FREE = 1 << 30  # bytes free a RAM filesystem needs to hold a run's stores


@functools.cache
def scratch_root() -> str | None:
    """Where a run's stores go: a RAM filesystem (/dev/shm) when the machine has a writable
    one with `MIN_SCRATCH_FREE` bytes free (a container's is often 64 MiB, which a long run
    could fill), else the system's temporary directory (None). A run's stores are
    simulated (no fsync) and deleted when it ends, so a disk gains nothing; creating,
    sizing and deleting their files there cost tens of milliseconds of I/O wait per run."""
    return roomy_dir("/dev/shm", MIN_SCRATCH_FREE)


def roomy_dir(path: str, min_free: int) -> str | None:
    """`path` if it is a writable directory with at least `min_free` bytes free, else None."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    writable = os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)
    return path if writable and stat.f_bavail * stat.f_frsize >= min_free else None


def _build(sim: Simulation, scenario: Scenario, systems: dict[str, System], data_dir: Path) -> Injector:
    """Set the world up: the network, the systems (into `systems`), the fault injector."""
    net = scenario.data["network"]
    sim.network.codec = net["codec"]
    sim.network.set_latency(*net["latency"])
    for link in net["link"]:
        lo, hi = link["latency"]
        a, b = link["between"]
        sim.network.set_latency(lo, hi, between=(a, b))
    for name, cls in scenario.system_classes.items():
        options = dict(scenario.data["systems"][name])
        workload = options.pop("workload")
        system = systems[name] = cls(sim, options, workload, data_dir / _dir_name(name))
        system.data_dir.mkdir()
        system.setup()
    nodes = set(sim.node_names())
    for path, node in scenario.node_refs:
        if node not in nodes:
            raise scenario.source.error(path, f"unknown node {node!r}; the systems have: "
                                        f"{', '.join(sim.node_names())}")
    faults = scenario.data["faults"]
    plan = fault_plan(faults["mode"], {k: v for k, v in faults.items() if k in KINDS},
                           sim.stream("swarm"))
    storages = {n: s for system in systems.values() for n, s in system.storages().items()}
    injector = Injector(sim, plan, faults["tick"], storages)
    injector.script(faults["script"])
    return injector


class _Quiet:
    """Silences the kernel's, the supervisors' and the stores' loggers during a run: a
    chaos run crashes thousands of processes, and their reports belong in the summary
    (crashes, counted by the trace; restarts by supervisor, heard by a report listener),
    not on stderr. A log record costs microseconds: with one per report and per crash,
    logging was a tenth to a fifth of a crash-heavy run."""

    LOGGERS = ("actors", "supervision", "storage")
    NAMES_LIMIT = 1 << 16

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._saved: list[tuple[logging.Logger, int]] = []
        self._names: dict[Any, str] = {}  # supervisor pid -> its name in the summary

    def attach(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level))
            logger.setLevel(logging.CRITICAL + 1)
        add_report_listener(self._report)

    def detach(self) -> None:
        remove_report_listener(self._report)
        for logger, level in self._saved:
            logger.setLevel(level)
        self._saved.clear()

    def _report(self, kind: str, supervisor: Any, child_id: Any, child_pid: Any, reason: Any) -> None:
        if kind == "child_restarted":
            self.sim.count_restart(self._who(supervisor))

    def _who(self, pid: Any) -> str:
        who = self._names.get(pid)  # a supervisor restarts many times under one pid
        if who is None:
            node = self.sim.node(pid.node_name)
            info = node.process_info(pid) if node is not None else None
            who = f"{pid!r}" if info is None else f"{info['registered_name'] or info['kind']}@{pid.node_name}"
            if len(self._names) < self.NAMES_LIMIT:
                self._names[pid] = who
        return who


def _dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _phases(sim: Simulation, scenario: Scenario, systems: list[System], injector: Injector,
            checks: _Checks, progress: Progress | None) -> None:
    every = scenario.data["checks"]["every"]
    tick = 1  # always-checks run at tick * every, a grid whatever the phase lengths
    end = 0.0
    for phase in scenario.phases:
        sim.trace.event("phase", phase.name)
        if phase.heal:
            injector.heal()
        if phase.faults:
            injector.start()
        else:
            injector.stop()
        for system in systems:
            system.set_workload(phase.workload)
        end += phase.duration
        while sim.failure is None and sim.now < end:
            sim.run(min(end, tick * every))
            if sim.now >= tick * every:
                tick += 1
                checks.run("always")
            if progress is not None:
                progress(sim, phase.name, scenario.duration)
        if sim.failure is None and checks.last != sim.now:
            checks.run("always")  # the phase ended off the grid
        if phase.check and sim.failure is None:
            checks.run("eventually")
        if sim.failure is not None:
            return


class _Checks:
    def __init__(self, sim: Simulation, systems: dict[str, System], checks: dict[str, str]) -> None:
        self.sim = sim
        self.checks = [(name, when, getattr(systems[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1]))
                       for name, when in checks.items()]
        self.runs = dict.fromkeys(checks, 0)
        self.failed: str | None = None
        self.last = -1.0  # when the always-checks last ran

    def run(self, when: str) -> None:
        if when == "always":
            self.last = self.sim.now
        for name, kind, fn in self.checks:
            if kind != when:
                continue
            self.runs[name] += 1
            self.sim.trace.event("check", name)
            message = fn()
            if message is not None:
                self.failed = name
                self.sim.fail(name, message)
                return

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: {"when": when, "runs": self.runs[name],
                       "ok": self.failed != name and (self.runs[name] > 0 or None)}
                for name, when, _ in self.checks}


def _error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


SERIES_POINTS = 4096


def _series(latencies: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    out = {}
    for op in sorted(latencies):
        samples = latencies[op]
        step = -(-len(samples.values) // SERIES_POINTS) or 1
        out[op] = {"width": samples.width, "counts": list(samples.counts),
                   "times": samples.times[::step], "values": samples.values[::step]}
    return out


def _percentiles(latencies: dict[str, Samples]) -> dict[str, dict[str, float]]:
    out = {}
    for op in sorted(latencies):
        samples = latencies[op]
        if samples.values:
            a = np.asarray(samples.values)
            p50, p90, p99 = np.percentile(a, [50, 90, 99])
            out[op] = {"n": samples.seen, "p50": float(p50), "p90": float(p90), "p99": float(p99),
                       "max": samples.max}
    return out
