"""Placement: which live node a key lives on (rendezvous hashing).

    place("room-7", ["a@h", "b@h", "c@h"])      # "b@h", on every machine, every run
    node_for(node, "room-7")                    # over this node and those connected to it

Contract:
- `place(key, nodes)` is a pure function of the key and the set of node names: the order
  of `nodes` and the process it runs in do not matter (a keyed BLAKE2b, never `hash()`),
  so a simulation and a real cluster place the same keys on the same nodes.
- Rendezvous (highest random weight) hashing: each key goes to the node with the highest
  weight for it. When a node goes, only its keys move (each to its next-highest node);
  when one joins, it takes about 1/N of the keys, from every node.
- A key is a str, bytes or int (anything else raises `TypeError`: a key that hashes
  differently in another process would place differently there); no nodes raises
  `ValueError`. At most `MAX_NODES` nodes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

MAX_NODES = 100_000


def key_bytes(key: str | bytes | int) -> bytes:
    """The bytes a key is hashed as: a type tag, then its value."""
    kind = type(key)
    if kind is str:
        return b"s" + key.encode()  # type: ignore[union-attr]
    if kind is bytes:
        return b"b" + key  # type: ignore[operator]
    if kind is int:
        return b"i" + str(key).encode()
    raise TypeError(f"a placement key is a str, bytes or int, not {kind.__name__}: {key!r:.80}")


def weight(node: str, key: bytes) -> int:
    """Node `node`'s weight for the (encoded) key."""
    return int.from_bytes(hashlib.blake2b(node.encode() + b"\0" + key, digest_size=8).digest(), "big")


def place(key: str | bytes | int, nodes: Iterable[str]) -> str:
    """The node of `nodes` that `key` lives on (see the module docstring)."""
    data = key_bytes(key)
    best, best_weight = None, -1
    count = 0
    for node in nodes:
        count += 1
        w = weight(node, data)
        if w > best_weight or (w == best_weight and best is not None and node > best):
            best, best_weight = node, w
    if best is None:
        raise ValueError(f"no live node to place {key!r:.80} on")
    assert count <= MAX_NODES, f"placement over {count} nodes, over the limit of {MAX_NODES}"
    return best


def live_nodes(node: Any) -> list[str]:
    """`node` and the nodes connected to it, sorted: the live node list it places over."""
    return sorted([node.name, *node.nodes()])


def node_for(node: Any, key: str | bytes | int) -> str:
    """The live node (as `node` sees the cluster) that `key` lives on."""
    return place(key, live_nodes(node))
