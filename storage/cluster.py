"""Activated entities across a cluster's nodes: each key on one node, at most one
activation of it anywhere, and keys that move with their state when the node list changes.

    NODES = ("e1@h", "e2@h", "e3@h")                       # the cluster's first node list
    node.spawn(ClusterEntities, store, Account, NODES, 60.0, name="accounts")   # on every node
    accounts = PlacedEntities("accounts", NODES)
    balance = await accounts.call(self, ("account", 7), "balance")   # in a process, on any node
    accounts.cast(node, ("account", 7), ("deposit", 5))              # or from outside
    accounts.node_of(("account", 7))                                 # the same on every node
    await accounts.join(self, "e4@h")     # e4's router runs (spawned with NODES): epoch 2
    await accounts.leave(self, "e1@h")    # e1 hands its keys off: epoch 3

Placement. A key lives on `place(key, nodes)` (`actors.placement`, rendezvous hashing)
over the cluster's node list at its current epoch. The caller's node routes: `call` and
`cast` go to the `ClusterEntities` registered under the same name on the key's node, an
`Entities` router that activates the key there (`storage.entities`: started on its first
message with its stored state, passivated when idle). A key is a str, bytes or int, or a
tuple of them (placed by its msgpack encoding). A router given a key of another node
refuses it with `ActivationError` naming both nodes. A subclass may place keys otherwise
by overriding `place_key(key, nodes)`.

State. Each node keeps the state of its keys in its own store (LMDB on its own disk), so
a key's state is where its node is, stored there before any reply acknowledges it (the
store's mode says against what). Each router also notes in its store the keys it has
activated (with or before their first write) and its membership: epoch, node list, and
while a change is under way the previous list and the nodes it still waits for. A
restarted router comes back with what it stored; the `nodes` it is spawned with count
only on its first start (a node outside them is outside the cluster until a change adds
it: it serves no key).

Nodes down or cut off are not leaving (nodedown, nodeup). A key never moves off a node
that is down or cut off: its state is on that node's disk, and an activation anywhere
else would start from an older state (or none) and lose what was acknowledged. A call
for it fails at once, as OTP's call to a name on a node that is down does (`NoProc`, or
`CallExit` with "noconnection"; retry later), a cast is lost, and once the node is back
its keys are served again from its store. This is the consistent choice, as Orleans'
strongly consistent grain directory makes it (its default directory instead reactivates
a dead silo's grains elsewhere from storage every silo reaches; letitcrash has no
storage shared by nodes). A node leaves only while it is up, by a membership change.

Membership changes. `PlacedEntities.rebalance(caller, nodes)` (and `join`, `leave`) is
an explicit, versioned operation, as Akka Cluster Sharding's coordinator runs a
rebalance: the caller asks every router of the old and the new list for its status, and
goes on only if all are up, at the caller's epoch and done with the previous change (else
`MembershipError`, naming the node, and nothing changes); then it sends each router the
new list with the next epoch, which the router stores before it answers. The same change
again is harmless: it completes one that failed half way. Then, for each key whose node
changes, its old node (the sender):
1. stops routing to it and passivates its activation (its state is stored as it stops);
2. once it has exited, sends the key's stored values (snapshot, events, records, as
   stored, checksummed) to the new node over the nodes' own streams, in batches of at most
   `BATCH_KEYS` keys and `BATCH_BYTES` bytes, one batch in flight;
3. the new node stores them (a key it already has is a batch sent again: skipped) in one
   commit and acknowledges; the sender then deletes its copy and its note of the key in
   one commit. A batch not acknowledged within `RETRY_AFTER` (doubling, to 8 s) is sent
   again; after `MAX_RETRIES` failures in a row the handoff stalls (logged, `status` says
   so) until the same change is asked again or the router restarts;
4. once everything sent to a node is acknowledged and deleted, an empty batch tells it
   so; it stops waiting for that sender. A router that sends nothing and waits for
   nobody is done (`settled`), and only then takes a newer epoch.
Meanwhile the new node answers a call for a key still on its way with `KeyMoving`
(retryable, naming both nodes): it activates a moved key only once its state has arrived.
A request made with another epoch than the router's is refused with `StaleEpoch`, naming
both epochs and carrying the router's list (`PlacedEntities` adopts a newer one: retry).
Refusing rather than forwarding keeps one rule on every node (a router serves only its
epoch's keys) and costs the caller one round trip per change. The handoff resumes after a
crash of either side: the sender's notes of its keys say what is left to send, the
receiver's membership what it still waits for, and both steps are idempotent. A node
that crashes mid-handoff keeps its keys waiting (`KeyMoving`) until it is back.

Guarantee: at most one live activation per key in the whole cluster at every instant,
under partitions, node crashes and membership changes. Every node agrees on a key's node
from the same epoch's list whatever it is connected to, only that node activates the key,
a moved key only after its old node's activation exited and its state arrived, and a
router starts an incarnation only once the previous one has exited, even across a restart
of the router (`Entities` adopts its predecessor's stopping entities). Nothing
acknowledged is lost by a move: the state that arrives is the one the last activation
stored. A partition costs availability: the keys of the nodes across it (and a change
that needs them) wait until it heals. The simulator checks the guarantee at every
activation and every acknowledged update across moves (`sim/systems/entities.py`,
`scenarios/entities.toml`, `scenarios/entities_moves.toml`; the timelines:
`scenarios/timeline_nodes.toml`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import logging

from actors import CallExit, CallTimeout, Future, Node, NoProc, NoReply, Pid, Process, RemoteName, packb
from actors.placement import MAX_NODES, place
from actors.requests import request, run_in_process
from .entities import Entities, entities_info
from .errors import (ActivationError, KeyMoving, MembershipError, StaleEpoch, StorageError,
                     UnencodableValue)
from .store import KeyRef

log = logging.getLogger("storage")

_PCALL, _PCAST, _STATUS, _REBALANCE = "$placed_call", "$placed_cast", "$cluster_status", "$rebalance"
_HANDOFF, _HANDED, _RESUME = "$handoff", "$handed", "$handoff_resume"
BATCH_KEYS = 64  # keys per handoff batch
BATCH_BYTES = 4 << 20  # stored bytes per handoff batch (one key's may be more: sent alone)
RETRY_AFTER = 0.5  # seconds before a batch not acknowledged is sent again (doubling, to 8 s)
MAX_RETRIES = 20  # tries in a row before a handoff stalls (the same change again resumes it)

_SCALAR_KEYS = (str, bytes, int)


def check_nodes(nodes: Iterable[str]) -> tuple[str, ...]:
    """The cluster's node list, sorted: non-empty, distinct node names (str), at most
    `MAX_NODES`; else a `ValueError`/`TypeError` naming what is wrong."""
    if isinstance(nodes, (str, bytes)):
        raise TypeError(f"the node list must be a list of node names, not one name {nodes!r:.80}")
    names = list(nodes)
    if not names:
        raise ValueError("the node list is empty: a key needs a node to live on")
    for name in names:
        if type(name) is not str or not name:
            raise TypeError(f"a node name is a non-empty str, got {name!r:.80} in the node list")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"node {twice[0]!r} is twice in the node list")
    if len(names) > MAX_NODES:
        raise ValueError(f"{len(names)} nodes in the node list, over the limit of {MAX_NODES}")
    return tuple(sorted(names))


def placement_key(key: Any) -> str | bytes | int:
    """What `key` is placed by: a str, bytes or int as it is, a tuple by its msgpack
    encoding (the same in every process); anything else raises `UnencodableValue`."""
    kind = type(key)
    if kind in _SCALAR_KEYS:
        return key
    if kind is tuple:
        _check_tuple(key, key)
        return packb(key)
    raise UnencodableValue(f"an entity key placed on a node is a str, bytes, int or a tuple of "
                           f"them, not {kind.__name__}: {key!r:.100}")


def _check_tuple(part: tuple, key: tuple) -> None:
    for item in part:
        if type(item) is tuple:
            _check_tuple(item, key)
        elif type(item) not in _SCALAR_KEYS:
            raise UnencodableValue(f"entity key {key!r:.100} holds a {type(item).__name__} "
                                   f"({item!r:.40}); a placed key holds str, bytes, int and tuples")


def node_of(key: Any, nodes: tuple[str, ...]) -> str:
    """The node of `nodes` (a `check_nodes` list) that `key` lives on."""
    return place(placement_key(key), nodes)


def _as_key(value: Any) -> Any:
    """A key back from its stored form (msgpack gives tuples back as lists)."""
    return tuple(_as_key(v) for v in value) if type(value) is list else value


class ClusterEntities(Entities):
    """One node's router of a kind of entity placed across the cluster; see the module
    docstring. Spawned with `name=` (its peers reach it by that name) and the arguments
    `store`, `server`, `nodes` (the cluster's first node list: used only when the store
    holds none), then those of `Entities` (`idle_timeout`, `max_active`, `max_waiting`)."""

    def init(self, store: Any, server: type, nodes: Iterable[str], *args: Any) -> None:  # type: ignore[override]  # the node list comes third
        first = check_nodes(nodes)
        name = self.node.process_info(self.pid)["registered_name"]
        if type(name) is not str:
            raise ValueError("a ClusterEntities router is spawned with name=...: its peers reach it by that name")
        super().init(store, server, *args)
        self.name = name
        self._record = b"cluster/" + name.encode()
        self._dir = b"keys/" + name.encode() + b"/"
        stored = store.get_meta(self._record)
        me = self.node.name
        self.previous: tuple[str, ...] | None
        self.waiting_for: tuple[str, ...]
        if stored is None:  # the first start: a member of the first list is at epoch 1
            self.epoch = 1 if me in first else 0
            self.cluster, self.previous, self.waiting_for = first, None, ()
            if self.epoch:
                store.stage_meta(self._record, self._membership())
        else:
            self.epoch, self.cluster = stored["epoch"], tuple(stored["nodes"])
            self.previous = None if stored["previous"] is None else tuple(stored["previous"])
            self.waiting_for = tuple(stored["waiting_for"])
        self._outgoing: dict[str, list] = {}  # node -> keys still to hand to it
        self._sending: tuple | None = None  # (node, tag, keys, last) awaiting its acknowledgement
        self._seq = 0
        self._retries = 0
        if self.previous is not None:  # a handoff was under way: resume it
            self.send(self.pid, (_RESUME,))

    def place_key(self, key: Any, nodes: tuple[str, ...]) -> str:
        """The node of `nodes` that `key` lives on (a subclass may place keys otherwise)."""
        return node_of(key, nodes)

    def home(self, key: Any) -> str:
        """The node `key` lives on."""
        return self.place_key(key, self.cluster)

    def in_transit(self, key: Any) -> str | None:
        """The node `key`'s state is still coming from, or None if it is here (or none)."""
        if not self.waiting_for:
            return None
        assert self.previous is not None, "a router waits for senders only during a change"
        source = self.place_key(key, self.previous)
        if source in self.waiting_for and self._store.get_meta(self._dir_name(key)) is None:
            return source
        return None

    def status(self) -> dict[str, Any]:
        """This router's membership: its epoch and node list, whether its handoff of the
        last change is over (`settled`), the keys it has still to send and the nodes it
        still waits for."""
        return {"node": self.node.name, "epoch": self.epoch, "nodes": list(self.cluster),
                "settled": self.previous is None, "outgoing": sum(map(len, self._outgoing.values())),
                "waiting_for": list(self.waiting_for), "stalled": self._retries > MAX_RETRIES}

    # -- messages ---------------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        tag = request[0]
        if tag == _PCALL:
            _, epoch, key, payload = request
            if epoch != self.epoch:
                return StaleEpoch(self.node.name, self.epoch, self.cluster, epoch)
            self._route(key, payload, caller)
            return NoReply
        if tag == _STATUS:
            return self.status()
        if tag == _REBALANCE:
            _, epoch, nodes, previous = request
            refused = self._adopt(epoch, nodes, previous)
            if refused is None and self._retries > MAX_RETRIES:  # the same change again: resume
                self._retries = 0
                self._pump()
            return refused if refused is not None else self.status()
        return super().handle_call(request, caller)

    def handle_cast(self, msg: Any) -> None:
        tag = msg[0]
        if tag == _PCAST:
            _, epoch, key, payload = msg
            if epoch != self.epoch:
                log.error("cast to entity %r dropped: %s", key,
                          StaleEpoch(self.node.name, self.epoch, self.cluster, epoch))
            else:
                self._route(key, payload, None)
        elif tag == _HANDOFF:
            self._receive(*msg[1:])
        elif tag == _HANDED:
            self._handed(*msg[1:])
        else:
            super().handle_cast(msg)

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg and msg[0] == _RESUME:
            if len(msg) == 1:  # after a restart
                self._restart_handoff(0)
            else:
                self._retry(msg[1])
        else:
            super().handle_info(msg)

    def _retry(self, tag: Any) -> None:
        """A batch's time is up (its `tag`), or a failed one's wait is over (None)."""
        sending = self._sending
        if tag is None and sending is None:
            self._pump()
        elif sending is not None and sending[1] == tag:
            self._sending = None
            self._failed(f"no answer from node {sending[0]}")

    # -- activation -----------------------------------------------------------------------------

    def _activate(self, key: Any) -> Any:
        # Checked here, not per message: a key is active here only if it is this node's.
        try:
            home = self.home(key)
            source = self.in_transit(key) if home == self.node.name else None
        except UnencodableValue as exc:
            return ActivationError(key, exc)
        if home != self.node.name:
            return ActivationError(key, f"it lives on node {home}, not on {self.node.name}: "
                                        "the caller's node list differs")
        if source is not None:
            return KeyMoving(key, source, home, self.epoch)
        started = super()._activate(key)
        name = self._dir_name(key)
        if isinstance(started, Pid) and self._store.get_meta(name) is None:
            self._store.stage_meta(name, key)  # committed with (or before) its first write
        return started

    def _exited(self, pid: Any, reason: Any) -> None:
        super()._exited(pid, reason)
        if self._outgoing and self._sending is None:
            self._pump()  # a key that was stopping may go now

    # -- membership ----------------------------------------------------------------------------

    def _membership(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "nodes": list(self.cluster),
                "previous": None if self.previous is None else list(self.previous),
                "waiting_for": list(self.waiting_for)}

    def _dir_name(self, key: Any) -> bytes:
        return self._dir + KeyRef(key).kid

    def _adopt(self, epoch: Any, nodes: Any, previous: Any) -> Exception | None:
        """Take epoch `epoch` of the node list (`previous` was epoch-1's), stored before
        anything else, and start handing off the keys that leave this node; or the error
        that says why not (nothing changed)."""
        me = self.node.name
        try:
            new, old = check_nodes(nodes), check_nodes(previous)
        except (TypeError, ValueError) as exc:
            return MembershipError(f"node {me} refuses the node list of epoch {epoch!r}: {exc}")
        if type(epoch) is not int:
            return MembershipError(f"an epoch is an int, not {epoch!r:.40}")
        if epoch == self.epoch:
            if new == self.cluster:
                return None  # this change again: done already
            return MembershipError(f"node {me} has epoch {epoch} as {list(self.cluster)}, not {list(new)}")
        if epoch < self.epoch:
            return StaleEpoch(me, self.epoch, self.cluster, epoch)
        member = me in self.cluster and self.epoch > 0
        if member and (epoch != self.epoch + 1 or old != self.cluster):
            return MembershipError(f"node {me} is at epoch {self.epoch} with {list(self.cluster)}: epoch "
                                   f"{epoch} must follow it, from that list (it follows {list(old)})")
        if self.previous is not None:
            return MembershipError(f"node {me} is still handing off the keys of epoch {self.epoch} "
                                   f"({self.status()['outgoing']} to send, waiting for "
                                   f"{list(self.waiting_for)}); change the list once it is done")
        waiting = tuple(n for n in old if n != me) if me in new else ()
        record = {"epoch": epoch, "nodes": list(new), "previous": list(old), "waiting_for": list(waiting)}
        try:
            self._store.rewrite({}, {self._record: record})
        except StorageError as exc:
            return exc
        self.epoch, self.cluster, self.previous, self.waiting_for = epoch, new, old, waiting
        self._restart_handoff(0)
        log.info("entities %s on %s: epoch %d, nodes %s", self.name, me, epoch, list(new))
        return None

    def _restart_handoff(self, retries: int) -> None:
        """(Re)start the handoff of the keys that left this node with the last change:
        stop their activations, then send them in batches (see `_pump`)."""
        me = self.node.name
        self._retries = retries
        self._outgoing = {n: [] for n in self.cluster if n != me} if me in self.previous else {}  # type: ignore[operator]
        for name, key in self._store.scan_meta(self._dir):
            if len(name) != len(self._dir) + 16:
                continue  # another router's, whose name starts with this one's and "/"
            key = _as_key(key)
            home = self.home(key)
            if home != me:
                self._outgoing.setdefault(home, []).append(key)
        for key in [k for k in self._active if self.home(k) != me]:
            self._passivate(key)
        self._sending = None
        self._pump()

    def _settle(self) -> None:
        if self.previous is not None and not self._outgoing and not self.waiting_for:
            self.previous = None
            self._store.rewrite({}, {self._record: self._membership()})
            log.info("entities %s on %s: the handoff of epoch %d is done", self.name, self.node.name,
                     self.epoch)

    # -- handoff: the sender ---------------------------------------------------------------------

    def _pump(self) -> None:
        """Send the next batch of keys to their new node (one batch in flight): keys whose
        activation has exited, with their stored values. Once all are acknowledged (and
        deleted here) an empty batch tells that node this one is done: so a node that
        stops waiting for this one knows that no copy of its keys is left here."""
        if self._sending is not None or self._retries > MAX_RETRIES:
            return
        if not self._outgoing:
            self._settle()
            return
        target, keys = next(iter(self._outgoing.items()))
        batch: list = []
        size = 0
        try:
            for key in keys:
                if key in self._active:
                    self._passivate(key)
                if key in self._stopping:
                    continue  # sent once it has exited
                values = self._store.export_key(key)
                batch.append((key, values))
                size += sum(len(v[2]) for v in values)
                if len(batch) >= BATCH_KEYS or size >= BATCH_BYTES:
                    break
        except StorageError as exc:
            self._failed(f"cannot read the keys for {target}: {exc}")
            return
        stopping = any(key in self._stopping for key in keys)
        if not batch and stopping:
            return  # pumped again as they exit
        self._seq += 1
        tag = (self.pid, self._seq)  # never one of a previous incarnation's: its late answers are ignored
        last = not keys
        self._sending = (target, tag, [key for key, _ in batch], last)
        try:
            self.cast(RemoteName(self.name, target), (_HANDOFF, self.epoch, list(self.cluster),
                                                      list(self.previous or ()), self.node.name,
                                                      tag, batch, last))
        except (TypeError, ValueError) as exc:  # e.g. over the distribution's max_frame
            self._sending = None
            self._failed(f"cannot send {len(batch)} keys to {target}: {exc}")
            return
        self.send_after(RETRY_AFTER * 2 ** min(self._retries, 4), self.pid, (_RESUME, tag))

    def _handed(self, epoch: int, tag: Any, source: str, error: Exception | None) -> None:
        """The new node stored a batch (or refused it): delete the keys here."""
        sending = self._sending
        if sending is None or tag != sending[1] or epoch != self.epoch:
            return  # a late answer to a batch sent again since
        target, _, keys, last = sending
        if error is not None and not (last and isinstance(error, StaleEpoch) and error.epoch > epoch):
            self._sending = None
            self._failed(f"node {source} refused keys: {error}")
            return  # (a node past this epoch has had this one's last batch: it moved on)
        try:
            if keys:
                self._store.rewrite({key: [] for key in keys}, {self._dir_name(key): None for key in keys})
        except StorageError as exc:  # sent again later: the new node skips what it has
            self._sending = None
            self._failed(f"cannot delete the keys handed to {target}: {exc}")
            return
        remaining = self._outgoing[target]
        gone = set(keys)
        remaining[:] = [key for key in remaining if key not in gone]
        if last:
            del self._outgoing[target]
        self._sending = None
        self._retries = 0
        self._pump()

    def _failed(self, why: str) -> None:
        self._retries += 1
        if self._retries > MAX_RETRIES:
            log.error("entities %s on %s: handoff stalled after %d tries (%s); the same change "
                      "again resumes it", self.name, self.node.name, MAX_RETRIES, why)
        else:
            log.warning("entities %s on %s: handoff retried: %s", self.name, self.node.name, why)
            self.send_after(RETRY_AFTER * 2 ** min(self._retries, 4), self.pid, (_RESUME, None))

    # -- handoff: the receiver -------------------------------------------------------------------

    def _receive(self, epoch: int, nodes: list, previous: list, source: str, tag: Any,
                 batch: list, last: bool) -> None:
        """Store a batch of keys handed to this node, then acknowledge it: a key already
        here (a batch sent again) is skipped; the last batch from a node ends the wait for it."""
        error = None if epoch == self.epoch else self._adopt(epoch, nodes, previous)
        me = self.node.name
        if error is None:
            moved, meta = {}, {}
            for key, values in batch:
                key = _as_key(key)
                if self.home(key) != me:
                    error = MembershipError(f"node {source} hands {key!r:.100} to {me}, whose list "
                                            f"places it on {self.home(key)}")
                    break
                name = self._dir_name(key)
                if self._store.get_meta(name) is None:
                    moved[key], meta[name] = values, key
            waiting = self.waiting_for
            if last and source in waiting:
                waiting = tuple(n for n in waiting if n != source)
                meta[self._record] = {**self._membership(), "waiting_for": list(waiting)}
            if error is None:
                try:
                    self._store.rewrite(moved, meta)
                    self.waiting_for = waiting
                except StorageError as exc:
                    error = exc
        self.cast(RemoteName(self.name, source), (_HANDED, epoch, tag, me, error))
        if error is None:
            self._settle()


class PlacedEntities:
    """The caller's side: `name` is the registered name of the `ClusterEntities` on every
    node of `nodes`, at epoch `epoch` of the node list. `call` (and the membership
    changes) return a coroutine in a process, a `Future` from outside."""

    __slots__ = ("name", "nodes", "epoch")

    def __init__(self, name: str, nodes: Iterable[str], epoch: int = 1) -> None:
        if type(name) is not str or not name:
            raise TypeError(f"the registered name of the entities is a non-empty str, got {name!r:.80}")
        if type(epoch) is not int or epoch < 1:
            raise ValueError(f"an epoch is a positive int, got {epoch!r:.40}")
        self.name = name
        self.nodes = check_nodes(nodes)
        self.epoch = epoch

    def node_of(self, key: Any) -> str:
        """The node `key` lives on."""
        return node_of(key, self.nodes)

    def adopt(self, epoch: int, nodes: Iterable[str]) -> None:
        """Use epoch `epoch`'s node list from now on, if it is newer than this one's (a
        `StaleEpoch` error carries the node's)."""
        if epoch > self.epoch:
            self.nodes, self.epoch = check_nodes(nodes), epoch

    def call(self, caller: Node | Process, key: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """Call entity `key` on its node (see `storage.entities.entity_call`). A node that
        is down or cannot be reached fails the call at once, as OTP's call to a name on
        another node does: `NoProc` (the simulator's cut) or `CallExit` ("noconnection").
        A node at another epoch refuses it with `StaleEpoch` (this object adopts a newer
        list: retry), a key whose state is still moving with `KeyMoving` (retry)."""
        where = self._where(key)
        return self._learning(caller, where, (_PCALL, self.epoch, key, request), timeout)

    def cast(self, caller: Node | Process, key: Any, msg: Any) -> None:
        """Cast `msg` to entity `key` on its node (lost if that node is down, as any cast)."""
        caller.cast(self._where(key), (_PCAST, self.epoch, key, msg))

    def info(self, caller: Node | Process, node: str) -> Any:
        """`entities_info` of the router on `node`."""
        return entities_info(caller, self._router_on(node))

    def status(self, caller: Node | Process, node: str, timeout: float | None = 5.0) -> Any:
        """`ClusterEntities.status()` of the router on `node`."""
        return request(caller, self._router_on(node), (_STATUS,), timeout)

    def join(self, caller: Node | Process, node: str, timeout: float = 5.0) -> Any:
        """Add `node` to the node list (its router is running): `rebalance` to the list with it."""
        if node in self.nodes:
            raise ValueError(f"node {node!r} is already in the node list {list(self.nodes)!r:.200}")
        return self.rebalance(caller, [*self.nodes, node], timeout=timeout)

    def leave(self, caller: Node | Process, node: str, timeout: float = 5.0) -> Any:
        """Take `node` (up, reachable) out of the node list; it hands its keys off first."""
        if node not in self.nodes:
            raise ValueError(f"node {node!r} is not in the node list {list(self.nodes)!r:.200}")
        return self.rebalance(caller, [n for n in self.nodes if n != node], timeout=timeout)

    def rebalance(self, caller: Node | Process, nodes: Iterable[str], epoch: int | None = None,
                  timeout: float = 5.0) -> Any:
        """Change the node list to `nodes` as epoch `epoch` (default: the next one): every
        router of the old and the new list stores it, then the keys whose node changes
        move with their state. The answer (the new epoch) comes once every router has
        stored the list; `status` says when the moves are done. Refused with
        `MembershipError` (nothing changed) when a node of either list is down or cut off,
        is still moving keys, or is at another epoch; with `StaleEpoch` for an old epoch.
        The same change again is harmless (it resumes a change that failed half way)."""
        new = check_nodes(nodes)
        if new == self.nodes and epoch is None:
            raise ValueError(f"the node list is already {list(new)!r:.200}")
        target = self.epoch + 1 if epoch is None else epoch
        if type(target) is not int:
            raise TypeError(f"an epoch is an int, not {target!r:.40}")
        return run_in_process(caller, self._rebalance, new, target, timeout)

    async def _rebalance(self, proc: Process, new: tuple[str, ...], epoch: int, timeout: float) -> int:
        old = self.nodes
        for node in sorted(set(old) | set(new)):
            try:
                status = await request(proc, self._router_on(node), (_STATUS,), timeout)
            except (CallTimeout, CallExit, NoProc) as exc:
                raise MembershipError(f"node {node} is down or cut off ({type(exc).__name__}): the list "
                                      f"cannot change now (a node that is down keeps its keys until "
                                      f"it is back, and only a node that is up can leave)") from None
            if status["epoch"] == epoch and tuple(status["nodes"]) == new:
                continue  # this change again: that node has it
            if node in old and status["epoch"] > self.epoch:
                self.adopt(status["epoch"], status["nodes"])
                raise StaleEpoch(node, status["epoch"], status["nodes"], epoch - 1)
            if node in old and status["epoch"] < self.epoch:
                raise MembershipError(f"node {node} is at epoch {status['epoch']}, behind this list's "
                                      f"epoch {self.epoch}: the change that made it is not done there")
            if node in old and not status["settled"]:
                raise MembershipError(f"node {node} is still moving the keys of epoch {status['epoch']} "
                                      f"({status['outgoing']} to send, waiting for {status['waiting_for']})")
        for node in sorted(set(old) | set(new)):
            await request(proc, self._router_on(node), (_REBALANCE, epoch, list(new), list(old)), timeout)
        self.nodes, self.epoch = new, epoch
        return epoch

    def _learning(self, caller: Node | Process, where: Any, msg: tuple, timeout: float | None) -> Any:
        """`request`, adopting the node list a `StaleEpoch` refusal carries."""
        if isinstance(caller, Process):
            return self._learn_in(caller, where, msg, timeout)
        answer = request(caller, where, msg, timeout)
        answer.add_done_callback(self._learn)
        return answer

    async def _learn_in(self, proc: Process, where: Any, msg: tuple, timeout: float | None) -> Any:
        try:
            return await request(proc, where, msg, timeout)
        except StaleEpoch as exc:
            self.adopt(exc.epoch, exc.nodes)
            raise

    def _learn(self, answer: Future) -> None:
        exc = answer.exception()
        if isinstance(exc, StaleEpoch):
            self.adopt(exc.epoch, exc.nodes)

    def _where(self, key: Any) -> RemoteName:
        """The address of `key`'s router (a key that cannot be placed raises
        `UnencodableValue`)."""
        return self._router_on(node_of(key, self.nodes))

    def _router_on(self, node: str) -> RemoteName:
        """The router on `node` (a `RemoteName` reaches the caller's own node too, as
        Erlang's `{Name, node()}` does)."""
        return RemoteName(self.name, node)
