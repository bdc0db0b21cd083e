"""bench/sim.py runs end to end and prints every figure it promises. No timing
assertions: the hidden `--tiny` flag runs one short seed; only the output's shape is checked.
One run serves both checks: its JSON lines, and the table the script prints of them."""
from __future__ import annotations


import pytest
from conftest import bench_lines, bench_module

pytestmark = pytest.mark.xdist_group("sim_bench")  # one worker: its module fixture is made once

WORKLOADS = ["events_per_s", "events_per_s_64_clients", "events_per_s_core", "speedup", "seeds_per_min",
             "events_per_s_recorded", "trace_cost", "outside_share", "events_per_try", "jobs_wall_1", "jobs_wall_2", "jobs_speedup",
             "events_per_s_codec_off", "codec_cost"]
PARTS = ["driver", "network", "faults", "checks", "trace"]
MIX = ["turns", "sends", "arrivals", "signals", "commits", "spawns_exits", "other", "context"]

bench = bench_module("sim.py")  # for its table


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    """The JSON lines of one smoke run."""
    return bench_lines("sim.py")


def test_json_lines_name_every_workload_with_a_value_and_a_unit(lines):
    assert [d["workload"] for d in lines] == WORKLOADS
    for d in lines:
        assert d["system"] == "letitcrash" and d["unit"] and d["n"] == (2 if d["workload"].startswith("jobs") else 1)
        assert d["value"] >= 0 and (d["value"] > 0 or d["workload"] in ("trace_cost", "codec_cost"))
    outside = lines[WORKLOADS.index("outside_share")]
    assert list(outside["parts"]) == PARTS and outside["samples"] > 0
    assert abs(sum(outside["parts"].values()) - outside["value"]) < 0.5 and 0 <= outside["value"] <= 100
    assert list(outside["us_per_event"]) == [*PARTS, "system"] and outside["us_per_event"]["system"] > 0
    mix = lines[WORKLOADS.index("events_per_try")]["mix"]
    assert list(mix) == MIX and mix["turns"] > 0 and mix["sends"] > 0 and mix["commits"] > 0
    assert abs(sum(mix.values()) - mix["context"] - lines[WORKLOADS.index("events_per_try")]["value"]) < 0.1
    goals = {d["workload"]: d for d in lines if "goal" in d}
    assert set(goals) == {"events_per_s", "trace_cost"} and all(type(d["met"]) is bool for d in goals.values())


def test_the_table_has_a_row_per_workload(lines):
    rows = bench.table(lines).splitlines()
    assert rows[0].split()[:3] == ["workload", "value", "unit"]
    assert [row.split()[0] for row in rows[1:]] == WORKLOADS
    share = rows[1 + WORKLOADS.index("outside_share")]
    assert "driver" in share and "the rest: the system under test" in share
    assert "per try: turns" in rows[1 + WORKLOADS.index("events_per_try")]
