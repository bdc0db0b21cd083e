"""bench/dist_scale.py runs end to end: the chat on 1 node and on 2 node processes, and
the scale line between them. No timing assertions: `--tiny` makes it a smoke run."""
import json

from conftest import bench_output, run_bench


def test_json_lines_give_each_node_count_and_the_scale():
    lines = [json.loads(line) for line in bench_output("dist_scale.py", "--json").splitlines()]
    sends = {d["nodes"]: d for d in lines if d["workload"] == "chat_sends_per_s"}
    assert set(sends) == {1, 2} and all(d["value"] > 0 and d["unit"] == "msgs/s" for d in sends.values())
    (scale,) = [d for d in lines if d["workload"] == "scale"]
    assert scale["system"] == "2/1 nodes" and scale["value"] > 0


def test_a_bad_node_count_is_named():
    bad = run_bench("dist_scale.py", "--nodes", "0")
    assert bad.returncode == 2 and "node counts are 1 to 16, not 0" in bad.stderr
