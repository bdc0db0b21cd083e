"""The `letitcrash` command line, end to end in subprocesses: reports, exit status,
reproducing a failure from its printed command, shrinking, replaying, many seeds in
several processes; and bad input, refused before any run (in this process, where a
traceback would fail the test). Each command runs in a subprocess at least once; a second
run only to compare with the first runs its `main` in this process (`here`)."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_main

from sim.cli import main


def cli(*args: str, cwd: Path = ROOT, module: str = "sim.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def here(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str
         ) -> subprocess.CompletedProcess:
    """`cli(*args)` as `main(args)` in this process, from the repository's folder."""
    monkeypatch.chdir(ROOT)
    return run_main(main, capsys, *args)


def test_the_quick_start_job_passes_with_a_readable_report():
    out = cli("sim", "scenarios/counter.toml", module="apps.cli")  # as the README runs it: `letitcrash sim ...`
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    text = out.stdout
    assert text.startswith("letitcrash sim · counter (scenarios/counter.toml) · seed 1\nPASS  all 5 checks held")
    for label in ("events", "time", "network", "faults", "restarts", "requests", "latency", "checks", "trace"):
        assert f"\n  {label} " in text, label
    assert "events/s" in text and "simulated in" in text and "p99" in text and "blake2b" in text
    assert out.stderr == ""  # crash reports are counted, not printed


def test_a_failure_prints_the_command_that_reproduces_it_exactly(capsys, monkeypatch):
    out = cli("sim", "scenarios/counter_broken.toml", "--json")
    assert out.returncode == 1
    first = json.loads(out.stdout)
    assert first["passed"] is False and first["failure"]["check"] == "counter.no_lost_ack"
    assert first["failure"]["last_events"] and first["shrink"].startswith("letitcrash shrink ")
    command = shlex.split(first["reproduce"])
    assert command[:2] == ["letitcrash", "sim"]
    again = here(capsys, monkeypatch, *command[1:], "--json")
    assert again.returncode == 1
    second = json.loads(again.stdout)
    assert second["trace_hash"] == first["trace_hash"] and second["failure"] == first["failure"]
    text = here(capsys, monkeypatch, *command[1:]).stdout
    assert "FAIL  counter.no_lost_ack" in text and f"reproduce   {first['reproduce']}" in text


def test_many_seeds_with_overrides_report_one_line_each():
    out = cli("sim", "scenarios/counter_broken.toml", "--seeds", "1..3", "--system-option", "bug=none",
              "--faults", "kill_process,drop=0.01")
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:3]] == [["seed", str(s), "ok"] for s in (1, 2, 3)]
    assert lines[3].startswith("3 seeds: 3 passed, 0 failed")


def test_shrink_writes_a_smaller_scenario_that_fails_the_same_way(tmp_path, capsys, monkeypatch):
    shrunk = tmp_path / "shrunk.toml"
    out = cli("shrink", "scenarios/counter_broken.toml", "--seed", "1", "-o", str(shrunk), "--budget", "40")
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert f"wrote {shrunk}" in out.stdout and "faults" in out.stdout
    assert shrunk.read_text().startswith("# Shrunk by `letitcrash shrink scenarios/counter_broken.toml --seed 1` in ")
    rerun = here(capsys, monkeypatch, "sim", str(shrunk))
    assert rerun.returncode == 1 and "FAIL  counter.no_lost_ack" in rerun.stdout


def test_replay_exits_1_when_the_replayed_run_fails_and_2_for_a_damaged_trace(tmp_path, capsys, monkeypatch):
    trace = tmp_path / "run.trace"
    assert cli("sim", "scenarios/counter_broken.toml", "--trace", str(trace)).returncode == 1
    out = cli("replay", str(trace))
    assert out.returncode == 1 and "identical" in out.stdout and "failed counter.no_lost_ack again" in out.stdout
    data = trace.read_bytes()
    trace.write_bytes(data[: len(data) // 2])
    out = here(capsys, monkeypatch, "replay", str(trace), "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert f"{trace}: damaged trace: it ends after record" in out.stderr and "DIVERGED" not in out.stderr


def test_replay_of_a_passing_run_exits_0(tmp_path, capsys, monkeypatch):
    trace = tmp_path / "run.trace"
    short = tmp_path / "short.toml"
    short.write_text(Path(ROOT / "scenarios" / "counter.toml").read_text().replace("duration = 20.0", "duration = 2.0"))
    assert here(capsys, monkeypatch, "sim", str(short), "--trace", str(trace)).returncode == 0
    out = here(capsys, monkeypatch, "replay", str(trace), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["passed"] is True


def test_bad_input_exits_2_with_a_message_naming_what_is_wrong(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.toml"
    bad.write_text("[systems.counter]\nservers = 2\nclient = 4\n")
    cases = [
        (("sim", str(bad)), f"{bad}:3: systems.counter.client: unknown key"),
        (("sim", "nope.toml"), "nope.toml: cannot read the scenario"),
        (("sim", "scenarios/counter.toml", "--faults", "meteor"), "unknown item 'meteor'"),
        (("sim", "scenarios/counter.toml", "--faults", "drop=2"), "the rate must be in [0, 1]"),
        (("sim", "scenarios/counter.toml", "--system-option", "servers=lots"),
         "systems.counter.servers: expected an integer in [1, 64], got \"lots\""),
        (("sim", "scenarios/counter.toml", "--seeds", "5..1"), "empty seed range"),
        (("replay", str(bad)), "not a letitcrash trace"),
    ]
    for args, message in cases:
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's own refusals exit
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2 and message in err, (args, err)


def test_more_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, capsys, monkeypatch):
    nan = tmp_path / "nan.toml"
    nan.write_text("[systems.counter.workload]\nrate = nan\n")
    inf = tmp_path / "inf.toml"
    inf.write_text("[systems.counter]\n[faults.drop]\nrate = inf\n")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('name = "café"\n[systems.counter]\n'.encode("latin-1"))
    missing = tmp_path / "no" / "such" / "dir"
    cases = [
        (("sim", str(nan)), f"{nan}:2: systems.counter.workload.rate: expected a number in [0.01, 100000], got nan"),
        (("sim", str(inf)), f"{inf}:3: faults.drop.rate: expected a number in [0, 1], got inf"),
        (("sim", "scenarios/counter.toml", "--system-option", "workload.rate=-inf"),
         "--system-option 'workload.rate=-inf': systems.counter.workload.rate: expected a number"),
        (("sim", "scenarios/counter.toml", "--system-option", "servers=lots"),
         "--system-option 'servers=lots': systems.counter.servers: expected an integer in [1, 64], got \"lots\""),
        (("sim", "scenarios/counter.toml", "--system-option", "rate=5"),
         "--system-option 'rate=5': systems.counter.rate: unknown key"),
        (("sim", str(latin)), f"{latin}:1: not UTF-8 text (byte 0xe9 at offset 11)"),
        (("sim", str(latin), "--system-option", "servers=3"), f"{latin}:1: not UTF-8 text"),
        (("replay", str(tmp_path / "none.trace")), "none.trace: cannot read the trace: No such file or directory"),
        (("replay", str(tmp_path)), f"{tmp_path}: cannot read the trace: Is a directory"),
        (("trace", "show", str(tmp_path / "none.trace")), "cannot read the trace: No such file"),
        (("trace", "show", str(nan), "--kind", "crash"), "--kind crash: unknown; expected run, spawn"),
        (("sim", "scenarios/counter.toml", "--trace", str(missing / "x.trace")),
         f"--trace {missing / 'x.trace'}: cannot write there: No such file or directory"),
        (("sim", "scenarios/counter.toml", "--trace", str(tmp_path)), f"--trace {tmp_path}: is a directory"),
        (("sim", "scenarios/counter.toml", "--seeds", "1..2", "--trace", str(tmp_path / "{seed}-{run}.trace")),
         "the only placeholder allowed is {seed}"),
        (("sim", "scenarios/counter.toml", "--html", str(missing / "r.html")),
         f"--html {missing / 'r.html'}: cannot write there"),
        (("shrink", "scenarios/counter_broken.toml", "--seed", "1", "-o", str(missing / "s.toml")),
         f"-o {missing / 's.toml'}: cannot write there: No such file or directory"),
    ]
    monkeypatch.chdir(ROOT)
    for args, message in cases:  # in this process: an exception would fail the test
        capsys.readouterr()
        assert main(list(args)) == 2, args
        out = capsys.readouterr()
        assert message in out.err, (args, out.err)
        assert "scenarios/counter.toml:" not in out.err, (args, out.err)  # the option, not the file
        assert out.out == "", (args, out.out)  # refused before any run
    assert sorted(tmp_path.iterdir()) == sorted([nan, inf, latin])  # the checks left no file behind
    for value in ("nan", "inf", "soon"):  # refused by the argument parser: its usage, then exit 2
        with pytest.raises(SystemExit) as exit_:
            main(["trace", "show", str(nan), "--from", value])
        assert exit_.value.code == 2 and f"expected virtual seconds (e.g. 1.5 or 250ms), got '{value}'" in \
            capsys.readouterr().err


def test_seeds_in_two_processes_give_the_serial_results_in_seed_order(capsys, monkeypatch):
    serial = here(capsys, monkeypatch, "sim", "scenarios/counter_broken.toml", "--seeds", "1..4", "--json")
    parallel = cli("sim", "scenarios/counter_broken.toml", "--seeds", "1..4", "--jobs", "2", "--json")
    assert serial.returncode == parallel.returncode == 1, parallel.stderr[-2000:]
    keys = ("seed", "passed", "failure", "events", "deliveries", "faults", "restarts", "crashes", "checks",
            "stats", "trace_hash", "reproduce")
    one, two = json.loads(serial.stdout), json.loads(parallel.stdout)
    assert [r["seed"] for r in two] == [1, 2, 3, 4]
    assert [{k: r[k] for k in keys} for r in two] == [{k: r[k] for k in keys} for r in one]
    text = cli("sim", "scenarios/counter_broken.toml", "--seeds", "1..2", "--jobs", "2").stdout
    assert "2 seeds: 0 passed, 2 failed (seeds 1, 2)" in text and " s wall in 2 processes (the runs themselves: " in text


def test_a_heavy_profile_keeps_its_family_of_faults_at_its_rates(capsys, monkeypatch):
    from sim.cli import apply_faults
    from sim.faults import PROFILES
    from sim.scenario import load

    scenario = apply_faults(load(ROOT / "scenarios" / "chat.toml"), "storage-heavy,commit_fail=0.1")
    faults = scenario.raw()["faults"]
    kinds = {kind for kind in faults if kind not in ("mode", "tick", "script")}
    assert faults["mode"] == "chaos" and kinds == set(PROFILES["storage-heavy"])
    assert faults["disk_full"]["rate"] == 0.5 and faults["commit_fail"]["rate"] == 0.1  # later items win
    assert faults["disk_full"]["duration"] == [0.2, 1.0]  # the scenario's own parameters stay
    out = here(capsys, monkeypatch, "sim", "scenarios/chat.toml", "--faults", "heavy")
    assert out.returncode == 2 and "crash-heavy, storage-heavy, network-heavy" in out.stderr
