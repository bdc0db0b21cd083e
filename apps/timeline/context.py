"""Where timeline processes live: each user on one node of `TimelineConfig.nodes` by
rendezvous hashing (`actors.placement.place(user, nodes)`), its author and timeline
entities both there, started by that node's `UserEntities` routers (`storage.cluster`:
a router refuses a user of another node, so a user's entities are never activated on
two nodes at once; while its node is down or cut off, the user is unavailable); the
registered names of each node's timeline processes; `UserEntity`, the base of the
author and timeline entities.

A multi-node deployment passes `resolve(node name, registered name) -> pid | None`,
which gives a pid at once where a `RemoteName` would be resolved only on sending (the
simulator looks names up on the named node); the default only knows the local node.
HOOK-NEEDED: `storage.Entities` starts an entity as `init(store, key)` only, so the
entity classes get this context as a class attribute of a per-service subclass (`bind`).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from actors import Node, Pid
from actors.placement import place
from storage import EventSourcedServer, Store, UnencodableValue
from storage.cluster import ClusterEntities

from .config import TimelineConfig
from .errors import BadRequest

IDS, FANOUT, LIVE, AUTHORS, TIMELINES = ("timeline.ids", "timeline.fanout", "timeline.live",
                                         "timeline.authors", "timeline.timelines")


class Context:
    """One node's view of a timeline deployment."""

    def __init__(self, node: Node, config: TimelineConfig,
                 resolve: Callable[[str, str], Pid | None] | None = None,
                 activated: Callable[[Any, Pid], None] | None = None) -> None:
        self.node = node
        self.config = config
        self.nodes = config.nodes or (node.name,)
        if node.name not in self.nodes:
            raise ValueError(f"node {node.name!r} is not in TimelineConfig.nodes {self.nodes!r}")
        self.machine = self.nodes.index(node.name)  # the Snowflake machine id of this node
        self._resolve = resolve or self._local
        self.activated = activated  # told of every entity that starts (the simulator's check)

    def _local(self, node_name: str, name: str) -> Pid | None:
        return self.node.whereis(name) if node_name == self.node.name else None

    def home(self, user: int) -> str:
        """The node hosting `user`'s timeline and author processes."""
        return place(user, self.nodes)

    def timelines(self, user: int) -> Pid | None:
        return self._resolve(self.home(user), TIMELINES)

    def authors(self, user: int) -> Pid | None:
        return self._resolve(self.home(user), AUTHORS)

    def local(self, name: str) -> Pid | None:
        return self.node.whereis(name)

    def lives(self) -> list[Pid]:
        """The real-time push process of every node that is up."""
        return [pid for pid in (self._resolve(n, LIVE) for n in self.nodes) if pid is not None]


class UserEntities(ClusterEntities):
    """A node's router of one kind of user entity: key `(kind, user)` lives on the user's
    node (`Context.home`)."""

    def place_key(self, key: Any, nodes: tuple[str, ...]) -> str:
        if type(key) is not tuple or len(key) != 2 or type(key[1]) is not int:
            raise UnencodableValue(f"a user entity's key is (kind, user id), not {key!r:.80}")
        return place(key[1], nodes)


class UserEntity(EventSourcedServer):
    """The base of a user's entities, keyed `(kind, user)`: `ctx` is set by `bind`;
    `answer(request, caller)` serves calls, and a malformed request is answered with a
    `BadRequest` naming it."""

    ctx: Context

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        self.user = key[1]
        if self.ctx.activated is not None:
            self.ctx.activated(key, self.pid)

    def handle_call(self, request: Any, caller: Any) -> Any:
        try:
            return self.answer(request, caller)
        except BadRequest as exc:
            return exc
        except (TypeError, ValueError, IndexError) as exc:
            return BadRequest(f"{self.key[0]} {self.user} cannot take {request!r:.80}: {exc}")

    def answer(self, request: Any, caller: Any) -> Any:
        raise BadRequest(f"{self.key[0]} {self.user} does not understand {request!r:.80}")


def bind(cls: type, context: Context) -> type:
    """A subclass of entity class `cls` that knows `context` (`Entities` starts an entity as `init(store, key)` only)."""
    return type(cls.__name__, (cls,), {"ctx": context, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


MAX_NAME = 64
"""Longest user name `user_id` takes by default (characters): the chat's `max_id_len`."""


def check_name(name: Any, max_len: int = MAX_NAME, what: str = "user name") -> str:
    """`name` if it is a user name: a non-empty str of at most `max_len` printable
    characters (spaces allowed); else `BadRequest` naming `what` is wrong."""
    if type(name) is not str:
        raise BadRequest(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise BadRequest(f"{what} cannot be empty")
    if len(name) > max_len:
        raise BadRequest(f"{what} of {len(name)} characters; the limit is {max_len}")
    if not name.isprintable():
        at = next(i for i, char in enumerate(name) if not char.isprintable())
        raise BadRequest(f"{what} {name[:40]!r} has a control character or a separator other than "
                         f"space (at {at})")
    return name


def user_id(name: Any, max_len: int = MAX_NAME) -> int:
    """The user id of a user name (`check_name`), for callers that name their users (the
    chat server): 63 bits of blake2b of the name, the same in every process and
    interpreter (a collision needs about 3 billion users)."""
    digest = hashlib.blake2b(check_name(name, max_len).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def check_user(what: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise BadRequest(f"{what} must be a user id (an int in [0, 2**63)), got {value!r:.60}")
    return value
