"""Where users live: a consistent-hash ring of shards, and shards placed on nodes.

    ring = HashRing(16)
    ring.owner("alice")                     # the shard index alice is homed on

A user's home shard holds her pending store, presence and receipts; it does not depend on
how many nodes run the shards, so one node or many run the same design. `home_node(user)`
is the node of that shard: a device connected there has its session beside its shard, so
a message between two users of one node never leaves it. Adding a shard
moves only the users whose ring arc it takes (about 1/n of them). Hashes are blake2b of
the key's text, the same in every interpreter (never `hash()`).
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left
from typing import Any, Callable

from actors import Node, Pid

from .config import ChatConfig

VNODES = 64  # points per shard: enough that arcs even out to within a few percent


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing of keys onto `n` owners (0..n-1). Answers are cached (up to
    `cache` keys, then the cache starts over): a hash costs a microsecond, a lookup far less."""

    __slots__ = ("n", "_points", "_owners", "_cache", "_limit")

    def __init__(self, n: int, vnodes: int = VNODES, cache: int = 1 << 20) -> None:
        assert n >= 1 and vnodes >= 1 and cache >= 0, (n, vnodes, cache)
        points = sorted((_point(f"owner-{owner}#{v}"), owner) for owner in range(n) for v in range(vnodes))
        self.n = n
        self._points = [p for p, _ in points]
        self._owners = [o for _, o in points]
        self._cache: dict[Any, int] = {}
        self._limit = cache

    def owner(self, key: Any) -> int:
        """The owner of `key` (a str or an int): the first ring point at or after its hash."""
        cacheable = type(key) is str or type(key) is int  # (True == 1: never mix types)
        if cacheable:
            found = self._cache.get(key)
            if found is not None:
                return found
        i = bisect_left(self._points, _point(f"{type(key).__name__}:{key}"))
        found = self._owners[i if i < len(self._owners) else 0]
        if cacheable:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[key] = found
        return found


Resolve = Callable[[str, str], "Pid | None"]
"""resolve(node name, registered name) -> the pid, or None if it is not running."""


class Router:
    """Users to shards (the ring), shards to nodes (`nodes[i % len(nodes)]`) and to pids,
    rooms to nodes (a ring of the nodes). `resolve` finds a registered name on another
    node (the default only knows the local node).

    A multi-node deployment passes `resolve`, which gives a pid at once (a session
    monitors its shard) where a `RemoteName` would be resolved only on sending: a
    cluster reads global names (`apps.cluster.chat.resolver`), the simulator looks names
    up on the named node.
    """

    def __init__(self, node: Node, config: ChatConfig, resolve: Resolve | None = None) -> None:
        self.node = node
        self.config = config
        self.ring = HashRing(config.shards)
        # home(user): the shard index of `user`; the ring's own method, as it is on every path
        self.home: Callable[[Any], int] = self.ring.owner
        self.nodes = config.nodes or (node.name,)
        self.room_ring = HashRing(len(self.nodes))
        self._resolve = resolve or self._local
        # (node, registered name) of each shard, built once: shard() is on every message's path
        self._where = [(self.node_of(i), self.name_of(i)) for i in range(config.shards)]

    def _local(self, node_name: str, name: str) -> Pid | None:
        return self.node.whereis(name) if node_name == self.node.name else None

    def node_of(self, shard: int) -> str:
        return self.nodes[shard % len(self.nodes)]

    def home_node(self, user: Any) -> str:
        """The node hosting `user`'s home shard: where its devices should connect, so that
        its session and its shard are placed by the same key (the user)."""
        return self.node_of(self.ring.owner(user))

    def name_of(self, shard: int) -> str:
        return f"chat.shard.{shard}"

    def hosted_here(self) -> list[int]:
        """The shard indexes this router's node hosts."""
        return [s for s in range(self.ring.n) if self.node_of(s) == self.node.name]

    def shard(self, index: int) -> Pid | None:
        """The pid of shard `index`, or None while it is not running (or unreachable)."""
        return self._resolve(*self._where[index])

    def locate(self, user: Any) -> Pid | None:
        """The pid of `user`'s home shard, or None."""
        return self.shard(self.home(user))

    def room_node(self, room: str) -> str:
        """The node hosting room `room` (rooms are placed on the ring too)."""
        return self.nodes[self.room_ring.owner(room)]

    def resolve(self, node_name: str, name: str) -> Pid | None:
        return self._resolve(node_name, name)
