"""Rides and video under chaos on several seeds, through the `letitcrash sim` command:
`scenarios/rides.toml` and `scenarios/video.toml` (their systems named by short names),
in the scenarios' own "chaos" fault mode (process and tree kills, node restarts and power
loss, partitions, dropped, duplicated, delayed and reordered messages, disk and commit
faults) and in "swarm" mode (each seed keeps a random subset of the fault kinds, at
random rates). Every check must hold on every seed; a seed is about a second of wall time.

Many more seeds: `letitcrash sim scenarios/rides.toml --seeds 1..200` (and video.toml;
`--faults swarm` for the swarm mode)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
DONE = {"rides": "completed", "video": "ready"}  # the counter of work that got through
NETWORK = ("drop", "delay", "duplicate", "reorder", "partition")


def sim(capsys, *args: str) -> tuple[int, list[dict]]:
    """Run the command; its exit status and its reports (one per seed)."""
    status = main(["sim", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return status, out if isinstance(out, list) else [out]


@pytest.mark.parametrize("mode", ["chaos", "swarm"])
@pytest.mark.parametrize("name", sorted(DONE))
def test_every_check_holds_on_several_seeds_under_faults(name, mode, capsys):
    status, reports = sim(capsys, str(SCENARIOS / f"{name}.toml"), "--seeds", "1..3", "--faults", mode)
    failed = [(r["seed"], r["failure"]) for r in reports if not r["passed"]]
    assert status == 0 and not failed, f"{name} --faults {mode}: {failed}"
    for report in reports:
        faults = report["faults"]
        assert faults.get("kill_node", 0) >= 1, faults  # the scripted restart, at least
        if mode == "chaos":  # (a swarm seed may keep only a few kinds, at low rates)
            assert faults.get("kill_process", 0) >= 1 and any(faults.get(k) for k in NETWORK), faults
        assert report["stats"][name][DONE[name]] > 0, report["stats"]


@pytest.mark.parametrize("name", sorted(DONE))
def test_a_seed_replays_to_the_same_trace_and_another_seed_does_not(name, capsys):
    path = str(SCENARIOS / f"{name}.toml")
    (first,), (again,), (other,) = (sim(capsys, path, "--seed", seed)[1] for seed in ("4", "4", "5"))
    assert first["trace_hash"] == again["trace_hash"] and first["events"] == again["events"]
    assert other["trace_hash"] != first["trace_hash"]
