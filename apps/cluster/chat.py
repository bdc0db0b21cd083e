"""The chat application (`apps.chat`) across a cluster's nodes: a start function for
`letitcrash cluster start --ray auto --nodes N apps.cluster.chat:start`.

Each node runs a `ChatService` on its own LMDB store (`$LETITCRASH_DATA/NAME@HOST`, by default
under the system's temporary directory) with the same `ChatConfig`: `shards` (16 unless
$LETITCRASH_CHAT_SHARDS) placed on the cluster's nodes ($LETITCRASH_CLUSTER_NODES, which
a Ray node host sets: shard i on node i mod N). Sessions may be on any node; a shard on
another node is reached over the nodes' streams. A front end connects each device on
`ChatService.home_node(user)`, the node of its user's shard (session and shard placed by
the same key): a user's own traffic (attach, items, confirms) then stays on that node, and
a message crosses only when its recipient is homed on another node (the store and its
answer, then the receipt and its acknowledgement, batched with others between shards).

A shard is found across nodes through the cluster's global names (`actors.global_names`):
a `ShardNames` process on each node registers the node's shards under their names, again
after a shard restarts; a node gone takes its names with it, and its shards are
unavailable (the clients retry with the same client id) until the cluster layer starts it
again and its shards come back from its store. Nothing acknowledged is lost: a send is
acknowledged once the recipient's home shard has stored it.

A store is a directory on the node's machine: on a cluster of machines, a node that Ray
starts again on another machine finds its store only if $LETITCRASH_DATA is shared by the
machines, or if the node is kept on its machine (Ray resources); else its shards start
empty there (what they held waits on the old machine's disk).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from actors import GenServer, Node, Pid, global_names
from apps.chat import ChatConfig, ChatService
from storage import Store

from .host import NODES_VARIABLE

REPUBLISH_EVERY = 0.1  # seconds between checks that this node's shards are registered


def cluster_nodes(node: Node) -> tuple[str, ...]:
    """The cluster's node names ($LETITCRASH_CLUSTER_NODES, comma-separated), or this node alone."""
    names = tuple(n for n in os.environ.get(NODES_VARIABLE, "").split(",") if n)
    if names and node.name not in names:
        raise ValueError(f"node {node.name} is not one of ${NODES_VARIABLE} ({', '.join(names)})")
    return names or (node.name,)


def data_directory(node: Node) -> str:
    """Where `node` keeps its store: $LETITCRASH_DATA/NAME@HOST (a node restarted finds it there)."""
    root = os.environ.get("LETITCRASH_DATA") or os.path.join(tempfile.gettempdir(), "letitcrash-cluster-data")
    path = os.path.join(root, node.name)
    os.makedirs(path, exist_ok=True)
    return path


class ShardNames(GenServer):
    """Keeps this node's shards registered under their global names (see the module docstring)."""

    def init(self, names: list[str]) -> None:
        self.names = names
        self.send_after(0, self.pid, "check")

    async def handle_info(self, msg: Any) -> None:
        if msg != "check":
            return
        for name in self.names:
            pid = self.node.whereis(name)
            if pid is not None and global_names.whereis_name(self.node, name) != pid:
                await global_names.register_name(self, name, pid)  # False while an old pid holds it
        self.send_after(REPUBLISH_EVERY, self.pid, "check")


def resolver(node: Node) -> Any:
    """The chat router's `resolve(node name, name)` for a cluster: local names here, the
    others through the global names."""
    def resolve(node_name: str, name: str) -> Pid | None:
        if node_name == node.name:
            return node.whereis(name)
        pid = global_names.whereis_name(node, name)
        return pid if pid is not None and pid.node_name == node_name else None
    return resolve


def serve(node: Node, store: Store, config: ChatConfig) -> ChatService:
    """Start this node's part of the chat (on `store`, its shards placed on `config.nodes`)."""
    service = ChatService(node, store, config, resolve=resolver(node))
    service.start()
    router = service.router
    node.spawn(ShardNames, [router.name_of(i) for i in router.hosted_here()])
    return service


def start(node: Node) -> ChatService:
    """Start this node's part of the chat; returns its service (the client API)."""
    config = ChatConfig(shards=int(os.environ.get("LETITCRASH_CHAT_SHARDS", "16")), nodes=cluster_nodes(node))
    return serve(node, Store(data_directory(node), node), config)
