"""bench/serve.py runs end to end against a real `letitcrash serve` and prints every line
it promises.

No timing assertions: the hidden `--tiny` flag shrinks every workload (40 connections,
4 pairs for 0.6 s, 100 pending messages, one client process) so the run takes seconds;
only the shape of the output, and that each workload measured something, are checked.
"""
from __future__ import annotations

import json
from functools import partial

from conftest import run_bench

run = partial(run_bench, "serve.py")


def test_json_lines_cover_every_workload_and_the_peer() -> None:
    proc = run("--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    measured = {(d["system"], d["workload"]): d for d in lines if d["workload"] != "ratio"}
    ours = {"connections", "conn_memory", "msgs_per_s", "latency_p50_us", "latency_p99_us", "overload_p99_us",
            "recovery_s"}
    assert set(measured) == {("letitcrash", w) for w in ours} | {
        ("relay", w) for w in ("msgs_per_s", "latency_p50_us", "latency_p99_us")}
    for d in measured.values():
        assert isinstance(d["value"], float) and d["value"] > 0, d
        assert d["unit"] and d["cores"] > 0 and d["others_cpu"] >= 0, d
        assert d.get("errors", 0) == 0, d
        if d["workload"] in ("msgs_per_s", "latency_p50_us", "latency_p99_us", "overload_p99_us"):
            # A short run on a busy machine may round one side to 0.0 cores; never both.
            assert min(d["server_cores"], d["clients_cores"]) >= 0, d
            assert d["server_cores"] + d["clients_cores"] > 0, d
            assert d["answered"] > 0 and d["overloaded"] >= 0, d
            if d["system"] == "letitcrash":  # a send, a confirm; an answer, an items frame at least
                assert d["frames_in"] > 0 and d["frames_out"] > 0 and d["server_us_per_msg"] >= 0, d
        assert ("goal" in d) == (d["system"] == "letitcrash" and d["workload"] != "latency_p50_us"), d
        assert ("met" in d) == ("goal" in d) and isinstance(d.get("met", False), bool), d
    assert measured["letitcrash", "connections"]["value"] == 40  # every connection held
    recovery = measured["letitcrash", "recovery_s"]
    assert recovery["pending"] == 100 and recovery["first_msg"] == 0  # the first one sent comes first
    assert recovery["listen_s"] <= recovery["value"]
    assert measured["letitcrash", "overload_p99_us"]["other_errors"] == 0
    p50, p99 = measured["letitcrash", "latency_p50_us"], measured["letitcrash", "latency_p99_us"]
    assert p50["value"] <= p99["value"] and p50["samples"] > 0

    ratios = {d["metric"]: d for d in lines if d["workload"] == "ratio"}
    assert set(ratios) == {"msgs_per_s", "latency_p50_us", "latency_p99_us"}
    for metric, d in ratios.items():
        assert d["system"] == "letitcrash/relay" and d["unit"] == "x"
        expected = measured["letitcrash", metric]["value"] / measured["relay", metric]["value"]
        assert abs(d["value"] - expected) <= 1e-3 * expected, d


def test_table_only_and_bad_workload() -> None:
    proc = run("--only", "connections")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "connections" in proc.stdout and "goal >= 10000" in proc.stdout
    assert "msgs_per_s" not in proc.stdout and "recovery_s" not in proc.stdout

    bad = run("--only", "recovery,bogus")
    assert bad.returncode == 2 and "unknown workload: bogus" in bad.stderr
