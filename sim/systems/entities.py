"""Activated entities across nodes (`storage.cluster`) under faults: the simulator's
check that a key has at most one live activation in the whole cluster at every instant.

The counter system (`sim.systems.counter`) with its counters as entities placed on
nodes: server nodes "e1".."eN" each run a `ClusterEntities` router ("counters", under
a one_for_one supervisor) of counter entities on their own LMDB store; a counter
`("counter", c)` lives on `place(key, servers)`, is activated there on demand and
passivated after `idle_timeout`. Clients on node "clients" route each request from their
own node (`PlacedEntities`) and retry it (same seq) until it is acknowledged, also while
the counter's node is down or cut off (its keys are unavailable meanwhile, never moved).

Checks: the counter's (no acknowledged increment lost, reads never go back, none
counted that nobody asked for; eventually every increment acknowledged, exactly once),
and `single_activation` (always): when an entity starts, no other activation of its key
is alive on any node. It is checked at every activation, the only moment two could
begin to overlap, against every node's process table (an entity is live from its init
until its process is gone), so no overlap escapes it, however short.

Deliberate bug (`bug = "live_placement"`), the naive design: routers and clients place
keys over the nodes they are connected to (`actors.placement.node_for`), so a key moves
off a node that is down or cut off and starts elsewhere from that node's store. A
partition then activates a key on both sides (`single_activation` fails) and a crash
loses acknowledged increments (`no_lost_ack`).
"""
from __future__ import annotations

from typing import Any

from actors import Node, Pid, RemoteName
from actors.placement import live_nodes, place
from storage import ActivationError, LimitExceeded, Store, entity_call
from storage.cluster import ClusterEntities, PlacedEntities, check_nodes, node_of, placement_key
from supervision import Application, ChildSpec, Flags, Supervisor

from ..schema import Field
from ..system import check
from .counter import CounterSystem, Shard

BUGS = ("none", "live_placement")
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


class EntitiesSystem(CounterSystem):
    """See the module docstring."""

    node_prefix = "e"
    retryable = (*CounterSystem.retryable, ActivationError, LimitExceeded)
    options = {
        "servers": Field.int(3, 1, 64, "server nodes e1.."),
        "counters": Field.int(24, 1, 100_000, "counter entities, placed on the servers"),
        "idle_timeout": Field.seconds(1.0, 0.01, 3600.0, "an idle entity is passivated after this"),
        "bug": Field.str("none", BUGS, "a deliberate bug (see sim/systems/entities.py)"),
        "top_restarts": Field.int(20, 0, 1_000_000, "the top supervisor's max_restarts (in 5 s)"),
    }

    def setup(self) -> None:
        self.ledger = Ledger(self.sim)
        self.entity = type("Counter", (Counter,), {"ledger": self.ledger, "__module__": __name__})
        self.homes: dict[int, str] = {}
        super().setup()
        self.placed = PlacedEntities(ROUTER, self.servers)

    def server_of(self, counter: int) -> str:
        home = self.homes.get(counter)
        if home is None:
            home = self.homes[counter] = node_of(("counter", counter), check_nodes(self.servers))
        return home

    def _start_server(self, node: Node) -> None:
        store = self.disks[node.name].attach(Store(self.data_dir / node.name, node, simulated=True))
        router = LiveRouter if self.config["bug"] == "live_placement" else ClusterEntities
        spec = ChildSpec(ROUTER, router, args=(store, self.entity, self.servers, self.config["idle_timeout"]),
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
