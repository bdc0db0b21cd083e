"""bench/dist_scale.py runs end to end: the chat (and the rides' location updates) on 1
node and on 2 node processes, and the scale line between them, with the cost of a send
(CPU, deliveries between nodes).
No timing assertions: `--tiny` makes it a smoke run, one for both workloads."""
import pytest
from conftest import bench_lines, bench_refusal

pytestmark = pytest.mark.xdist_group("bench_dist_scale")  # one worker: its module fixture is made once


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    """The JSON lines of one smoke run of both workloads, each on 1 and on 2 nodes."""
    return bench_lines("dist_scale.py", "--workload", "chat,rides")


def test_json_lines_give_each_node_count_and_the_scale(lines):
    sends = {d["nodes"]: d for d in lines if d["workload"] == "chat_sends_per_s"}
    assert set(sends) == {1, 2} and all(d["value"] > 0 and d["unit"] == "msgs/s" for d in sends.values())
    assert all(d["cpu_us_per_msg"] > 0 and d["items_per_msg"] > 0 for d in sends.values())
    assert sends[1]["crossings_per_msg"] == 0 and sends[2]["crossings_per_msg"] > 0
    assert len(sends[2]["node_cpu_us_per_msg"]) == 2
    for d in sends.values():  # each node's span: busy, idle in select, waiting for a core (disjoint shares;
        shares = [d["node_busy"], d["node_idle"], d["node_queued"]]  # CPU time comes in ticks: a tiny span's sum
        assert all(len(share) == d["nodes"] for share in shares) and all(s > 0 for s in d["node_span_s"])
        assert all(0 <= sum(one) <= 2 for one in zip(*shares)), shares  # may pass 1 by a tick or two)
    assert "ack_ms_cross" not in sends[1] and sends[2]["ack_ms_cross"] > 0 and sends[2]["ack_ms_local"] > 0
    (scale,) = [d for d in lines if d["workload"] == "scale" and d["metric"] == "chat_sends_per_s"]
    assert scale["system"] == "2/1 nodes" and scale["value"] > 0


def test_the_rides_workload_gives_its_rate_and_cost_on_one_and_two_nodes(lines, capsys):
    updates = {d["nodes"]: d for d in lines if d["workload"] == "rides_updates_per_s"}
    assert set(updates) == {1, 2} and all(d["value"] > 0 and d["unit"] == "updates/s" for d in updates.values())
    assert all(d["cpu_us_per_msg"] > 0 and d["kernel_msgs_per_msg"] > 1 for d in updates.values())
    assert updates[1]["crossings_per_msg"] == 0 and updates[2]["crossings_per_msg"] > 0
    assert [d["metric"] for d in lines if d["workload"] == "scale"] == ["chat_sends_per_s", "rides_updates_per_s"]
    (scale,) = [d for d in lines if d["workload"] == "scale" and d["metric"] == "rides_updates_per_s"]
    assert scale["system"] == "2/1 nodes" and scale["value"] > 0
    bad = bench_refusal("dist_scale.py", capsys, "--workload", "trains")
    assert bad.returncode == 2 and "--workload is a comma list of chat, rides, not 'trains'" in bad.stderr


def test_a_bad_node_count_is_named(capsys):
    bad = bench_refusal("dist_scale.py", capsys, "--nodes", "0")
    assert bad.returncode == 2 and "node counts are 1 to 16, not 0" in bad.stderr


def test_a_bad_repeat_or_shard_count_is_named(capsys):
    bad = bench_refusal("dist_scale.py", capsys, "--repeat", "0")
    assert bad.returncode == 2 and "--repeat is 1 to 20, not 0" in bad.stderr
    bad = bench_refusal("dist_scale.py", capsys, "--senders", "3")
    assert bad.returncode == 2 and "a multiple of each node count, not 3" in bad.stderr
    bad = bench_refusal("dist_scale.py", capsys, "--shards", "1")
    assert bad.returncode == 2 and "--shards is 2 (a shard per node at least) to 1024, not 1" in bad.stderr


def test_a_profile_dir_that_cannot_be_made_is_named_before_any_node_starts(capsys, tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    bad = bench_refusal("dist_scale.py", capsys, "--profile", "--profile-dir", str(taken / "sub"))
    assert bad.returncode == 2 and f"--profile-dir {str(taken / 'sub')!r} is not a directory" in bad.stderr
    bad = bench_refusal("dist_scale.py", capsys, "--profile-dir", str(tmp_path))
    assert bad.returncode == 2 and "--profile-dir needs --profile" in bad.stderr
