"""bench/kernel.py runs end to end and prints every line it promises.

No timing assertions: the hidden `--tiny` flag shrinks every workload so the whole run
takes a few seconds; only the shape of the output is checked.
"""
from __future__ import annotations

import importlib.util
import json
from functools import partial

from conftest import bench_output

SYSTEMS = ["letitcrash", "asyncio", "pykka", "otpylib", "floor"]
HAS_OTPYLIB = importlib.util.find_spec("otpylib") is not None
run = partial(bench_output, "kernel.py")


def expected_measurements() -> set[tuple[str, str]]:
    pairs = {(s, w) for s in SYSTEMS for w in ("spawn", "memory", "tell", "call", "ring")}
    pairs -= {("pykka", "ring")}
    pairs |= {(s, w) for s in ("letitcrash", "floor") for w in ("million", "million_rss")}
    pairs |= {(s, w) for s in ("letitcrash", "asyncio", "floor")
              for w in ("cold_turn", "server_call", "short_life")}
    return {p for p in pairs if HAS_OTPYLIB or p[0] != "otpylib"}


def test_json_lines_cover_every_system_and_workload() -> None:
    lines = [json.loads(line) for line in run("--json").splitlines()]
    measured = {(d["system"], d["workload"]): d for d in lines
                if "value" in d and d["workload"] != "ratio"}
    assert set(measured) == expected_measurements()
    for d in measured.values():
        assert isinstance(d["value"], (int, float)) and d["value"] > 0, d
        assert d["unit"] and d["n"] > 0, d

    skipped = {(d["system"], d["workload"]) for d in lines if "skipped" in d}
    assert ("pykka", "ring") in skipped and ("asyncio", "million") in skipped
    assert ("pykka", "cold_turn") in skipped
    assert not [d for d in lines if "error" in d]

    ratios = {(d["system"], d["metric"]): d["value"] for d in lines if d["workload"] == "ratio"}
    wanted = {("letitcrash/pykka", "tell"), ("letitcrash/asyncio", "tell"),
              ("letitcrash/asyncio", "call"), ("letitcrash/floor", "ring"),
              ("letitcrash/asyncio", "spawn"), ("letitcrash/asyncio", "memory")}
    wanted |= {(f"letitcrash/{peer}", w) for peer in ("floor", "asyncio")
               for w in ("cold_turn", "server_call", "short_life")}
    if HAS_OTPYLIB:
        wanted |= {("letitcrash/otpylib", m) for m in ("tell", "call", "spawn")}
    assert set(ratios) == wanted
    assert all(v > 0 for v in ratios.values())


def test_table_and_filters() -> None:
    out = run("--only", "tell,ring", "--systems", "letitcrash,floor")
    assert "tell" in out and "ring" in out and "letitcrash/floor" in out
    assert "spawn" not in out and "asyncio" not in out
