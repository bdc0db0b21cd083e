"""PlaylistService: Spotify-style collaborative playlists as one supervision tree per node.

    service = PlaylistService(node, store)                 # PlaylistConfig() by default
    service.start()
    run = node.run_until_complete
    run(service.create(node, "road-trip", "Road trip"))    # on the playlist's home node
    entry = run(service.add(node, "road-trip", "spotify:track:1", "alice"))
    run(service.move(node, "road-trip", entry, 0)); run(service.remove(node, "road-trip", entry))
    run(service.view(node, "road-trip"))                   # {"name", "entries": [[id, track, user]], ...}
    run(service.play(node, "alice", "road-trip", 160)); run(service.next_track(node, "alice"))

    playlists (one_for_one)
    ├─ outbox      Outbox: playlists with changes a peer node has not acknowledged
    ├─ replicas    Entities of Replica: this node's replica of each playlist (CRDT document)
    ├─ edge        AudioEdge: the LRU of track heads, with prefetch
    └─ queues      Entities of PlayQueue: users' play queues (on each user's home node)

Edits through the service go to this node's replica (every node takes edits; replicas
merge); devices edit offline and sync (`apps.playlists.device`). Every API function takes
`caller`, the calling process (it returns a coroutine) or the `Node` (a `Future`); errors
are raised: `BadRequest` (nothing stored), `UnknownPlaylist`, `Unavailable` (retry), and
the kernel's call errors.
"""
from __future__ import annotations

from typing import Any, Callable

from actors import Node, Pid, Process
from storage import Entities, Store, entity_call
from supervision import ChildSpec

from apps.common import TreeService
from apps.timeline.context import bind

from .config import PlaylistConfig
from .context import EDGE, OUTBOX, QUEUES, REPLICAS, Context, check_name, check_position
from .errors import BadRequest, Unavailable
from .outbox import Outbox
from .player import AudioEdge, PlayQueue, check_kbps
from .replica import Replica


class PlaylistService(TreeService):
    """The playlist application on one node; see the module docstring. `max_restarts`:
    what the top supervisor allows in 5 s before the node's playlists give up."""

    name = "playlists"

    def __init__(self, node: Node, store: Store, config: PlaylistConfig | None = None, *,
                 resolve: Callable[[str, str], Pid | None] | None = None, max_restarts: int = 10) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or PlaylistConfig()
        self.ctx = Context(node, self.config, resolve)

    def children(self) -> list[ChildSpec]:
        ctx, config, store = self.ctx, self.config, self.store
        entities = (config.idle_timeout, config.max_active)
        return [
            ChildSpec("outbox", Outbox, args=(store, ctx), options={"name": OUTBOX}),
            ChildSpec("replicas", Entities, args=(store, bind(Replica, ctx), *entities), options={"name": REPLICAS}),
            ChildSpec("edge", AudioEdge, args=(ctx,), options={"name": EDGE}),
            ChildSpec("queues", Entities, args=(store, bind(PlayQueue, ctx), *entities), options={"name": QUEUES}),
        ]

    # -- playlists ------------------------------------------------------------------------------

    def create(self, caller: Node | Process, playlist: str, name: str) -> Any:
        """Create `playlist` on its home node: its epoch (0) once stored there. A retry of
        a create answers the same; the name can be changed later (`rename`)."""
        check_name("a playlist id", playlist)
        return self._replica(caller, playlist, ("create", name), self.ctx.home(playlist))

    def add(self, caller: Node | Process, playlist: str, track: str, user: str,
            position: int | None = None) -> Any:
        """Add `track` at `position` (None: the end), added by `user`: its entry id."""
        return self._edit(caller, playlist, ("add", check_name("a track id", track), check_name("a user id", user),
                                             check_position(position)))

    def remove(self, caller: Node | Process, playlist: str, entry: str) -> Any:
        """Remove entry `entry`: False if the playlist did not have it."""
        return self._edit(caller, playlist, ("remove", check_name("an entry id", entry)))

    def move(self, caller: Node | Process, playlist: str, entry: str, position: int) -> Any:
        """Move entry `entry` to `position` (counted without it): False if it is not there."""
        if position is None:
            raise BadRequest("a move names the position to move to")
        return self._edit(caller, playlist, ("move", check_name("an entry id", entry), check_position(position)))

    def rename(self, caller: Node | Process, playlist: str, name: str) -> Any:
        return self._edit(caller, playlist, ("meta", "name", name))

    def describe(self, caller: Node | Process, playlist: str, description: str) -> Any:
        return self._edit(caller, playlist, ("meta", "description", description))

    def view(self, caller: Node | Process, playlist: str) -> Any:
        """{"playlist", "epoch", "name", "description", "entries": [[entry id, track, user]]}
        as this node's replica has it."""
        return self._replica(caller, check_name("a playlist id", playlist), ("view",))

    def sync(self, caller: Node | Process, playlist: str, epoch: int, state_vector: bytes, update: bytes,
             since: bytes) -> Any:
        """A device's sync (see `apps.playlists.device`): its state vector, and its update
        computed since state vector `since` (what it knows this node has; b"\\x00": the
        whole document). `["ok", epoch, sv, update]`, `["resend", epoch, sv]` (this node
        lacks part of `since`: send the update since `sv`) or `["rebase", epoch, document]`."""
        return self._replica(caller, check_name("a playlist id", playlist), ("sync", epoch, state_vector, update, since))

    # -- playback ------------------------------------------------------------------------------

    def play(self, caller: Node | Process, user: str, playlist: str, kbps: int = 160) -> Any:
        """Play `playlist` from the top for `user` at `kbps` (96, 160 or 320): {"track",
        "entry", "cached", "next", ...}; the next track is prefetched."""
        request = ("play", check_name("a playlist id", playlist), check_kbps(kbps))
        return self._queue(caller, check_name("a user id", user), request)

    def next_track(self, caller: Node | Process, user: str) -> Any:
        """Skip to the next track of `user`'s queue ("track" None at the end)."""
        return self._queue(caller, check_name("a user id", user), ("next",))

    def edge_stats(self, caller: Node | Process) -> Any:
        return self._call(caller, EDGE, ("stats",))

    # -- plumbing -------------------------------------------------------------------------------

    def _edit(self, caller: Node | Process, playlist: str, op: tuple) -> Any:
        return self._replica(caller, check_name("a playlist id", playlist), ("edit", *op))

    def _replica(self, caller: Node | Process, playlist: str, request: tuple, node_name: str | None = None) -> Any:
        return self._entity(caller, REPLICAS, node_name or self.node.name, ("playlist", playlist), request)

    def _queue(self, caller: Node | Process, user: str, request: tuple) -> Any:
        return self._entity(caller, QUEUES, self.ctx.home(user), ("queue", user), request)

    def _entity(self, caller: Node | Process, name: str, node_name: str, key: tuple, request: tuple) -> Any:
        router = self.ctx.lookup(node_name, name)
        if router is None:
            raise Unavailable(f"the playlist processes of node {node_name} are not running")
        return entity_call(caller, router, key, request, self.config.call_timeout)
