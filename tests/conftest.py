"""What the tests share: paths, bounded waits, quiet crash reports and the benchmark smoke
runner. Test modules import the functions with `from conftest import ...`; pytest finds
the fixtures.

Every real-time wait in a test is bounded, so a regression fails instead of hanging: a
wait here takes a bound, and pytest-timeout (pyproject.toml) bounds each test as a whole.
The bounds are safety margins for a loaded machine, never measurements."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable, TypeVar

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
BENCH = ROOT / "bench"
BOUND = 60.0  # seconds for one real-time wait
SIM_SEEDS = int(os.environ.get("LETITCRASH_SIM_SEEDS", "2"))
"""Seeds per simulation test: CI runs a few; LETITCRASH_SIM_SEEDS=N runs N (a longer soak)."""
settings.register_profile("default", max_examples=40)
settings.register_profile("thorough", max_examples=200)
settings.load_profile("thorough" if os.environ.get("LETITCRASH_SOAK") else "default")
"""Examples per property test: 40 by default, so every rule is drawn on each run and the suite
stays quick; LETITCRASH_SOAK=1 (or `--hypothesis-profile=thorough`) draws 200."""
T = TypeVar("T")


def arun(coro: Awaitable[T], bound: float = BOUND) -> T:
    """`asyncio.run(coro)`, failing with TimeoutError after `bound` seconds."""
    return asyncio.run(asyncio.wait_for(coro, bound))


async def eventually(predicate: Callable[[], Any], bound: float = BOUND, every: float = 0.001) -> None:
    """Poll until `predicate()` is true; fail after `bound` seconds."""
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, f"still false after {bound} s"
        await asyncio.sleep(every)


def run_main(main: Callable[[list[str]], int | None], capsys: pytest.CaptureFixture,
             *args: str) -> subprocess.CompletedProcess:
    """A command's `main(args)` run in this process, reported as `subprocess.run` would: its
    exit status (argparse's refusals exit), standard output and standard error."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, out.out, out.err)


def run_bench(script: str, *args: str, bound: float = 120.0) -> subprocess.CompletedProcess:
    """`python bench/SCRIPT --tiny ARGS...`: a benchmark's smoke run (tiny sizes, so it checks
    that every workload runs and reports, not how fast)."""
    return subprocess.run([sys.executable, str(BENCH / script), "--tiny", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=bound)


def bench_refusal(script: str, capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """`bench/SCRIPT --tiny ARGS...` for arguments it must refuse, run in this process (its
    `main`, as `run_main` runs a command): a refusal needs no interpreter of its own."""
    return run_main(bench_module(script).main, capsys, "--tiny", *args)


def bench_output(script: str, *args: str) -> str:
    """The standard output of a smoke run that must succeed."""
    proc = run_bench(script, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def bench_lines(script: str, *args: str) -> list[dict]:
    """The JSON lines of a smoke run (`--json`) that must succeed."""
    return [json.loads(line) for line in bench_output(script, "--json", *args).splitlines()]


def bench_module(script: str) -> ModuleType:
    """bench/SCRIPT loaded as the module `bench_<name>` (for its tables and choices; under
    its own name bench/sim.py would shadow the `sim` package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", BENCH / script)
    assert spec is not None and spec.loader is not None, script
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def quiet_crash_reports(caplog):
    """Crash reports of processes a test crashes on purpose (`actors` logger) stay out of
    its output; the level comes back after the test."""
    caplog.set_level(logging.CRITICAL, logger="actors")
