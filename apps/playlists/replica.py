"""A playlist's replica on one node: one activated entity per playlist and node
(`("playlist", id)`), holding the playlist's CRDT document (`apps.playlists.doc`),
event-sourced in LMDB: each change is journalled as the update it made, and a snapshot
holds the whole document every `snapshot_every` changes.

Every node's replica takes edits (multi-master): from devices (`("sync", epoch,
state_vector, update, since)`: the device's update is merged and stored before the
answer, which carries what the device lacks) and from the service API (`("edit", ...)`).
An update is what its writer has beyond the state vector `since`; Yrs would keep an
update whose `since` this replica does not cover pending (unmerged, unstored), so such an
update is refused and the writer told this replica's state vector. Calls:
- `("create", name)` (home node only) -> the playlist's epoch; a retry answers the same;
- `("sync", epoch, sv, update, since)` -> `["ok", epoch, sv, update for the device]`,
  `["resend", epoch, sv]` when the update builds on what this replica lacks, or
  `["rebase", epoch, document]` when the device edits an older epoch;
- `("edit", "add", track, user, position)` -> entry id; `("edit", "remove", id)` and
  `("edit", "move", id, position)` -> bool; `("edit", "meta", key, value)` -> "ok";
- `("view",)` -> {"playlist", "epoch", "name", "description", "entries"};
- `("fetch",)` -> `["doc", epoch, document, base]`, for a replica bootstrapping.
A replica that knows nothing of a playlist asks its home node's replica for it (answering
`UnknownPlaylist` if the home does not know it either, `Unavailable` if it cannot ask).

Replication. Each replica remembers, per peer node, the (epoch, revision) of its own
changes that peer acknowledged. A change is pushed at once to every peer behind
(`("merge", node, epoch, rev, update, since, base)`: the update computed from the peer's
last known state vector `since`, or the whole document), and answered with `("merged",
node, epoch, rev, sv)`. Before a replica's first change since it was last in step with every
peer, it has the node's outbox (`apps.playlists.outbox`) record the playlist as changed;
the outbox pokes changed playlists (`("push",)`) every `sync_every` seconds until every
peer has acknowledged, so changes reach nodes that were down or cut off.

Epochs. When the home replica's document holds more than `compact_bytes` of history
(tombstones) and every peer is at its epoch, it starts the next epoch: a fresh document
holding only the view, with the old document kept as `base`. A peer still at the old epoch merges `base` into its
document, carries its own changes since `base` over as intents (`doc.diff`, `doc.replay`)
and adopts the new epoch. A device on an old epoch is told to rebase and does the same.
Only the home starts epochs, and only when every peer is at its epoch, so no replica is
ever two epochs behind.

A malformed update is answered with `BadRequest`, and the replica reopens its document
from the latest snapshot's copy and the changes journalled since (a merged update cannot
be taken back), so nothing of it stays.
"""
from __future__ import annotations

from typing import Any

from actors import NoProc
from storage import ActivationError, EventSourcedServer, Store, entity_call, entity_cast

from apps.common import RETRYABLE

from . import doc as pdoc
from .context import OUTBOX, Context, check_name, check_position
from .errors import BadRequest, PlaylistError, UnknownPlaylist, Unavailable

E_NEW, E_UPDATE, E_PEER = "new", "u", "p"
RETRY = (*RETRYABLE, ActivationError)
READER = 0  # the client id of documents only read (a base's view), never edited
EMPTY_SV = b"\x00"  # the state vector of an empty document: an update "since" it is the whole


class Replica(EventSourcedServer):
    """See the module docstring."""

    ctx: Context

    def init(self, store: Store, key: Any) -> None:
        self.playlist = key[1]
        self.snapshot_every = self.ctx.config.snapshot_every
        self.doc: Any = None  # the live document, opened from the state on first use
        self.tail: list[bytes] = []  # the changes since `state["doc"]`, to reopen the document
        self.size_estimate = 0  # bytes of the document: its stored size plus the changes since
        self.checked_at = 0  # the size at the last compaction check
        self.peer_sv: dict[str, bytes] = {}  # the state vector each peer last told us
        self.dirty_told = False  # the outbox has this playlist as changed
        super().init(store, key)
        check_name("a playlist id", self.playlist)

    def initial_state(self) -> dict[str, Any]:
        """`epoch` -1: nothing known. `doc`: the document at the latest snapshot or new
        epoch (the live one is `self.doc`). `base`: the previous epoch's last document.
        `rev`: this replica's changes. `peers`: node -> [epoch, rev] it acknowledged."""
        return {"epoch": -1, "doc": None, "base": None, "rev": 0, "peers": {}}

    def apply(self, event: list) -> None:
        s = self.state
        kind = event[0]
        if kind == E_UPDATE:
            self._document().apply(event[1])  # a no-op when it is already merged
            self.tail.append(event[1])
            self.size_estimate += len(event[1])
            s["rev"] += 1
        elif kind == E_NEW:
            _, s["epoch"], s["doc"], s["base"] = event
            self.doc, self.tail = None, []
            self.size_estimate = self.checked_at = len(s["doc"])
            s["rev"] += 1
        else:
            assert kind == E_PEER, event
            s["peers"][event[1]] = [event[2], event[3]]

    def snapshot_state(self) -> dict[str, Any]:
        if self.doc is not None:  # saved now: the document as it is
            self.state["doc"], self.tail = self.doc.encode(), []
        return self.state

    def _document(self) -> Any:
        if self.doc is None:
            s = self.state
            assert s["epoch"] >= 0 and s["doc"] is not None, (self.playlist, s["epoch"])
            self.doc = pdoc.PlaylistDoc(self.ctx.client_id(self.playlist, s["epoch"]), s["doc"])
            for delta in self.tail:
                self.doc.apply(delta)
        return self.doc

    # -- requests ---------------------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        return self._answer(request)

    async def _answer(self, request: Any) -> Any:
        try:
            if type(request) is not tuple or not request:
                raise BadRequest(f"playlist {self.playlist} cannot take {request!r:.80}")
            kind = request[0]
            if kind == "create":
                return await self._create(check_name("a playlist name", request[1]) if len(request) == 2 else None)
            if kind == "fetch":
                return self._fetch()
            await self._known()
            if kind == "sync" and len(request) == 5:
                return await self._sync(*request[1:])
            if kind == "edit" and len(request) >= 2:
                return await self._edit(request[1:])
            if kind == "view":
                return self._view()
            raise BadRequest(f"playlist {self.playlist} cannot take {request!r:.80}")
        except PlaylistError as exc:
            return exc

    async def _create(self, name: str | None) -> Any:
        if name is None:
            raise BadRequest("create takes the playlist's name")
        if self.ctx.home(self.playlist) != self.ctx.node.name:
            raise BadRequest(f"playlist {self.playlist} is created on its home node "
                             f"{self.ctx.home(self.playlist)}, not {self.ctx.node.name}")
        s = self.state
        if s["epoch"] < 0:
            await self._mark_dirty()
            fresh = pdoc.PlaylistDoc(self.ctx.client_id(self.playlist, 0, "$compact"))
            fresh.set_meta("name", name)
            self._adopt(0, fresh.encode(), None)
        return s["epoch"]

    def _fetch(self) -> Any:
        s = self.state
        if s["epoch"] < 0:
            raise UnknownPlaylist(f"no playlist {self.playlist!r}")
        return ["doc", s["epoch"], self._document().encode(), s["base"]]

    async def _known(self) -> None:
        """Have the playlist, fetching it from its home node if this replica never saw it."""
        if self.state["epoch"] >= 0:
            return
        home = self.ctx.home(self.playlist)
        if home == self.ctx.node.name:
            raise UnknownPlaylist(f"no playlist {self.playlist!r}")
        router = self.ctx.replicas(home)
        try:
            if router is None:
                raise NoProc(home)
            _, epoch, data, base = await entity_call(self, router, self.key, ("fetch",),
                                                     self.ctx.config.call_timeout / 2)
        except RETRY as exc:
            raise Unavailable(f"playlist {self.playlist}: its home node {home} did not answer ({exc!r:.80})") from None
        if self.state["epoch"] < 0:  # (another request may have fetched it meanwhile)
            self._adopt(epoch, data, base)

    async def _sync(self, epoch: Any, sv: Any, update: Any, since: Any) -> list:
        s = self.state
        if type(epoch) is not int or epoch < 0:
            raise BadRequest(f"a sync names the epoch the device edits (an int >= 0), not {epoch!r:.60}")
        try:
            pdoc.clocks(sv)
            builds_on = pdoc.clocks(since)
        except pdoc.BadUpdate as exc:
            raise BadRequest(str(exc)) from None
        if epoch < s["epoch"]:
            return ["rebase", s["epoch"], self._document().encode()]
        if epoch > s["epoch"]:
            raise Unavailable(f"playlist {self.playlist}: the replica on {self.ctx.node.name} is at epoch "
                              f"{s['epoch']}, behind the device's {epoch}; retry")
        doc = self._document()
        if not _covers(doc.state_vector(), builds_on):
            return ["resend", s["epoch"], doc.state_vector()]
        await self._mark_dirty()
        self._merge_update(update)
        return ["ok", s["epoch"], doc.state_vector(), doc.update_since(sv)]

    async def _edit(self, op: tuple) -> Any:
        doc = self._document()
        kind = op[0]
        if kind == "add" and len(op) == 4:
            entry = [doc.new_entry_id(self.state["epoch"]), check_name("a track id", op[1]), check_name("a user id", op[2])]
            position = check_position(op[3])
            if len(doc.view()) >= self.ctx.config.max_tracks:
                raise BadRequest(f"playlist {self.playlist} holds {self.ctx.config.max_tracks} tracks (the limit)")
            edit = lambda: doc.insert(entry, position)
        elif kind == "remove" and len(op) == 2:
            entry_id = check_name("an entry id", op[1])
            edit = lambda: doc.remove(entry_id, self.state["epoch"])
        elif kind == "move" and len(op) == 3:
            entry_id, position = check_name("an entry id", op[1]), check_position(op[2])
            if position is None:
                raise BadRequest("a move names the position to move to")
            edit = lambda: doc.move(entry_id, position)
        elif kind == "meta" and len(op) == 3:
            try:
                pdoc.check_meta(op[1], op[2])
            except pdoc.BadUpdate as exc:
                raise BadRequest(str(exc)) from None
            edit = lambda: doc.set_meta(op[1], op[2])
        else:
            raise BadRequest(f"playlist {self.playlist}: unknown edit {op!r:.80}")
        await self._mark_dirty()
        doc = self._document()  # (the same one: the outbox call cannot change it)
        result, delta = doc.changes(edit)
        if delta is not None:
            self._changed(delta)
        if kind == "add":
            return entry[0]
        return "ok" if kind == "meta" else result

    def _view(self) -> dict[str, Any]:
        doc = self._document()
        return {"playlist": self.playlist, "epoch": self.state["epoch"], **doc.meta(),
                "entries": list(doc.view())}  # (a copy of the list: the caller may change it)

    # -- changes -------------------------------------------------------------------------------

    def _merge_update(self, update: Any) -> bool:
        """Merge an update from a device or a peer; True if it changed the document."""
        doc = self._document()
        try:
            delta = doc.merge(update, self.ctx.config.max_update_bytes)
        except pdoc.BadUpdate as exc:
            self.doc = None  # it holds the bad update: reopened from the snapshot and the tail
            raise BadRequest(f"playlist {self.playlist}: {exc}") from None
        if delta is None:
            return False
        self._changed(delta)
        return True

    def _changed(self, delta: bytes) -> None:
        self.persist([E_UPDATE, delta])
        self._push_all()
        if self.size_estimate - self.checked_at > self.ctx.config.compact_bytes // 4:
            self._maybe_compact()

    def _adopt(self, epoch: int, data: bytes, base: bytes | None) -> None:
        self.persist([E_NEW, epoch, data, base])
        self.save_snapshot()  # the journal need not keep a whole document for long
        self._push_all()

    async def _mark_dirty(self) -> None:
        """Have the outbox record this playlist as changed before the change is made."""
        if self.dirty_told or not self.ctx.peers:
            return
        outbox = self.ctx.local(OUTBOX)
        try:
            if outbox is None:
                raise NoProc(OUTBOX)
            answer = await self.call(outbox, ("dirty", self.playlist), self.ctx.config.call_timeout / 2)
        except RETRYABLE as exc:
            raise Unavailable(f"playlist {self.playlist}: the outbox of {self.ctx.node.name} did not "
                              f"answer ({exc!r:.60})") from None
        if isinstance(answer, Exception):
            raise Unavailable(str(answer))
        self.dirty_told = True

    def _maybe_compact(self) -> None:
        """At the home node, with every peer at this epoch, and more than `compact_bytes`
        of history (the document beyond a fresh one holding its view): the next epoch."""
        s = self.state
        if self.ctx.home(self.playlist) != self.ctx.node.name:
            self.checked_at = self.size_estimate  # (only the home compacts)
            return
        doc = self._document()
        data = doc.encode()
        self.size_estimate = self.checked_at = len(data)
        if any(s["peers"].get(peer, [-1])[0] != s["epoch"] for peer in self.ctx.peers):
            return
        fresh = pdoc.compacted(doc, self.ctx.client_id(self.playlist, s["epoch"] + 1, "$compact"))
        if len(data) - len(fresh) > self.ctx.config.compact_bytes:
            self._adopt(s["epoch"] + 1, fresh, data)

    # -- replication -------------------------------------------------------------------------------

    def handle_cast(self, msg: Any) -> Any:
        kind = msg[0] if type(msg) is tuple and msg else None
        if kind == "merge" and len(msg) == 7 and type(msg[5]) is bytes:
            return self._merged_from(*msg[1:])
        if kind == "merged" and len(msg) == 5:
            return self._acknowledged(*msg[1:])
        if kind == "push":
            return self._push_all(poked=True)
        return super().handle_info(msg)  # logged and dropped

    async def _merged_from(self, sender: str, epoch: int, rev: int, update: bytes, since: bytes,
                           base: bytes | None) -> None:
        s = self.state
        mine = s["epoch"]
        if sender not in self.ctx.peers:
            return
        full = since == EMPTY_SV
        if epoch < mine or (epoch > mine and not full) or (mine >= 0 and epoch > mine and (
                epoch != mine + 1 or base is None)) or (epoch == mine and not full and not _covers(
                    self._document().state_vector(), pdoc.clocks(since))):
            # Stale, or what this replica cannot use (a diff of an epoch it does not have or
            # built on what it lacks, a new epoch without the base to carry its changes
            # over): the answer tells the sender where this replica is (its epoch and state
            # vector); whichever is at the older epoch is pushed the newer one, with its base.
            self._record_peer(sender, epoch, -1)
            self._ack(sender, -1)
            if epoch < mine:
                self._push(sender)
            return
        try:
            await self._mark_dirty()
            before = s["peers"].get(sender)
            in_step = before == [mine, s["rev"]]
            if epoch == mine:
                if self._merge_update(update) and in_step:
                    self._record_peer(sender, mine, s["rev"])  # it sent all that changed
            elif mine < 0:
                self._adopt(epoch, update, base)
            else:
                self._next_epoch(sender, epoch, update, base)
        except PlaylistError:
            return  # not stored: the sender pushes again
        self._ack(sender, rev)

    def _next_epoch(self, sender: str, epoch: int, data: bytes, base: bytes | None) -> None:
        """Adopt `epoch` (the next one), carrying this replica's changes since `base` over."""
        assert epoch == self.state["epoch"] + 1 and base is not None, (self.playlist, epoch, self.state["epoch"])
        doc = self._document()
        try:  # (not journalled: the new epoch's document replaces it)
            doc.merge(base, max(self.ctx.config.max_update_bytes, len(base)))
        except pdoc.BadUpdate as exc:
            self.doc = None
            raise BadRequest(f"playlist {self.playlist}: the base of epoch {epoch} from {sender}: {exc}") from None
        intents = pdoc.diff(pdoc.PlaylistDoc(READER, base).snapshot(), doc.snapshot())
        fresh = pdoc.PlaylistDoc(self.ctx.client_id(self.playlist, epoch))
        try:
            fresh.merge(data, max(self.ctx.config.max_update_bytes, len(data)))
        except pdoc.BadUpdate as exc:
            raise BadRequest(f"playlist {self.playlist}: epoch {epoch} from {sender}: {exc}") from None
        pdoc.replay(fresh, intents, epoch)
        self._adopt(epoch, fresh.encode(), base)

    def _ack(self, sender: str, rev: int) -> None:
        router = self.ctx.replicas(sender)
        if router is not None:
            doc_sv = self._document().state_vector() if self.state["epoch"] >= 0 else EMPTY_SV
            entity_cast(self, router, self.key, ("merged", self.ctx.node.name, self.state["epoch"], rev, doc_sv))

    def _acknowledged(self, node: str, epoch: int, rev: int, sv: bytes) -> None:
        if node not in self.ctx.peers:
            return
        s = self.state
        if epoch == s["epoch"]:
            self.peer_sv[node] = sv
        self._record_peer(node, epoch, rev if epoch == s["epoch"] else -1)
        if self._behind(node):
            if epoch < s["epoch"]:
                self._push(node)  # (a peer at this epoch gets our newer changes when they are made, or poked)
        elif self.dirty_told and not any(self._behind(peer) for peer in self.ctx.peers):
            self._clean()

    def _record_peer(self, node: str, epoch: int, rev: int) -> None:
        known = self.state["peers"].get(node, [-1, -1])
        if [epoch, rev] > known:  # epochs, then revisions, only go up
            self.persist([E_PEER, node, epoch, rev])

    def _behind(self, peer: str) -> bool:
        s = self.state
        return s["epoch"] >= 0 and s["peers"].get(peer) != [s["epoch"], s["rev"]]

    def _push_all(self, poked: bool = False) -> None:
        behind = [peer for peer in self.ctx.peers if self._behind(peer)]
        for peer in behind:
            self._push(peer)
        if poked and not behind:
            self._clean()  # the outbox had it as changed, or it would not have poked

    def _clean(self) -> None:
        self.dirty_told = False
        outbox = self.ctx.local(OUTBOX)
        if outbox is not None:
            self.cast(outbox, ("clean", self.playlist))

    def _push(self, peer: str) -> None:
        s = self.state
        router = self.ctx.replicas(peer)
        if router is None or s["epoch"] < 0:
            return  # its node is down: the outbox's next poke tries again
        doc = self._document()
        known = s["peers"].get(peer, [-1, -1])
        sv = self.peer_sv.get(peer)
        if known[0] == s["epoch"] and sv is not None:
            update, since, base = doc.update_since(sv), sv, None
        else:
            update, since = doc.encode(), EMPTY_SV
            base = s["base"] if known[0] == s["epoch"] - 1 else None
        entity_cast(self, router, self.key, ("merge", self.ctx.node.name, s["epoch"], s["rev"], update, since, base))


def _covers(state_vector: bytes, needed: dict[int, int]) -> bool:
    """Whether a document at `state_vector` has everything up to the clocks `needed`."""
    have = pdoc.clocks(state_vector)
    return all(have.get(client, 0) >= clock for client, clock in needed.items())


def stored_document(found: tuple[int, Any, list] | None) -> tuple[int, Any] | None:
    """A replica's document as stored (`store.read(("playlist", id))`, which a check or a
    tool reads): (epoch, a read-only Doc), or None if it knows no such playlist."""
    if found is None:
        return None
    _, state, events = found
    epoch, data = (state["epoch"], state["doc"]) if state is not None else (-1, None)
    doc = None
    for event in events:
        if event[0] == E_NEW:
            epoch, data, doc = event[1], event[2], None
        elif event[0] == E_UPDATE:
            doc = doc or pdoc.PlaylistDoc(READER, data)
            doc.apply(event[1])
    if epoch < 0:
        return None
    return epoch, doc or pdoc.PlaylistDoc(READER, data)
