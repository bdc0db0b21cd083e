"""bench/serve.py runs end to end against a real `letitcrash serve` and prints every line
it promises.

No timing assertions: the hidden `--tiny` flag shrinks every workload (40 connections,
4 pairs for 0.6 s, 100 pending messages, one client process, a server that sheds a request
only after 5 s, so a starved machine still answers some at 2x overload) so the run takes seconds;
only the shape of the output, and that each workload measured something, are checked.
One run serves every check: its JSON lines, and the table the script prints of them.
"""
from __future__ import annotations

import argparse

import pytest
from conftest import bench_lines, bench_module, bench_refusal

pytestmark = pytest.mark.xdist_group("bench_serve")  # one worker: its module fixture is made once

bench = bench_module("serve.py")  # for its table and its choice of workloads


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    """The JSON lines of one smoke run."""
    return bench_lines("serve.py")


def test_json_lines_cover_every_workload_and_the_peer(lines) -> None:
    measured = {(d["system"], d["workload"]): d for d in lines if d["workload"] != "ratio"}
    ours = {"connections", "conn_memory", "msgs_per_s", "latency_p50_us", "latency_p99_us", "overload_p99_us",
            "server_profile_us", "recovery_s"}
    assert set(measured) == {("letitcrash", w) for w in ours} | {
        ("relay", w) for w in ("msgs_per_s", "latency_p50_us", "latency_p99_us", "overload_p99_us")}
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
        assert ("goal" in d) == (d["system"] == "letitcrash" and d["workload"] not in (
            "latency_p50_us", "server_profile_us")), d
        assert ("met" in d) == ("goal" in d) and isinstance(d.get("met", False), bool), d
    profile = measured["letitcrash", "server_profile_us"]
    assert set(profile["us_by_layer"]) >= {"server", "kernel", "chat"}, profile  # each layer seen at work
    assert profile["per_msg"]["frames_decoded"] > 0 and profile["per_msg"]["turns"] > 0, profile
    assert measured["letitcrash", "connections"]["value"] == 40  # every connection held
    recovery = measured["letitcrash", "recovery_s"]
    assert recovery["pending"] == 100 and recovery["first_msg"] == 0  # the first one sent comes first
    assert recovery["listen_s"] <= recovery["value"]
    for system in ("letitcrash", "relay"):
        overload = measured[system, "overload_p99_us"]
        assert overload["other_errors"] == 0, overload
        assert overload["shed"] == round(overload["overloaded"] / (overload["answered"] + overload["overloaded"]), 3)
    assert measured["relay", "overload_p99_us"]["overloaded"] == 0  # the relay never sheds
    p50, p99 = measured["letitcrash", "latency_p50_us"], measured["letitcrash", "latency_p99_us"]
    assert p50["value"] <= p99["value"] and p50["samples"] > 0

    ratios = {d["metric"]: d for d in lines if d["workload"] == "ratio"}
    assert set(ratios) == {"msgs_per_s", "latency_p50_us", "latency_p99_us", "overload_p99_us"}
    for metric, d in ratios.items():
        assert d["system"] == "letitcrash/relay" and d["unit"] == "x"
        assert (d["ours"], d["relay"]) == (measured["letitcrash", metric]["value"], measured["relay", metric]["value"])
        expected = measured["letitcrash", metric]["value"] / measured["relay", metric]["value"]
        assert abs(d["value"] - expected) <= 1e-3 * expected, d
        assert ("goal" in d) == (metric == "msgs_per_s"), d  # the 0.6 of the relay


def test_table_only_and_bad_workload(lines, capsys) -> None:
    for line in lines:
        bench.show(line)
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(lines) and "goal >= 10000" in rows[0]
    assert [row.split()[:2] for row in rows[:2]] == [["letitcrash", "connections"], ["letitcrash", "conn_memory"]]
    assert bench.selected(argparse.ArgumentParser(), "connections") == ["connections"]

    bad = bench_refusal("serve.py", capsys, "--only", "recovery,bogus")
    assert bad.returncode == 2 and "unknown workload: bogus" in bad.stderr
