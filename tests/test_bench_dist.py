"""bench/dist.py runs end to end and prints every line it promises: letitcrash beside the
floor (a bare asyncio stream relay), their ratios, and the failure detection figures.

No timing assertions: the hidden `--tiny` flag shrinks every workload so the run takes a
few seconds; only the shape of the output is checked.
"""
import json
from functools import partial

from conftest import bench_output, bench_refusal

run = partial(bench_output, "dist.py")


def test_json_lines_cover_every_workload_beside_the_floor_and_the_ratios():
    lines = [json.loads(line) for line in run("--json").splitlines()]
    measured = {(d["system"], d["workload"]): d for d in lines if d["workload"] != "ratio"}
    assert set(measured) == {("letitcrash", "tell_msgs_per_s"), ("floor", "tell_msgs_per_s"),
                             ("letitcrash", "call_rtt_us"), ("floor", "call_rtt_us"),
                             ("letitcrash", "kill_detect_ms"), ("letitcrash", "freeze_detect_ticks")}
    for (system, _), d in measured.items():
        assert d["value"] > 0 and d["unit"], d
        if system == "letitcrash":
            assert isinstance(d["met"], bool), d
    ratios = {d["metric"]: d for d in lines if d["workload"] == "ratio"}
    assert set(ratios) == {"tell_msgs_per_s", "call_rtt_us"}
    assert all(d["system"] == "letitcrash/floor" and d["value"] > 0 for d in ratios.values())
    assert measured["letitcrash", "freeze_detect_ticks"]["ticktime"] > 0


def test_a_bad_workload_is_named(capsys):
    bad = bench_refusal("dist.py", capsys, "--only", "nonsense")
    assert bad.returncode == 2 and "unknown workload: nonsense" in bad.stderr
