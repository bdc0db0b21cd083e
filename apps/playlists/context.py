"""Where playlist processes live, and what they share on one node: the node names of a
deployment, each playlist's home node (consistent hashing), the registered names of a
node's playlist processes, the CRDT client ids of the replicas, and argument checks.

A multi-node deployment passes `resolve(node name, registered name) -> pid | None`,
which gives a pid at once where a `RemoteName` would be resolved only on sending (the
simulator looks names up on the named node); the default only knows the local node.
"""
from __future__ import annotations

from typing import Any, Callable

from actors import Node, Pid, seed_for

from apps.chat.router import HashRing

from .config import PlaylistConfig
from .doc import MAX_ID
from .errors import BadRequest

REPLICAS, OUTBOX, QUEUES, EDGE = ("playlists.replicas", "playlists.outbox", "playlists.queues",
                                  "playlists.edge")
CLIENT_IDS = 1 << 32  # Yjs client ids are 32-bit unsigned ints


class Context:
    """One node's view of a playlist deployment."""

    def __init__(self, node: Node, config: PlaylistConfig,
                 resolve: Callable[[str, str], Pid | None] | None = None) -> None:
        self.node = node
        self.config = config
        self.nodes = config.nodes or (node.name,)
        if node.name not in self.nodes:
            raise ValueError(f"node {node.name!r} is not in PlaylistConfig.nodes {self.nodes!r}")
        self.peers = tuple(n for n in self.nodes if n != node.name)
        self.ring = HashRing(len(self.nodes))
        self._resolve = resolve or self._local

    def _local(self, node_name: str, name: str) -> Pid | None:
        return self.node.whereis(name) if node_name == self.node.name else None

    def home(self, key: str) -> str:
        """The node that creates and compacts playlist `key` (and keeps user `key`'s queue)."""
        return self.nodes[self.ring.owner(key)]

    def lookup(self, node_name: str, name: str) -> Pid | None:
        """The process registered as `name` on node `node_name`, if that node is up."""
        return self._resolve(node_name, name)

    def replicas(self, node_name: str) -> Pid | None:
        return self._resolve(node_name, REPLICAS)

    def local(self, name: str) -> Pid | None:
        return self.node.whereis(name)

    def client_id(self, playlist: str, epoch: int, writer: str | None = None) -> int:
        """The CRDT client id of `writer` (default: this node's replica) in one epoch of a
        playlist; "$compact" is the writer of an epoch's first document."""
        name = f"playlist/{playlist}/{epoch}/{writer or self.node.name}"
        return seed_for(self.config.seed, name) % CLIENT_IDS


def check_name(what: str, value: Any) -> str:
    """`value` if it is an id a playlist keeps (a playlist, track, user or entry id)."""
    if type(value) is not str or not 0 < len(value) <= MAX_ID:
        raise BadRequest(f"{what} must be a str of 1..{MAX_ID} characters, got {value!r:.80}")
    return value


def check_position(value: Any) -> int | None:
    if value is not None and (type(value) is not int or value < 0):
        raise BadRequest(f"a position is an int >= 0 (0: the top) or None (the end), got {value!r:.60}")
    return value
