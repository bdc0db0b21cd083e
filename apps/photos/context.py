"""Where photo processes live, and what they share on one node: users (and their photos)
on nodes by consistent hashing, the registered names of a node's photo processes, the
feed (a timeline service) and argument checks.

A multi-node deployment passes `resolve(node name, registered name) -> pid | None`,
which gives a pid at once where a `RemoteName` would be resolved only on sending; the
default only knows this node.
"""
from __future__ import annotations

from typing import Any, Callable

from actors import Node, Pid

from apps.chat.router import HashRing
from apps.timeline import TimelineService

from .config import PhotoConfig
from .errors import BadRequest

PHOTOS, BLOBS, THUMBNAILER = "photos.photos", "photos.blobs", "photos.thumbnailer"
MAX_PHOTO_ID = 48  # characters: the feed's client post id is "photo:" + it (at most 64)


class Context:
    """One node's view of a photo deployment. `feed` is the node's timeline service."""

    def __init__(self, node: Node, config: PhotoConfig, feed: TimelineService,
                 resolve: Callable[[str, str], Pid | None] | None = None) -> None:
        self.node = node
        self.config = config
        self.feed = feed
        self.nodes = config.nodes or (node.name,)
        if node.name not in self.nodes:
            raise ValueError(f"node {node.name!r} is not in PhotoConfig.nodes {self.nodes!r}")
        self.ring = HashRing(len(self.nodes))
        self._resolve = resolve or (lambda node_name, name: node.whereis(name) if node_name == node.name else None)

    def home(self, key: int) -> str:
        """The node of user `key`'s photos (or of post `key`'s index entry)."""
        return self.nodes[self.ring.owner(key)]

    def lookup(self, node_name: str, name: str) -> Pid | None:
        return self._resolve(node_name, name)

    def local(self, name: str) -> Pid | None:
        return self.node.whereis(name)


def check_user(value: Any) -> int:
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise BadRequest(f"a user id is an int in [0, 2**63), got {value!r:.60}")
    return value


def check_photo_id(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_PHOTO_ID:
        raise BadRequest(f"a photo id is a str of 1..{MAX_PHOTO_ID} characters, got {value!r:.80}")
    return value


def check_caption(value: Any, most: int) -> str:
    if type(value) is not str or len(value) > most:
        raise BadRequest(f"a caption is a str of at most {most} characters, got {type(value).__name__} "
                         f"of {len(value) if isinstance(value, str) else '?'}")
    return value
