"""Playlist limits and numbers, from the Spotify design notes and Spotify's own limits:
playlists of at most 10,000 tracks, names of at most 100 characters and descriptions of
at most 300; audio in three bitrates (96, 160 and 320 kbps); the next track in the queue
is fetched before the current one ends."""
from __future__ import annotations

from dataclasses import dataclass

from apps.common import check_limits, check_nodes

BITRATES = (96, 160, 320)  # kbps: Spotify's Ogg Vorbis ladder (low, normal, very high)


@dataclass(frozen=True, slots=True)
class PlaylistConfig:
    """What a playlist deployment agrees on; `nodes` and `seed` must be the same on every
    node."""

    nodes: tuple[str, ...] = ()
    """Server nodes. Every playlist has a replica on each; its home node (consistent
    hashing) creates it and compacts it. Empty: one node."""
    seed: int = 0
    """Replicas' CRDT client ids derive from it (`actors.seed_for`), never from chance."""
    max_tracks: int = 10_000
    max_update_bytes: int = 1 << 20
    """The largest update a device or a peer may send in one sync."""
    compact_bytes: int = 256 << 10
    """The home replica starts a new epoch (a document holding only the view) once the
    document's history (its size beyond that of a fresh document of its view: tombstones)
    passes this many bytes."""
    snapshot_every: int = 100
    """Updates journalled between two snapshots of a replica's whole document."""
    sync_every: float = 0.5
    """Seconds between two rounds of pushing unacknowledged changes to peer nodes."""
    push_batch: int = 256
    """Playlists pushed per round at most (round-robin): a long partition does not make
    every round touch every changed playlist."""
    max_dirty: int = 100_000
    """Playlists with changes a peer has not acknowledged, per node; beyond, edits wait."""
    idle_timeout: float = 60.0
    max_active: int = 100_000
    call_timeout: float = 5.0
    edge_bytes: int = 64 << 20
    """Each node's audio edge cache (LRU) holds this many bytes of track heads."""
    head_seconds: float = 10.0
    """Seconds of a track's audio fetched ahead (the prefetch of the next track)."""
    origin_latency: float = 0.15
    """Seconds a cache miss costs (fetching from the origin)."""

    def __post_init__(self) -> None:
        check_nodes(self)
        check_limits(self, ints=("max_tracks", "max_update_bytes", "compact_bytes", "snapshot_every",
                                 "push_batch", "max_dirty", "max_active", "edge_bytes"),
                     seconds=("sync_every", "idle_timeout", "call_timeout", "head_seconds", "origin_latency"))
        if type(self.seed) is not int:
            raise ValueError(f"PlaylistConfig.seed must be an int, got {self.seed!r}")
