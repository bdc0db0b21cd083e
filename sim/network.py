"""The simulated network between nodes: latency, per-pair order, message faults, partitions.

It is the nodes' transport: every delivery one node hands another (see
`actors.boundary` for the kinds) comes through `transport`, classified by its kind:

- messages (send, cast, call request) and replies are scheduled to arrive after the
  link's latency, and faults touch them: `drop`, `duplicate`, `delay` (late, holding back
  the later ones: order kept) and `reorder` (late, letting the later ones overtake). The
  monitor a call request carries is a signal: when the request is dropped (or is for a
  pid of an earlier incarnation) the monitor alone reaches the far node at once, and a
  duplicate carries none;
- signals (exit, linked exit, down) travel the same way but are never dropped or
  doubled: Erlang only loses them with the connection, and then says so;
- setting links and monitors up or down (link, unlink, monitor, demonitor) reaches the
  far node at once, and so does its answer ("noproc"): setting one up takes no time here
  (a wire carries them in order with the rest). It needs a connection, as Erlang's does:
  while the two nodes are not connected (a partition cuts either direction between them,
  or the far node is down), a link or monitor being set up fails at once with
  `noconnection` (an exit signal, a `Down`), and so does the monitor of a call (the call
  fails at once, its request lost); taking one down needs nothing from the far side.

With `codec` on (a scenario's `[network] codec`, on by default), every delivery crosses as
the wire's bytes (`actors.codec.encode_term`), decoded on arrival by the far node: a
value that could not go over a socket fails the run, naming its kind, what it carries
and the two nodes.

Deliveries on one (src, dst) link arrive in the order they were sent, as between two
Erlang nodes, unless a fault says otherwise. A delivery for a node that went down (or for
a pid of its earlier incarnation) is lost on arrival. A partition cuts links and
disconnects the nodes on either side (`Node.disconnect`, each side's own): links and
monitors across it break with `noconnection`, calls waiting across it fail with it, and
what was in flight or is sent across while cut is lost. The heal reconnects them.
(Erlang notices a silent partition after `net_ticktime`; the simulation notices at once.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from actors import NOCONNECTION, Pid, Ref, RemoteName
from actors.boundary import KIND, CallRequest, Delivery, DownSignal, LinkedExit, Monitor, kind_of
from actors.boundary import Link as LinkSignal
from actors.codec import decode_term, encode_term

if TYPE_CHECKING:
    from actors import Node

    from .core import Simulation

from .faults import MESSAGE_FAULTS, Draws, EventFaults

# What the trace calls each kind of delivery (see actors.boundary).
TRACE_KIND = {"send": "msg", "cast": "msg", "call": "msg", "reply": "reply", "exit": "exit",
              "linked_exit": "exit", "down": "down"}
_TRACED = {cls: TRACE_KIND.get(kind) for cls, kind in KIND.items()}  # by class; None for SETUP's


class _Encoded(NamedTuple):
    """A delivery in flight, its payload (and a name it is addressed to) as the wire's bytes."""

    delivery: Delivery
    data: bytes


def _decoded(delivery: Any, dst: Node) -> Delivery:
    """What the far node takes in: decoded there (its pids resolve to its processes)."""
    if type(delivery) is not _Encoded:
        return delivery
    original, data = delivery
    decoded = decode_term(data, dst)
    if type(original.to) is Pid:
        return original._replace(**{original._fields[-1]: decoded})
    to, payload = decoded
    return original._replace(**{"to": to, original._fields[-1]: payload})


_SCALARS = frozenset({str, bytes, float, bool, type(None), Pid, Ref})
_LO, _HI = -(1 << 63), 1 << 64  # what msgpack's integers hold


def _plain(value: Any) -> bool:
    """True for immutable data whose round trip through the codec changes nothing: a
    scalar, or a tuple of them (one level), every int within msgpack's range."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return _LO <= value < _HI
    if kind is not tuple or len(value) > 16:
        return False
    for item in value:
        kind = type(item)
        if kind is int:
            if not _LO <= item < _HI:
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _unmonitored(delivery: Any) -> Any:
    """A copy of a delivery in flight (encoded or not) without the monitor a call carries."""
    if type(delivery) is _Encoded:
        return _Encoded(_unmonitored(delivery.delivery), delivery.data)
    return delivery._replace(monitor=False) if type(delivery) is CallRequest else delivery


def _serial(dst: Node | None, delivery: Delivery) -> int:
    """The serial of the process a delivery is for, as the trace shows it (0: a caller
    outside any process, or a name nobody holds)."""
    to = delivery.to
    if to is None:
        return 0
    if type(to) is not Pid:
        to = dst.whereis(to) if dst is not None else None
        if to is None:
            return 0
    return to.serial


def _meant_for(dst: Node, delivery: Delivery) -> bool:
    """False for a delivery to a pid, or a reply to a call, of an earlier incarnation."""
    to = delivery.to
    if type(to) is Pid:
        return to.serial >> 40 == dst.creation
    if to is None:  # a caller outside any process: its call's tag says which incarnation
        return delivery.tag.serial >> 40 == dst.creation  # type: ignore[union-attr]
    return True


class Link:
    """One direction between two nodes."""

    __slots__ = ("lo", "hi", "last", "cut", "epoch", "count", "faults")

    def __init__(self, src: str, dst: str, lo: float, hi: float) -> None:
        self.lo = lo
        self.hi = hi
        self.last = 0.0  # the latest arrival scheduled so far: later sends arrive after it
        self.cut = False
        self.epoch = 0  # connections so far: a delivery of an earlier one is lost on arrival
        self.count = 0  # messages sent so far (what a scripted fault's `nth` counts)
        self.faults = EventFaults(src=src, dst=dst)


class Network:
    """Latency and faults between the nodes of one simulation."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.latency = (0.001, 0.005)
        self._latencies: dict[tuple[str, str], tuple[float, float]] = {}
        self._links: dict[tuple[str, str], Link] = {}
        self._rand = sim.stream("network").random  # latencies only: faults draw on their own
        self._random = sim.stream("network/faults").random  # one draw a message (`Draws`)
        self._draws: Draws | None = None
        self.log: list[dict[str, Any]] | None = None  # where injected faults are logged
        self.sent = 0
        self.partitioned = False
        self.arrive = self._arrive  # one bound method: the driver tells arrivals apart by it
        self._answering: tuple[str, str] | None = None  # (src, dst) of answers that go at once
        self.codec = False  # deliveries cross as bytes, as on a wire (see `crossing`); scenarios turn it on

    # -- configuration -------------------------------------------------------------------

    def set_latency(self, lo: float, hi: float, between: tuple[str, str] | None = None) -> None:
        """One-way latency, uniform in [lo, hi] seconds: the default, or for the link
        between two nodes (both directions)."""
        assert 0 < lo <= hi, f"latency needs 0 < lo <= hi, got [{lo}, {hi}]"
        if between is None:
            self.latency = (lo, hi)
        else:
            a, b = between
            self._latencies[(a, b)] = self._latencies[(b, a)] = (lo, hi)
        for (a, b), link in self._links.items():
            link.lo, link.hi = self._latencies.get((a, b), self.latency)

    def set_rates(self, rates: dict[str, float], extra: dict[str, float] | None = None) -> None:
        """Per-message fault probabilities (drop, duplicate, delay, reorder; missing: 0) and
        the most extra seconds a delay or a reorder adds."""
        for kind in MESSAGE_FAULTS:
            p = rates.get(kind, 0.0)
            assert 0.0 <= p <= 1.0, f"{kind} rate must be a probability, got {p}"
        on = any(rates.get(kind, 0.0) > 0 for kind in MESSAGE_FAULTS)
        self._draws = Draws(MESSAGE_FAULTS, rates, extra or {}, self._random) if on else None

    def script(self, entry: dict[str, Any]) -> None:
        """A scripted message fault (entries come in time order): the first message sent
        on src -> dst at or after `at`, and no earlier than the link's `nth`, gets it."""
        self._link(entry["src"], entry["dst"]).faults.script.append(entry)

    def _link(self, src: str, dst: str) -> Link:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[(src, dst)] = Link(src, dst, *self._latencies.get((src, dst), self.latency))
        return link

    # -- deliveries ------------------------------------------------------------------------

    def transport(self, src: Node, dst_name: str, delivery: Delivery) -> None:
        """The kernel's transport hook: schedule the delivery's arrival (see the module
        docstring for what each kind of delivery meets on the way)."""
        kind = _TRACED[type(delivery)]  # None: setting a link or monitor up or down
        to = delivery.to
        if kind is None and type(to) is Pid:  # ids only, at once: the most frequent case
            self._at_once(src.name, dst_name, delivery)
            return
        original = delivery
        # The kernel's envelope is ids by construction: what the application put in crosses
        # as bytes, unless it is plain immutable data (its round trip would change nothing).
        if self.codec:
            payload = delivery[-1]
            if type(payload) is int:  # a reply's value, mostly
                plain = _LO <= payload < _HI
            else:
                plain = type(payload) in _SCALARS or _plain(payload)
            if not (plain and (type(to) is Pid or type(to) in _SCALARS or _plain(to))):
                data = self.crossing(src, dst_name, delivery)
                if data is None:
                    return
                delivery = _Encoded(delivery, data)  # type: ignore[assignment]
        src_name = src.name
        answering = self._answering
        if kind is None or (answering is not None and answering[0] == src_name and answering[1] == dst_name):
            self._at_once(src_name, dst_name, delivery)
            return
        sim = self.sim
        record = sim.trace.append
        link = self._links.get((src_name, dst_name)) or self._link(src_name, dst_name)
        dst = sim.node(dst_name)
        if type(to) is Pid:  # the common case of `_serial` and `_meant_for`, inline
            serial = to.serial
            meant = dst is not None and serial >> 40 == dst.creation
        else:
            serial = _serial(dst, original)
            meant = dst is not None and _meant_for(dst, original)
        self.sent += 1
        if link.cut or (self.partitioned and type(original) is CallRequest and original.monitor
                        and not self.connected(src_name, dst_name)):  # a call needs a connection
            record(("send", src_name, dst_name, serial, kind, "cut"))
            self._monitor_alone(src_name, dst_name, original)  # fails with noconnection
            return
        if not meant:
            # The node is down (no connection: a call's monitor fails with noconnection), or
            # this is for a pid (or call) of its earlier incarnation ("noproc"): lost on arrival.
            self._monitor_alone(src_name, dst_name, original)
            original, delivery, dst = _unmonitored(original), _unmonitored(delivery), None
        depart = sim.departure(src_name) if sim.stalls else sim.now
        arrival = depart + link.lo + (link.hi - link.lo) * self._rand()
        fault = ""
        if kind == "msg" or kind == "reply":
            link.count += 1
            faults, draws = link.faults, self._draws
            if draws is not None:  # one draw a message; mostly it strikes nothing (`Draws.strike`)
                u = draws.random()
                if faults.script or u % draws.width < draws.reach:
                    fault, extra = faults.roll(link.count, sim.now, draws.strike(u), self.log)
            elif faults.script:
                fault, extra = faults.roll(link.count, sim.now, ("", 0.0), self.log)
            if fault:
                sim.injected[fault] = sim.injected.get(fault, 0) + 1
                if fault == "drop":
                    record(("send", src_name, dst_name, serial, kind, fault))
                    self._monitor_alone(src_name, dst_name, original)
                    return
                if fault == "duplicate":
                    sim.call_at(max(arrival, link.last) + extra, self.arrive, dst_name, dst,
                                _unmonitored(delivery), kind, serial, link, link.epoch)
                else:
                    arrival += extra
        if fault != "reorder":
            if arrival < link.last:
                arrival = link.last
            link.last = arrival
        assert arrival > sim.now, f"{src_name} -> {dst_name}: a delivery must take time ({arrival})"
        record(("send", src_name, dst_name, serial, kind, fault, arrival))
        sim.call_at(arrival, self.arrive, dst_name, dst, delivery, kind, serial, link, link.epoch)

    def _arrive(self, dst_name: str, dst: Node | None, delivery: Delivery, kind: str, serial: int,
                link: Link, epoch: int) -> None:
        # A node that went down took every connection with it (`node_down`): while the
        # epoch holds, the node that was there at sending is still there.
        if link.epoch != epoch or dst is None:
            why = "node down" if dst is None or self.sim.node(dst_name) is not dst else "connection lost"
            self.sim.trace.append(("arr", dst_name, serial, kind, why))
            return
        self.sim.trace.append(("arr", dst_name, serial, kind))
        # the node's clock catches up before it next runs
        dst.arrive(delivery if type(delivery) is not _Encoded else _decoded(delivery, dst))

    def _monitor_alone(self, src_name: str, dst_name: str, delivery: Delivery) -> None:
        """A call request that will not arrive: the monitor it carries still does (a
        signal is never lost but with the connection)."""
        if type(delivery) is CallRequest and delivery.monitor:
            self._at_once(src_name, dst_name, Monitor(delivery.to, delivery.caller, delivery.tag))

    def _at_once(self, src_name: str, dst_name: str, delivery: Delivery) -> None:
        """A link or monitor being set up (or taken down) reaches the far node at once,
        and so does that node's answer (a "noproc"): setting one up takes no time. With
        no connection between the nodes, one being set up fails with noconnection."""
        dst = self.sim.node(dst_name)
        if dst is None or (self.partitioned and not self.connected(src_name, dst_name)):
            self._no_connection(src_name, dst_name, delivery)
            return
        previous, self._answering = self._answering, (dst_name, src_name)
        try:
            dst.arrive(delivery if type(delivery) is not _Encoded else _decoded(delivery, dst))
        finally:
            self._answering = previous

    def _no_connection(self, src_name: str, dst_name: str, delivery: Any) -> None:
        """A link or monitor (a call's too) set up towards a node that cannot be reached:
        the sender's node answers itself at once with noconnection, as Erlang's does."""
        if type(delivery) is _Encoded:
            delivery = delivery.delivery
        kind = type(delivery)
        if kind is LinkSignal:
            answer: Delivery = LinkedExit(delivery.sender, delivery.to, NOCONNECTION)
        elif kind is Monitor:
            answer = DownSignal(delivery.watcher, delivery.ref, self._seen(dst_name, delivery.to), NOCONNECTION)
        elif kind is CallRequest and delivery.monitor:
            answer = DownSignal(delivery.caller, delivery.tag, self._seen(dst_name, delivery.to), NOCONNECTION)
        else:
            return  # taking one down: each side dropped its half when the connection went
        if kind is not CallRequest:  # a call's request has its own record
            self.sim.trace.append(("send", src_name, dst_name, _serial(None, delivery), KIND[kind], "noconnection"))
        src = self.sim.node(src_name)
        assert src is not None, f"node {src_name} sends while down"
        src.arrive(answer)

    @staticmethod
    def _seen(dst_name: str, to: Any) -> Any:
        """What a Down names for `to`: its pid, or a name as registered on its node."""
        return to if type(to) is Pid else RemoteName(to, dst_name)

    def crossing(self, src: Node, dst_name: str, delivery: Delivery) -> bytes | None:
        """The delivery as the wire's bytes (`actors.codec`); None when it cannot cross: the
        run then fails, naming what was sent and between which nodes."""
        payload = delivery[-1]  # the message, request, reply, reason (or an id of a setup signal)
        try:
            return encode_term(payload if type(delivery.to) is Pid else (delivery.to, payload), src)
        except (TypeError, ValueError, OverflowError) as exc:
            self.sim.fail("codec", f"a {kind_of(delivery)} from node {src.name!r} to node {dst_name!r} "
                                   f"cannot go over a wire: it carries a {type(payload).__qualname__} "
                                   f"{payload!r:.200}; {exc}")
            return None

    # -- partitions ---------------------------------------------------------------------------

    def partition(self, groups: list[list[str]], oneway: bool = False) -> None:
        """Cut every link between nodes of different groups (with `oneway`, only the links
        from an earlier group to a later one) and disconnect those nodes: a one-way cut
        ends the connection too, as unanswered ticks end an Erlang one."""
        for i, group in enumerate(groups):
            for j, other in enumerate(groups):
                if i == j or (oneway and j < i):
                    continue
                for a in group:
                    for b in other:
                        self._cut(a, b)
        self.partitioned = True

    def _cut(self, a: str, b: str) -> None:
        link = self._link(a, b)
        if link.cut:
            return
        link.cut = True
        link.epoch += 1
        back = self._link(b, a)
        back.epoch += 1  # the connection is one for both directions
        node = self.sim.node(a)
        if node is not None:
            node.disconnect(b)

    def heal(self) -> None:
        """Reconnect every cut link, and the nodes on both ends that are up."""
        self.partitioned = False
        cut = [(src, dst) for (src, dst), link in self._links.items() if link.cut]
        for src, dst in cut:
            self._links[(src, dst)].cut = False
        for src, dst in cut:
            self.sim.reconnect(src, dst)

    def connected(self, a: str, b: str) -> bool:
        """False while a partition cuts either direction between `a` and `b`."""
        return not (self._link(a, b).cut or self._link(b, a).cut)

    def node_down(self, name: str) -> None:
        """A node died: what was in flight to it or from it is lost with the connections."""
        for (src, dst), link in self._links.items():
            if name in (src, dst):
                link.epoch += 1
