"""The counter service: the simulator's own example system.

`counters` persistent counters are spread over `servers` nodes ("counter1", ...). Each
node runs a real LMDB store and a crash-happy supervision tree:

    counter_sup (one_for_one)          the application's top supervisor
    ├─ group-0 (one_for_one)           `groups` group supervisors
    │  ├─ shard-0                      one PersistentServer per counter: {"value", "seen"}
    │  └─ shard-2 ...
    └─ group-1 ...

Clients, on node "clients", each run one operation at a time: mostly increments
`("incr", client, seq)`, some reads. An increment is retried (same seq) after a timeout
or a crash until it is acknowledged; the shard applies each (client, seq) once (the
"seen" table is saved with the value, in the same write), so an increment counts exactly
once. Buggify points crash shards before and after an increment. A node whose top
supervisor gave up is rebooted (`Simulation.heart`), like `heart` restarting a BEAM.

Checks: an acknowledged increment is never lost (always), values a client sees never go
back (always), no increment appears that nobody asked for (always); after heal and
quiesce every increment is acknowledged and each counter equals the increments asked of
it (eventually).

Deliberate bugs (`bug = ...`), for newcomers to break an invariant on purpose:
- "ack_before_persist": replies leave before the write commits (store mode "none"); a
  failed commit or a power cut loses acknowledged increments;
- "unsynced_ack": replies leave after commit but before fsync (store mode "process"); a
  power cut loses them;
- "no_dedupe": a retried increment is applied again.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from actors import CallExit, CallTimeout, Node, NoProc, RemoteName
from storage import PersistentServer, Store
from supervision import Application, ChildSpec, Flags, Supervisor

from ..core import buggify
from ..disk import Disk
from ..schema import Field
from ..system import System, check

if TYPE_CHECKING:
    from ..faults import Storage

BUGS = ("none", "ack_before_persist", "unsynced_ack", "no_dedupe")
_STORE_MODE = {"ack_before_persist": "none", "unsynced_ack": "process"}
_RETRYABLE = (CallTimeout, CallExit, NoProc)
_OPS = {"get": "counter.get", "incr": "counter.incr"}


class Shard(PersistentServer):
    """One counter: `state = {"value": n, "seen": {client: last seq applied}}`."""

    def init(self, store: Store, key: Any, dedupe: bool) -> None:
        super().init(store, key)
        self.dedupe = dedupe

    def initial_state(self) -> dict[str, Any]:
        return {"value": 0, "seen": {}}

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "get":
            return self.state["value"]
        _, client, seq = request
        if buggify("counter.crash_before_incr"):
            raise RuntimeError("buggify: crash before the increment")
        seen = self.state["seen"]
        if self.dedupe and seen.get(client, 0) >= seq:
            return self.state["value"]  # a retry of an increment already counted
        self.state["value"] += 1
        seen[client] = seq
        if buggify("counter.crash_after_incr"):
            raise RuntimeError("buggify: crash after the increment, before it is saved")
        return self.state["value"]


class CounterSystem(System):
    """See the module docstring."""

    retryable: tuple[type[Exception], ...] = _RETRYABLE
    node_prefix = "counter"  # server nodes are counter1, counter2, ...
    options = {
        "servers": Field.int(2, 1, 64, "server nodes"),
        "counters": Field.int(8, 1, 100_000, "counters, spread over the servers"),
        "groups": Field.int(2, 1, 1000, "group supervisors per server node"),
        "bug": Field.str("none", BUGS, "a deliberate bug (see sim/systems/counter.py)"),
        "group_restarts": Field.int(5, 0, 1_000_000, "a group supervisor's max_restarts (in 5 s)"),
        "top_restarts": Field.int(10, 0, 1_000_000, "the top supervisor's max_restarts (in 5 s)"),
    }
    workload_options = {
        "clients": Field.int(12, 1, 100_000, "client processes on node 'clients'"),
        "rate": Field.float(20.0, 0.01, 100_000.0, "operations per second per client"),
        "reads": Field.float(0.2, 0.0, 1.0, "fraction of operations that are reads"),
        "timeout": Field.seconds(0.5, 0.001, 60.0, "a client's call timeout"),
        "backoff": Field.seconds(0.1, 0.0, 60.0, "mean wait before a retry"),
    }

    def setup(self) -> None:
        n = self.config["counters"]
        self.servers = [f"{self.node_prefix}{i + 1}" for i in range(self.config["servers"])]
        self.disks = {name: Disk(self.sim, name) for name in self.servers}
        self.apps: dict[str, Application] = {}
        self.issued = [0] * n  # increments asked for, per counter
        self.acked = [0] * n  # increments acknowledged
        self.seen: dict[tuple[int, int], int] = {}  # (client, counter) -> highest value seen
        self.violations: list[str] = []
        self.pending: dict[int, tuple[int, int]] = {}  # client -> (counter, seq) in flight
        self.counts = {"increments": 0, "acked": 0, "reads": 0, "retries": 0}
        self._stored_at: tuple[Any, dict[int, int]] = (None, {})  # (instant, commits) -> values
        self.shards = [RemoteName(f"shard-{c}", self.server_of(c)) for c in range(n)]
        for name in self.servers:
            self.sim.add_node(name, self._start_server, on_crash=self.disks[name].crash)
            self.sim.heart(name, functools.partial(self._app_up, name))
        self.sim.add_node("clients", self._start_clients, targets=False)

    def server_of(self, counter: int) -> str:
        return self.servers[counter % len(self.servers)]

    def ask(self, proc: Any, counter: int, request: tuple) -> Any:
        """One try of a client's request to the server of `counter` (it raises one of
        `retryable` when the client should try again)."""
        return proc.call(self.shards[counter], request, self.load["timeout"])

    # -- servers -----------------------------------------------------------------------------

    def _start_server(self, node: Node) -> None:
        bug = self.config["bug"]
        store = self.disks[node.name].attach(Store(
            self.data_dir / node.name, node, mode=_STORE_MODE.get(bug, "sync"), simulated=True))
        mine = [c for c in range(self.config["counters"]) if self.server_of(c) == node.name]
        groups = []
        for g in range(self.config["groups"]):
            shards = [ChildSpec(f"shard-{c}", Shard, args=(store, ("counter", c), bug != "no_dedupe"),
                                options={"name": f"shard-{c}"})
                      for c in mine[g::self.config["groups"]]]
            flags = Flags("one_for_one", self.config["group_restarts"], 5.0)
            groups.append(ChildSpec(f"group-{g}", Supervisor, args=(shards, flags),
                                    options={"name": f"group-{g}"}))
        app = Application(Supervisor, groups, Flags("one_for_one", self.config["top_restarts"], 5.0),
                          name="counter_sup")
        app.start(node)
        self.apps[node.name] = app

    def _app_up(self, name: str) -> bool:
        return self.apps[name].supervisor is not None

    def storages(self) -> dict[str, Storage]:
        return dict(self.disks)

    def close(self) -> None:
        for disk in self.disks.values():
            disk.close()

    # -- clients -------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        for c in range(self.load["clients"]):
            node.spawn(self._client, c)

    async def _client(self, proc: Any, client: int) -> None:
        rng = self.sim.stream(f"workload/client-{client}")
        load = self.load
        seq = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / load["rate"]))
            if not self.workload_on:
                continue
            counter = rng.below(len(self.issued))
            if rng.random() < load["reads"]:
                request: tuple = ("get",)
                self.counts["reads"] += 1
            else:
                seq += 1
                request = ("incr", client, seq)
                self.issued[counter] += 1
                self.counts["increments"] += 1
                self.pending[client] = (counter, seq)
            started = proc.now()
            while True:
                try:
                    value = await self.ask(proc, counter, request)
                    break
                except self.retryable:
                    self.counts["retries"] += 1
                    await proc.sleep(rng.uniform(0.0, 2.0 * load["backoff"]))
            self.sim.record_latency(_OPS[request[0]], proc.now() - started)
            if request[0] == "incr":
                self.acked[counter] += 1
                self.counts["acked"] += 1
                del self.pending[client]
            last = self.seen.get((client, counter), 0)
            if value < last:
                self.violations.append(f"client {client} read counter {counter} as {value} "
                                       f"after it had seen {last} (t={self.sim.now:.6f})")
            self.seen[(client, counter)] = max(last, value)

    # -- checks ---------------------------------------------------------------------------------

    def _stored(self) -> dict[int, int]:
        """The committed value of every counter whose node is up. The checks of one round
        share one read: a round runs at one instant with no commit in between."""
        when = (self.sim.now, tuple(disk.commits for disk in self.disks.values()))
        if self._stored_at[0] == when:
            return self._stored_at[1]
        out = {}
        for counter in range(len(self.issued)):
            store = self.disks[self.server_of(counter)].store
            if store is not None and not store.closed:
                found = store.read(("counter", counter))
                out[counter] = found[1]["value"] if found is not None else 0
        self._stored_at = (when, out)
        return out

    @check("always")
    def no_lost_ack(self) -> str | None:
        """Every acknowledged increment is in the store."""
        for counter, value in self._stored().items():
            if value < self.acked[counter]:
                return (f"counter {counter}: {self.acked[counter]} increments acknowledged, but "
                        f"{self.server_of(counter)}'s store holds {value}")
        return None

    @check("always")
    def monotonic(self) -> str | None:
        """A value a client reads never goes below one it has seen before."""
        return self.violations[0] if self.violations else None

    @check("always")
    def no_phantom(self) -> str | None:
        """No counter holds more increments than clients asked for."""
        for counter, value in self._stored().items():
            if value > self.issued[counter]:
                return (f"counter {counter}: the store holds {value}, but clients asked for "
                        f"{self.issued[counter]} increments")
        return None

    @check("eventually")
    def all_acked(self) -> str | None:
        """After heal and quiesce, every increment has been acknowledged."""
        if self.pending:
            client, (counter, seq) = next(iter(self.pending.items()))
            return (f"{len(self.pending)} increments never acknowledged, e.g. client {client} "
                    f"seq {seq} on counter {counter}")
        return None

    @check("eventually")
    def exactly_once(self) -> str | None:
        """After heal and quiesce, each counter equals the increments asked of it."""
        stored = self._stored()
        for counter in range(len(self.issued)):
            if counter not in stored:
                return f"counter {counter}: node {self.server_of(counter)} is down"
            if stored[counter] != self.issued[counter]:
                return (f"counter {counter}: the store holds {stored[counter]}, clients asked "
                        f"for {self.issued[counter]} increments")
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
