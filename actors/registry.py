"""Keyed process registries (Elixir's `Registry`: unique or duplicate keys, partitions)
and the `via` form.

    users = Registry(node)                                       # unique keys
    node.spawn(Session, "alice", name=users.via(("user", "alice")))
    node.cast(users.via(("user", "alice")), "ping")    # a via works wherever a pid does

    topics = Registry(node, "topics", keys="duplicate", partitions=4)   # pub/sub by key
    topics.register("news", subscriber, {"since": 0})  # any number per key, a value each
    topics.dispatch("news", lambda entries: [node.send(pid, "extra!") for pid, _ in entries])

Each registration holds a value (None by default); `entries(key)` gives `(pid, value)`
pairs (Elixir's `lookup`), `lookup(key)` the pid of a unique key or the entries of a
duplicate one. A process's entries disappear when it exits. A duplicate registry keeps a
process's entries in partition `pid serial % partitions`, and `dispatch(key, fn)` calls
`fn(entries)` once per partition that has entries for the key, in partition order,
entries in registration order; a unique key lives in one table whatever the partitions
(nothing in a node contends for it). Only unique registries give a `via`. Plain names
live on the node (`node.register(name, pid)`, `node.whereis(name)`);
`RemoteName(name, node)` (Erlang's `{Name, Node}`) addresses a name on a connected node.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, NamedTuple, Union

from .errors import SystemLimit
from .ids import Pid


class RemoteName(NamedTuple):
    """A registered name on another node (Erlang's `{Name, Node}`), usable wherever a pid
    is: `node.send(RemoteName("shard-1", "server1"), msg)`. It is looked up on the named
    node when sent (the nodes must be `connect`ed); a name nobody holds, or an unconnected
    node, is a send that goes nowhere and a call or monitor that gets `noproc`."""

    name: Any
    node: str


KINDS = ("unique", "duplicate")
MAX_PARTITIONS = 1024


class _Keys(dict):
    """A unique registry's table, key -> process; a key's value goes with it (the kernel
    removes an exited process's keys with `pop`)."""

    __slots__ = ("values_by_key",)

    def __init__(self) -> None:
        super().__init__()
        self.values_by_key: dict[Any, Any] = {}

    def pop(self, key: Any, default: Any = None) -> Any:
        self.values_by_key.pop(key, None)
        return dict.pop(self, key, default)


class _Member:
    """One process's entries under one key of a duplicate registry, as the kernel keeps it
    among the process's names: `pop(key)` removes them (when the process exits)."""

    __slots__ = ("registry", "partition", "proc", "values")

    def __init__(self, registry: Registry, partition: dict, proc: Any) -> None:
        self.registry = registry
        self.partition = partition  # key -> {proc: _Member}
        self.proc = proc
        self.values: list[Any] = []

    def pop(self, key: Any, default: Any = None) -> Any:
        bucket = self.partition.get(key)
        if bucket is None or bucket.get(self.proc) is not self:
            return default
        del bucket[self.proc]
        if not bucket:
            del self.partition[key]
        self.registry._count -= len(self.values)
        return self


class Registry:
    """A table of keys to processes on one node, each registration with a value: unique
    keys (one process per key) or duplicate keys (any number); see the module docstring."""

    def __init__(self, node: Any, name: str = "registry", limit: int = 10_000_000, *,
                 keys: str = "unique", partitions: int = 1) -> None:
        if keys not in KINDS:
            raise ValueError(f"keys must be one of {KINDS}, got {keys!r}")
        if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be an int in 1..{MAX_PARTITIONS}, got {partitions!r}")
        self.node = node
        self.name = name
        self.limit = limit
        self.keys_kind = keys
        self.partitions = partitions
        self._table = _Keys()  # unique keys
        self._parts: list[dict[Any, dict[Any, _Member]]] = [{} for _ in range(partitions)] \
            if keys == "duplicate" else []
        self._count = 0  # duplicate entries

    @property
    def unique(self) -> bool:
        return self.keys_kind == "unique"

    def register(self, key: Any, pid: Pid, value: Any = None) -> None:
        """Register the live process `pid` under key with `value`. A unique key that is
        taken raises `AlreadyRegistered`; a duplicate key takes any number of entries, a
        process's too."""
        names = self.node._names
        proc = names.live(pid)
        if self.unique:
            names.bind(self._table, key, proc, self.limit)
            if value is not None:
                self._table.values_by_key[key] = value
            return
        check_key(key)
        if self._count >= self.limit:
            raise SystemLimit(f"registry {self.name} is at its limit of {self.limit} entries")
        partition = self._parts[pid.serial % self.partitions]
        bucket = partition.setdefault(key, {})
        member = bucket.get(proc)
        if member is None:
            member = bucket[proc] = _Member(self, partition, proc)
            if proc._names is None:
                proc._names = []
            proc._names.append((member, key))
        member.values.append(value)
        self._count += 1

    def unregister(self, key: Any, pid: Pid | None = None) -> None:
        """Remove key (of a unique registry), or `pid`'s entries under key (of a duplicate
        one); nothing if there are none."""
        if self.unique:
            holder = self._table.get(key)
            if pid is None or (holder is not None and holder._pid == pid):
                self.node._names.unbind(self._table, key)
            return
        if pid is None:
            raise TypeError(f"registry {self.name} has duplicate keys: unregister needs the pid")
        proc = self.node._names.lookup(pid)
        bucket = self._parts[pid.serial % self.partitions].get(key)
        member = bucket.get(proc) if bucket is not None and proc is not None else None
        if member is not None:
            member.pop(key)
            proc._names.remove((member, key))

    def lookup(self, key: Any) -> Any:
        """A unique key's pid (or None); a duplicate key's entries, `[(pid, value)]`."""
        if self.unique:
            proc = self._table.get(key)
            return proc.pid if proc is not None else None
        return self.entries(key)

    def entries(self, key: Any) -> list[tuple[Pid, Any]]:
        """`(pid, value)` of every registration under key (Elixir's `lookup`): partition
        by partition, in registration order within each."""
        if self.unique:
            proc = self._table.get(key)
            return [] if proc is None else [(proc.pid, self._table.values_by_key.get(key))]
        return [entry for part in self._parts for entry in _entries(part, key)]

    def dispatch(self, key: Any, fn: Callable[[list[tuple[Pid, Any]]], Any]) -> None:
        """Call `fn(entries)` with the `(pid, value)` entries of key, once per partition
        that has some (Elixir's `dispatch`); an exception in `fn` propagates."""
        if self.unique:
            found = self.entries(key)
            if found:
                fn(found)
            return
        for part in self._parts:
            found = _entries(part, key)
            if found:
                fn(found)

    def keys(self, pid: Pid) -> list[Any]:
        """The keys `pid` holds in this registry, in registration order (a duplicate key
        once per registration)."""
        proc = self.node._names.lookup(pid)
        if proc is None or not proc._names:
            return []
        if self.unique:
            return [key for table, key in proc._names if table is self._table]
        return [key for member, key in proc._names if type(member) is _Member and member.registry is self
                for _ in member.values]

    def via(self, key: Any) -> Via:
        """An address for key that `send`, `cast`, `call`, `monitor`, `link` and
        `spawn(name=...)` accept in place of a pid (unique registries only)."""
        if not self.unique:
            raise ValueError(f"registry {self.name} has duplicate keys: a key names no single process")
        return Via(self, key)

    def __len__(self) -> int:
        """Unique keys registered, or duplicate entries."""
        return len(self._table) if self.unique else self._count

    def __repr__(self) -> str:
        return f"<Registry {self.name} {self.keys_kind} {len(self)} entries>"


def _entries(partition: dict, key: Any) -> list[tuple[Pid, Any]]:
    bucket = partition.get(key)
    if not bucket:
        return []
    return [(proc._pid, value) for proc, member in bucket.items() for value in member.values]


class Via:
    """A registry key used as an address: a `Registry`'s, or of any names object with
    OTP's via interface, `whereis_name(key) -> Pid | None` (`actors.global_names`)."""

    __slots__ = ("registry", "key")

    def __init__(self, registry: Any, key: Any) -> None:
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


