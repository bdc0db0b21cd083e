"""A whole raylet lost under a letitcrash cluster on Ray: a local Ray cluster of two raylets
on this machine (a head and one more node, `ray.cluster_utils.Cluster`), a node host on
each, and the second raylet killed with every process of its Ray node. The node that
lived there is seen down by the other nodes, started again on the surviving raylet as a
new incarnation, and the chat sent across it loses nothing acknowledged. The nodes run
`ray_app.start` (the chat, a tally in LMDB); this process joins as one more node."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import BOUND, arun, eventually

from actors import NodeDown, RemoteName
from apps.chat.router import HashRing

ray = pytest.importorskip("ray", reason="the 'cluster' extra (Ray) is not installed")
from ray.cluster_utils import Cluster  # noqa: E402

from apps.cluster.on_ray import RayCluster, start_on_ray  # noqa: E402
from test_cluster_ray import assert_taken_in_order, member, node_watcher  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time, in one worker
TESTS = Path(__file__).resolve().parent
SHARDS = 4  # chat shards: shard i on node i mod 2 (as `apps.cluster.chat` places them)
# Ray notices a dead raylet by its health checks: these make it 1 to 1.5 s instead of ~15 s.
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 2,
                 "health_check_timeout_ms": 500}


@pytest.fixture
def two_raylets(tmp_path: Path) -> Iterator[tuple[Cluster, Any, RayCluster]]:
    """Ray's head and a second raylet (2 CPUs each), one node host on each (Ray's SPREAD):
    (the Ray cluster, the second raylet's node, the letitcrash cluster)."""
    with pytest.MonkeyPatch.context() as env:  # Ray's workers inherit this environment
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        env.setenv("LETITCRASH_DATA", str(tmp_path))
        env.setenv("LETITCRASH_CHAT_SHARDS", str(SHARDS))
        rays = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                             "_system_config": HEALTH_CHECKS})
        try:
            second = rays.add_node(num_cpus=2)
            rays.wait_for_nodes(BOUND)
            ray.init(address=rays.address, include_dashboard=False, log_to_driver=False)
            made = start_on_ray(2, "ray_app:start", ready_timeout=BOUND)
            try:
                yield rays, second, made
            finally:
                made.stop(timeout=10.0)
                ray.shutdown()
        finally:
            rays.shutdown()


def user_homed_on(prefix: str, node: str, names: list[str]) -> str:
    """A user name whose chat shard lives on `node`."""
    return next(f"{prefix}{i}" for i in range(100) if names[HashRing(SHARDS).owner(f"{prefix}{i}") % 2] == node)


def test_a_lost_raylet_s_node_is_seen_down_restarted_on_the_survivor_and_the_chat_loses_nothing(two_raylets):
    """alice (homed on the head's node) sends to bob (homed on the second raylet's node),
    retrying each message with its client id until it is acknowledged; the second raylet
    is killed midway, its host process with it. The others hear its node go down, it is
    back as a new incarnation on the head's raylet, and bob, on a session of the
    survivor, gets every acknowledged message once, in order."""
    rays, second, cluster = two_raylets
    names = cluster.names
    placed = {name: cluster.hosts[name].ray_node for name in names}
    assert sorted(placed.values()) == sorted([rays.head_node.node_id, second.node_id])  # one host per raylet
    doomed = next(name for name in names if placed[name] == second.node_id)
    survivor = next(name for name in names if name != doomed)
    alice, bob = user_homed_on("alice", survivor, names), user_homed_on("bob", doomed, names)

    async def main() -> None:
        async with member(cluster) as node:
            heard = node_watcher(node)
            echo = RemoteName("echo", survivor)
            old = cluster.creation(doomed)
            acknowledged, retries = [], 0
            for cid in range(24):
                if cid == 8:
                    killed_at = time.monotonic()
                    await asyncio.to_thread(rays.remove_node, second, False)  # SIGKILL: raylet and all
                    await eventually(lambda: any(type(m) is NodeDown and m.node == doomed for m in heard), every=0.01)
                    down_after = time.monotonic() - killed_at
                send = ("chat_send", alice, bob, cid, f"hello {cid}")
                while (msg_id := await node.call(echo, send, BOUND)) == "retry":
                    retries += 1
                    await asyncio.sleep(0.05)
                acknowledged.append(msg_id)
            new = await asyncio.to_thread(cluster.wait_incarnation, doomed, old, BOUND)
            assert retries > 0 and new != old
            assert cluster.hosts[doomed].ray_node == rays.head_node.node_id  # restarted on the survivor
            down = next(m for m in heard if type(m) is NodeDown and m.node == doomed)
            assert down.reason in ("connection_closed", "ray_reported_dead"), heard
            print(f"\n{doomed} down after {down_after:.2f} s ({down.reason}); "
                  f"up again as incarnation {new} by {time.monotonic() - killed_at:.2f} s")
            assert await node.call(RemoteName("echo", doomed), "who", BOUND) == [doomed, new]

            await assert_taken_in_order(node, echo, bob, acknowledged)
    arun(main(), 3 * BOUND)
