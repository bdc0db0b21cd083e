"""Fault kinds, the per-seed fault plan (chaos or swarm), and the injector.

Three families:
- discrete faults, drawn every `tick` virtual seconds with probability rate * tick
  (rate per virtual second): kill_process, kill_tree, kill_node, power_loss, partition,
  clock_skew, disk_full;
- message faults, a probability per message: drop, duplicate, delay, reorder;
- storage faults, a probability per commit: commit_fail, commit_delay.

`chaos` mode injects every configured kind at its rate; `swarm` mode first draws, per
seed, which kinds are on and scales each rate by a factor in [0.1, 1] (Groce et al.'s
swarm testing, TigerBeetle's `options_swarm`). Scripted faults (`[[faults.script]]`, any
kind) run in every mode. Each discrete kind draws from its own stream ("faults/kill_node",
...); the message faults of a message, and the storage faults of a commit, come from one
draw of their family's stream ("network/faults", "storage/counter1/faults") in which
each kind owns a slot (`Draws`). Either way turning a kind off, or changing its rate,
leaves the others' decisions alone (while every rate of a family is at most 1/4 for
messages, 1/2 for commits). Every fault injected is logged in script form (`log`): the run's
decision log, which replays the same faults without the random draws (the shrinker
starts from it).

Heavy profiles (`--faults crash-heavy`, or `PROFILES`): chaos with only the kinds of one
family, at rates well past a scenario's usual ones, to push one part of a system past
its comfort (the other parameters of those kinds, such as durations, are the
scenario's):
- `crash-heavy`: processes killed 3 times a virtual second, trees 0.5, nodes 0.3 (down
  0.2-2 s), power cuts 0.2;
- `storage-heavy`: full disks 0.5 a second, 5 % of commits failing and 20 % delayed,
  node crashes and power cuts 0.1;
- `network-heavy`: 5 % of messages dropped, duplicated or reordered and 10 % delayed,
  partitions 0.3 a second, clock skews 0.2.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .schema import REQUIRED, Field

if TYPE_CHECKING:
    from actors import Node, Pid

    from .core import Simulation, Stream

MESSAGE_FAULTS = ("drop", "duplicate", "delay", "reorder")  # in precedence order
STORAGE_FAULTS = ("commit_fail", "commit_delay")


class Draws:
    """Which of a family's faults strikes one event, from one draw of the family's stream.

    Of n kinds (in precedence order) the i-th owns the slot starting at i/n of [0, 1) and
    strikes when the draw falls within its rate past that start (wrapping past 1): its
    probability is its rate, and while every rate is at most 1/n, a kind's decisions do
    not depend on the other kinds' rates. A rate above 1/n reaches into the next slots,
    where the kind earlier in precedence wins. The extra seconds (uniform in [0, most))
    come from where in its reach the draw fell. Drawn on every event, struck or not."""

    __slots__ = ("random", "width", "reach", "kinds")

    def __init__(self, family: tuple[str, ...], rates: dict[str, float], most: dict[str, float],
                 random: Callable[[], float]) -> None:
        n = len(family)
        self.random = random
        self.width = 1.0 / n  # an exact float for n = 2 and 4
        self.kinds = [(kind, i / n, rates[kind], most.get(kind, 0.0))
                      for i, kind in enumerate(family) if rates.get(kind, 0.0) > 0]
        assert self.kinds, "a family's draws need a kind with a rate"
        assert all(0.0 < p <= 1.0 for _, _, p, _ in self.kinds), self.kinds
        self.reach = max(p for _, _, p, _ in self.kinds)

    def strike(self, u: float) -> tuple[str, float]:
        """The kind the draw `u` strikes ("" for none) and its extra seconds."""
        if u % self.width >= self.reach:  # past every kind's reach within its slot
            return "", 0.0
        for kind, start, p, most in self.kinds:
            offset = (u - start) % 1.0
            if offset < p:
                return kind, most * offset / p
        return "", 0.0


class EventFaults:
    """Faults that strike single events: the messages of one link, the commits of one
    node. A scripted one comes first; then the family's `Draws` is drawn on every event,
    hit or not, so the run's other decisions do not depend on the script."""

    __slots__ = ("where", "script")

    def __init__(self, **where: str) -> None:
        self.where = where  # how the log names the place: src and dst, or node
        self.script: deque[dict[str, Any]] = deque()  # scripted faults, in time order

    def roll(self, count: int, now: float, drawn: tuple[str, float], log: list[dict[str, Any]] | None
             ) -> tuple[str, float]:
        """The fault ("" for none) and extra seconds for the `count`-th event, at `now`:
        a scripted one due, else what the event's draw struck (`Draws.strike`)."""
        fault, extra = drawn
        script = self.script
        if script and script[0]["at"] <= now and count >= (script[0].get("nth") or 0):
            entry = script.popleft()
            fault, extra = entry["kind"], entry.get("delay") or 0.0
        if fault and log is not None:
            entry = {"at": now, "kind": fault, **self.where, "nth": count}
            if "delay" in KINDS[fault].script:
                entry["delay"] = extra
            log.append(entry)
        return fault, extra


class Storage(Protocol):
    """What a system's storage on one node offers the injector (`sim.disk.Disk`)."""

    log: list[dict[str, Any]] | None

    def fill_disk(self, full: bool) -> None:
        """While full, commits fail as they would with ENOSPC / MapFullError."""

    def set_rates(self, rates: dict[str, float], delay_max: float) -> None:
        """From now on each commit fails ("commit_fail") or blocks the node for up to
        `delay_max` seconds ("commit_delay") with these probabilities."""

    def script(self, entry: dict[str, Any]) -> None:
        """A scripted commit fault (see `sim.disk.Disk.script`)."""


def _rate(default: float) -> Field:
    return Field.float(default, 0.0, 1000.0, "faults per virtual second")


def _prob(default: float) -> Field:
    return Field.float(default, 0.0, 1.0, "probability per message or commit")


def _seconds(default: float, doc: str = "") -> Field:
    return Field.seconds(default, 0.0, 3600.0, doc)


_NODE = Field.str(None, doc="node name (default: drawn at random)")
_REQUIRED_NODE = Field.str(REQUIRED, doc="node name")
_DOWN = Field.range((0.2, 2.0), 0.0, 3600.0, "seconds the node stays down before its restart")
_NTH = Field.int(None, 1, 2**62, "no earlier than this message of the link (commit of the node)")
_LINK = {"src": Field.str(REQUIRED, doc="sending node"), "dst": Field.str(REQUIRED, doc="receiving node"),
         "nth": _NTH}


@dataclass(frozen=True)
class Kind:
    family: str  # "discrete", "message", "storage"
    params: dict[str, Field]  # in [faults.<kind>]
    script: dict[str, Field]  # extra keys of a [[faults.script]] entry of this kind


KINDS: dict[str, Kind] = {
    "kill_process": Kind("discrete", {"rate": _rate(0.5)}, {
        "node": _NODE, "name": Field.str(None, doc="registered name of the victim"),
        "pick": Field.float(None, 0.0, 1.0, "which of the node's processes, as a fraction")}),
    "kill_tree": Kind("discrete", {"rate": _rate(0.05)}, {
        "node": _NODE, "name": Field.str(None, doc="registered name of the tree's root"),
        "pick": Field.float(None, 0.0, 1.0, "which of the node's supervisors, as a fraction")}),
    "kill_node": Kind("discrete", {"rate": _rate(0.02), "down": _DOWN},
                      {"node": _NODE, "down": _seconds(1.0)}),
    "power_loss": Kind("discrete", {"rate": _rate(0.01), "down": _DOWN},
                       {"node": _NODE, "down": _seconds(1.0)}),
    "partition": Kind("discrete", {"rate": _rate(0.03), "duration": Field.range((0.5, 3.0), 0.0, 3600.0)}, {
        "groups": Field.groups(None, "who stays together (default: a random split)"),
        "oneway": Field.bool(False, "cut only the links from earlier groups to later ones"),
        "duration": _seconds(2.0)}),
    "clock_skew": Kind("discrete", {"rate": _rate(0.03), "max": _seconds(2.0),
                                    "duration": Field.range((1.0, 5.0), 0.0, 3600.0)}, {
        "node": _NODE, "skew": Field.float(1.0, -3600.0, 3600.0, "seconds the node's clock is off"),
        "duration": _seconds(2.0)}),
    "disk_full": Kind("discrete", {"rate": _rate(0.02), "duration": Field.range((0.5, 2.0), 0.0, 3600.0)},
                      {"node": _NODE, "duration": _seconds(1.0)}),
    "drop": Kind("message", {"rate": _prob(0.01)}, _LINK),
    "duplicate": Kind("message", {"rate": _prob(0.01)},
                      {**_LINK, "delay": _seconds(0.001, "the copy arrives this much later")}),
    "delay": Kind("message", {"rate": _prob(0.02), "max": _seconds(0.3, "most extra seconds")},
                  {**_LINK, "delay": _seconds(0.1, "extra seconds; later messages wait behind it")}),
    "reorder": Kind("message", {"rate": _prob(0.01), "max": _seconds(0.05, "most extra seconds")},
                    {**_LINK, "delay": _seconds(0.02, "extra seconds; later messages may overtake it")}),
    "commit_fail": Kind("storage", {"rate": _prob(0.02)}, {"node": _REQUIRED_NODE, "nth": _NTH}),
    "commit_delay": Kind("storage", {"rate": _prob(0.05), "max": _seconds(0.1, "most seconds blocked")},
                         {"node": _REQUIRED_NODE, "nth": _NTH, "delay": _seconds(0.05, "seconds blocked")}),
}
DISCRETE = [k for k, kind in KINDS.items() if kind.family == "discrete"]
PROFILES: dict[str, dict[str, float]] = {  # see the module docstring
    "crash-heavy": {"kill_process": 3.0, "kill_tree": 0.5, "kill_node": 0.3, "power_loss": 0.2},
    "storage-heavy": {"disk_full": 0.5, "commit_fail": 0.05, "commit_delay": 0.2, "kill_node": 0.1,
                      "power_loss": 0.1},
    "network-heavy": {"drop": 0.05, "duplicate": 0.05, "reorder": 0.05, "delay": 0.1, "partition": 0.3,
                      "clock_skew": 0.2},
}
assert all(kind in KINDS for profile in PROFILES.values() for kind in profile), PROFILES
DUPLICATE_MAX = 0.01  # a duplicate arrives up to this much after the original
assert set(MESSAGE_FAULTS) == {k for k, kind in KINDS.items() if kind.family == "message"}
assert set(STORAGE_FAULTS) == {k for k, kind in KINDS.items() if kind.family == "storage"}


def plan(mode: str, configured: dict[str, dict[str, Any]], stream: Stream) -> dict[str, dict[str, Any]]:
    """The kinds (and parameters) this seed runs with. `configured` maps each kind the
    scenario names to its parameters; swarm mode draws a subset and scales the rates."""
    if mode == "off":
        return {}
    if mode == "chaos":
        return {k: dict(p) for k, p in configured.items() if p["rate"] > 0}
    assert mode == "swarm", mode
    chosen = {}
    for kind, params in configured.items():  # one draw pair per kind, whatever the outcome
        on, scale = stream.random() < 0.5, 0.1 + 0.9 * stream.random()
        if on and params["rate"] > 0:
            chosen[kind] = {**params, "rate": params["rate"] * scale}
    if not chosen and configured:
        kind = list(configured)[stream.below(len(configured))]
        chosen[kind] = dict(configured[kind])
    return chosen


class Injector:
    """Injects the planned and scripted faults into a simulation while its phase allows."""

    def __init__(self, sim: Simulation, kinds: dict[str, dict[str, Any]], tick: float,
                 storages: dict[str, Storage]) -> None:
        assert tick > 0, "the fault tick must be positive"
        self.sim = sim
        self.kinds = kinds
        self.tick = tick
        self.storages = storages  # by node name
        self.streams = {kind: sim.stream(f"faults/{kind}") for kind in DISCRETE}
        self.log: list[dict[str, Any]] = []  # every fault injected, in script form
        sim.network.log = self.log
        for storage in storages.values():
            storage.log = self.log
        self.active = False
        self._ticking = False
        self._undo_serial = 0
        self._undos: dict[tuple[str, str], int] = {}  # disturbance -> the undo that may end it

    def script(self, entries: list[dict[str, Any]]) -> None:
        """Schedule scripted faults: discrete ones at their time, the others on their link
        or node. Entries naming a node without storage are skipped."""
        for entry in sorted(entries, key=lambda e: e["at"]):  # stable: ties keep file order
            family = KINDS[entry["kind"]].family
            if family == "discrete":
                self.sim.call_at(entry["at"], self.inject, entry)
            elif family == "message":
                self.sim.network.script(entry)
            elif entry["node"] in self.storages:
                self.storages[entry["node"]].script(entry)

    # -- phases -------------------------------------------------------------------------

    def start(self) -> None:
        """Faults on: random draws begin, message and commit faults take effect."""
        self.active = True
        kinds = self.kinds
        self.sim.network.set_rates(
            {k: kinds[k]["rate"] for k in MESSAGE_FAULTS if k in kinds},
            {"duplicate": DUPLICATE_MAX, **{k: kinds[k]["max"] for k in ("delay", "reorder") if k in kinds}})
        for storage in self.storages.values():
            storage.set_rates({k: kinds[k]["rate"] for k in STORAGE_FAULTS if k in kinds},
                              kinds.get("commit_delay", {}).get("max", 0.0))
        if not self._ticking and any(k in kinds for k in DISCRETE):
            self._ticking = True
            self.sim.call_after(self.tick, self._tick)

    def stop(self) -> None:
        """Faults off: no new ones; disturbances already under way run their course."""
        self.active = False
        self.sim.network.set_rates({})
        for storage in self.storages.values():
            storage.set_rates({}, 0.0)

    def heal(self) -> None:
        """Undo every disturbance now: partitions, skews, full disks, nodes that are down."""
        sim = self.sim
        self._undos.clear()  # pending undos find nothing left to undo
        self._heal_partition()
        for name in sim.node_names():
            if sim.skew(name) != 0.0:
                sim.set_skew(name, 0.0)
            if name in self.storages:
                self.storages[name].fill_disk(False)
            if sim.node(name) is None:
                sim.restart_node(name)

    def _undo_after(self, duration: float, key: tuple[str, str], undo: Any, *args: Any) -> None:
        """End a disturbance after `duration`, unless a newer one of the same key (or a
        heal) took its place by then."""
        self._undo_serial += 1
        self._undos[key] = self._undo_serial
        self.sim.call_after(duration, self._undo, key, self._undo_serial, undo, args)

    def _undo(self, key: tuple[str, str], serial: int, undo: Any, args: tuple) -> None:
        if self._undos.get(key) == serial:
            del self._undos[key]
            undo(*args)

    def _tick(self) -> None:
        if not self.active:
            self._ticking = False
            return
        for kind in DISCRETE:
            params = self.kinds.get(kind)
            if params is not None and self.streams[kind].random() < params["rate"] * self.tick:
                self.inject({"kind": kind}, params)
        self.sim.call_after(self.tick, self._tick)

    # -- discrete faults ----------------------------------------------------------------------

    def inject(self, entry: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        """Inject one discrete fault: `entry` is a script entry (what it leaves out is
        drawn from the kind's stream); `params` are the kind's random parameters."""
        kind = entry["kind"]
        if params is None:
            params = {k: f.default for k, f in KINDS[kind].params.items()}
        done = getattr(self, "_" + kind)(entry, params, self.streams[kind])
        if done is not None:
            self.log.append({"at": self.sim.now, "kind": kind, **done})

    def _target(self, entry: dict[str, Any], stream: Stream, need_up: bool = True) -> str | None:
        """The node a fault hits: the one named, or one drawn among the fault targets."""
        sim = self.sim
        if entry.get("node") is not None:
            name = entry["node"]
            return name if not need_up or sim.node(name) is not None else None
        names = [n for n in sim.node_names(targets_only=True) if not need_up or sim.node(n) is not None]
        return names[stream.below(len(names))] if names else None

    def _victim(self, entry: dict[str, Any], stream: Stream, roots_only: bool) -> tuple[str, Any, dict] | None:
        name = self._target(entry, stream)
        if name is None:
            return None
        node = self.sim.node(name)
        assert node is not None, f"{name} was picked as a target: it is up"
        if entry.get("name") is not None:
            pid = node.whereis(entry["name"])
            return (name, pid, {"node": name, "name": entry["name"]}) if pid is not None else None
        pids = node.processes()
        if roots_only:
            parents = {_info(node, p)["parent"] for p in pids}  # only tested for membership
            pids = [p for p in pids if p in parents]
        if not pids:
            return None
        index = (min(len(pids) - 1, int(entry["pick"] * len(pids))) if entry.get("pick") is not None
                 else stream.below(len(pids)))
        pid = pids[index]
        registered = _info(node, pid)["registered_name"]
        target = {"name": registered} if type(registered) is str else {"pick": (index + 0.5) / len(pids)}
        return name, pid, {"node": name, **target}

    def _kill_process(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        victim = self._victim(entry, stream, roots_only=False)
        if victim is None:
            return None
        name, pid, target = victim
        self.sim.count_fault("kill_process", name, pid.serial)
        _up(self.sim, name).exit(pid, "kill")
        return target

    def _kill_tree(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        victim = self._victim(entry, stream, roots_only=True)
        if victim is None:
            return None
        name, root, target = victim
        node = _up(self.sim, name)
        tree = [root]
        members = {root}  # membership only, never iterated
        for pid in node.processes():  # spawn order: a parent comes before its children
            if _info(node, pid)["parent"] in members:
                tree.append(pid)
                members.add(pid)
        self.sim.count_fault("kill_tree", name, root.serial, len(tree))
        for pid in tree:
            node.exit(pid, "kill")
        return target

    def _crash(self, kind: str, entry: dict, params: dict, stream: Stream) -> dict | None:
        name = self._target(entry, stream)
        if name is None:
            return None
        down = entry["down"] if entry.get("down") is not None else stream.uniform(*params["down"])
        self.sim.count_fault(kind, name, down)
        self.sim.crash_node(name, power_loss=kind == "power_loss")
        self._undo_after(down, ("down", name), self._restart, name)
        return {"node": name, "down": down}

    def _kill_node(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        return self._crash("kill_node", entry, params, stream)

    def _power_loss(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        return self._crash("power_loss", entry, params, stream)

    def _restart(self, name: str) -> None:
        if self.sim.node(name) is None:  # the system may have rebooted it already
            self.sim.restart_node(name)

    def _partition(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        sim = self.sim
        if sim.network.partitioned:
            return None  # one partition at a time: its heal ends it
        groups = entry.get("groups")
        if groups is None:
            names = sim.node_names()
            sides = [stream.below(2) for _ in names]
            if len(set(sides)) < 2:
                sides[stream.below(len(sides))] ^= 1
            groups = [[n for n, side in zip(names, sides, strict=True) if side == g] for g in (0, 1)]
            if not all(groups):
                return None  # a single node: nothing to cut
        duration = entry["duration"] if "duration" in entry else stream.uniform(*params["duration"])
        oneway = entry.get("oneway", False)
        sim.count_fault("partition", groups, oneway, duration)
        sim.network.partition(groups, oneway)
        self._undo_after(duration, ("partition", ""), self._heal_partition)
        return {"groups": groups, "oneway": oneway, "duration": duration}

    def _heal_partition(self) -> None:
        if self.sim.network.partitioned:
            self.sim.network.heal()
            self.sim.trace.event("heal", "partition")

    def _clock_skew(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        name = self._target(entry, stream, need_up=False)
        if name is None:
            return None
        skew = entry["skew"] if "skew" in entry else stream.uniform(-params["max"], params["max"])
        duration = entry["duration"] if "duration" in entry else stream.uniform(*params["duration"])
        self.sim.count_fault("clock_skew", name, skew, duration)
        self.sim.set_skew(name, skew)
        self._undo_after(duration, ("clock_skew", name), self.sim.set_skew, name, 0.0)
        return {"node": name, "skew": skew, "duration": duration}

    def _disk_full(self, entry: dict, params: dict, stream: Stream) -> dict | None:
        candidates = [n for n in self.sim.node_names() if n in self.storages]
        if entry.get("node") is not None:
            candidates = [n for n in candidates if n == entry["node"]]
        if not candidates:
            return None
        name = candidates[stream.below(len(candidates))]
        duration = entry["duration"] if "duration" in entry else stream.uniform(*params["duration"])
        self.sim.count_fault("disk_full", name, duration)
        self.storages[name].fill_disk(True)
        self._undo_after(duration, ("disk_full", name), self.storages[name].fill_disk, False)
        return {"node": name, "duration": duration}


def _up(sim: Simulation, name: str) -> Node:
    """Node `name`, which the fault picked because it is up."""
    node = sim.node(name)
    assert node is not None, f"node {name} is down"
    return node


def _info(node: Node, pid: Pid) -> dict[str, Any]:
    """`process_info` of a process the fault saw alive in this same instant."""
    info = node.process_info(pid)
    assert info is not None, f"{pid!r} is alive"
    return info
