"""Activated entities across a cluster's nodes: each key on one node, at most one
activation of it anywhere.

    NODES = ("e1@h", "e2@h", "e3@h")                       # the cluster's node list, alike everywhere
    node.spawn(ClusterEntities, store, Account, NODES, 60.0, name="accounts")   # on every node
    accounts = PlacedEntities("accounts", NODES)
    balance = await accounts.call(self, ("account", 7), "balance")   # in a process, on any node
    accounts.cast(node, ("account", 7), ("deposit", 5))              # or from outside
    accounts.node_of(("account", 7))                                 # the same on every node

Placement. A key lives on `place(key, nodes)` (`actors.placement`, rendezvous hashing)
over the cluster's node list, which every node and caller is given alike (a Ray
cluster's $LETITCRASH_CLUSTER_NODES, a simulation's server nodes). The caller's node
routes: `call` and `cast` go to the `ClusterEntities` registered under the same name on
the key's node, an `Entities` router that activates the key there (`storage.entities`:
started on its first message with its stored state, passivated when idle). A key is a
str, bytes or int, or a tuple of them (placed by its msgpack encoding). A router given a
key of another node refuses it with `ActivationError` naming both nodes (its caller has
another node list). A subclass may place keys otherwise by overriding `home(key)`.

State. Each node keeps the state of its keys in its own store (LMDB on its own disk), so
a key's state is where its node is, stored there before any reply acknowledges it (the
store's mode says against what).

Nodes going and coming (nodedown, nodeup). A key never moves off a node that is down or
cut off: its state is on that node's disk, and an activation anywhere else would start
from an older state (or none) and lose what was acknowledged. A call for it fails at
once, as OTP's call to a name on a node that is down does (`NoProc`, or `CallExit` with
"noconnection"; retry later), a cast is lost, and once the node is back (nodeup) its
keys are served again from its store by its new incarnation. This is the consistent
choice, as Orleans' strongly consistent grain directory makes it. Orleans' default
directory instead activates the grains of a silo declared dead on other silos, from
storage every silo reaches, and allows duplicate activations meanwhile; letitcrash has
no storage shared by nodes. So keys move only with the node list, which is fixed for
the life of the cluster's data: a node list that changes places keys on nodes that do
not hold their state (copying it there is not provided).

Guarantee: at most one live activation per key in the whole cluster at every instant,
under partitions and node crashes too. Every node agrees on a key's node from the same
list whatever it is connected to, only that node activates the key, and its router
starts an incarnation only once the previous one has exited, even across a restart of
the router (`Entities` adopts its predecessor's stopping entities). A partition costs
availability: the keys of the nodes across it are unavailable on this side until it
heals. The simulator checks the guarantee at every activation (`sim/systems/entities.py`,
`scenarios/entities.toml`; the timelines: `scenarios/timeline_nodes.toml`).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actors import Node, Process, RemoteName, packb
from actors.placement import MAX_NODES, place
from .entities import Entities, entities_info, entity_call, entity_cast
from .errors import ActivationError, UnencodableValue

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


class ClusterEntities(Entities):
    """One node's router of a kind of entity placed across the cluster; see the module
    docstring. Spawn arguments: `store`, `server`, `nodes` (the cluster's node list,
    this node among them), then those of `Entities` (`idle_timeout`, `max_active`,
    `max_waiting`)."""

    def init(self, store: Any, server: type, nodes: Iterable[str], *args: Any) -> None:  # type: ignore[override]  # the node list comes third
        self.cluster = check_nodes(nodes)
        if self.node.name not in self.cluster:
            raise ValueError(f"node {self.node.name!r} is not in the node list {list(self.cluster)!r:.200}")
        super().init(store, server, *args)

    def home(self, key: Any) -> str:
        """The node `key` lives on."""
        return node_of(key, self.cluster)

    def _activate(self, key: Any) -> Any:
        # Checked here, not per message: a key is active here only if it is this node's.
        try:
            home = self.home(key)
        except UnencodableValue as exc:
            return ActivationError(key, exc)
        if home != self.node.name:
            return ActivationError(key, f"it lives on node {home}, not on {self.node.name}: "
                                        "the caller's node list differs")
        return super()._activate(key)


class PlacedEntities:
    """The caller's side: `name` is the registered name of the `ClusterEntities` on every
    node of `nodes`. `call` returns a coroutine in a process, a `Future` from outside."""

    __slots__ = ("name", "nodes")

    def __init__(self, name: str, nodes: Iterable[str]) -> None:
        if type(name) is not str or not name:
            raise TypeError(f"the registered name of the entities is a non-empty str, got {name!r:.80}")
        self.name = name
        self.nodes = check_nodes(nodes)

    def node_of(self, key: Any) -> str:
        """The node `key` lives on."""
        return node_of(key, self.nodes)

    def call(self, caller: Node | Process, key: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """Call entity `key` on its node (see `storage.entities.entity_call`). A node that
        is down or cannot be reached fails the call at once, as OTP's call to a name on
        another node does: `NoProc` (the simulator's cut) or `CallExit` ("noconnection")."""
        return entity_call(caller, self._where(caller, key), key, request, timeout)

    def cast(self, caller: Node | Process, key: Any, msg: Any) -> None:
        """Cast `msg` to entity `key` on its node (lost if that node is down, as any cast)."""
        entity_cast(caller, self._where(caller, key), key, msg)

    def info(self, caller: Node | Process, node: str) -> Any:
        """`entities_info` of the router on `node`."""
        return entities_info(caller, self._router_on(caller, node))

    def _where(self, caller: Node | Process, key: Any) -> Any:
        """The address of `key`'s router (a key that cannot be placed raises
        `UnencodableValue`)."""
        return self._router_on(caller, node_of(key, self.nodes))

    def _router_on(self, caller: Node | Process, node: str) -> Any:
        """The address of the router on `node`, as `caller` reaches it: by name on its own node."""
        return self.name if node == _node_of(caller).name else RemoteName(self.name, node)


def _node_of(caller: Node | Process) -> Node:
    return caller if isinstance(caller, Node) else caller.node
