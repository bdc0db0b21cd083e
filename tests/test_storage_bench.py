"""bench/storage.py runs end to end and prints every line it promises (tiny sizes; only the
shape of the output is checked, never a timing)."""
from __future__ import annotations

import json
from functools import partial

from conftest import bench_output

run = partial(bench_output, "storage.py")


def test_json_lines_cover_every_workload():
    lines = [json.loads(line) for line in run("--json").splitlines()]
    assert [d["workload"] for d in lines] == ["persist_tell", "persist_sync_1", "persist_process", "grow",
                                              "recover", "recover_gc_tuned", "activate"]
    for d in lines:
        assert d["system"] == "letitcrash" and d["unit"] and d["n"] > 0, d
        assert isinstance(d["value"], (int, float)) and d["value"] > 0, d
    assert {d["workload"] for d in lines if "goal" in d} == {"persist_tell", "recover", "recover_gc_tuned",
                                                              "activate"}
    tell = lines[0]
    assert tell["writes"] > 0 and tell["commits"] >= 1
    assert all(d["gc_s"] >= 0 for d in lines[4:]), lines  # recover and activate time the gc
    assert lines[3]["map_mb"] >= 8, lines[3]  # grow: the map grew from 8 MiB as needed


def test_table_and_only():
    out = run("--only", "persist_sync_1")
    assert "persist_sync_1" in out and "upd/s" in out and "recover" not in out
