#!/usr/bin/env python
"""Supervision benchmark: letitcrash's supervisors, with otpylib's restart side by side.

    python bench/supervision.py            # readable table, full sizes
    python bench/supervision.py --quick    # smaller n where it does not change the figure, < 1 min
    python bench/supervision.py --json     # one JSON object per line

Workloads (letitcrash on its real-time driver, `async with Node()`, public API only):
- restart: µs per crash-and-restart of a permanent worker under one_for_one. A driver
  process casts "crash" to the worker and waits for the note that its restarted successor
  sends from `init`. otpylib (0.5.18, the `bench` extra): its supervisor and gen_server in
  the same loop, as in shared/anchors/otpylib_anchor.py.
- dynamic_start: µs per `start_child` on a DynamicSupervisor, awaited by a process, while
  it grows to 100k children (the time is per start over the whole fill).
- shutdown_100k: seconds for `Application.stop()` of that DynamicSupervisor holding 100k
  children (parallel shutdown), until every process is gone.
- dynamic_memory: bytes per dynamic child, its process included (tracemalloc, Python
  heap), on the deterministic driver.
Then a `ratio` line: letitcrash's restart time divided by otpylib's.

Crash and supervisor reports are off (loggers "actors" and "supervision" above ERROR):
the figures are the restart path, not a log handler formatting tracebacks. otpylib prints
two lines per crash to stdout; they go to /dev/null, as in the anchor. Each (system,
workload) runs in its own subprocess; timed workloads report the median of 3 repetitions.
`cpu` is the CPU time of the timed part: wall well above cpu means other jobs competed for
the machine. The cyclic GC stays on, as for users.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

WORKLOADS = ("restart", "dynamic_start", "shutdown_100k", "dynamic_memory")
UNITS = {"restart": "us", "dynamic_start": "us", "shutdown_100k": "s", "dynamic_memory": "B"}
SIZES = {  # mode -> (letitcrash restarts, otpylib restarts, dynamic children, memory children)
    "full": (20_000, 2_000, 100_000, 20_000),
    "quick": (5_000, 1_000, 100_000, 20_000),
    "tiny": (100, 30, 1_000, 500),
}
REPS = {"full": 3, "quick": 3, "tiny": 1}
GOALS = {"restart": 30.0, "dynamic_start": 10.0, "shutdown_100k": 2.0}  # upper bounds


def quiet_reports() -> None:
    for name in ("actors", "supervision"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class Timer:
    """Wall and CPU time of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# -- letitcrash -----------------------------------------------------------------------------

def letitcrash_restart(n: int) -> tuple[float, float]:
    from actors import Future, GenServer, Node
    from supervision import ChildSpec, Flags, Supervisor

    class Crashy(GenServer):
        def init(self, observer: Any) -> None:
            self.send(observer, self.pid)  # "I am up"

        def handle_cast(self, msg: Any) -> None:
            raise RuntimeError("crash")

    async def driver(proc: Any, done: Future) -> None:
        sup = proc.spawn(Supervisor, [ChildSpec("worker", Crashy, args=(proc.pid,))],
                         Flags(max_restarts=1_000_000, max_seconds=60))
        pid = await proc.receive()
        with Timer() as t:
            for _ in range(n):
                proc.cast(pid, "crash")
                successor = await proc.receive()
                assert successor != pid
                pid = successor
        proc.exit(sup, "shutdown")
        done.set_result(t)

    async def main() -> Timer:
        async with Node() as node:
            done = Future()
            node.spawn(driver, done)
            return await done

    t = asyncio.run(main())
    return t.wall / n * 1e6, t.cpu / n * 1e6


def letitcrash_dynamic(n: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(µs per start_child, cpu µs), (seconds to shut down, cpu s)."""
    from actors import Future, GenServer, Node
    from supervision import Application, ChildSpec, DynamicSupervisor, count_children, start_child

    class Session(GenServer):
        pass

    async def fill(proc: Any, sup: Any, done: Future) -> None:
        spec = ChildSpec("session", Session)
        with Timer() as t:
            for _ in range(n):
                await start_child(proc, sup, spec)
        done.set_result(t)

    async def main() -> tuple[Timer, Timer]:
        async with Node() as node:
            app = Application(DynamicSupervisor)
            sup = app.start(node)
            done = Future()
            node.spawn(fill, sup, done)
            started = await done
            assert (await count_children(node, sup))["active"] == n
            with Timer() as stopped:
                await app.stop()
            assert len(node) == 0
            return started, stopped

    started, stopped = asyncio.run(main())
    return (started.wall / n * 1e6, started.cpu / n * 1e6), (stopped.wall, stopped.cpu)


def letitcrash_memory(n: int) -> float:
    from actors import GenServer, Node
    from supervision import ChildSpec, DynamicSupervisor, start_child

    class Session(GenServer):
        def init(self, user: int) -> None:
            self.user = user

    async def fill(proc: Any, sup: Any) -> None:
        spec = ChildSpec("session", Session)
        for i in range(n):
            await start_child(proc, sup, spec, i)

    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    gc.collect()
    tracemalloc.start()
    node.spawn(fill, sup)
    node.run()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(node) == n + 1, "every child started"
    return traced / n


# -- otpylib --------------------------------------------------------------------------------

def otpylib_restart(n: int) -> tuple[float, float]:
    from otpylib import gen_server, process, supervisor
    from otpylib.gen_server import NoReply, Reply
    from otpylib.module import GEN_SERVER, SUPERVISOR, OTPModule
    from otpylib.runtime.backends.asyncio_backend import AsyncIOBackend
    from otpylib.supervisor import ONE_FOR_ONE, PERMANENT, SHUTDOWN

    class CrashWorker(metaclass=OTPModule, behavior=GEN_SERVER, version="1.0.0"):
        async def init(self, arg: Any) -> Any:
            # The observer name is registered after start_link returns: the first note is dropped.
            await process.send("bench_observer", ("up", process.self()))
            return 0

        async def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
            return Reply(state), state

        async def handle_cast(self, request: Any, state: Any) -> Any:
            raise RuntimeError("crash")

        async def handle_info(self, message: Any, state: Any) -> Any:
            return NoReply(), state

        async def terminate(self, reason: Any, state: Any) -> None:
            pass

    class CrashSup(metaclass=OTPModule, behavior=SUPERVISOR, version="1.0.0"):
        async def init(self, arg: Any) -> Any:
            children = [supervisor.child_spec(id="worker", module=CrashWorker, restart=PERMANENT,
                                              name="crash_worker")]
            return children, supervisor.options(max_restarts=1_000_000, max_seconds=60,
                                                strategy=ONE_FOR_ONE)

        async def terminate(self, reason: Any, state: Any) -> None:
            pass

    async def main() -> Timer:
        backend = AsyncIOBackend()
        process.use_runtime(backend)
        await backend.initialize()
        result = asyncio.get_running_loop().create_future()

        async def driver() -> None:
            try:
                sup = await supervisor.start_link(CrashSup, None)
                await process.register("bench_observer")
                prev = process.whereis("crash_worker")
                with Timer() as t:
                    for _ in range(n):
                        await gen_server.cast("crash_worker", "crash")
                        note = await process.receive(timeout=5.0)
                        assert note[0] == "up" and note[1] != prev, note
                        prev = note[1]
                await process.send(sup, SHUTDOWN)
                result.set_result(t)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the harness
                if not result.done():
                    result.set_exception(exc)
                raise

        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            await process.spawn(driver)
            t = await result
        await backend.shutdown()
        return t

    t = asyncio.run(main())
    return t.wall / n * 1e6, t.cpu / n * 1e6


# -- measuring (inside a worker subprocess) --------------------------------------------------

def medians(reps: int, run: Callable[[], tuple[tuple[float, float], ...]]) -> list[tuple[float, float]]:
    """Call `run` `reps` times; for each (wall, cpu) pair it returns, the median pair by wall."""
    results = []
    for _ in range(reps):
        gc.collect()
        results.append(run())
    return [sorted(pairs)[reps // 2] for pairs in zip(*results)]


def worker(system: str, workload: str, mode: str) -> list[dict[str, Any]]:
    quiet_reports()
    restarts, otp_restarts, dynamic, memory = SIZES[mode]
    reps = REPS[mode]
    if system == "otpylib":
        ((wall, cpu),) = medians(reps, lambda: (otpylib_restart(otp_restarts),))
        return [{"workload": "restart", "value": wall, "cpu": cpu, "n": otp_restarts}]
    if workload == "restart":
        ((wall, cpu),) = medians(reps, lambda: (letitcrash_restart(restarts),))
        return [{"workload": "restart", "value": wall, "cpu": cpu, "n": restarts}]
    if workload == "dynamic_memory":
        return [{"workload": "dynamic_memory", "value": letitcrash_memory(memory), "n": memory,
                 "method": "tracemalloc"}]
    (start_wall, start_cpu), (stop_wall, stop_cpu) = medians(reps, lambda: letitcrash_dynamic(dynamic))
    return [{"workload": "dynamic_start", "value": start_wall, "cpu": start_cpu, "n": dynamic},
            {"workload": "shutdown_100k", "value": stop_wall, "cpu": stop_cpu, "n": dynamic}]


# -- the driver (parent process) --------------------------------------------------------------

def sig(value: float) -> float:
    return float(f"{value:.4g}")


def run_worker(system: str, workload: str, mode: str) -> list[dict[str, Any]]:
    if system == "otpylib" and importlib.util.find_spec("otpylib") is None:
        return [{"system": system, "workload": workload,
                 "skipped": "otpylib is not installed (pip install 'letitcrash[bench]')"}]
    cmd = [sys.executable, __file__, "--worker", system, workload, "--mode", mode]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return [{"system": system, "workload": workload, "error": "timed out after 900 s"}]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"system": system, "workload": workload, "error": f"worker exited {proc.returncode}: {tail}"}]
    lines = [json.loads(s) for s in proc.stdout.splitlines() if s.startswith("{")]
    for line in lines:
        line["value"] = sig(line["value"])
        if "cpu" in line:
            line["cpu"] = sig(line["cpu"])
        if system == "letitcrash" and line["workload"] in GOALS:
            goal = GOALS[line["workload"]]
            line.update({"goal": f"<= {goal:g}", "met": line["value"] <= goal})
    return lines


def plan(workloads: list[str]) -> list[tuple[str, str]]:
    """(system, workload) per worker subprocess; dynamic_start and shutdown_100k share one."""
    jobs = []
    if "restart" in workloads:
        jobs += [("letitcrash", "restart"), ("otpylib", "restart")]
    if "dynamic_start" in workloads or "shutdown_100k" in workloads:
        jobs.append(("letitcrash", "dynamic"))
    if "dynamic_memory" in workloads:
        jobs.append(("letitcrash", "dynamic_memory"))
    return jobs


def table(results: list[dict[str, Any]]) -> str:
    rows = [["system", "workload", "value", "unit", "cpu", "n", "goal"]]
    for r in results:
        if "value" not in r:
            rows.append([r["system"], r["workload"], "-", "", "", "", r.get("skipped") or r.get("error")])
            continue
        unit = r["unit"]
        goal = f"{r['goal']} {'ok' if r['met'] else 'MISSED'}" if "goal" in r else ""
        rows.append([r["system"], r.get("metric", r["workload"]), f"{r['value']:g}", unit,
                     f"{r['cpu']:g}" if "cpu" in r else "", f"{r['n']:,}" if "n" in r else "", goal])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (under a minute)")
    ap.add_argument("--only", help=f"comma-separated workloads of {','.join(WORKLOADS)}")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the smoke test
    ap.add_argument("--worker", nargs=2, metavar=("SYSTEM", "WORKLOAD"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        for line in worker(*args.worker, args.mode):
            w = line.pop("workload")
            print(json.dumps({"system": args.worker[0], "workload": w, "value": line.pop("value"),
                              "unit": UNITS[w], **line}), flush=True)
        return 0
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workload: {', '.join(sorted(unknown))}")
    results = []
    for system, job in plan(workloads):
        for line in run_worker(system, job, mode):
            if line["workload"] in workloads or "value" not in line:
                results.append(line)
                if args.json:
                    print(json.dumps(line), flush=True)
                else:
                    print(f"  {system} {line['workload']} done", file=sys.stderr, flush=True)
    values = {(r["system"], r["workload"]): r["value"] for r in results if "value" in r}
    mine, theirs = values.get(("letitcrash", "restart")), values.get(("otpylib", "restart"))
    if mine and theirs:
        ratio = {"system": "letitcrash/otpylib", "workload": "ratio", "metric": "restart",
                 "value": sig(mine / theirs), "unit": "x"}
        results.append(ratio)
        if args.json:
            print(json.dumps(ratio))
    if not args.json:
        print(table(results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
