"""Activated entities across a cluster (`storage.cluster`): each key on its node, routed
from the caller's node, unavailable (never moved) while its node is down or cut off, and
at most one live activation of a key anywhere, which the simulator checks."""
from __future__ import annotations

from typing import Any

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from actors import Node, NoProc, RemoteName
from sim.core import Simulation
from sim.disk import Disk
from sim.runner import run
from sim.scenario import load
from storage import ActivationError, Entities, PersistentServer, Store, UnencodableValue, entity_call
from storage.cluster import ClusterEntities, PlacedEntities, check_nodes, node_of
from supervision import ChildSpec, Flags, Supervisor

SERVERS = ("e1", "e2", "e3")
KEYS = [("acct", i) for i in range(30)]


class Where(PersistentServer):
    """Counts the calls it serves and says on which node it runs."""

    def initial_state(self) -> int:
        return 0

    def handle_call(self, request: Any, caller: Any) -> Any:
        self.state += 1
        return self.node.name, self.state

    def handle_cast(self, msg: Any) -> None:
        self.state += msg


class Cluster:
    """Three simulated server nodes with their own disks, and a client node "c"."""

    def __init__(self, tmp_path, servers=SERVERS) -> None:
        self.sim = Simulation(1)
        self.tmp = tmp_path
        self.servers = servers
        self.disks = {name: Disk(self.sim, name) for name in servers}
        for name in servers:
            self.sim.add_node(name, self.start, on_crash=self.disks[name].crash)
        self.sim.add_node("c", lambda node: None)
        self.placed = PlacedEntities("ents", servers)

    def start(self, node: Node) -> None:
        store = self.disks[node.name].attach(Store(self.tmp / node.name, node, simulated=True))
        node.spawn(ClusterEntities, store, Where, self.servers, 60.0, name="ents")

    def call(self, key: Any, caller: str = "c") -> Any:
        answer = self.placed.call(self.sim.node(caller), key, "where", 1.0)
        self.sim.run(self.sim.now + 0.5)
        assert answer.done()
        return answer.result()

    def close(self) -> None:
        self.sim.close()
        for disk in self.disks.values():
            disk.close()


@pytest.fixture
def cluster(tmp_path):
    world = Cluster(tmp_path)
    yield world
    world.close()


def test_each_key_is_served_on_its_node_whichever_node_calls(cluster):
    homes = {key: node_of(key, SERVERS) for key in KEYS}
    assert set(homes.values()) == set(SERVERS)  # every node gets keys
    for key in KEYS:
        assert cluster.call(key, "c") == (homes[key], 1)
        assert cluster.call(key, "e1") == (homes[key], 2)  # the same activation, from a server node
    for name in SERVERS:  # one activation of each of its own keys, none of the others'
        info = cluster.placed.info(cluster.sim.node("c"), name)
        cluster.sim.run(cluster.sim.now + 0.1)
        assert info.result()["activations"] == sum(1 for home in homes.values() if home == name)


def test_a_cast_reaches_the_entity_on_its_node(cluster):
    key = KEYS[3]
    cluster.placed.cast(cluster.sim.node("c"), key, 10)
    cluster.placed.cast(cluster.sim.node(node_of(key, SERVERS)), key, 5)  # from its own node too
    cluster.sim.run(cluster.sim.now + 0.5)
    assert cluster.call(key) == (node_of(key, SERVERS), 16)


def test_a_nodes_keys_wait_while_it_is_down_and_come_back_with_their_state(cluster):
    down = "e2"
    mine = [key for key in KEYS if node_of(key, SERVERS) == down]
    others = [key for key in KEYS if node_of(key, SERVERS) != down]
    for key in KEYS:
        cluster.call(key)
    cluster.sim.crash_node(down)
    cluster.sim.run(cluster.sim.now + 0.1)
    for key in mine:  # never started elsewhere: refused at once, naming the node
        with pytest.raises(NoProc, match=f"node='{down}'"):
            cluster.call(key)
    for key in others:  # the other nodes' keys do not move either
        assert cluster.call(key) == (node_of(key, SERVERS), 2)
    cluster.sim.restart_node(down)
    cluster.sim.run(cluster.sim.now + 0.1)
    for key in mine:  # its new incarnation serves them from its store
        assert cluster.call(key) == (down, 2)


def test_a_partition_leaves_the_keys_across_it_unavailable_on_this_side_only(cluster):
    home = node_of(KEYS[0], SERVERS)
    cluster.call(KEYS[0])
    cluster.sim.network.partition([["c"], list(SERVERS)])
    cluster.sim.run(cluster.sim.now + 0.1)
    with pytest.raises(NoProc, match=f"node='{home}'"):
        cluster.call(KEYS[0])
    other = next(name for name in SERVERS if name != home)
    assert cluster.call(KEYS[0], other) == (home, 2)  # the servers' side still has it
    cluster.sim.network.heal()
    cluster.sim.run(cluster.sim.now + 0.1)
    assert cluster.call(KEYS[0]) == (home, 3)


def test_a_router_refuses_a_key_that_is_not_its_own(cluster):
    key = KEYS[0]
    stranger = next(name for name in SERVERS if name != node_of(key, SERVERS))
    answer = entity_call(cluster.sim.node("c"), RemoteName("ents", stranger), key, "where", 1.0)
    cluster.sim.run(cluster.sim.now + 0.5)
    with pytest.raises(ActivationError, match=f"lives on node {node_of(key, SERVERS)}, not on {stranger}"):
        answer.result()


def test_bad_node_lists_and_keys_say_what_is_wrong(cluster):
    with pytest.raises(ValueError, match="the node list is empty"):
        check_nodes([])
    with pytest.raises(ValueError, match="node 'a' is twice in the node list"):
        check_nodes(["a", "b", "a"])
    with pytest.raises(TypeError, match="not one name 'a@h'"):
        check_nodes("a@h")
    with pytest.raises(TypeError, match="a node name is a non-empty str, got 3"):
        PlacedEntities("ents", ["a", 3])
    with pytest.raises(TypeError, match="registered name"):
        PlacedEntities("", ["a"])
    with pytest.raises(UnencodableValue, match="not float"):
        cluster.placed.node_of(1.5)
    with pytest.raises(UnencodableValue, match=r"holds a float \(2.5\)"):
        cluster.placed.call(cluster.sim.node("c"), ("acct", (1, 2.5)), "where")
    node = cluster.sim.node("e1")
    with pytest.raises(Exception, match="spawned with name="):
        node.spawn(ClusterEntities, cluster.disks["e1"].store, Where, ["e2", "e3"])
    assert cluster.call(KEYS[0])[1] == 1  # nothing stored was touched


class Slow(PersistentServer):
    """Counts calls; "slow" takes 2 s, so an exit signal waits behind it."""

    def initial_state(self) -> int:
        return 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "slow":
            await self.sleep(2.0)
        self.state += 1
        return self.state


def test_a_restarted_router_waits_for_its_predecessors_entities_to_exit(tmp_path):
    node = Node(seed=1)
    store = Store(tmp_path / "s", node, mode="process")
    node.spawn(Supervisor, [ChildSpec("ents", Entities, args=(store, Slow, 60.0), options={"name": "ents"})],
               Flags("one_for_one", 5, 5.0))
    assert node.run_until_complete(entity_call(node, "ents", "k", "fast")) == 1
    entity_call(node, "ents", "k", "slow", timeout=10.0)
    node.run_for(0.1)
    node.exit(node.whereis("ents"), "kill")  # the entity, busy, gets its router's exit later
    node.run_for(0.01)
    fast = entity_call(node, "ents", "k", "fast", timeout=10.0)
    node.run_for(0.01)
    live = [pid for pid in node.processes() if type(node.get_process(pid)) is Slow]
    assert len(live) == 1  # no second incarnation while the first one finishes
    # The old incarnation saved its slow call's count before the new one started.
    assert node.run_until_complete(fast) == 3


def entities(*overrides):
    return load(SCENARIOS / "entities.toml", list(overrides))


@pytest.mark.parametrize("seed", range(1, SIM_SEEDS + 1))
def test_the_scenario_holds_under_chaos_with_node_kills_and_partitions(seed):
    result = run(entities(), seed)
    assert result.passed, f"seed {seed}: {result.failure}"
    stats = result.stats["entities"]
    assert stats["acked"] == stats["increments"] > 0 and stats["activations"] > 0


def test_the_check_catches_keys_placed_over_the_live_nodes_only():
    broken = entities(("systems.entities.bug", "live_placement"), ("faults.mode", "off"),
                      ("checks.names", ["entities.single_activation"]))
    result = run(broken, 1)
    assert not result.passed
    assert result.failure.check == "entities.single_activation"
    assert "is live" in result.failure.message
