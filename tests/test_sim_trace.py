"""Determinism, traces and replay: the same seed gives the same trace hash in any process
whatever PYTHONHASHSEED is; a recorded trace replays without divergence, and a tampered
one reports the first record that differs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from conftest import ROOT
from trace_files import rewrite, tamper

from sim.replay import replay
from sim.runner import run
from sim.scenario import load
from sim.trace import TraceError, TraceReader

SHORT = [("phases", [{"name": "chaos", "duration": 4.0, "faults": True},
                     {"name": "heal", "duration": 1.0, "heal": True},
                     {"name": "quiesce", "duration": 3.0, "workload": False}])]


def scenario():
    return load(ROOT / "scenarios" / "counter.toml", SHORT)


def test_the_same_seed_gives_the_same_trace_in_processes_with_different_hash_seeds(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text(scenario().to_toml())
    hashes = set()
    for hash_seed in ("0", "4242"):  # and this process's own, below
        out = subprocess.run([sys.executable, "-m", "sim.cli", "sim", str(path), "--seed", "5", "--json"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout)
        assert report["faults"] and report["events"] > 1000
        hashes.add(report["trace_hash"])
    assert len(hashes) == 1
    assert run(scenario(), 5).trace_hash in hashes


def test_different_seeds_give_different_traces():
    assert len({run(scenario(), seed).trace_hash for seed in (1, 2, 3)}) == 3


def record(tmp_path: Path, seed: int = 2) -> Path:
    path = tmp_path / "run.trace"
    with open(path, "wb") as out:
        run(scenario(), seed, out=out)
    return path


def test_a_recorded_trace_replays_without_divergence_and_keeps_its_header(tmp_path):
    path = record(tmp_path)
    reader = TraceReader(str(path))
    header = reader.header
    reader.close()
    assert header["seed"] == 2 and header["python"] and "[systems.counter]" in header["scenario"]
    done = replay(str(path))
    assert done.divergence is None and done.result.trace_hash == done.recorded_hash


def test_a_whole_recording_that_differs_reports_the_first_record_that_differs(tmp_path):
    path = record(tmp_path)
    index, tampered = tamper(path, rehash=True)
    done = replay(str(path))
    d = done.divergence
    assert d is not None and d.index == index and d.expected == tampered
    assert d.got[:3] == tampered[:3] and d.got[3] == tampered[3] - 1 and d.time > 0
    assert f"record #{index} at virtual time" in str(d)


def test_a_changed_record_is_a_damaged_trace_not_a_divergence(tmp_path):
    path = record(tmp_path)
    tamper(path, rehash=False)
    with pytest.raises(TraceError, match="damaged trace: the records before the checkpoint at record"):
        replay(str(path))


def test_a_changed_checkpoint_hash_is_a_damaged_trace(tmp_path):
    path = record(tmp_path)
    with open(path, "rb") as f:
        objects = list(msgpack.Unpacker(f, raw=False, strict_map_key=False))
    checkpoints = [obj for obj in objects if type(obj) is list and obj[0] == "ckpt"]
    checkpoints[2][3] = "0" * 32
    rewrite(path, objects, rehash=False)
    with pytest.raises(TraceError, match=f"checkpoint at record {checkpoints[2][1]} do not match its hash"):
        replay(str(path))


def test_a_truncated_trace_is_damaged_and_junk_is_not_a_trace(tmp_path):
    path = record(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):  # mid-run, and inside the end record
        path.write_bytes(data[:cut])
        with pytest.raises(TraceError, match="damaged trace: it ends after record .* without its end record"):
            replay(str(path))
    path.write_bytes(data + b"\x01")
    with pytest.raises(TraceError, match="damaged trace: records after"):
        replay(str(path))
    path.write_bytes(b"\x93\x01\x02\x03")
    with pytest.raises(TraceError, match="not a letitcrash trace"):
        TraceReader(str(path))
    with pytest.raises(TraceError, match="cannot read the trace: No such file"):
        TraceReader(str(tmp_path / "missing.trace"))
    with pytest.raises(TraceError, match="cannot read the trace: Is a directory"):
        TraceReader(str(tmp_path))
