"""The simulation core: one virtual clock over several deterministic nodes.

A `Simulation(seed)` owns the global virtual time, the nodes (each an `actors.Node` with
its own seeded scheduler stream), an agenda of timed sim events (network arrivals,
faults, checks, phase changes), named random streams and the trace.

The driver repeats: if some node has runnable processes, pick one node with the
"scheduler" stream and give it a quantum of turns; otherwise move the clock to the next
moment anything happens (the agenda's head, or a node timer, seen through that node's
clock skew), run the agenda items due, and advance the clocks of the nodes with a timer
due. With a `resolution`, the clock moves in ticks of that many seconds, as TigerBeetle's
simulator does: what falls due within a tick happens at its end, in order, so one
instant does the work of many (and a store commits their writes in one group). Nodes
only meet through the network, whose latency is never zero, so within one instant the
order in which nodes run changes nothing they can observe.

Determinism: every decision draws from a `Stream` (`random.Random` seeded with
`actors.seed_for(seed, name)`, drawing only `random()`, the one method CPython promises
to repeat); ties in the agenda are broken by an insertion counter; nothing iterates a
set or uses `id()`, `hash()` of a str, or the wall clock.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any, Callable

from actors import Node, seed_for

from .network import Network
from .trace import Trace

_active: Simulation | None = None


class Stream:
    """A named random stream. Draws only `random()`; the helpers are arithmetic on it, so
    a seed gives the same numbers on every Python version."""

    __slots__ = ("name", "random")

    def __init__(self, seed: int, name: str) -> None:
        self.name = name
        self.random: Callable[[], float] = random.Random(seed_for(seed, name)).random

    def below(self, n: int) -> int:
        """An int in [0, n)."""
        assert n > 0, f"stream {self.name}: below({n})"
        return min(n - 1, int(self.random() * n))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()


class Samples:
    """At most `limit` samples of a series, spread evenly over all of it: when full, every
    other one is dropped and from then on only every second (fourth...) one is kept. Each
    kept value keeps the virtual time it was added at (`times`), and `counts` has the
    exact number added per `width` seconds of virtual time (at most BINS bins: past them,
    neighbours merge and the width doubles), for charts over time."""

    __slots__ = ("limit", "values", "times", "stride", "seen", "max", "counts", "width")
    BINS = 1024

    def __init__(self, limit: int, width: float = 0.01) -> None:
        assert limit >= 2, "keep at least two samples"
        assert width > 0, "bins need a positive width"
        self.limit = limit
        self.values: list[float] = []
        self.times: list[float] = []
        self.stride = 1
        self.seen = 0
        self.max = -math.inf  # exact, whatever was dropped
        self.counts: list[int] = []
        self.width = width

    def _count_late(self, b: int, t: float) -> None:
        """Count at bin `b`, past the last one: grow the bins, merging them past BINS."""
        counts = self.counts
        while b >= self.BINS:
            counts[:] = [sum(counts[i:i + 2]) for i in range(0, len(counts), 2)]
            self.width *= 2
            b = int(t / self.width)
        counts.extend([0] * (b + 1 - len(counts)))
        counts[b] += 1

    def add(self, value: float, t: float = 0.0) -> None:
        self.seen += 1
        if value > self.max:
            self.max = value
        counts = self.counts
        b = int(t / self.width)
        if b < len(counts):
            counts[b] += 1
        else:
            self._count_late(b, t)
        if self.seen % self.stride:
            return
        self.values.append(value)
        self.times.append(t)
        if len(self.values) >= self.limit:
            del self.values[1::2]
            del self.times[1::2]
            self.stride *= 2


@dataclass
class Failure:
    """Why a run stopped: a check that failed, or an error in the simulated system."""

    check: str
    message: str
    time: float
    last_events: list[str] = field(default_factory=list)


class SimulationError(Exception):
    """The simulation itself hit a limit (a livelock, too many pending events)."""


@dataclass
class _NodeSpec:
    name: str
    start: Callable[[Node], None]
    on_crash: Callable[[str, bool], None] | None
    targets: bool  # may faults pick this node's processes (clients are usually spared)
    creation: int = 0
    skew: float = 0.0
    stall_until: float = 0.0  # blocked (in a slow commit) until this global time
    node: Node | None = None  # the live incarnation; None while the node is down
    fire: float = math.inf  # global time of its next timer, valid while `fresh`
    fresh: bool = False


class Simulation:
    """One simulated world. See the module docstring.

        sim = Simulation(seed=7)
        sim.add_node("server", start=lambda node: node.spawn(Counter))
        sim.run(until=10.0)
    """

    def __init__(self, seed: int, *, trace: Trace | None = None, resolution: float = 0.0,
                 quantum: int = 256, instant_limit: int = 2_000_000, agenda_limit: int = 5_000_000,
                 max_nodes: int = 256, max_samples: int = 1 << 20) -> None:
        assert type(seed) is int and 0 <= seed < 2**63, f"seed must be an int in [0, 2**63), got {seed!r}"
        assert quantum >= 1 and instant_limit >= quantum and agenda_limit >= 1 and max_nodes >= 1
        assert 0.0 <= resolution <= 1.0, f"resolution must be in [0, 1] seconds, got {resolution}"
        self.seed = seed
        self.resolution = resolution
        self.now = 0.0
        self.trace = trace if trace is not None else Trace()
        self.quantum = quantum
        self.instant_limit = instant_limit
        self.agenda_limit = agenda_limit
        self.max_nodes = max_nodes
        self.max_samples = max_samples
        self._specs: dict[str, _NodeSpec] = {}
        self._up: list[_NodeSpec] = []  # nodes up and not stalled, in the order they were added
        self.stalls = 0  # how many nodes are stalled
        self._agenda: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self._streams: dict[str, Stream] = {}
        self._sched = self.stream("scheduler").random
        self.network = Network(self)
        self.failure: Failure | None = None
        self.injected: dict[str, int] = {}  # faults injected, by kind
        self.restarts: dict[str, int] = {}  # process restarts, by supervisor (systems report them)
        self.latencies: dict[str, Samples] = {}  # client request latencies, by operation
        self.buggify_on = False
        self._sites: dict[str, Stream | None] = {}  # buggify sites: their stream, None if off
        self.fired: dict[str, int] = {}  # buggify fires by site

    # -- streams, buggify ------------------------------------------------------------

    def stream(self, name: str) -> Stream:
        """The random stream called `name` ("network", "faults", "workload/client-3", ...)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(self.seed, name)
        return stream

    def buggify(self, site: str, p: float = 0.25) -> bool:
        """FoundationDB's BUGGIFY: a site is enabled for the whole run with p=0.25 (drawn
        from its own stream, so sites do not disturb each other), then fires with `p`."""
        if not self.buggify_on:
            return False
        if site not in self._sites:
            drawn = Stream(self.seed, "buggify/" + site)
            self._sites[site] = drawn if drawn.random() < 0.25 else None
            self.trace.event("bug", site, self._sites[site] is not None)
        stream = self._sites[site]
        if stream is None or stream.random() >= p:
            return False
        self.fired[site] = self.fired.get(site, 0) + 1
        self.trace.event("bug", site)
        return True

    # -- nodes ---------------------------------------------------------------------------

    def add_node(self, name: str, start: Callable[[Node], None], *,
                 on_crash: Callable[[str, bool], None] | None = None, targets: bool = True) -> Node:
        """Create node `name` and run `start(node)` on it; `start` runs again on every
        restart. `on_crash(name, power_loss)` lets its storage drop what a crash loses.
        `targets=False` spares its processes from random kills (simulated clients)."""
        if name in self._specs:
            raise ValueError(f"node {name!r} already exists")
        if len(self._specs) >= self.max_nodes:
            raise SimulationError(f"at most {self.max_nodes} nodes")
        self._specs[name] = _NodeSpec(name, start, on_crash, targets)
        return self._boot(self._specs[name])

    def _boot(self, spec: _NodeSpec) -> Node:
        node = Node(spec.name, seed=self.seed, creation=spec.creation,
                    rng=self.stream(f"scheduler/{spec.name}/{spec.creation}").random)
        node.tracer = self.trace.tracer(spec.name)
        node.transport = self.network.transport
        node.advance(max(0.0, self.now + spec.skew))
        spec.node = node
        self._refresh()
        for other in self._specs.values():
            if other is not spec:
                self.reconnect(spec.name, other.name)
        with self.active():
            spec.start(node)
        return node

    def reconnect(self, a: str, b: str) -> None:
        """Connect nodes `a` and `b` if both are up and no partition cuts them."""
        node_a, node_b = self._specs[a].node, self._specs[b].node
        if node_a is not None and node_b is not None and self.network.connected(a, b):
            node_a.connect(node_b)

    def node(self, name: str) -> Node | None:
        """The live incarnation of node `name`, or None while it is down."""
        return self._specs[name].node

    def node_names(self, targets_only: bool = False) -> list[str]:
        """Every node's name, in the order they were added."""
        return [s.name for s in self._specs.values() if s.targets or not targets_only]

    def crash_node(self, name: str, *, power_loss: bool = False) -> None:
        """Kill every process of the node and drop it; it stays down until `restart_node`.
        With `power_loss`, its storage also loses commits not yet synced."""
        spec = self._specs[name]
        node = spec.node
        assert node is not None, f"node {name} is already down"
        for peer in node.nodes():  # the others see noconnection, as when a BEAM dies
            node.disconnect(peer)
        for pid in node.processes():
            node.exit(pid, "kill")
        spec.node = None
        spec.stall_until = 0.0
        self._refresh()
        self.network.node_down(name)
        if spec.on_crash is not None:
            spec.on_crash(name, power_loss)

    def _refresh(self) -> None:
        """The nodes the driver steps: up and not stalled, in the order they were added."""
        live = [s for s in self._specs.values() if s.node is not None]
        self._up = [s for s in live if s.stall_until <= self.now]
        self.stalls = len(live) - len(self._up)  # a quick test before `departure`
        for spec in self._up:
            spec.fresh = False

    def stall(self, name: str, seconds: float) -> None:
        """Block the node for `seconds` (a slow synchronous commit: a node's scheduler is
        one thread). It runs nothing and fires no timers meanwhile; what arrives waits in
        the mailboxes, and what it sent in the blocked turn leaves when it ends."""
        assert seconds >= 0, f"stall needs seconds >= 0, got {seconds}"
        spec = self._specs[name]
        spec.stall_until = max(spec.stall_until, self.now + seconds)
        self._refresh()
        self.call_at(spec.stall_until, self._unstall, spec)

    def _unstall(self, spec: _NodeSpec) -> None:
        if spec.node is not None and spec.stall_until <= self.now:
            self._refresh()
            self._catch_up(spec)

    def departure(self, name: str) -> float:
        """When a delivery sent by node `name` now leaves it (later while it is stalled)."""
        return max(self.now, self._specs[name].stall_until)

    def restart_node(self, name: str) -> Node:
        """Boot a fresh incarnation (a new creation number: no pid is reused) and run
        its start function, which recovers from its storage."""
        spec = self._specs[name]
        assert spec.node is None, f"node {name} is up"
        spec.creation += 1
        self.trace.event("restart", name, spec.creation)
        return self._boot(spec)

    def heart(self, name: str, alive: Callable[[], bool], *, every: float = 0.5,
              reboot_after: float = 1.0) -> None:
        """Reboot node `name` when its application has died, as `heart` restarts a BEAM:
        every `every` seconds, if the node is up and `alive()` is false, crash it and
        restart it `reboot_after` seconds later (counted as a restart by "heart@NAME")."""
        assert every > 0 and reboot_after >= 0, (every, reboot_after)
        self.call_after(every, self._beat, name, alive, every, reboot_after)

    def _beat(self, name: str, alive: Callable[[], bool], every: float, reboot_after: float) -> None:
        if self._specs[name].node is not None and not alive():
            self.count_restart(f"heart@{name}")
            self.crash_node(name)
            self.call_after(reboot_after, self._reboot, name)
        self.call_after(every, self._beat, name, alive, every, reboot_after)

    def _reboot(self, name: str) -> None:
        if self._specs[name].node is None:  # faults or a heal may have restarted it already
            self.restart_node(name)

    def set_skew(self, name: str, skew: float) -> None:
        """Set the node's clock to read global time + `skew`. A clock never goes back: when
        the skew shrinks, the node's clock stands still until global time catches up."""
        assert math.isfinite(skew), f"skew must be finite, got {skew}"
        spec = self._specs[name]
        spec.skew = skew
        spec.fresh = False
        if spec.node is not None and spec.stall_until <= self.now:
            self._catch_up(spec)

    def skew(self, name: str) -> float:
        return self._specs[name].skew

    def close(self) -> None:
        """End the world: every process is killed (its coroutine closed), untraced."""
        for spec in self._specs.values():
            node = spec.node
            if node is not None:
                node.tracer = node.transport = None
                for pid in node.processes():
                    node.exit(pid, "kill")
        self._up = []
        self._agenda.clear()

    # -- the agenda --------------------------------------------------------------------------

    def call_at(self, t: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` when global time reaches `t`."""
        assert t >= self.now, f"cannot schedule in the past ({t} < {self.now})"
        if len(self._agenda) >= self.agenda_limit:
            raise SimulationError(f"more than {self.agenda_limit} pending sim events at "
                                  f"t={self.now:.6f} (a message storm?)")
        self._seq += 1
        heappush(self._agenda, (t, self._seq, fn, args))

    def call_after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.call_at(self.now + delay, fn, *args)

    # -- reports from the systems ---------------------------------------------------------

    def fail(self, check: str, message: str) -> None:
        """Stop the run: `check` found something wrong."""
        if self.failure is None:
            self.failure = Failure(check, message, self.now, self.trace.last_events())

    def record_latency(self, op: str, seconds: float) -> None:
        """A client request's latency, for the report's percentiles."""
        assert seconds >= 0, f"{op}: a negative latency ({seconds})"
        samples = self.latencies.get(op)
        if samples is None:
            samples = self.latencies[op] = Samples(self.max_samples)
        samples.add(seconds, self.now)

    def count_fault(self, kind: str, *detail: Any) -> None:
        """Count and trace an injected fault."""
        self.injected[kind] = self.injected.get(kind, 0) + 1
        self.trace.event("fault", kind, *detail)

    def count_restart(self, supervisor: str) -> None:
        self.restarts[supervisor] = self.restarts.get(supervisor, 0) + 1

    # -- the driver ------------------------------------------------------------------------------

    def active(self) -> _Active:
        """A context in which the module-level `buggify()` answers for this simulation."""
        return _Active(self)

    def run(self, until: float) -> None:
        """Run until global time `until`, or until a check fails (`self.failure`)."""
        assert until >= self.now, f"cannot run back to {until} from {self.now}"
        with self.active():
            self._drive(until)

    def _drive(self, until: float) -> None:
        trace = self.trace
        records = trace.records
        agenda = self._agenda
        specs = self._specs
        sched = self._sched
        quantum = self.quantum
        flush_at = trace.checkpoint
        arrive = self.network.arrive
        resolution = self.resolution
        instant_limit = self.instant_limit
        inf = math.inf
        ceil = math.ceil
        turns_here = 0
        ready = [spec for spec in self._up if spec.node.runnable()]  # type: ignore[union-attr]  # a spec in _up has its node
        while self.failure is None:
            # Run what is ready at this instant. Nodes meet only through the network, so
            # stepping one node can leave only that node runnable: no need to rescan.
            now = self.now
            while ready:
                n = len(ready)
                i = 0 if n == 1 else min(n - 1, int(sched() * n))
                spec = ready[i]
                node = spec.node
                if node.now() < now + spec.skew:  # type: ignore[union-attr]  # a spec in _up has its node
                    if spec.skew:  # woken by an arrival or a kill's exit signals
                        self._catch_up(spec)
                    else:  # `_catch_up` without a skew (the step makes it unsure anyway)
                        node.advance(now)  # type: ignore[union-attr]  # a spec in _up has its node
                turns_here += node.step(quantum)  # type: ignore[union-attr]  # a spec in _up has its node
                spec.fresh = False
                if not node.runnable() or spec.stall_until > now:  # type: ignore[union-attr]  # a spec in _up has its node
                    del ready[i]
                if turns_here > instant_limit:
                    raise SimulationError(
                        f"livelock: more than {instant_limit} turns at virtual time "
                        f"{now:.6f} without the clock moving (node {node.name})")  # type: ignore[union-attr]  # a spec in _up has its node
                if len(records) >= flush_at:
                    trace.flush()
                if self.failure is not None:
                    return
            # Nothing is ready: on to the next moment something happens. A node's next
            # timer is cached until the node runs, advances or is touched by a sim event;
            # only the nodes with a timer due are advanced, the others when next stepped.
            first = inf  # the first node timer
            for spec in self._up:
                if not spec.fresh:
                    node = spec.node
                    d = node.next_deadline()  # type: ignore[union-attr]  # a spec in _up has its node
                    spec.fire = inf if d is None else now if d <= node.now() else d - spec.skew  # type: ignore[union-attr]  # a spec in _up has its node
                    spec.fresh = True
                if spec.fire < first:
                    first = spec.fire
            t = agenda[0][0] if agenda else inf
            if first < t:
                t = first
            if resolution and t < inf:
                k = ceil(t / resolution)  # the grid point at or after t, exact:
                tick = k * resolution
                if tick < t or (k - 1) * resolution >= t:  # the division rounded the wrong way
                    tick = self._tick_after(t)
                t = tick if tick > now else now
            assert t >= now, f"the clock would go back from {now} to {t}"
            if t > until:
                break
            if t > now:
                self.now = t
                trace.at_time(t)
                turns_here = 0
            # Only a node an arrival reached, or whose timers fire, can be ready now (no
            # node was left ready), unless another sim event ran: then any node can be.
            arrived: list[str] | None = []
            while agenda and agenda[0][0] <= t:
                _, _, fn, args = heappop(agenda)
                fn(*args)
                if fn is arrive:
                    if arrived is not None:
                        arrived.append(args[0])  # the destination's name
                else:  # faults, checks, restarts may touch any node
                    arrived = None
                    for spec in self._up:
                        spec.fresh = False
                if self.failure is not None:
                    return
            # Fire the timers now due, and see which nodes are ready at the new instant.
            up = self._up
            if arrived is not None and len(arrived) == 1 and first > t:  # one arrival, no timer
                spec = specs[arrived[0]]  # in `up` unless down or stalled (unstalling is a sim event)
                if spec.node is not None and spec.stall_until <= t and spec.node.runnable():
                    ready.append(spec)
            else:
                for spec in up:
                    if spec.fire <= t:
                        self._catch_up(spec)
                    elif arrived is not None and spec.name not in arrived:
                        continue
                    if spec.node.runnable():  # type: ignore[union-attr]  # a spec in _up has its node
                        ready.append(spec)
            if self._up is not up:  # a timer stalled a node (a slow commit)
                ready = [spec for spec in self._up if spec.node.runnable()]  # type: ignore[union-attr]  # a spec in _up has its node
            if len(records) >= flush_at:
                trace.flush()
        if self.failure is None and self.now < until:
            self.now = until
            trace.at_time(until)

    def _tick_after(self, t: float) -> float:
        """The first grid point k * resolution at or after `t` (never before now)."""
        res = self.resolution
        k = math.ceil(t / res)  # the division may round either way: settle on the exact k
        if k * res < t:
            k += 1
        elif (k - 1) * res >= t:
            k -= 1
        assert (k - 1) * res < t <= k * res, (t, res, k)
        return max(self.now, k * res)

    def _catch_up(self, spec: _NodeSpec) -> None:
        """Move the node's clock to global time through its skew, firing the timers due by
        then (exactly at their deadline, whatever rounding the skew brings)."""
        node = spec.node
        skew = spec.skew
        target = self.now + skew
        current = node.now()  # type: ignore[union-attr]  # a spec in _up has its node
        if current > target:
            target = current
        if skew:
            d = node.next_deadline()  # type: ignore[union-attr]  # a spec in _up has its node
            if d is not None and d > target and d - skew <= self.now:
                target = d
        node.advance(target)  # type: ignore[union-attr]  # a spec in _up has its node
        spec.fresh = False


class _Active:
    __slots__ = ("sim", "previous")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def __enter__(self) -> Simulation:
        global _active
        self.previous, _active = _active, self.sim
        return self.sim

    def __exit__(self, *exc: Any) -> None:
        global _active
        _active = self.previous


def buggify(site: str, p: float = 0.25) -> bool:
    """`Simulation.buggify` of the running simulation; always False outside one (in
    production code a buggify point costs one global read)."""
    return _active is not None and _active.buggify(site, p)


def active() -> Simulation | None:
    """The simulation running now, if any."""
    return _active
