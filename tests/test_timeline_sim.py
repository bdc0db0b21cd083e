"""Timelines under the simulator: every timeline matches the model under chaos, with and
without a celebrity far above the fan-out threshold, and across three nodes with node
kills and partitions, no author or timeline ever live twice; the checks catch a fan-out
that never resends a lost insert.

CI runs a few seeds; set LETITCRASH_SIM_SEEDS=N to run seeds 1..N instead."""
from __future__ import annotations

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from apps.timeline.fanout import Fanout
from sim.runner import run
from sim.scenario import load

SEEDS = range(1, SIM_SEEDS + 1)
SYSTEM = "timeline"


@pytest.mark.parametrize("name", ["timeline.toml", "timeline_celebrity.toml", "timeline_nodes.toml"])
@pytest.mark.parametrize("seed", SEEDS)
def test_timelines_match_the_model_under_chaos(name, seed):
    result = run(load(SCENARIOS / name), seed)
    assert result.passed, f"{name} seed {seed}: {result.failure}"
    stats = result.stats[SYSTEM]
    assert stats["posts"] > 100 and stats["follows"] > 50 and stats["unfollows"] > 10
    assert result.faults.get("kill_node", 0) >= 1
    assert stats["activations"] > 0 and result.checks["timeline.single_activation"]["ok"]
    if name == "timeline_nodes.toml":
        assert result.faults.get("partition", 0) >= 2


def test_a_fan_out_that_never_resends_is_caught(monkeypatch):
    monkeypatch.setattr(Fanout, "_retry", lambda self: None)  # the bug: lost inserts stay lost
    failures = [run(load(SCENARIOS / "timeline.toml"), seed).failure for seed in (1, 2, 3)]
    caught = [f for f in failures if f is not None]
    assert caught, "three seeds of chaos and no check noticed lost timeline inserts"
    assert all(f.check.endswith("timelines_match_the_model") for f in caught), caught
