"""Reading runs: the HTML page of a run or a replay (self-contained, the failure and the
events before it in their nodes' lanes), and `trace show` (filters, JSON lines)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from trace_files import tamper

from sim import report_html
from sim.cli import main
from sim.replay import replay
from sim.runner import run
from sim.scenario import load
from sim.trace import EVENT_KINDS

pytestmark = pytest.mark.xdist_group("sim_report")  # one worker: its module fixture is made once

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """counter_broken.toml seed 2 (a power cut comes before the failure), run once: its
    trace, its HTML page and its JSON report."""
    folder = tmp_path_factory.mktemp("broken")
    trace, page = folder / "run.trace", folder / "report.html"
    out = cli("sim", "scenarios/counter_broken.toml", "--seed", "2", "--trace", str(trace), "--html", str(page),
              "--json")
    assert out.returncode == 1, out.stderr[-2000:]
    return trace, page.read_text(encoding="utf-8"), json.loads(out.stdout)


def shown(capsys, trace: Path, *filters: str) -> list[dict]:
    """`letitcrash trace show TRACE --json FILTERS`, run in this process, as objects."""
    capsys.readouterr()
    assert main(["trace", "show", str(trace), "--json", *filters]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_failing_runs_page_is_one_file_that_fetches_nothing(broken):
    _, page, _ = broken
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|url\((?!#)", page)  # url(#id): in the page
    assert "<svg" in page and "<style>" in page
    assert len(page.encode()) < 400_000


def test_a_failing_runs_page_shows_the_failure_and_the_events_before_it_in_their_lanes(broken, capsys):
    trace, page, report = broken
    failure = report["failure"]
    assert f"FAIL · {failure['check']} at t={failure['time']:.6f} s" in page
    assert f"✗ {failure['check']} · t={failure['time']:.3f} s" in page  # the red line on the timeline
    assert report["reproduce"] in page
    lanes = re.findall(r"<div class=lane id='lane-([^']+)'>", page)
    assert lanes == ["counter1", "counter2", "clients", "checks"]
    section = page[page.index("<section id=last>"):]
    section = section[:section.index("</section>")]
    columns = re.findall(r"<th><a href='#lane-([^']+)'>", section)
    assert columns == ["counter1", "counter2", "clients"]  # every column leads to its lane
    rows = re.findall(r"<tr id='ev-(\d+)'>(.*?)</tr>", section)
    events = shown(capsys, trace)
    assert [int(n) for n, _ in rows] == [e["record"] for e in events[-40:]]
    for (_, row), event in zip(rows, events[-40:]):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)[2:]  # after the record and time
        filled = [i for i, cell in enumerate(cells) if cell]
        column = columns.index(event["node"]) if event["node"] else len(columns)
        assert filled == [column], (row, event)
    assert events[-1]["kind"] == "check" and events[-1]["fields"] == ["check", failure["check"]]
    assert f"✗ {failure['check']} failed here" in section
    faults = shown(capsys, trace, "--kind", "fault")
    assert faults and faults[-1]["text"] in section.replace("&lt;", "<").replace("&gt;", ">")


def test_the_page_marks_faults_reboots_and_downtime_in_the_lanes_they_hit(broken, capsys):
    trace, page, _ = broken
    lane = {name: body for name, body in re.findall(
        r"<div class=lane id='lane-([^']+)'>(.*?)</div></div>", page)}
    for fault in shown(capsys, trace, "--kind", "fault"):
        assert "class='m fault" in lane[fault["node"]], fault
    crashed = {f["node"] for f in shown(capsys, trace, "--kind", "fault") if f["fields"][1] in ("kill_node", "power_loss")}
    assert crashed
    for reboot in shown(capsys, trace, "--kind", "restart"):
        assert "class='m reboot" in lane[reboot["node"]]
    for name in crashed:
        assert "class='band down'" in lane[name]
    assert lane["checks"].count("class='m check") > 5


def test_a_replay_page_of_a_passing_run_and_of_a_divergence(tmp_path):
    scenario = load(ROOT / "scenarios" / "counter.toml", [("phases", [
        {"name": "chaos", "duration": 4.0, "faults": True}, {"name": "heal", "duration": 1.0, "heal": True},
        {"name": "quiesce", "duration": 3.0, "workload": False}])])
    path = tmp_path / "run.trace"
    with open(path, "wb") as out:
        result = run(scenario, 5, out=out)
    assert result.passed
    page = tmp_path / "replay.html"
    out = cli("replay", str(path), "--html", str(page))
    assert out.returncode == 0, out.stderr[-2000:]
    text = page.read_text(encoding="utf-8")
    assert "PASS · all 5 checks held" in text and "<section id=last>" not in text
    assert "latency (ms)" in text and "requests / s" in text and "deliveries / s" in text
    index, _ = tamper(path, rehash=True)
    done = replay(str(path))
    assert done.divergence is not None and done.divergence.index == index
    diverged = report_html.page(str(path), None, done.divergence)
    assert f"DIVERGED at record #{index}" in diverged
    rows = re.findall(r"<tr id='ev-(\d+)'>", diverged)
    assert rows and int(rows[-1]) < index  # the events before the divergence


def test_without_matplotlib_html_says_how_to_install_it_before_running(tmp_path):
    fake = tmp_path / "matplotlib"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not here')\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = cli("sim", "scenarios/counter.toml", "--html", str(tmp_path / "r.html"), env=env)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert "matplotlib, which is not installed: pip install 'letitcrash[report]'" in out.stderr
    assert not (tmp_path / "r.html").exists()


def test_trace_show_filters_by_node_process_kind_and_time(broken, capsys):
    trace, _, report = broken
    every = shown(capsys, trace)
    assert len(every) == report["events"]
    assert {e["kind"] for e in every} <= set(EVENT_KINDS)
    assert [e["record"] for e in every] == sorted(e["record"] for e in every)
    node = shown(capsys, trace, "--node", "counter2")
    assert node and node == [e for e in every if e["node"] == "counter2"]
    kinds = shown(capsys, trace, "--kind", "exit,restart")
    assert kinds and kinds == [e for e in every if e["kind"] in ("exit", "restart")]
    pid = next(e["pid"] for e in every if e["kind"] == "run" and e["node"] == "counter1")
    process = shown(capsys, trace, "--process", pid.strip("<>"))
    assert process == [e for e in every if e["pid"] == pid] and {e["kind"] for e in process} >= {"spawn", "run"}
    window = shown(capsys, trace, "--from", "1.5", "--to", "2000ms", "--node", "clients", "--kind", "send")
    assert window and window == [e for e in every if 1.5 <= e["t"] <= 2.0 and e["node"] == "clients"
                                 and e["kind"] == "send"]
    assert main(["trace", "show", str(trace), "--node", "counter2"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[1] for line in text] == [e["text"] for e in node]
    assert all(line.startswith(f"#{e['record']} ") for line, e in zip(text, node))
