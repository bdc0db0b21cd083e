"""Spotify-style collaborative playlists: a CRDT replica of each playlist on every node
(multi-master, merged as Yjs documents through pycrdt), devices that edit offline and sync
later, compaction into epochs, play queues with prefetch of the next track.

Modules: `service` (PlaylistService, the API and the tree), `replica` (a node's replica of
a playlist: merging, replication, epochs), `outbox` (the durable set of playlists with
changes to push), `device` (a device's offline replica), `player` (play queues, the audio
edge cache), `doc` (the CRDT document as pure functions), `context` (placement, names,
client ids), `config`, `errors`, `sim`.
"""
from .config import BITRATES, PlaylistConfig
from .device import Device, PlaylistDevice
from .errors import BadRequest, PlaylistError, UnknownPlaylist, Unavailable
from .service import PlaylistService

__all__ = ["BITRATES", "BadRequest", "Device", "PlaylistConfig", "PlaylistDevice", "PlaylistError",
           "PlaylistService", "UnknownPlaylist", "Unavailable"]
