"""bench/apps.py collects the apps' workloads and reports them, and the chat and rides
benches break a message's and a match's cost down (shape only: benchmarks
never run in tests, so no workload is run here)."""
from __future__ import annotations

import subprocess
import sys

from conftest import BENCH, bench_module

runner = bench_module("apps.py")  # under its own name it would shadow the case studies' package


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


def measured(cpu: float, gc_cpu: float):
    """Clocks as a measured span leaves them (seconds)."""
    from apps_common import Clocks

    clocks = Clocks()
    clocks.cpu, clocks.gc_cpu = cpu, gc_cpu
    return clocks


def functions(*where: tuple[str, str]) -> list[tuple[str, int, str]]:
    """pstats' keys of the functions at (path, name), one line each."""
    return [(f"/x/{path}", line, name) for line, (path, name) in enumerate(where, 1)]


def test_the_cost_breakdown_splits_measured_time_by_profiled_layer_and_counts_per_message():
    import apps_chat

    clocks = measured(cpu=0.012, gc_cpu=0.002)  # seconds, over 100 messages taken
    run, deliver, release, shard, packb = functions(
        ("actors/process.py", "_run"), ("actors/process.py", "_deliver"), ("actors/output.py", "release"),
        ("apps/chat/shard.py", "handle_call"), ("actors/codec.py", "packb"))
    stats = {  # pstats' table: func -> (primitive calls, calls, own time, cumulative, callers)
        run: (50, 50, 3.0, 9.0, {}),
        deliver: (90, 90, 1.0, 1.0, {release: (40, 40, 0.4, 0.4), run: (50, 50, 0.6, 0.6)}),
        release: (10, 10, 0.0, 0.5, {}),
        shard: (10, 10, 3.0, 4.0, {run: (10, 10, 3.0, 4.0)}),
        packb: (20, 20, 1.0, 1.0, {shard: (20, 20, 1.0, 1.0)}),
        ("~", 0, "<built-in method builtins.len>"): (30, 30, 2.0, 2.0, {shard: (30, 30, 2.0, 2.0)}),
    }
    cost = apps_chat.breakdown(clocks, node_thread=0.01, taken=100, counted={"turns": 530, "messages": 610},
                               stats=stats, profiled=10, profiled_writes=20)
    assert (cost["cpu"], cost["node_thread"], cost["store_thread"], cost["gc"]) == (120.0, 100.0, 20.0, 20.0)
    # 80 µs outside gc: kernel 4 of 10 units of own time, chat 5 (its C call's too), storage 1
    assert cost["layers_us"] == {"chat": 40.0, "kernel": 32.0, "storage": 8.0}
    assert (cost["turns"], cost["taken"]) == (5.3, 6.1)  # the node's counters, per message taken
    assert (cost["deliveries"], cost["held"], cost["encodes"], cost["writes"]) == (9, 4, 2, 2)


def test_the_rides_cost_breakdown_is_per_match_less_the_updates_and_counts_timers_and_saves():
    import apps_rides

    clocks = measured(cpu=0.012, gc_cpu=0.002)  # seconds, over 10 matches
    counted = {"turns": 230, "messages": 300, "commits": 1, "writes": 140, "updates": 25, "node_thread": 0.011}
    per_update = {"cpu": 40e-6, "turns": 2.0, "messages": 2.0, "writes": 0.0}
    run, search, timer, save = functions(("actors/genserver.py", "_run"), ("apps/rides/matcher.py", "_search"),
                                         ("actors/timers.py", "add"), ("storage/store.py", "write"))
    stats = {  # pstats' table: func -> (primitive calls, calls, own time, cumulative, callers)
        run: (20, 20, 2.0, 9.0, {}),
        search: (2, 2, 3.0, 6.5, {run: (2, 2, 3.0, 6.5)}),
        timer: (13, 13, 0.5, 0.5, {search: (13, 13, 0.5, 0.5)}),
        save: (20, 20, 1.5, 1.5, {run: (20, 20, 1.5, 1.5)}),
        ("~", 0, "<built-in method numpy.concatenate>"): (2, 2, 3.0, 3.0, {search: (2, 2, 3.0, 3.0)}),
    }
    cost = apps_rides.breakdown(clocks, counted, per_update, matched=10, stats=stats, profiled=2)
    assert (cost["cpu"], cost["node_thread"], cost["store_thread"], cost["gc"]) == (1200.0, 1100.0, 100.0, 200.0)
    # 2.5 updates per match at 40 µs: 100 µs of each match's 1200 are theirs
    assert (cost["updates"], cost["updates_us"], cost["match_cpu"]) == (2.5, 100.0, 1100.0)
    # 800 µs outside gc and updates: rides 6 of 10 units (numpy's C code it called too), kernel 2.5, storage 1.5
    assert cost["layers_us"] == {"rides": 480.0, "kernel": 200.0, "storage": 120.0}
    assert (cost["turns"], cost["messages"], cost["writes"], cost["commits"]) == (18, 25, 14, 0.1)
    assert (cost["timers"], cost["saves"], cost["deliveries"]) == (6.5, 10, 0)  # per profiled match
