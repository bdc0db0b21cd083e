"""The pytest plugin, used as a user would: a test suite in a fresh folder marks tests with
a scenario file or a System and a range of seeds; each seed is a test, and a failing
seed's report names the command that reproduces it (which does)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]
CHAOS = "duration = 20.0"  # the counter scenario's chaos phase

SUITE = '''
import pytest
from sim.systems.counter import CounterSystem


class MyCounter(CounterSystem):
    """A user's own System (here: the counter service, with the bug switched on)."""


@pytest.mark.letitcrash("scenarios/counter.toml", seeds=range(1, 3))
def test_holds(letitcrash_run):
    assert letitcrash_run.passed, letitcrash_run.failure


@pytest.mark.letitcrash("scenarios/counter_broken.toml", seeds="1..2")
def test_broken(letitcrash_run):
    assert letitcrash_run.passed, letitcrash_run.failure.check


@pytest.mark.letitcrash(MyCounter, seeds=[1], options={"bug": "ack_before_persist"}, scenario={
    "faults": {"mode": "chaos", "power_loss": {"rate": 0.05}, "commit_fail": {"rate": 0.002}},
    "phases": [{"name": "chaos", "duration": 10.0, "faults": True},
               {"name": "quiesce", "duration": 3.0, "workload": False}]})
def test_my_system(letitcrash_run):
    assert letitcrash_run.passed, letitcrash_run.failure.check


@pytest.mark.letitcrash("scenarios/counter.toml")
def test_default_seed(letitcrash_run):
    assert letitcrash_run.seed == 1 and letitcrash_run.events > 0
'''


def user_suite(pytester, monkeypatch) -> Path:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # load it by name, installed or not
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    scenarios = pytester.path / "scenarios"
    scenarios.mkdir()
    shutil.copy(ROOT / "scenarios" / "counter_broken.toml", scenarios)
    counter = (ROOT / "scenarios" / "counter.toml").read_text()  # its chaos phase cut short: these tests
    assert CHAOS in counter  # need the plugin's runs and reports, not a long run (test_sim_counter has those)
    (scenarios / "counter.toml").write_text(counter.replace(CHAOS, "duration = 4.0"))
    pytester.makepyfile(test_user=SUITE)
    return pytester.path


def test_a_users_suite_runs_a_test_per_seed_and_names_the_failing_seeds_replay(pytester, monkeypatch):
    folder = user_suite(pytester, monkeypatch)
    out = pytester.runpytest_subprocess("-p", "sim.pytest_plugin", "-v", "-p", "no:cacheprovider", timeout=300)
    out.assert_outcomes(passed=3, failed=3)
    text = out.stdout.str()
    for test in ("test_holds[seed=1] PASSED", "test_holds[seed=2] PASSED", "test_broken[seed=1] FAILED",
                 "test_broken[seed=2] FAILED", "test_my_system[seed=1] FAILED", "test_default_seed[seed=1] PASSED"):
        assert test in text, text
    commands = [line.split("reproduce: ", 1)[1] for line in text.splitlines() if line.startswith("reproduce: ")]
    assert len(commands) == 3
    assert commands[0] == f"letitcrash sim {folder / 'scenarios' / 'counter_broken.toml'} --seed 1"
    assert commands[2].startswith(f"PYTHONPATH={folder} letitcrash sim ") and commands[2].endswith(" --seed 1")
    assert "counter.no_lost_ack failed at t=" in text and "shrink:    " in text
    for command in (commands[0], commands[2]):  # each reproduces its failure, from the user's folder
        env_part, _, rest = command.rpartition("letitcrash sim ")
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(
            [*[part.split("=", 1)[1] for part in shlex.split(env_part)], str(ROOT)])}
        again = subprocess.run([sys.executable, "-m", "sim.cli", "sim", *shlex.split(rest), "--json"],
                               cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 1, again.stderr[-2000:]
        assert '"check": "' in again.stdout and "no_lost_ack" in again.stdout


def test_seeds_from_the_command_line_replace_the_markers(pytester, monkeypatch):
    user_suite(pytester, monkeypatch)
    out = pytester.runpytest_subprocess("-p", "sim.pytest_plugin", "-v", "-p", "no:cacheprovider",
                                        "--letitcrash-seeds", "3..4", "-k", "holds", timeout=300)
    out.assert_outcomes(passed=2)
    assert "test_holds[seed=3] PASSED" in out.stdout.str() and "test_holds[seed=4] PASSED" in out.stdout.str()


def test_a_bad_marker_is_a_usage_error_naming_the_problem(pytester, monkeypatch):
    user_suite(pytester, monkeypatch)
    pytester.makepyfile(test_bad='''
import pytest

@pytest.mark.letitcrash("scenarios/nope.toml", seeds="1..x")
def test_bad(letitcrash_run):
    pass
''')
    out = pytester.runpytest_subprocess("-p", "sim.pytest_plugin", "-p", "no:cacheprovider", "test_bad.py",
                                        timeout=120)
    assert out.ret != 0 and "letitcrash seeds '1..x': expected A..B or a seed" in out.stderr.str() + out.stdout.str()


def test_the_plugin_is_declared_as_a_pytest_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"letitcrash": "sim.pytest_plugin"}
    assert "matplotlib>=3.7" in project["project"]["optional-dependencies"]["report"]


def test_the_readme_example_runs_as_a_users_test(pytester, monkeypatch):
    user_suite(pytester, monkeypatch)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (example,) = [block for block in blocks if "letitcrash_run" in block]
    pytester.makepyfile(test_readme=example)
    out = pytester.runpytest_subprocess("-p", "sim.pytest_plugin", "-v", "-p", "no:cacheprovider",
                                        "test_readme.py", timeout=300)
    out.assert_outcomes(passed=5)
    assert "test_counter[seed=5] PASSED" in out.stdout.str()
