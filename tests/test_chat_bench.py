"""bench/apps.py collects the apps' workloads and reports them (shape only: benchmarks
never run in tests, so no workload is run here)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import BENCH

# bench/apps.py under another name: "apps" is the package of the case studies.
_spec = importlib.util.spec_from_file_location("bench_apps_runner", BENCH / "apps.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)


def test_the_runner_collects_the_chat_and_timeline_workloads():
    workloads, skipped = runner.collect(("apps_chat", "apps_timeline", "apps_nowhere"))
    assert list(workloads) == ["chat_msgs_per_s", "chat_sessions", "timeline_posts_per_s", "timeline_read_p99"]
    assert all(callable(fn) for fn in workloads.values())
    assert len(skipped) == 1 and skipped[0].startswith("apps_nowhere: ModuleNotFoundError")


def test_the_table_shows_value_unit_goal_and_details():
    table = runner._table([
        {"system": "letitcrash", "workload": "timeline_read_p99", "value": 329.04, "unit": "us",
         "goal": "<= 500", "met": True, "p50_us": 178.0},
        {"system": "letitcrash", "workload": "chat_msgs_per_s", "value": 7059.1, "unit": "msgs/s",
         "goal": ">= 300000", "met": False, "n": 20000},
    ])
    header, read, chat = table.splitlines()
    assert header.split()[:5] == ["workload", "value", "unit", "goal", "met"]
    assert read.split()[:2] == ["timeline_read_p99", "329.0"] and "yes" in read and "p50_us=178.0" in read
    assert "7,059.1" in chat and "NO" in chat and "n=20000" in chat


def test_an_unknown_workload_is_refused_by_name():
    done = subprocess.run([sys.executable, str(BENCH / "apps.py"), "--only", "chat_nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "chat_nope" in done.stderr
