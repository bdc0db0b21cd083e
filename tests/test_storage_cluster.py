"""Activated entities across a cluster (`storage.cluster`): each key on its node, routed
from the caller's node, unavailable (never moved) while its node is down or cut off, moved
with its state when the node list changes (join, leave), and at most one live activation
of a key anywhere, which the simulator checks."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from actors import Node, NoProc, RemoteName
from actors.system import stop
from storage import CorruptedValue, EventSourcedServer, KeyMoving, MembershipError, StaleEpoch
from sim.core import Simulation
from sim.disk import Disk
from sim.runner import run
from sim.scenario import load
from storage import ActivationError, Entities, PersistentServer, Store, UnencodableValue, entity_call
from actors.requests import run_in_process
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

    def __init__(self, tmp_path, servers=SERVERS, first=None) -> None:
        self.sim = Simulation(1)
        self.tmp = tmp_path
        self.servers = first or servers  # the first node list; other servers may join
        self.disks = {name: Disk(self.sim, name) for name in servers}
        for name in servers:
            self.sim.add_node(name, self.start, on_crash=self.disks[name].crash)
        self.sim.add_node("c", lambda node: None)
        self.placed = PlacedEntities("ents", self.servers)

    def start(self, node: Node) -> None:
        store = self.disks[node.name].attach(Store(self.tmp / node.name, node, simulated=True))
        node.spawn(ClusterEntities, store, Where, self.servers, 60.0, name="ents")

    def call(self, key: Any, caller: str = "c", placed: PlacedEntities | None = None) -> Any:
        return self.ask(lambda proc: (placed or self.placed).call(proc, key, "where", 1.0), caller)

    def ask(self, request: Any, caller: str = "c") -> Any:
        """The answer to `request(proc)` (awaitable) made in a new process on `caller`:
        its node's clock is brought to the simulation's first, as for any process it runs."""
        async def asking(proc):
            return await request(proc)
        return self.wait(run_in_process(self.sim.node(caller), asking))

    def wait(self, answer: Any, bound: float = 30.0) -> Any:
        """The result of a future, running the simulation for at most `bound` seconds."""
        end = self.sim.now + bound
        while not answer.done() and self.sim.now < end:
            self.sim.run(self.sim.now + 0.05)
        assert answer.done(), f"no answer in {bound} simulated seconds"
        return answer.result()

    def status(self, name: str) -> dict:
        return self.ask(lambda proc: self.placed.status(proc, name, 1.0))

    def settle(self, names: Any, bound: float = 60.0) -> None:
        """Run until every router of `names` has finished moving keys."""
        end = self.sim.now + bound
        while not all(self.status(name)["settled"] for name in names):
            assert self.sim.now < end, [self.status(name) for name in names]
            self.sim.run(self.sim.now + 0.5)

    def stored(self, name: str, key: Any) -> Any:
        return self.disks[name].store.read(key)

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


def scenario(name: str, *overrides: Any) -> Any:
    return load(SCENARIOS / f"{name}.toml", list(overrides))


@pytest.mark.parametrize("seed", range(1, SIM_SEEDS + 1))
@pytest.mark.parametrize("name, counted", [("entities", "activations"), ("entities_moves", "moves")])
def test_the_scenarios_hold_under_chaos_with_node_kills_partitions_and_moves(name, counted, seed):
    """entities_moves: nodes join and leave mid-run, and keys move with their state."""
    result = run(scenario(name), seed)
    assert result.passed, f"{name} seed {seed}: {result.failure}"
    stats = result.stats["entities"]
    assert stats["acked"] == stats["increments"] > 0 and stats[counted] > 0


def test_the_check_catches_keys_placed_over_the_live_nodes_only():
    broken = scenario("entities", ("systems.entities.bug", "live_placement"), ("faults.mode", "off"),
                      ("checks.names", ["entities.single_activation"]))
    result = run(broken, 1)
    assert not result.passed
    assert result.failure.check == "entities.single_activation"
    assert "is live" in result.failure.message


# -- membership changes: keys move with their state ---------------------------------------------

FOUR = ("e1", "e2", "e3", "e4")


@pytest.fixture
def growing(tmp_path):
    world = Cluster(tmp_path, servers=FOUR, first=SERVERS)  # e4 runs a router, outside the list
    yield world
    world.close()


def test_a_joining_node_takes_its_keys_with_their_state_and_the_old_nodes_let_go(growing):
    before = {key: growing.call(key)[0] for key in KEYS}
    assert growing.status("e4")["epoch"] == 0  # outside the list: serves nothing
    assert growing.wait(growing.placed.join(growing.sim.node("c"), "e4")) == 2
    growing.settle(FOUR)
    moved = [key for key in KEYS if node_of(key, FOUR) == "e4"]
    assert moved and all(before[key] != "e4" for key in moved)
    for key in KEYS:  # the count goes on where it was, on the key's node under the new list
        assert growing.call(key) == (node_of(key, FOUR), 2)
    for key in moved:
        assert growing.stored("e4", key)[1] == 2
        assert growing.stored(before[key], key) is None  # the old node deleted its copy
    for name in FOUR:
        assert growing.status(name) == {"node": name, "epoch": 2, "nodes": list(FOUR), "settled": True,
                                        "outgoing": 0, "waiting_for": [], "stalled": False}


def test_a_leaving_node_hands_off_every_key_and_the_list_survives_a_restart(cluster):
    for key in KEYS:
        cluster.call(key)
    mine = [key for key in KEYS if node_of(key, SERVERS) == "e2"]
    assert cluster.wait(cluster.placed.leave(cluster.sim.node("c"), "e2")) == 2
    cluster.settle(SERVERS)
    rest = ("e1", "e3")
    for key in mine:
        assert cluster.stored("e2", key) is None
        assert cluster.call(key) == (node_of(key, rest), 2)
    cluster.sim.crash_node("e1")
    cluster.sim.restart_node("e1")  # spawned with the first list again: the stored one wins
    cluster.sim.run(cluster.sim.now + 0.1)
    assert cluster.status("e1")["nodes"] == list(rest) and cluster.status("e1")["epoch"] == 2
    for key in KEYS:
        assert cluster.call(key) == (node_of(key, rest), 3 if key in mine else 2)


def test_a_moving_key_waits_for_its_state_and_a_crashed_sender_resumes_the_handoff(growing):
    growing.wait(growing.placed.join(growing.sim.node("c"), "e4"))
    growing.settle(FOUR)
    for key in KEYS:
        growing.call(key)
    mine = [key for key in KEYS if node_of(key, FOUR) == "e2"]
    growing.sim.network.partition([["e2"], ["e1", "e3", "e4"]])  # the caller still reaches all
    assert growing.wait(growing.placed.leave(growing.sim.node("c"), "e2")) == 3
    rest = ("e1", "e3", "e4")
    for key in mine:  # its new node has not got its state: refused, never started empty
        with pytest.raises(KeyMoving, match=f"moving from node e2 to node {node_of(key, rest)}"):
            growing.call(key)
    assert growing.status("e2")["outgoing"] == len(mine)
    growing.sim.crash_node("e2")  # mid-handoff; it comes back with the moving keys
    growing.sim.run(growing.sim.now + 0.1)
    growing.sim.restart_node("e2")
    growing.sim.network.heal()
    growing.settle(FOUR)
    for key in KEYS:
        assert growing.call(key) == (node_of(key, rest), 2)
        assert growing.stored("e2", key) is None


def test_a_caller_with_an_older_epoch_is_refused_naming_both_then_follows(growing):
    old = PlacedEntities("ents", SERVERS)
    growing.wait(growing.placed.join(growing.sim.node("c"), "e4"))
    key = KEYS[0]
    with pytest.raises(StaleEpoch, match="is at epoch 2 .* the request was made at epoch 1"):
        growing.call(key, placed=old)
    assert old.epoch == 2 and old.nodes == FOUR  # it adopted the newer list
    assert growing.call(key, placed=old) == (node_of(key, FOUR), 1)


def test_bad_membership_changes_are_refused_and_nothing_stored_is_lost(growing):
    c = growing.sim.node("c")
    for key in KEYS:
        growing.call(key)
    with pytest.raises(ValueError, match="node 'e9' is not in the node list"):
        growing.placed.leave(c, "e9")
    with pytest.raises(ValueError, match="node 'e1' is already in the node list"):
        growing.placed.join(c, "e1")
    with pytest.raises(MembershipError, match="node e9 is down or cut off"):
        growing.wait(growing.placed.join(c, "e9"))  # no such node
    growing.sim.crash_node("e3")
    with pytest.raises(MembershipError, match="node e3 is down or cut off"):
        growing.wait(growing.placed.leave(c, "e3"))  # a node that is down cannot leave
    growing.sim.restart_node("e3")
    growing.sim.run(growing.sim.now + 0.1)
    assert growing.wait(growing.placed.join(c, "e4")) == 2
    with pytest.raises(StaleEpoch, match="node e1 is at epoch 2 .* made at epoch 1"):
        growing.wait(growing.placed.rebalance(c, SERVERS, epoch=1))  # an epoch going backwards
    growing.settle(FOUR)
    for key in KEYS:  # every count is intact, on its node
        assert growing.call(key) == (node_of(key, FOUR), 2)
    assert all(growing.status(name)["epoch"] == 2 for name in FOUR)


def test_a_change_waits_until_the_previous_one_is_done(growing):
    growing.sim.network.partition([["e4"], ["e1", "e2", "e3"]])  # e4 will wait for the others
    growing.wait(growing.placed.join(growing.sim.node("c"), "e4"))
    with pytest.raises(MembershipError, match="is still moving the keys of epoch 2"):
        growing.wait(growing.placed.leave(growing.sim.node("c"), "e1"))
    growing.sim.network.heal()
    growing.settle(FOUR)
    assert growing.wait(growing.placed.leave(growing.sim.node("c"), "e1")) == 3


class Journal(EventSourcedServer):
    snapshot_every = 3

    def initial_state(self) -> list:
        return []

    def apply(self, event: Any) -> None:
        self.state.append(event)

    def recover_records(self, records: list) -> None:
        self.records = dict(records)

    def handle_call(self, event: Any, caller: Any) -> Any:
        self.persist(event)
        self.put_record(("r", event), event * 10)
        return list(self.state)


def test_a_keys_stored_values_move_between_stores_whole_and_bad_ones_are_refused(tmp_path):
    node = Node(seed=1)
    a, b = Store(tmp_path / "a", node), Store(tmp_path / "b", node)
    pid = node.spawn(Journal, a, "k")
    for i in range(5):  # a snapshot, events after it, records
        node.run_until_complete(node.call(pid, i))
    node.run_until_complete(stop(node, pid, "shutdown"))
    values = a.export_key("k")
    assert {db for db, _, _ in values} == {0, 1, 2}
    b.rewrite({"k": values}, {b"x/setting": {"n": 1}})
    assert b.read("k") == a.read("k") and b.read_records("k") == a.read_records("k")
    assert b.get_meta(b"x/setting") == {"n": 1}
    tampered = [(db, name, raw[:-1] + bytes([raw[-1] ^ 1])) for db, name, raw in values]
    with pytest.raises(CorruptedValue, match="checksum mismatch"):
        b.rewrite({"k": tampered}, {b"x/setting": None})
    with pytest.raises(CorruptedValue, match="not one of this key's"):
        b.rewrite({"other": values}, {})  # another key's values
    assert b.read("k") == a.read("k") and b.get_meta(b"x/setting") == {"n": 1}  # nothing written
    b.rewrite({"k": []}, {b"x/setting": None})
    assert b.read("k") is None and b.read_records("k") == {} and b.get_meta(b"x/setting") is None
    a.close()
    b.close()


def test_a_staged_setting_whose_commit_fails_goes_with_the_next_commit(tmp_path):
    node = Node(seed=1)

    async def tick(proc):  # a scheduler pass, at whose end the store commits
        await proc.sleep(0.001)

    store = Store(tmp_path / "s", node)
    store.fill_disk(True)
    store.stage_meta(b"x/noted", ("k", 1))
    node.spawn(tick)
    node.run_for(0.01)
    assert store.commits == 0  # that commit failed: the setting is staged again
    store.fill_disk(False)
    node.spawn(tick)
    node.run_for(0.01)
    store.crash()  # what was not committed is gone
    again = Store(tmp_path / "s", node)
    assert again.get_meta(b"x/noted") == ["k", 1]
    with pytest.raises(ValueError, match="a setting's name is non-empty bytes"):
        again.stage_meta(b"format", 1)  # the store's own marker
    again.close()


def test_the_checks_catch_a_handoff_that_activates_a_key_before_its_state_arrived():
    result = run(scenario("entities_moves", ("systems.entities.bug", "early_activation"), ("faults.mode", "off")), 1)
    assert not result.passed
    assert result.failure.check in ("entities.no_lost_ack", "entities.single_activation")


def test_keys_move_between_node_processes_over_real_sockets_with_their_state(tmp_path):
    """Three real-time nodes on Unix sockets, each with its own LMDB store: a join and a
    leave move keys over the nodes' own streams, and the counts go on where they were."""
    from conftest import arun
    from dist_helpers import nodes

    first, names = ("a@h", "b@h"), ("a@h", "b@h", "c@h")

    async def main():
        async with nodes(tmp_path, *names) as made:
            for node, dist in made:
                for other, theirs in made:
                    if other is not node:
                        dist.discovery.learn(other.name, theirs.address)
            stores = {node.name: Store(tmp_path / node.name[0], node, mode="process") for node, _ in made}
            for node, _ in made:
                node.spawn(ClusterEntities, stores[node.name], Where, first, 60.0, name="ents")
            a = made[0][0]
            placed = PlacedEntities("ents", first)

            async def counts(nodes_now, expected):
                for key in KEYS:
                    assert await placed.call(a, key, "where") == (node_of(key, nodes_now), expected)

            async def wait_settled():
                for _ in range(1000):  # bounded: 10 s of polls
                    statuses = [await placed.status(a, name) for name in names]
                    if all(status["settled"] for status in statuses):
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"the keys are still moving: {statuses}")

            await counts(first, 1)
            assert await placed.join(a, "c@h") == 2
            await wait_settled()
            await counts(names, 2)
            assert any(node_of(key, names) == "c@h" for key in KEYS)
            assert await placed.leave(a, "b@h") == 3
            await wait_settled()
            rest = ("a@h", "c@h")
            await counts(rest, 3)
            assert all(stores["b@h"].read(key) is None for key in KEYS)  # b let go of every key
            for key in KEYS:
                assert stores[node_of(key, rest)].read(key)[1] == 3
            for store in stores.values():
                store.close()

    arun(main())
