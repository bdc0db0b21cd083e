"""The case studies under chaos on several seeds, through the `letitcrash sim` command:
each scenario of `scenarios/` (chat, timeline, timeline_celebrity, rides, video, playlists,
photos, orders, gateway; their systems named by short names) with its chaos phase cut
short (the node restart it scripts comes sooner), in the scenario's own "chaos" fault mode
(process and tree kills, node restarts and power loss, partitions, dropped, duplicated,
delayed and reordered messages, disk and commit faults) and in "swarm" mode (each seed
keeps a random subset of the fault kinds, at random rates). Every check must hold on
every seed; in chaos mode a seed run again must replay to the same trace and the same
stats, and another seed must not (that a swarm seed draws its mix the same way each time
is checked on the counter, in tests/test_sim_counter.py).

Then each heavy fault profile (crash-heavy, storage-heavy, network-heavy: one family of
faults at rates well past the scenarios' own; see `sim.faults`) on a seed (a seed fewer
than the sweeps): every check must hold there too.

Two seeds by default in chaos mode, as every simulation test, and one in swarm mode (a seed
fewer; nine scenarios give nine mixes); LETITCRASH_SIM_SEEDS=N runs N (and N - 1). Many more
seeds, full length:
`letitcrash sim scenarios/chat.toml --seeds 1..200` (and the same for the others;
`--faults swarm` for the swarm mode, `--faults crash-heavy` and the other profiles for
those)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from sim.cli import main
from sim.faults import PROFILES
from sim.scenario import load

SCRIPT_BY = 3.0  # the scripted faults (a node restart) come by then
SEEDS = {"chaos": (11, 10 + max(2, SIM_SEEDS)),  # the first and last seed: two at least, to compare their traces
         "swarm": (11, 10 + max(1, SIM_SEEDS - 1))}


class Case(NamedTuple):
    chaos: float  # seconds of chaos phase (rides and video send few messages between nodes: longer)
    system: str  # the system, whose stat `served` counts the work that got through...
    served: str
    least: int  # ...and must exceed this on every seed


CASES = {"chat": Case(8.0, "chat", "acked", 10), "timeline": Case(8.0, "timeline", "posts", 10),
         "timeline_celebrity": Case(8.0, "timeline", "posts", 10),
         "rides": Case(16.0, "rides", "completed", 0), "video": Case(16.0, "video", "ready", 0),
         "playlists": Case(8.0, "playlists", "acked", 20), "photos": Case(16.0, "photos", "acked", 5),
         "orders": Case(10.0, "orders", "shipped", 5), "gateway": Case(8.0, "gateway", "live", 50)}
NETWORK = ("drop", "delay", "duplicate", "reorder", "partition")
HEAVY_SEEDS = (21, 20 + max(1, SIM_SEEDS - 1))  # a seed fewer than the sweeps: one by default
HEAVY_CHAOS = 5.0  # seconds: at these rates, dozens of faults
HEAVY = ("crash-heavy", "storage-heavy", "network-heavy")


def short(name: str, out: Path, seconds: float | None = None) -> str:
    """Write scenario `name` with its case's chaos phase (or one `seconds` long) to
    `out`; its path."""
    scenario = load(SCENARIOS / f"{name}.toml")
    raw = scenario.raw()
    (chaos,) = [phase for phase in raw["phases"] if phase["name"] == "chaos"]
    assert chaos["faults"], f"{name}: the chaos phase injects no faults"
    chaos["duration"] = CASES[name].chaos if seconds is None else seconds
    for step in raw["faults"]["script"]:
        step["at"] = min(step["at"], SCRIPT_BY)
    out.write_text(scenario.rebuild(raw).to_toml(), encoding="utf-8")
    return str(out)


def sim(capsys, *args: str) -> tuple[int, list[dict]]:
    """Run the command; its exit status and its reports (one per seed)."""
    status = main(["sim", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    return status, out if isinstance(out, list) else [out]


@pytest.mark.parametrize("mode", ["chaos", "swarm"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_check_holds_on_several_seeds_under_faults_and_a_seed_replays(name, mode, tmp_path, capsys):
    path = short(name, tmp_path / f"{name}.toml")
    first_seed, last_seed = SEEDS[mode]
    status, reports = sim(capsys, path, "--seeds", f"{first_seed}..{last_seed}", "--faults", mode)
    assert len(reports) == last_seed - first_seed + 1
    failed = [(r["seed"], r["failure"], r["reproduce"]) for r in reports if not r["passed"]]
    case = CASES[name]
    assert status == 0 and not failed, f"{name} --faults {mode} (the chaos phase {case.chaos:g} s long): {failed}"
    for report in reports:
        faults = report["faults"]
        assert faults.get("kill_node", 0) >= 1, faults  # the scripted restart, at least
        if mode == "chaos":  # (a swarm seed may keep only a few kinds, at low rates)
            assert faults.get("kill_process", 0) >= 1 and any(faults.get(k) for k in NETWORK), faults
        assert report["stats"][case.system][case.served] > case.least, report["stats"]
    if mode == "swarm":
        return
    first, other = reports[0], reports[1]
    (again,) = sim(capsys, path, "--seed", str(first["seed"]), "--faults", mode)[1]
    assert again["trace_hash"] == first["trace_hash"] and again["events"] == first["events"]
    assert again["stats"] == first["stats"]
    assert other["trace_hash"] != first["trace_hash"]


@pytest.mark.parametrize("profile", HEAVY)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_check_holds_under_each_heavy_fault_profile(name, profile, tmp_path, capsys):
    path = short(name, tmp_path / f"{name}.toml", HEAVY_CHAOS)
    status, reports = sim(capsys, path, "--seeds", "{}..{}".format(*HEAVY_SEEDS), "--faults", profile)
    failed = [(r["seed"], r["failure"], r["reproduce"]) for r in reports if not r["passed"]]
    assert status == 0 and not failed, f"{name} --faults {profile}: {failed}"
    for report in reports:  # the profile's own kinds struck, many times
        assert sum(report["faults"].get(kind, 0) for kind in PROFILES[profile]) >= 5, report["faults"]
