"""A device: a phone's or a laptop's own replica of the playlists it opened, edited
offline and synced with a server node when it can reach one.

    device = Device.spawn(node, service, client_id=7)      # or service: a () -> PlaylistService
    run(device.open(node, "road-trip"))                     # needs a server: the first sync
    entry = run(device.add(node, "road-trip", "spotify:track:9", "bob"))   # local, offline too
    run(device.sync(node, "road-trip"))                     # {"acked": 1, "epoch": 0, ...}

Each opened playlist is a CRDT document (`apps.playlists.doc`) edited under the device's
`client_id`, which must be unique to this device session (a device that lost its state
takes a new one; under the simulator it comes from a seeded stream). Edits are numbered;
`sync` sends the server what it lacks (an update computed from the server's last known
state vector; a node that has less than that, as when the device moved to another node,
answers with its own, and the device sends again) and merges the answer, and an edit is acknowledged once a sync that carried
it has answered: the server node has stored it. Unacknowledged edits stay on the device
and go with the next sync, whenever the device is back online.

When the playlist moved to a new epoch (a compaction) while the device was away, the
server answers "rebase" with the new document: the device carries its edits since its
last acknowledged view over as intents (`doc.diff` / `doc.replay`) and syncs again.

Requests (calls): `("open", p)`, `("add", p, track, user, position)` -> entry id,
`("remove", p, entry)` / `("move", p, entry, position)` -> bool, `("rename", p, name)`,
`("sync", p)` -> {"acked", "epoch", "pending"}, `("view", p)` -> {"entries", "name",
"description", "epoch", "edits", "acked"}. The device process keeps its documents in
memory: a real app would also keep them in its own local storage.
"""
from __future__ import annotations

from typing import Any, Callable

from actors import GenServer, Node, Process
from supervision.client import request as ask

from apps.common import RETRYABLE

from . import doc as pdoc
from .context import check_name, check_position
from .errors import BadRequest, PlaylistError, Unavailable

MAX_OPEN = 1_000  # playlists a device keeps
MAX_PENDING = 10_000  # unacknowledged edits per playlist: beyond, sync first
MAX_REBASES = 3  # rebases or resends in one sync (a new epoch at every attempt would be odd)
MAX_TRACKS = 10_000
EMPTY_SV = b"\x00"


class PlaylistDevice(GenServer):
    """See the module docstring. Spawned as `(connect, client_id)`: `connect()` returns the
    PlaylistService to sync through now (raising a kernel call error if none is up)."""

    def init(self, connect: Callable[[], Any], client_id: int) -> None:
        if type(client_id) is not int or not 0 < client_id < 1 << 32:
            raise ValueError(f"a device's client id is an int in (0, 2**32), got {client_id!r}")
        self.service = connect
        self.client_id = client_id
        self.open: dict[str, dict[str, Any]] = {}

    def handle_call(self, request: Any, caller: Any) -> Any:
        try:
            if type(request) is not tuple or len(request) < 2:
                raise BadRequest(f"a device cannot take {request!r:.80}")
            kind, playlist = request[0], check_name("a playlist id", request[1])
            if kind == "open":
                return self._open(playlist)
            if kind == "sync":
                return self._sync(self._get(playlist))
            if kind == "view":
                return self._view(playlist)
            return self._edit(self._get(playlist), kind, request[2:])
        except PlaylistError as exc:
            return exc

    def _get(self, playlist: str) -> dict[str, Any]:
        p = self.open.get(playlist)
        if p is None:
            raise BadRequest(f"playlist {playlist} is not open on this device (open it while online)")
        return p

    async def _open(self, playlist: str) -> Any:
        if playlist not in self.open:
            if len(self.open) >= MAX_OPEN:
                raise BadRequest(f"a device keeps at most {MAX_OPEN} playlists")
            p = {"playlist": playlist, "doc": pdoc.PlaylistDoc(self.client_id), "epoch": 0, "server_sv": EMPTY_SV,
                 "base": pdoc.Snapshot([], {}, {}), "edits": 0, "acked": 0}
            try:
                await self._exchange(p)
            except PlaylistError as exc:
                return exc
            self.open[playlist] = p
        return self._view(playlist)

    def _view(self, playlist: str) -> dict[str, Any]:
        p = self._get(playlist)
        return {"playlist": playlist, "epoch": p["epoch"], **p["doc"].meta(), "entries": list(p["doc"].view()),
                "edits": p["edits"], "acked": p["acked"]}

    def _edit(self, p: dict[str, Any], kind: str, args: tuple) -> Any:
        if p["edits"] - p["acked"] >= MAX_PENDING:
            raise BadRequest(f"{MAX_PENDING} edits of {p['playlist']} wait for a sync; sync first")
        doc = p["doc"]
        if kind == "add" and len(args) == 3:
            if len(doc.view()) >= MAX_TRACKS:
                raise BadRequest(f"playlist {p['playlist']} holds {MAX_TRACKS} tracks (the limit)")
            entry = [doc.new_entry_id(p["epoch"]), check_name("a track id", args[0]),
                     check_name("a user id", args[1])]
            result, delta = doc.changes(lambda: doc.insert(entry, check_position(args[2])))
            result = entry[0]
        elif kind == "remove" and len(args) == 1:
            result, delta = doc.changes(lambda: doc.remove(check_name("an entry id", args[0]), p["epoch"]))
        elif kind == "move" and len(args) == 2 and args[1] is not None:
            result, delta = doc.changes(lambda: doc.move(check_name("an entry id", args[0]), check_position(args[1])))
        elif kind == "rename" and len(args) == 1:
            try:
                result, delta = doc.changes(lambda: doc.set_meta("name", args[0]))
            except pdoc.BadUpdate as exc:
                raise BadRequest(str(exc)) from None
        else:
            raise BadRequest(f"a device cannot take the edit {(kind, *args)!r:.80}")
        if delta is not None:
            p["edits"] += 1
        return result

    async def _sync(self, p: dict[str, Any]) -> Any:
        try:
            sent = p["edits"]
            await self._exchange(p)
        except PlaylistError as exc:
            return exc
        p["acked"] = max(p["acked"], sent)
        return {"acked": p["acked"], "epoch": p["epoch"], "pending": p["edits"] - p["acked"]}

    async def _exchange(self, p: dict[str, Any]) -> None:
        """Send the server what it lacks, merge what it answers; rebase on a new epoch."""
        for _ in range(MAX_REBASES + 1):
            doc = p["doc"]
            update = doc.update_since(p["server_sv"])
            try:
                answer = await self.service().sync(self, p["playlist"], p["epoch"], doc.state_vector(), update,
                                                   p["server_sv"])
            except RETRYABLE as exc:
                raise Unavailable(f"no server answered the sync of {p['playlist']} ({exc!r:.60})") from None
            if answer[0] == "ok":
                doc.apply(answer[3])
                p["server_sv"] = doc.state_vector()
                p["base"] = doc.snapshot()
                return
            if answer[0] == "resend":  # this node has less than the last one: send it more
                p["server_sv"] = answer[2]
            else:
                self._rebase(p, answer[1], answer[2])
        raise Unavailable(f"playlist {p['playlist']} changed epochs or nodes {MAX_REBASES} times during one sync")

    def _rebase(self, p: dict[str, Any], epoch: int, data: bytes) -> None:
        """Adopt the server's newer epoch, carrying this device's unacknowledged edits over."""
        doc = p["doc"]
        intents = pdoc.diff(p["base"], doc.snapshot())
        fresh = pdoc.PlaylistDoc(self.client_id, data)
        p["server_sv"] = fresh.state_vector()
        p["base"] = fresh.snapshot()
        pdoc.replay(fresh, intents, epoch)
        p["doc"], p["epoch"] = fresh, epoch


class Device:
    """The client API of a device process: each method takes the caller first (a process:
    a coroutine; the `Node`: a Future) and raises what the device answers."""

    def __init__(self, pid: Any, timeout: float = 10.0) -> None:
        self.pid = pid
        self.timeout = timeout

    @classmethod
    def spawn(cls, node: Node, service: Any, client_id: int) -> Device:
        """Start a device process on `node`, syncing through `service` (a PlaylistService,
        or a function returning the one to use now)."""
        connect = service if callable(service) else (lambda: service)
        return cls(node.spawn(PlaylistDevice, connect, client_id))

    def _call(self, caller: Node | Process, *request: Any) -> Any:
        return ask(caller, self.pid, request, self.timeout)

    def open(self, caller: Node | Process, playlist: str) -> Any:
        return self._call(caller, "open", playlist)

    def add(self, caller: Node | Process, playlist: str, track: str, user: str, position: int | None = None) -> Any:
        return self._call(caller, "add", playlist, track, user, position)

    def remove(self, caller: Node | Process, playlist: str, entry: str) -> Any:
        return self._call(caller, "remove", playlist, entry)

    def move(self, caller: Node | Process, playlist: str, entry: str, position: int) -> Any:
        return self._call(caller, "move", playlist, entry, position)

    def rename(self, caller: Node | Process, playlist: str, name: str) -> Any:
        return self._call(caller, "rename", playlist, name)

    def sync(self, caller: Node | Process, playlist: str) -> Any:
        return self._call(caller, "sync", playlist)

    def view(self, caller: Node | Process, playlist: str) -> Any:
        return self._call(caller, "view", playlist)
