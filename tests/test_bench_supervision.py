"""bench/supervision.py runs end to end and prints every line it promises.

No timing assertions: the hidden `--tiny` flag shrinks every workload so the run takes a
few seconds; only the shape of the output is checked.
"""
import importlib.util
import json
from functools import partial

from conftest import bench_output

HAS_OTPYLIB = importlib.util.find_spec("otpylib") is not None
run = partial(bench_output, "supervision.py")


def test_json_lines_cover_every_workload_and_the_ratio():
    lines = [json.loads(line) for line in run("--json").splitlines()]
    measured = {(d["system"], d["workload"]): d for d in lines if "value" in d and d["workload"] != "ratio"}
    expected = {("letitcrash", w) for w in ("restart", "dynamic_start", "shutdown_100k", "dynamic_memory")}
    if HAS_OTPYLIB:
        expected.add(("otpylib", "restart"))
    else:
        assert any(d.get("system") == "otpylib" and "skipped" in d for d in lines)
    assert set(measured) == expected
    for d in measured.values():
        assert d["value"] > 0 and d["unit"] and d["n"] > 0, d
    for workload in ("restart", "dynamic_start", "shutdown_100k"):
        assert isinstance(measured["letitcrash", workload]["met"], bool)
    ratios = [d for d in lines if d["workload"] == "ratio"]
    if HAS_OTPYLIB:
        (ratio,) = ratios
        assert ratio["system"] == "letitcrash/otpylib" and ratio["metric"] == "restart"
        assert ratio["unit"] == "x" and ratio["value"] > 0
    assert not [d for d in lines if "error" in d]


def test_table_and_only():
    out = run("--only", "dynamic_memory")
    assert "dynamic_memory" in out and "restart" not in out
