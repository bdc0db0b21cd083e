"""Edge caches: one process per region, LRU over real segment bytes.

`LRU` is the data structure (capacity in bytes, hit/miss/eviction counters). `EdgeCache`
is the regional process: `("get", key)` answers the bytes from the cache, or fetches them
from the origin (the store's blobs), keeps them and answers. Every `prefetch_every`
seconds it loads the first segments of the most popular titles (from the view counter)
before anyone asks. Its contents are soft: a restarted cache starts cold.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from actors import GenServer

MAX_ENTRIES = 1_000_000


class LRU:
    """A byte-bounded LRU map. An item larger than the capacity is never kept."""

    def __init__(self, capacity: int) -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError(f"cache capacity must be a positive number of bytes, got {capacity!r}")
        self.capacity = capacity
        self.used = 0
        self.items: OrderedDict[Any, bytes] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: Any) -> bytes | None:
        data = self.items.get(key)
        if data is None:
            self.misses += 1
            return None
        self.items.move_to_end(key)
        self.hits += 1
        return data

    def put(self, key: Any, data: bytes) -> None:
        if len(data) > self.capacity:
            return
        old = self.items.pop(key, None)
        if old is not None:
            self.used -= len(old)
        while self.used + len(data) > self.capacity or len(self.items) >= MAX_ENTRIES:
            _, gone = self.items.popitem(last=False)
            self.used -= len(gone)
            self.evictions += 1
        self.items[key] = data
        self.used += len(data)
        assert 0 <= self.used <= self.capacity

    def __contains__(self, key: Any) -> bool:
        return key in self.items

    @property
    def hit_ratio(self) -> float:
        asked = self.hits + self.misses
        return self.hits / asked if asked else 0.0

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "hit_ratio": round(self.hit_ratio, 4), "used": self.used, "items": len(self.items)}


class EdgeCache(GenServer):
    """`init(region, capacity, origin, prefetch_every, prefetch_top)`. `origin` fetches: an
    async function `(proc, key) -> bytes` and `popular(proc, n) -> [(key, ...)]` of keys
    to prefetch (both from the video service)."""

    def init(self, region: str, capacity: int, origin: Any, prefetch_every: float, prefetch_top: int) -> None:
        self.region = region
        self.lru = LRU(capacity)
        self.origin = origin
        self.prefetch_every = prefetch_every
        self.prefetch_top = prefetch_top
        self.prefetched = 0
        self.send_after(prefetch_every, self.pid, "prefetch")

    async def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "get":
            key = request[1]
            data = self.lru.get(key)
            if data is None:
                try:
                    data = await self.origin.fetch(self, key)
                except Exception as exc:  # noqa: BLE001 - the origin's failure is the caller's answer
                    return exc
                self.lru.put(key, data)
            return data
        if request[0] == "stats":
            return dict(self.lru.stats(), region=self.region, prefetched=self.prefetched)
        return ValueError(f"edge cache {self.region}: unknown request {request!r:.200}")

    async def handle_info(self, msg: Any) -> None:
        if msg != "prefetch":
            return super().handle_info(msg)
        self.send_after(self.prefetch_every, self.pid, "prefetch")
        try:
            for key in await self.origin.popular_segments(self, self.prefetch_top):
                if key not in self.lru:
                    self.lru.put(key, await self.origin.fetch(self, key))
                    self.prefetched += 1
        except Exception:  # noqa: BLE001 - a prefetch is best effort: the next round tries again
            pass
        return None
