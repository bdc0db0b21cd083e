"""Chat and timelines under chaos on several seeds: the scenarios in `scenarios/`, with
the chaos phase cut short (the node restart it scripts comes sooner), in the scenario's
own "chaos" fault mode and in "swarm" mode (each seed keeps a random subset of the fault
kinds, at random rates). Every check must hold on every seed.

Many more seeds: `letitcrash sim scenarios/chat.toml --seeds 1..200` (and the same for
timeline.toml, timeline_celebrity.toml; `--faults swarm` for the swarm mode)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import apply_faults
from sim.runner import run
from sim.scenario import Scenario, load

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CHAOS_SECONDS = 8.0
SEEDS = range(11, 16)


def short(name: str, mode: str) -> Scenario:
    """Scenario `name` with an 8 s chaos phase, its scripted node restart at 3 s."""
    scenario = load(SCENARIOS / name)
    raw = scenario.raw()
    (chaos,) = [phase for phase in raw["phases"] if phase["name"] == "chaos"]
    assert chaos["faults"], f"{name}: the chaos phase injects no faults"
    chaos["duration"] = CHAOS_SECONDS
    for step in raw["faults"]["script"]:
        step["at"] = min(step["at"], 3.0)
    return apply_faults(scenario.rebuild(raw), mode)


@pytest.mark.parametrize("mode", ["chaos", "swarm"])
@pytest.mark.parametrize("name", ["chat.toml", "timeline.toml", "timeline_celebrity.toml"])
def test_every_check_holds_on_several_seeds_under_faults(name, mode):
    scenario = short(name, mode)
    for seed in SEEDS:
        result = run(scenario, seed)
        assert result.passed, (f"{name} --faults {mode} seed {seed}: {result.failure}\n  reproduce: "
                               f"letitcrash sim scenarios/{name} --faults {mode} --seed {seed} "
                               f"(with the chaos phase {CHAOS_SECONDS:g} s long)")
        faults = result.faults
        assert faults.get("kill_node", 0) >= 1, faults  # the scripted restart, at least
        if mode == "chaos":  # (a swarm seed may keep only a few kinds, at low rates)
            assert faults.get("kill_process", 0) >= 1, faults
            network = ("drop", "delay", "duplicate", "reorder", "partition")
            assert any(faults.get(kind) for kind in network), faults
        served = result.stats[next(iter(result.stats))]
        assert served.get("acked", served.get("posts", 0)) > 10, served
