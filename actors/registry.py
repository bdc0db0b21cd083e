"""Keyed process registries (Elixir's `Registry`, unique keys) and the `via` form.

    users = Registry(node)
    node.spawn(Session, "alice", name=users.via(("user", "alice")))
    node.cast(users.via(("user", "alice")), "ping")    # a via works wherever a pid does

An entry disappears when its process exits. Plain names live on the node
(`node.register(name, pid)`, `node.whereis(name)`); `RemoteName(name, node)` (Erlang's
`{Name, Node}`) addresses a name on a connected node.
"""
from __future__ import annotations

from typing import Any, Hashable, NamedTuple, Union

from .ids import Pid


class RemoteName(NamedTuple):
    """A registered name on another node (Erlang's `{Name, Node}`), usable wherever a pid
    is: `node.send(RemoteName("shard-1", "server1"), msg)`. It is looked up on the named
    node when sent (the nodes must be `connect`ed); a name nobody holds, or an unconnected
    node, is a send that goes nowhere and a call or monitor that gets `noproc`."""

    name: Any
    node: str


class Registry:
    """A table of unique keys to processes on one node."""

    def __init__(self, node: Any, name: str = "registry", limit: int = 10_000_000) -> None:
        self.node = node
        self.name = name
        self.limit = limit
        self._table: dict[Any, Any] = {}

    def register(self, key: Any, pid: Pid) -> None:
        """Map key to the live process `pid`; raises `AlreadyRegistered` if the key is taken."""
        names = self.node._names
        names.bind(self._table, key, names.live(pid), self.limit)

    def unregister(self, key: Any) -> None:
        """Remove key, if present."""
        self.node._names.unbind(self._table, key)

    def lookup(self, key: Any) -> Pid | None:
        """The pid registered under key, or None."""
        proc = self._table.get(key)
        return proc.pid if proc is not None else None

    def keys(self, pid: Pid) -> list[Any]:
        """The keys `pid` holds in this registry, in registration order."""
        proc = self.node._names.lookup(pid)
        if proc is None or not proc._names:
            return []
        return [key for table, key in proc._names if table is self._table]

    def via(self, key: Any) -> Via:
        """An address for key that `send`, `cast`, `call`, `monitor`, `link` and
        `spawn(name=...)` accept in place of a pid."""
        return Via(self, key)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"<Registry {self.name} {len(self._table)} keys>"


class Via:
    """A registry key used as an address."""

    __slots__ = ("registry", "key")

    def __init__(self, registry: Registry, key: Any) -> None:
        self.registry = registry
        self.key = key

    def __eq__(self, other: object) -> bool:
        return type(other) is Via and other.registry is self.registry and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"via({self.registry.name}, {self.key!r})"


Name = Hashable
"""A registered name: any hashable value but None, a pid or a `Via` (a str, a tuple...)."""

Dest = Union[Pid, Via, RemoteName, Name]
"""Where a message can go: a pid, a name registered on this node, a `Via` (a key of a
`Registry`), or a `RemoteName` (a name on another node)."""


def check_key(key: Any) -> None:
    if key is None or isinstance(key, (Pid, Via)):
        raise ValueError(f"{key!r} cannot be a registered name")
    hash(key)  # unhashable keys fail here, naming the type


