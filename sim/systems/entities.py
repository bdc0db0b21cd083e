"""Activated entities across nodes (`storage.cluster`) under faults: the simulator's
check that a key has at most one live activation in the whole cluster at every instant.

The counter system (`sim.systems.counter`) with its counters as entities placed on
nodes: server nodes "e1".."eN" each run a `ClusterEntities` router ("counters", under
a one_for_one supervisor) of counter entities on their own LMDB store; a counter
`("counter", c)` lives on `place(key, servers)`, is activated there on demand and
passivated after `idle_timeout`. Clients on node "clients" route each request from their
own node (`PlacedEntities`) and retry it (same seq) until it is acknowledged, also while
the counter's node is down or cut off (its keys are unavailable meanwhile, never moved).

Membership changes (`move_every` > 0): the node list starts as e1..e`members`; a mover
on node "clients" joins a server that is out or makes one leave, at random every about
`move_every` seconds while the workload runs (`PlacedEntities.rebalance`), and retries a
change that was refused half way (a node down or cut off) until it is done, so keys move
with their state among the kills, power cuts and partitions. Clients adopt the newer
list from the `StaleEpoch` answers and retry `KeyMoving` ones.

Checks: the counter's (no acknowledged increment lost, reads never go back, none
counted that nobody asked for; eventually every increment acknowledged, exactly once),
on the highest value any store holds (see `_stored`), and `single_activation` (always): when an
entity starts, no other activation of its key is alive on any node. It is checked at
every activation, the only moment two could begin to overlap, against every node's
process table (an entity is live from its init until its process is gone), so no
overlap escapes it, however short.

Deliberate bug (`bug = "live_placement"`), the naive design: routers and clients place
keys over the nodes they are connected to (`actors.placement.node_for`), so a key moves
off a node that is down or cut off and starts elsewhere from that node's store. A
partition then activates a key on both sides (`single_activation` fails) and a crash
loses acknowledged increments (`no_lost_ack`). `bug = "early_activation"`, a broken
handoff: a key that moves is activated on its new node without waiting for its state,
from nothing, while the old node may still run it (`single_activation`, `no_lost_ack`).
"""
from __future__ import annotations

from typing import Any

from actors import CallExit, CallTimeout, Node, NoProc, Pid, RemoteName
from actors.placement import live_nodes, place
from storage import ActivationError, LimitExceeded, StaleEpoch, StorageError, Store, entity_call
from storage.cluster import ClusterEntities, PlacedEntities, check_nodes, node_of, placement_key
from supervision import Application, ChildSpec, Flags, Supervisor

from ..schema import Field
from ..system import check
from .counter import CounterSystem, Shard

BUGS = ("none", "live_placement", "early_activation")
ROUTER = "counters"


class Ledger:
    """The live activations of every key across the simulation's nodes."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.live: dict[Any, list[Pid]] = {}  # key -> pids of its activations, oldest first
        self.violations: list[str] = []
        self.activations = 0

    def activated(self, key: Any, pid: Pid) -> None:
        """Entity `key` started as `pid`: record a violation if another one is alive."""
        self.activations += 1
        alive = [p for p in self.live.get(key, ()) if self.is_live(p)]
        if alive and not self.violations:
            self.violations.append(f"entity {key!r} activated as {pid} on {pid.node_name} while "
                                   f"{alive[0]} on {alive[0].node_name} is live (t={self.sim.now:.6f})")
        alive.append(pid)
        self.live[key] = alive

    def violation(self) -> str | None:
        """The first overlap seen, if any (a check's answer)."""
        return self.violations[0] if self.violations else None

    def is_live(self, pid: Pid) -> bool:
        node = self.sim.node(pid.node_name)
        return node is not None and node.is_alive(pid)


class Counter(Shard):
    """A counter entity (the counter system's shard, exactly-once increments), which
    tells the ledger when it starts. `ledger` is set by each system's subclass."""

    ledger: Ledger

    def init(self, store: Store, key: Any) -> None:  # type: ignore[override]  # as Entities starts it
        super().init(store, key, True)
        self.ledger.activated(key, self.pid)


def live_home(node: Node, key: Any, servers: tuple[str, ...]) -> str:
    """The deliberate bug's placement: over the servers `node` is connected to now."""
    return place(placement_key(key), [n for n in live_nodes(node) if n in servers])


class LiveRouter(ClusterEntities):
    """The deliberate bug: a key lives on the node picked among those connected now."""

    def home(self, key: Any) -> str:
        return live_home(self.node, key, self.cluster)


class EarlyRouter(ClusterEntities):
    """The deliberate bug: a key that moves here is activated before its state arrived."""

    def in_transit(self, key: Any) -> str | None:
        return None


ROUTERS = {"live_placement": LiveRouter, "early_activation": EarlyRouter}


class EntitiesSystem(CounterSystem):
    """See the module docstring."""

    node_prefix = "e"
    retryable = (*CounterSystem.retryable, ActivationError, LimitExceeded, StaleEpoch)
    options = {
        "servers": Field.int(3, 1, 64, "server nodes e1.."),
        "members": Field.int(0, 0, 64, "the first node list: e1..e<members> (0: every server)"),
        "move_every": Field.seconds(0.0, 0.0, 3600.0, "about this often a server joins or leaves (0: never)"),
        "counters": Field.int(24, 1, 100_000, "counter entities, placed on the servers"),
        "idle_timeout": Field.seconds(1.0, 0.01, 3600.0, "an idle entity is passivated after this"),
        "bug": Field.str("none", BUGS, "a deliberate bug (see sim/systems/entities.py)"),
        "top_restarts": Field.int(20, 0, 1_000_000, "the top supervisor's max_restarts (in 5 s)"),
    }

    def setup(self) -> None:
        self.ledger = Ledger(self.sim)
        self.entity = type("Counter", (Counter,), {"ledger": self.ledger, "__module__": __name__})
        self.homes: dict[int, str] = {}
        servers = self.config["servers"]
        members = self.config["members"] or servers
        if members > servers:
            raise ValueError(f"members = {members}, more than the {servers} servers")
        self.first = check_nodes([f"{self.node_prefix}{i + 1}" for i in range(members)])
        self.placed = PlacedEntities(ROUTER, self.first)
        self.proposed = self.first  # the newest node list the mover asked for
        super().setup()
        self.counts.update(moves=0, moves_refused=0)

    def _start_clients(self, node: Node) -> None:
        super()._start_clients(node)
        if self.config["move_every"] > 0:
            node.spawn(self._mover)

    def server_of(self, counter: int) -> str:
        home = self.homes.get(counter)
        if home is None:
            home = self.homes[counter] = node_of(("counter", counter), self.proposed)
        return home

    async def _mover(self, proc: Any) -> None:
        """Joins and leaves (see the module docstring): its own view of the list, which
        moves on only once a change is done."""
        rng = self.sim.stream("workload/mover")
        mover = PlacedEntities(ROUTER, self.first)
        every = self.config["move_every"]
        target = None
        while True:
            await proc.sleep(rng.uniform(0.5, 1.5) * every if target is None else every / 4)
            if target is None:
                if not self.workload_on:
                    continue
                target = self._next_list(rng, mover.nodes)
                self.proposed, self.homes = target, {}
            try:
                await mover.rebalance(proc, target, timeout=self.load["timeout"])
            except (StorageError, CallTimeout, CallExit, NoProc):  # refused: tried again
                self.counts["moves_refused"] += 1
            else:
                self.counts["moves"] += 1
                target = None

    def _next_list(self, rng: Any, nodes: tuple[str, ...]) -> tuple[str, ...]:
        outside = [name for name in self.servers if name not in nodes]
        if outside and (len(nodes) == 1 or rng.random() < 0.5):
            return check_nodes([*nodes, outside[rng.below(len(outside))]])
        leaving = nodes[rng.below(len(nodes))]
        return check_nodes([name for name in nodes if name != leaving])

    def _stored(self) -> dict[int, int]:
        """The committed value of every counter: the highest any store holds (a key that
        moved may have a copy on its old node until the handoff deletes it, never a
        higher one: a counter only grows). While a node is down, a value below the
        acknowledged count is left out: the newest copy may be on that node. The checks
        of one round share one read (no commit in between)."""
        when = (self.sim.now, tuple(disk.commits for disk in self.disks.values()))
        if self._stored_at[0] == when:
            return self._stored_at[1]
        up = [disk.store for disk in self.disks.values() if disk.store is not None and not disk.store.closed]
        out = {}
        for counter in range(len(self.issued)):
            found = [store.read(("counter", counter)) for store in up]
            value = max((f[1]["value"] for f in found if f is not None), default=0)
            if len(up) == len(self.disks) or value >= self.acked[counter]:
                out[counter] = value
        self._stored_at = (when, out)
        return out

    def _start_server(self, node: Node) -> None:
        store = self.disks[node.name].attach(Store(self.data_dir / node.name, node, simulated=True))
        router = ROUTERS.get(self.config["bug"], ClusterEntities)
        spec = ChildSpec(ROUTER, router, args=(store, self.entity, self.first, self.config["idle_timeout"]),
                         options={"name": ROUTER})
        app = Application(Supervisor, [spec], Flags("one_for_one", self.config["top_restarts"], 5.0),
                          name="entities_sup")
        app.start(node)
        self.apps[node.name] = app

    def ask(self, proc: Any, counter: int, request: tuple) -> Any:
        key = ("counter", counter)
        timeout = self.load["timeout"]
        if self.config["bug"] != "live_placement":
            return self.placed.call(proc, key, request, timeout)
        home = live_home(proc.node, key, self.placed.nodes)
        return entity_call(proc, RemoteName(ROUTER, home), key, request, timeout)

    @check("always")
    def single_activation(self) -> str | None:
        """At most one live activation of each key in the cluster, at every instant."""
        return self.ledger.violation()

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "activations": self.ledger.activations}
