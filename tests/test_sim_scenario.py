"""Scenario files: bad input is rejected with the file, the line, the key and what was
expected; good input round-trips through TOML."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.runner import run
from sim.scenario import load, parse
from sim.schema import ScenarioError

GOOD = """\
name = "t"

[run]
seed = 3

[systems.counter]
servers = 2

[systems.counter.workload]
clients = 2

[faults]
mode = "chaos"

[faults.kill_process]
rate = 0.5

[[faults.script]]
at = 1.0
kind = "kill_node"
node = "counter1"

[[phases]]
name = "chaos"
duration = "2s"
faults = true
"""


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(text, "bad.toml")
    return info.value


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def test_the_good_scenario_checks_and_round_trips_through_toml():
    scenario = parse(GOOD, "good.toml")
    assert scenario.seed == 3 and scenario.duration == 2.0
    assert scenario.data["faults"]["kill_process"] == {"rate": 0.5}
    assert scenario.checks()["counter.exactly_once"] == "eventually"
    again = parse(scenario.to_toml(), "good.toml")
    assert again.data == scenario.data


@pytest.mark.parametrize("old, new, line, key, expected", [
    ("seed = 3", "sede = 3", 4, "run.sede", "unknown key (did you mean 'seed'?)"),
    ("servers = 2", "servers = 0", 7, "systems.counter.servers", "expected an integer in [1, 64], got 0"),
    ("clients = 2", 'clients = "two"', 10, "systems.counter.workload.clients", 'got "two"'),
    ('mode = "chaos"', 'mode = "mayhem"', 13, "faults.mode", "expected one of 'off', 'chaos', 'swarm'"),
    ("rate = 0.5", "rate = -1", 16, "faults.kill_process.rate", "expected a number in [0, 1000]"),
    ("[faults.kill_process]", "[faults.kill_processes]", 15, "faults.kill_processes",
     "did you mean 'kill_process'?"),
    ('kind = "kill_node"', 'kind = "explode"', 20, "faults.script[0].kind", "expected one of 'kill_process'"),
    ('node = "counter1"', 'nod = "counter1"', 21, "faults.script[0].nod", "unknown key"),
    ('duration = "2s"', 'duration = "2 fortnights"', 25, "phases[0].duration", "a duration in [0, 86400] seconds"),
    ("[systems.counter]", "[systems.tally]", 6, "systems.tally", "unknown system 'tally'; known: chat, counter, "),
])
def test_a_bad_key_or_value_names_the_file_line_key_and_what_was_expected(old, new, line, key, expected):
    exc = error(replace(old, new))
    assert exc.file == "bad.toml" and exc.key == key and exc.line == line, str(exc)
    assert expected in str(exc)
    assert str(exc).startswith(f"bad.toml:{line}: {key}: ")


def test_syntax_errors_missing_keys_and_empty_systems_are_reported():
    exc = error(replace("seed = 3", "seed = = 3"))
    assert exc.line == 4 and "not valid TOML" in str(exc)
    exc = error(replace('name = "chaos"\nduration = "2s"', 'name = "chaos"'))
    assert exc.key == "phases[0].duration" and "missing" in str(exc)
    exc = error('[run]\nseed = 1\n')
    assert exc.key == "systems" and "at least one [systems.NAME]" in str(exc)
    exc = error(GOOD + '\n[checks]\nnames = ["counter.nope"]\n')
    assert exc.key == "checks.names" and "unknown check 'counter.nope'" in str(exc)


def test_a_script_naming_an_unknown_node_is_rejected_when_the_nodes_exist():
    scenario = parse(replace('node = "counter1"', 'node = "counter9"'), "bad.toml")
    with pytest.raises(ScenarioError, match=re.escape("bad.toml:18: faults.script[0]: unknown node "
                                                      "'counter9'; the systems have: counter1, counter2, clients")):
        run(scenario, 1)


def test_a_missing_file_is_a_scenario_error(tmp_path: Path):
    with pytest.raises(ScenarioError, match="cannot read the scenario"):
        load(tmp_path / "nope.toml")


def test_the_shipped_scenarios_check():
    root = Path(__file__).resolve().parent.parent / "scenarios"
    for path in sorted(root.glob("*.toml")):
        assert load(path).name
