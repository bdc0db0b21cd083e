"""Clusters on Ray (`apps.cluster.on_ray`) against a real local Ray instance: node hosts
as Ray actors meet over their own streams, a host process killed is seen and started
again as a new incarnation whose tally comes back from LMDB, Ray's death report drops a
node its streams still hold, and every node places keys as a simulation would. The
nodes run `ray_app.start`; this process joins as one more node.

And a whole raylet lost: a second raylet (`ray.cluster_utils.Cluster`) joins the head, a
node host on each, and the second raylet is killed with every process of its Ray node.
The node that lived there is seen down by the other nodes, started again on the surviving
raylet as a new incarnation, and the chat sent across it loses nothing acknowledged.

One Ray serves the module (its start costs more CPU than most tests do)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from conftest import BOUND, ROOT, arun, eventually

from actors import Node, NodeDown, RemoteName, new_creation
from actors.placement import place
from apps.chat.router import HashRing

ray = pytest.importorskip("ray", reason="the 'cluster' extra (Ray) is not installed")
from ray.cluster_utils import Cluster  # noqa: E402

from apps.cluster import ClusterError  # noqa: E402
from apps.cluster.on_ray import MAX_CREATION, RayCluster, Registry, start_on_ray  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one local Ray for the module, in one worker
TESTS = Path(__file__).resolve().parent
N1, N2 = "n1@letitcrash", "n2@letitcrash"
SHARDS = 4  # chat shards: shard i on node i mod 2
# Ray notices a dead raylet by its health checks: these make it 1 to 1.5 s instead of ~15 s.
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 2,
                 "health_check_timeout_ms": 500}


@pytest.fixture(scope="module")
def ray_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the node hosts keep their stores (each under its node name)."""
    return tmp_path_factory.mktemp("ray-nodes")


@contextlib.contextmanager
def ray_environment(data: Path) -> Iterator[None]:
    """The environment a raylet started meanwhile inherits, and passes on to its workers."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        env.setenv("LETITCRASH_DATA", str(data))
        env.setenv("LETITCRASH_CHAT_SHARDS", str(SHARDS))
        yield


@pytest.fixture(scope="module")
def rays(ray_data: Path) -> Iterator[Cluster]:
    """A local Ray of its own (a head raylet of 2 CPUs; a `ray start` left running on this
    machine is not joined), this process its driver."""
    with ray_environment(ray_data):
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                             "_system_config": HEALTH_CHECKS})
    try:
        ray.init(address=made.address, include_dashboard=False, log_to_driver=False)
        try:
            yield made
        finally:
            ray.shutdown()
    finally:
        made.shutdown()


@pytest.fixture(scope="module")
def cluster(rays: Cluster) -> Iterator[RayCluster]:
    """Two node hosts on the head raylet running `ray_app:start` (and the chat)."""
    made = start_on_ray(2, "ray_app:start", ready_timeout=BOUND)
    try:
        yield made
    finally:
        made.stop(timeout=10.0)


def node_watcher(node: Node) -> list:
    """A process on `node` told of every node going down and up: what it hears, in order."""
    heard: list = []

    async def body(proc: Any) -> None:
        node.monitor_nodes(proc.pid)
        while True:
            heard.append(await proc.receive())
    node.spawn(body)
    return heard


@contextlib.asynccontextmanager
async def member(of: RayCluster) -> AsyncIterator[Node]:
    """This process as node t@local, joined to the cluster."""
    node = Node("t@local", creation=new_creation())
    await node.__aenter__()
    dist = await of.join(node)
    try:
        yield node
    finally:
        await dist.stop()
        await node.stop(timeout=0.1)


# First: the module's cluster, once started, holds the head's CPUs, which SPREAD needs free.
@pytest.fixture
def two_raylets(rays: Cluster, ray_data: Path) -> Iterator[tuple[Any, RayCluster]]:
    """A second raylet (2 CPUs) beside the head, one node host on each (Ray's SPREAD):
    (the second raylet's node, the letitcrash cluster, its nodes n1@raylet and n2@raylet)."""
    with ray_environment(ray_data):
        second = rays.add_node(num_cpus=2)
    rays.wait_for_nodes(BOUND)
    made = start_on_ray(2, "ray_app:start", cluster="raylet", ready_timeout=BOUND)
    try:
        yield second, made
    finally:
        made.stop(timeout=10.0)


def user_homed_on(prefix: str, node: str, names: list[str]) -> str:
    """A user name whose chat shard lives on `node`."""
    return next(f"{prefix}{i}" for i in range(100) if names[HashRing(SHARDS).owner(f"{prefix}{i}") % 2] == node)


def test_a_lost_raylet_s_node_is_seen_down_restarted_on_the_survivor_and_the_chat_loses_nothing(rays, two_raylets):
    """alice (homed on the head's node) sends to bob (homed on the second raylet's node),
    retrying each message with its client id until it is acknowledged; the second raylet
    is killed midway, its host process with it. The others hear its node go down, it is
    back as a new incarnation on the head's raylet, and bob, on a session of the
    survivor, gets every acknowledged message once, in order."""
    second, cluster = two_raylets
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


def test_node_hosts_meet_over_their_own_streams_with_incarnations_from_the_registry(cluster):
    async def main() -> None:
        async with member(cluster) as node:
            assert node.nodes() == [N1, N2]
            who = [await node.call(RemoteName("echo", name), "who", BOUND) for name in (N1, N2)]
            assert [w[0] for w in who] == [N1, N2]
            assert [w[1] for w in who] == [cluster.creation(N1), cluster.creation(N2)]
            assert who[0][1] != who[1][1]
            assert await node.call(RemoteName("echo", N1), "nodes", BOUND) == [N2, "t@local"]  # a full mesh
            for host in cluster.hosts.values():
                assert host.address.startswith("tcp:")
    arun(main())


def test_a_killed_host_is_seen_and_restarted_as_a_new_incarnation_its_tally_from_lmdb(cluster):
    async def main() -> None:
        async with member(cluster) as node:
            tally = RemoteName("tally", N2)
            before = await node.call(tally, 5, BOUND)  # acknowledged: stored
            echo = await node.call(RemoteName("echo", N2), "who", BOUND)
            heard = node_watcher(node)
            old = cluster.creation(N2)
            cluster.kill(N2)
            await eventually(lambda: NodeDown(N2, "connection_closed") in heard or
                             NodeDown(N2, "ray_reported_dead") in heard)
            new = await asyncio.to_thread(cluster.wait_incarnation, N2, old, BOUND)
            assert new != old and echo[1] == old
            await eventually(lambda: N2 in node.nodes(), every=0.05)
            assert await node.call(RemoteName("echo", N2), "who", BOUND) == [N2, new]
            assert await node.call(tally, 1, BOUND) == before + 1  # the store outlived the process
    arun(main())


def test_rays_death_report_drops_a_node_its_streams_still_hold_and_the_stream_adds_nothing(cluster):
    """A frozen host (SIGSTOP) keeps its sockets open and, under a 60 s ticktime, stays
    connected: Ray's report (what the launcher's watcher sends when a `serve` call fails)
    drops it on every node at once; its process's death later is not a second loss."""
    async def main() -> None:
        async with member(cluster) as node:
            heard = node_watcher(node)
            old = cluster.creation(N2)
            cluster.kill(N2, signal.SIGSTOP)
            try:
                cluster.report_down(N2, old)
                await eventually(lambda: NodeDown(N2, "ray_reported_dead") in heard)
                deadline = asyncio.get_running_loop().time() + BOUND  # n1 drops it too, told by a Ray call
                while await node.call(RemoteName("echo", N1), "nodes", BOUND) != ["t@local"]:
                    assert asyncio.get_running_loop().time() < deadline, "n1 still holds n2"
                    await asyncio.sleep(0.05)
            finally:
                cluster.kill(N2, signal.SIGKILL)
            await asyncio.to_thread(cluster.wait_incarnation, N2, old, BOUND)
            await eventually(lambda: N2 in node.nodes(), every=0.05)
            assert [m for m in heard if type(m) is NodeDown] == [NodeDown(N2, "ray_reported_dead")]
    arun(main())


def test_every_node_places_keys_where_the_pure_function_does(cluster):
    async def main() -> None:
        async with member(cluster) as node:
            live = [N1, N2, "t@local"]
            keys = [f"room-{i}" for i in range(40)]
            for name in (N1, N2):
                placed = [await node.call(RemoteName("echo", name), ("place", key), BOUND) for key in keys]
                assert placed == [place(key, live) for key in keys]
            assert set(place(key, live) for key in keys) == set(live)  # all three nodes hold keys
    arun(main())


def test_the_command_starts_nodes_on_a_running_ray_cluster_and_stops_them_on_ctrl_c(cluster):
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "letitcrash", "cluster", "start", "--ray", address, "--nodes", "2",
               "--cpus", "0", "--host", "cli", "apps.cluster.demo:counter"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "LETITCRASH_DEMO_INTERVAL": "0.2"})
    lines: list[str] = []
    up = "letitcrash: 2 nodes up on Ray (n1@cli, n2@cli); Ctrl-C stops them\n"
    try:
        for line in proc.stdout:  # type: ignore[union-attr]  # Ray forwards the nodes' lines in its own time
            lines.append(line)
            if up in lines and any("clicked: the counter on n" in seen for seen in lines):
                break
        assert up in lines, lines
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=BOUND)
        assert proc.returncode == 0 and "letitcrash: stopped 2 nodes" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BOUND)


def home_node(user: str) -> str:
    return (N1, N2)[HashRing(SHARDS).owner(user) % 2]


def test_the_chat_runs_across_nodes_through_a_node_kill_with_nothing_acknowledged_lost(cluster):
    """alice (homed on n1) sends to bob (homed on n2) from a session on n1, retrying each
    message with its client id until it is acknowledged; n2 is killed midway. bob, on a
    session of n1 after n2's restart, gets every acknowledged message once, in order."""
    alice = next(f"alice{i}" for i in range(100) if home_node(f"alice{i}") == N1)
    bob = next(f"bob{i}" for i in range(100) if home_node(f"bob{i}") == N2)

    async def main() -> None:
        async with member(cluster) as node:
            echo = RemoteName("echo", N1)
            acknowledged = []
            retries = 0
            old = cluster.creation(N2)
            for cid in range(24):
                if cid == 8:
                    cluster.kill(N2)
                send = ("chat_send", alice, bob, cid, f"hello {cid}")
                while (msg_id := await node.call(echo, send, BOUND)) == "retry":
                    retries += 1
                    await asyncio.sleep(0.05)
                acknowledged.append(msg_id)
            assert retries > 0 and cluster.creation(N2) != old  # some sends waited for n2's new incarnation

            await assert_taken_in_order(node, echo, bob, acknowledged)
    arun(main())


async def assert_taken_in_order(node: Any, echo: Any, user: Any, acknowledged: list) -> None:
    """Wait (bounded) until `user` has taken as many messages as were `acknowledged`
    (asked through the `echo` server), then check they are those, each once, in order."""
    deadline = asyncio.get_running_loop().time() + BOUND
    while len(got := await node.call(echo, ("chat_taken", user), BOUND)) < len(acknowledged):
        assert asyncio.get_running_loop().time() < deadline, (got, acknowledged)
        await asyncio.sleep(0.1)
    assert got == acknowledged


def test_the_registry_never_gives_an_incarnation_twice_and_forgets_only_the_one_gone():
    registry = Registry(MAX_CREATION - 1)
    given = [registry.incarnation("n1@c") for _ in range(4)]
    assert given == [MAX_CREATION - 1, MAX_CREATION, 1, 2]  # 20 bits, never 0
    registry.publish("n1@c", 2, "tcp:10.0.0.1:4000")
    registry.gone("n1@c", 1)  # an older life's report: the live one stays
    assert registry.members() == {"n1@c": [2, "tcp:10.0.0.1:4000"]}
    registry.gone("n1@c", 2)
    assert registry.lookup("n1@c") is None and registry.members() == {}


def test_a_node_past_its_restarts_stays_down(cluster):
    other = start_on_ray(1, "ray_app:start", cluster="limit", cpus=0, max_restarts=0, ready_timeout=BOUND)
    try:
        old = other.creation("n1@limit")
        other.kill("n1@limit")
        with pytest.raises(ClusterError, match="n1@limit was not up again within 0.5"):
            other.wait_incarnation("n1@limit", old, 0.5)  # a restart would be in `hosts` at once
        assert "n1@limit" not in other.hosts
    finally:
        other.stop(timeout=10.0)


def test_a_start_function_that_fails_is_named_and_nothing_is_left_running(cluster):
    with pytest.raises(ClusterError, match=r"n1@broken did not come up: .*ValueError: this application is misconf"):
        start_on_ray(1, "ray_app:broken", cluster="broken", cpus=0, ready_timeout=BOUND)
    with pytest.raises(ValueError):  # its registry went with it
        ray.get_actor("letitcrash-registry-broken", namespace="letitcrash")
