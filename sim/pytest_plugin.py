"""The pytest plugin: simulation runs as parametrized tests, one per seed.

    import pytest
    from sim.systems.counter import CounterSystem

    @pytest.mark.letitcrash("scenarios/counter.toml", seeds=range(1, 11))
    def test_counter(letitcrash_run):                  # test_counter[seed=1] ... [seed=10]
        assert letitcrash_run.passed, letitcrash_run.failure

    @pytest.mark.letitcrash(CounterSystem, seeds="1..5", options={"servers": 3},
                            scenario={"run": {"duration": 5.0}})
    def test_counter_system(letitcrash_run):
        assert letitcrash_run.passed, letitcrash_run.failure

`@pytest.mark.letitcrash(what, seeds=..., ...)` takes a scenario file (relative to the
rootdir, or absolute) or a `sim.System` subclass, whose scenario is its options
(`options`, with `workload` as a table in them) and any other scenario tables
(`scenario`: run, faults, phases, network, checks) with the defaults for the rest. For a
file, `overrides` are (key path, value) pairs as `load` takes them. `seeds` is a range,
a list or "A..B" (default: the scenario's seed); `pytest --letitcrash-seeds A..B` runs
every marked test with those seeds instead. The `letitcrash_run` fixture is the run's
`sim.Result`. When such a test fails, its report gets a "letitcrash" section with the
failure and the commands that reproduce and shrink it (for a System, with the scenario
written to a file the command names).

Registered as the `pytest11` entry point "letitcrash"; `-p no:letitcrash` turns it off.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Generator

import pytest

from .report import reproduce_command, shrink_command
from .runner import Result, run
from .scenario import Scenario, load, parse
from .schema import ScenarioError, to_toml
from .system import System

_RUN = pytest.StashKey[tuple[Scenario, Result, str]]()
_SCENARIOS = pytest.StashKey[dict[tuple[str, str], Scenario]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--letitcrash-seeds", metavar="A..B", default=None,
                     help="run every @pytest.mark.letitcrash test with these seeds")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "letitcrash(scenario_or_system, seeds=None, overrides=None, "
                            "options=None, scenario=None): run a simulation per seed (sim.pytest_plugin)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("letitcrash")
    if marker is None or "letitcrash_run" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("letitcrash_seeds")
    seeds = marker.kwargs.get("seeds") if chosen is None else chosen
    if seeds is None:
        seeds = [_scenario(metafunc.config, marker, None).seed]
    metafunc.parametrize("letitcrash_run", _seeds(seeds), indirect=True, ids=lambda seed: f"seed={seed}")


@pytest.fixture
def letitcrash_run(request: pytest.FixtureRequest) -> Result:
    """The `sim.Result` of this test's scenario with this test's seed."""
    marker = request.node.get_closest_marker("letitcrash")
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid}: letitcrash_run needs "
                                "@pytest.mark.letitcrash(scenario file or System, seeds=...)")
    scenario = _scenario(request.config, marker, request.getfixturevalue("tmp_path_factory"))
    result = run(scenario, request.param)
    request.node.stash[_RUN] = (scenario, result, _command_prefix(marker))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    found = item.stash.get(_RUN, None)
    if report.when == "call" and report.failed and found is not None:
        scenario, result, prefix = found
        lines = [f"{result.name}, seed {result.seed}: " + (
            "every check held" if result.failure is None else
            f"{result.failure.check} failed at t={result.failure.time:.6f} s: {result.failure.message}"),
            f"reproduce: {prefix}{reproduce_command(result)}",
            f"shrink:    {prefix}{shrink_command(result)}",
            f"look:      {prefix}{reproduce_command(result)} --html seed{result.seed}.html"]
        report.sections.append(("letitcrash", "\n".join(lines)))
    return report


# -- what a marker names ----------------------------------------------------------------------


def _seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, str):
        lo, sep, hi = seeds.partition("..")
        try:
            seeds = range(int(lo), int(hi) + 1) if sep else [int(seeds)]
        except ValueError:
            raise pytest.UsageError(f"letitcrash seeds {seeds!r}: expected A..B or a seed") from None
    out = list(seeds)
    if not out or not all(type(s) is int and 0 <= s < 2**63 for s in out):
        raise pytest.UsageError(f"letitcrash seeds {seeds!r}: expected seeds in [0, 2**63)")
    return out


def _scenario(config: pytest.Config, marker: pytest.Mark, files: pytest.TempPathFactory | None) -> Scenario:
    """The marker's scenario, checked once per test session and marker. A System's is
    written to a file under `files` (so the commands in a failure's report can run it)."""
    what = marker.args[0] if marker.args else None
    cache = config.stash.setdefault(_SCENARIOS, {})
    key = (repr(marker.args), repr(sorted(marker.kwargs.items(), key=lambda kv: kv[0])))
    if key not in cache:
        try:
            if isinstance(what, type) and issubclass(what, System):
                scenario = _system_scenario(what, marker.kwargs.get("options") or {},
                                            marker.kwargs.get("scenario") or {})
                if files is None:
                    return scenario  # only its seed is wanted
                path = files.mktemp("letitcrash") / f"{what.__name__}.toml"
                path.write_text(scenario.to_toml(), encoding="utf-8")
                cache[key] = load(path)
            elif isinstance(what, (str, Path)):
                path = Path(what) if Path(what).is_absolute() else config.rootpath / what
                cache[key] = load(path, marker.kwargs.get("overrides"))
            else:
                raise pytest.UsageError(f"@pytest.mark.letitcrash: expected a scenario file or a "
                                        f"sim.System subclass, got {what!r}")
        except ScenarioError as exc:
            raise pytest.UsageError(f"@pytest.mark.letitcrash: {exc}") from None
    return cache[key]


def _system_name(cls: type[System]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _system_scenario(cls: type[System], options: dict[str, Any], tables: dict[str, Any]) -> Scenario:
    raw = {"name": cls.__name__, **tables, "systems": {_system_name(cls): options}}
    return parse(to_toml(raw), f"<{cls.__name__} scenario>")


def _command_prefix(marker: pytest.Mark) -> str:
    """What a shell needs before `letitcrash` to import a System defined in a test module."""
    what = marker.args[0] if marker.args else None
    if not isinstance(what, type):
        return ""
    module = sys.modules.get(what.__module__)
    source = getattr(module, "__file__", None)
    if source is None:
        return ""
    root = Path(source).resolve().parent
    for _ in what.__module__.split(".")[1:]:  # up to the folder the module is imported from
        root = root.parent
    return f"PYTHONPATH={shlex.quote(str(root))} "
