"""The fallback cache: the last good answer of each (route, arg), for when the route's
dependency cannot answer.

`FallbackCache` owns the node table "gateway.cache" ((route, arg) -> the answer, msgpack
encoded, so a reader gets its own copy) and keeps it in LMDB (event-sourced: one event
per new answer), so a restarted gateway still has its fallbacks. At most `limit`
answers per route: the oldest go first. Pools cast `("put", route, arg, blob)`; the front
reads the table without a message.
"""
from __future__ import annotations

from typing import Any

from actors import unpackb
from storage import EventSourcedServer, Store

NAME = TABLE = "gateway.cache"  # the process and the table it owns


def cached(node: Any, route: str, arg: Any) -> tuple[bool, Any]:
    """(True, the cached answer) or (False, None), read from the table without a message."""
    table = node.table(TABLE)
    blob = None if table is None else table.get((route, arg))
    return (False, None) if blob is None else (True, unpackb(blob))


def apply_cache(state: dict, event: list) -> None:
    """Fold one event into the cache's state: {route: {arg: blob}}, oldest first."""
    entries = state.setdefault(event[1], {})
    entries.pop(event[2], None)
    if event[0] == "put":
        entries[event[2]] = event[3]


class FallbackCache(EventSourcedServer):
    """`init(store, key, limit)`; see the module docstring."""

    snapshot_every = 500

    def init(self, store: Store, key: Any, limit: int) -> None:
        super().init(store, key)
        self.limit = limit
        self.table = self.node.new_table(TABLE)
        for route, entries in self.state.items():
            for arg, blob in entries.items():
                self.table.put((route, arg), blob)

    def initial_state(self) -> dict:
        return {}

    def apply(self, event: list) -> None:
        apply_cache(self.state, event)

    def handle_cast(self, msg: tuple) -> None:
        _, route, arg, blob = msg
        entries = self.state.get(route, {})
        if entries.get(arg) == blob:
            return
        if arg not in entries and len(entries) >= self.limit:
            oldest = next(iter(entries))
            self.persist(["drop", route, oldest])
            self.table.delete((route, oldest))
        self.persist(["put", route, arg, blob])
        self.table.put((route, arg), blob)
