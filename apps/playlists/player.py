"""Playback: a play queue per user, and each node's audio edge cache with prefetch.

`AudioEdge` (one per node) keeps the heads of tracks (their first `head_seconds` of audio
at one bitrate) in an LRU of `edge_bytes` (`apps.video.cache.LRU`). A `("get", track,
kbps)` call answers `[bytes, cached]` at once on a hit; a miss fetches from the origin
(`origin_latency` seconds, in a linked fetcher process, so the edge serves others
meanwhile) and answers when the bytes are in. `("prefetch", track, kbps)`, a cast, fetches
a head nobody asked for yet. Its contents are soft: a restarted edge starts cold.

`PlayQueue` is a user's queue (an activated entity `("queue", user)` on the user's home
node), persistent: the playlist it plays, the current entry and its position, the
bitrate. It follows the live playlist (the node's replica), as Spotify's queue follows
its context: `("play", playlist, kbps)` starts at the top, `("next",)` goes to the entry
after the current one (or, if that was removed meanwhile, to the one now at its
position). Each answer fetches the now-playing head through the edge and prefetches the
next track's, so that by the time the track ends the next one plays from the cache
("cached": True in the answer).

Track audio here is synthetic: `track_head` makes a track's bytes from its id, the size a
real head at that bitrate has.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from actors import GenServer, NoReply, Process
from storage import PersistentServer, Store, entity_call

from apps.common import RETRYABLE
from apps.video.cache import LRU

from .config import BITRATES
from .context import EDGE, REPLICAS, Context, check_name
from .errors import BadRequest, PlaylistError, Unavailable

MAX_FETCHING = 10_000  # heads being fetched from the origin at once, per edge


def track_head(track: str, kbps: int, seconds: float) -> bytes:
    """The first `seconds` of `track` at `kbps` (synthetic, the same for the same track)."""
    seed = int.from_bytes(hashlib.blake2b(f"{track}/{kbps}".encode(), digest_size=8).digest(), "big")
    size = int(kbps * 125 * seconds)  # kbit/s -> bytes
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def check_kbps(kbps: Any) -> int:
    if type(kbps) is not int or kbps not in BITRATES:
        raise BadRequest(f"a bitrate is one of {BITRATES} kbps, got {kbps!r:.40}")
    return kbps


async def _fetch(proc: Process, edge: Any, key: tuple, latency: float, seconds: float) -> None:
    """A fetcher: the origin's answer, `latency` seconds later."""
    await proc.sleep(latency)
    proc.send(edge, ("$fetched", key, track_head(key[0], key[1], seconds)))


class AudioEdge(GenServer):
    """See the module docstring. Spawned as `(context)`."""

    def init(self, ctx: Context) -> None:
        self.config = ctx.config
        self.lru = LRU(ctx.config.edge_bytes)
        self.fetching: dict[tuple, list] = {}  # key -> callers waiting for it
        self.prefetched = 0

    def handle_call(self, request: Any, caller: Any) -> Any:
        if type(request) is tuple and len(request) == 3 and request[0] == "get":
            key = (request[1], request[2])
            data = self.lru.get(key)
            if data is not None:
                return [data, True]
            return self._fetch(key, caller)
        if request == ("stats",):
            return dict(self.lru.stats(), prefetched=self.prefetched)
        return BadRequest(f"the audio edge cannot take {request!r:.80}")

    def handle_cast(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "prefetch":
            key = (msg[1], msg[2])
            if key not in self.lru and key not in self.fetching:
                self.prefetched += 1
                self._fetch(key, None)
        else:
            super().handle_info(msg)  # logged and dropped

    def _fetch(self, key: tuple, caller: Any) -> Any:
        waiting = self.fetching.get(key)
        if waiting is None:
            if len(self.fetching) >= MAX_FETCHING:
                return Unavailable(f"the audio edge is fetching {len(self.fetching)} tracks; retry")
            waiting = self.fetching[key] = []
            self.spawn_link(_fetch, self.pid, key, self.config.origin_latency, self.config.head_seconds)
        if caller is not None:
            waiting.append(caller)
        return NoReply

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "$fetched":
            _, key, data = msg
            self.lru.put(key, data)
            for caller in self.fetching.pop(key, ()):
                self.reply(caller, [data, False])
        else:
            super().handle_info(msg)


class PlayQueue(PersistentServer):
    """See the module docstring."""

    ctx: Context

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        self.user = key[1]

    def initial_state(self) -> dict[str, Any]:
        return {"playlist": None, "entry": None, "index": 0, "kbps": BITRATES[1], "played": 0}

    def handle_call(self, request: Any, caller: Any) -> Any:
        return self._answer(request)

    async def _answer(self, request: Any) -> Any:
        try:
            if type(request) is tuple and len(request) == 3 and request[0] == "play":
                playlist, kbps = check_name("a playlist id", request[1]), check_kbps(request[2])
                return await self._go(playlist, kbps, None)
            if request == ("next",):
                s = self.state
                if s["playlist"] is None:
                    raise BadRequest(f"user {self.user} is not playing anything")
                return await self._go(s["playlist"], s["kbps"], s["entry"])
            raise BadRequest(f"the play queue of {self.user} cannot take {request!r:.80}")
        except PlaylistError as exc:
            return exc

    async def _go(self, playlist: str, kbps: int, after: str | None) -> dict[str, Any]:
        """Play the entry after `after` (None: the first); the answer names it."""
        s = self.state
        entries = (await self._ask(REPLICAS, ("playlist", playlist), ("view",)))["entries"]
        if after is None:
            index = 0
        else:
            ids = [e[0] for e in entries]
            index = ids.index(after) + 1 if after in ids else s["index"]
        if index >= len(entries):
            s.update(playlist=None, entry=None, index=0)
            return {"playlist": playlist, "track": None, "entry": None, "cached": False, "next": None}
        entry = entries[index]
        following = entries[index + 1][1] if index + 1 < len(entries) else None
        data, cached = await self._ask(EDGE, None, ("get", entry[1], kbps))
        if following is not None:
            self.cast(EDGE, ("prefetch", following, kbps))
        s.update(playlist=playlist, entry=entry[0], index=index, kbps=kbps, played=s["played"] + 1)
        return {"playlist": playlist, "track": entry[1], "entry": entry[0], "kbps": kbps, "bytes": len(data),
                "cached": cached, "next": following}

    async def _ask(self, name: str, key: Any, request: tuple) -> Any:
        pid = self.ctx.local(name)
        timeout = self.ctx.config.call_timeout / 2
        try:
            if pid is None:
                raise Unavailable(f"{name} is not running on {self.ctx.node.name}")
            if key is not None:
                return await entity_call(self, pid, key, request, timeout)
            answer = await self.call(pid, request, timeout)
        except RETRYABLE as exc:
            raise Unavailable(f"{name} did not answer the play queue of {self.user} ({exc!r:.60})") from None
        if isinstance(answer, PlaylistError):
            raise answer
        return answer
