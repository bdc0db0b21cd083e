"""A playlist as a CRDT document (Yjs's YATA sequence, through pycrdt's Yrs bindings):
`PlaylistDoc` opens, reads, edits and merges one; `diff` and `replay` carry edits over to
a compacted document.

A document has three root types: `items`, an Array of entries `[entry_id, track,
added_by]` (plain lists: Yrs keeps a dict value as a hash map whose order, and so whose
encoding, changes from one interpreter to the next); `meta`, a Map of the playlist's
`name` and `description` (last writer wins, ties broken by client id); and `removed`, a
Map from the ids of removed entries to the epoch they were removed in. Every replica (each
server node's, each device's) edits its own document under its own client id and
exchanges updates as bytes; merged in any order, they give the same document, byte for
byte. pycrdt reads an Array item by item (tens of microseconds each), so a `PlaylistDoc`
mirrors its entries and removals in Python, kept current from the document's own change
events (which come when a transaction ends: an edit is a few transactions, one per Yrs
operation, merged into one update), and every read is a Python list walk. The mirror
holds entries as tuples (immutable, so a view is shared without copies, and of strings
only, so the cyclic garbage collector stops tracking them).

The view. An entry id is unique to one add within its playlist. The view shows each entry
once, at its first position, unless it was removed: a remove wins over everything
concurrent with it (a move, another copy). A move deletes the entry's copies and inserts
it again; two devices moving one entry at once leave two copies, of which the view keeps
the first.

Compaction. Deleted entries leave tombstones (a few bytes each), so a document grows with
its edit history. `compacted` starts a new epoch: a fresh document holding only the view,
the meta fields and the newest `MAX_REMOVED` removals (an entry id and an epoch each). A
replica or device still editing an old epoch carries its edits over as intents (`diff`
of two snapshots: removes, adds and moves by entry id, moves found with a longest
increasing subsequence) replayed on the new document (`replay`): adding an entry already
there, moving or removing one that is not does nothing, and a removal recorded in the new
epoch keeps a copy carried over hidden, so carrying the same edit over twice is harmless.
Removals are kept by count, not by epoch: a device can be several epochs behind (offline
while the playlist compacted twice), and an add it carries over whose first sync reached
a server but whose answer was lost may have been removed meanwhile; only the removal
record stops it coming back. An add carried over after more than `MAX_REMOVED` newer
removals would still come back.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, NamedTuple

from pycrdt import Array, Doc, Map, merge_updates

ITEMS, META, REMOVED = "items", "meta", "removed"
ROOTS = sorted((ITEMS, META, REMOVED))
META_KEYS = {"name": 100, "description": 300}  # key -> max characters (Spotify's limits)
MAX_ID = 64  # characters of an entry id, a track id or a user id
MAX_STATE_VECTOR = 1 << 16  # bytes: thousands of writers
ANCHORS = 3  # preceding entries an intent names, so a lost neighbour still places it
MAX_REMOVED = 10_000  # removals a compaction keeps (the newest): an entry id and an epoch each


class BadUpdate(ValueError):
    """An update that does not decode, or holds something that is not a playlist edit."""


Entry = tuple[str, str, str]  # (entry id, track, added by), as the mirror and the views hold it


class Snapshot(NamedTuple):
    """What a document shows: its view, meta fields and removals (entry id -> epoch)."""

    entries: list[Entry]
    meta: dict[str, str]
    removed: dict[str, int]


def check_entry(entry: Any) -> list[str]:
    if (type(entry) is not list or len(entry) != 3
            or not all(type(part) is str and 0 < len(part) <= MAX_ID for part in entry)):
        raise BadUpdate(f"a playlist entry is [entry id, track, user], each a str of 1..{MAX_ID} "
                        f"characters, not {entry!r:.100}")
    return entry


def check_meta(key: Any, value: Any) -> None:
    if key not in META_KEYS:
        raise BadUpdate(f"a playlist has no field {key!r:.60}; it has {', '.join(META_KEYS)}")
    if type(value) is not str or len(value) > META_KEYS[key]:
        raise BadUpdate(f"a playlist's {key} is a str of at most {META_KEYS[key]} characters, "
                        f"not {value!r:.60}")


def check_removal(key: Any, value: Any) -> None:
    if type(key) is not str or not 0 < len(key) <= MAX_ID or type(value) not in (int, float) \
            or value != int(value) or value < 0:
        raise BadUpdate(f"a removal maps an entry id to the epoch it was removed in, not {key!r:.60}: {value!r:.20}")


def _entry(value: Any) -> Any:
    """An entry as the mirror holds it: a tuple (anything else is kept as it came, for
    `merge` to refuse)."""
    return tuple(value) if type(value) is list else value


class PlaylistDoc:
    """One writer's copy of a playlist document (see the module docstring): `client_id`
    is unique per writer of one document (a replica, a device session); `data` is an
    update to start from (the whole document as stored)."""

    def __init__(self, client_id: int, data: bytes | None = None) -> None:
        self.doc = Doc(client_id=client_id)
        self._items = self.doc.get(ITEMS, type=Array)
        self._meta = self.doc.get(META, type=Map)
        self._removed = self.doc.get(REMOVED, type=Map)
        if data is not None:
            self.doc.apply_update(data)
        self.raw: list[Entry] = [_entry(v) for v in self._items.to_py()]  # every copy, removed or not
        self.removed: dict[str, int] = {k: int(v) for k, v in self._removed.items()}
        self._view: list[Entry] | None = None
        self._new: list[Any] = []  # what merged updates brought since the last check
        self._subs = (self._items.observe(self._on_items), self._meta.observe(self._on_meta),
                      self._removed.observe(self._on_removed))

    def _on_items(self, event: Any) -> None:
        i = 0
        for part in event.delta:
            if "retain" in part:
                i += part["retain"]
            elif "insert" in part:
                values = part["insert"]
                self.raw[i:i] = [_entry(value) for value in values]
                self._new += [("entry", value) for value in values]
                i += len(values)
            else:
                del self.raw[i:i + part["delete"]]
        self._view = None

    def _on_meta(self, event: Any) -> None:
        self._new += [("meta", key, change.get("newValue")) for key, change in event.keys.items()
                      if change.get("action") != "delete"]

    def _on_removed(self, event: Any) -> None:
        for key, change in event.keys.items():
            if change.get("action") == "delete":
                self.removed.pop(key, None)
            else:
                self._new.append(("removal", key, change.get("newValue")))
                value = change.get("newValue")
                self.removed[key] = int(value) if type(value) in (int, float) else -1
        self._view = None

    # -- reading ----------------------------------------------------------------------------------

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    def encode(self) -> bytes:
        """The whole document as one update."""
        return self.doc.get_update()

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def update_since(self, state_vector: bytes) -> bytes:
        """What a writer at `state_vector` lacks (and every deletion), as one update."""
        return self.doc.get_update(state_vector)

    def view(self) -> list[Entry]:
        """The playlist: its entries in order, each once (its first copy), none removed.
        (The mirror's own list: read it, do not change it.)"""
        if self._view is None:
            gone, seen, out = self.removed, set(), []
            for entry in self.raw:
                if entry[0] not in seen and entry[0] not in gone:
                    seen.add(entry[0])
                    out.append(entry)
            self._view = out
        return self._view

    def meta(self) -> dict[str, str]:
        """`name` and `description`, as set so far ("" when never set)."""
        return {key: self._meta.get(key) or "" for key in META_KEYS}

    def snapshot(self) -> Snapshot:
        return Snapshot(list(self.view()), self.meta(), dict(self.removed))

    def new_entry_id(self, epoch: int) -> str:
        """An entry id no other add of this playlist ever had: the epoch, this writer's
        client id and its next clock (a compaction keeps entry ids, and clocks restart)."""
        return f"{self.client_id:x}.{epoch}.{clocks(self.state_vector()).get(self.client_id, 0)}"

    # -- edits (each one transaction: one update) -------------------------------------------------

    def changes(self, edit: Callable[[], Any]) -> tuple[Any, bytes | None]:
        """Run `edit()`: its result, and the update it made (None: no change)."""
        deltas: list[bytes] = []
        sub = self.doc.observe(lambda event: deltas.append(event.update))
        try:
            result = edit()
        finally:
            self.doc.unobserve(sub)
        if not deltas:
            return result, None
        return result, deltas[0] if len(deltas) == 1 else merge_updates(*deltas)

    def _raw_after(self, anchor: str | None) -> int:
        """The raw index just after the first copy of `anchor` (0 for None or a missing one)."""
        if anchor is not None:
            for i, entry in enumerate(self.raw):
                if entry[0] == anchor:
                    return i + 1
        return 0

    def _insert_after(self, anchor: str | None, entry: Entry | list[str]) -> None:
        self._items.insert(self._raw_after(anchor), list(entry))

    def _delete_copies(self, entry_id: str) -> None:
        for i in reversed([i for i, entry in enumerate(self.raw) if entry[0] == entry_id]):
            del self._items[i]

    def insert(self, entry: list[str], position: int | None = None) -> None:
        """Insert `entry` (a new entry id) at view position `position` (None: at the end)."""
        check_entry(entry)
        shown = self.view()
        if position is None or position > len(shown):
            position = len(shown)
        anchor = shown[position - 1][0] if position > 0 else None
        self._insert_after(anchor, entry)

    def remove(self, entry_id: str, epoch: int) -> bool:
        """Remove `entry_id` for good (its copies, and a removal record); False if the
        view did not show it."""
        if all(entry[0] != entry_id for entry in self.view()):
            return False
        self._delete_copies(entry_id)
        self._removed[entry_id] = epoch
        return True

    def move(self, entry_id: str, position: int) -> bool:
        """Move `entry_id` to view position `position` (counted without it); False if the
        view does not show it."""
        shown = self.view()
        entry = next((e for e in shown if e[0] == entry_id), None)
        if entry is None:
            return False
        others = [e for e in shown if e[0] != entry_id]
        position = max(0, min(position, len(others)))
        anchor = others[position - 1][0] if position > 0 else None
        self._delete_copies(entry_id)
        self._insert_after(anchor, entry)
        return True

    def set_meta(self, key: str, value: str) -> None:
        check_meta(key, value)
        self._meta[key] = value

    # -- merging ----------------------------------------------------------------------------------

    def apply(self, update: bytes) -> None:
        """Merge an update this writer trusts (its own journal, its server's answer)."""
        self.doc.apply_update(update)

    def merge(self, update: Any, max_bytes: int) -> bytes | None:
        """Merge `update`: the delta it made (None if it changed nothing). Raises BadUpdate
        if it is not bytes, too big, does not decode, or brought anything but well-formed
        entries, meta fields and removals; this document must then be thrown away (a
        merged update cannot be taken back)."""
        if type(update) is not bytes:
            raise BadUpdate(f"an update is bytes, not {type(update).__name__}")
        if len(update) > max_bytes:
            raise BadUpdate(f"an update is at most {max_bytes} bytes, this one has {len(update)}")
        self._new = []
        try:
            _, delta = self.changes(lambda: self.doc.apply_update(update))
        except ValueError as exc:
            raise BadUpdate(f"the update does not decode: {exc}") from None
        new, self._new = self._new, []
        for what in new:
            if what[0] == "entry":
                check_entry(what[1])
            elif what[0] == "meta":
                check_meta(what[1], what[2])
            else:
                check_removal(what[1], what[2])
        roots = sorted(self.doc.keys())
        if roots != ROOTS:
            raise BadUpdate(f"a playlist document has the roots {ROOTS!r}, this update made {roots!r:.100}")
        return delta


def clocks(state_vector: Any) -> dict[int, int]:
    """A state vector (`state_vector()`) decoded: client id -> clock. Raises BadUpdate if
    it is not one."""
    if type(state_vector) is not bytes or len(state_vector) > MAX_STATE_VECTOR:
        raise BadUpdate(f"a state vector is bytes of at most {MAX_STATE_VECTOR}, not "
                        f"{type(state_vector).__name__} of {len(state_vector) if isinstance(state_vector, bytes) else '?'}")
    pos, out = 0, {}

    def varuint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(state_vector) or shift > 63:
                raise BadUpdate(f"the state vector {state_vector[:40]!r} does not decode")
            byte = state_vector[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    for _ in range(varuint()):
        client = varuint()
        out[client] = varuint()
    if pos != len(state_vector):
        raise BadUpdate(f"the state vector {state_vector[:40]!r} has bytes after its end")
    return out


# -- compaction: carrying edits over to a new epoch -----------------------------------------------

def compacted(doc: PlaylistDoc, client_id: int) -> bytes:
    """The first document of a new epoch (written as `client_id`): `doc`'s view and meta,
    and its newest `MAX_REMOVED` removals."""
    fresh = PlaylistDoc(client_id)
    newest = sorted(doc.removed.items(), key=lambda removal: (removal[1], removal[0]), reverse=True)
    with fresh.doc.transaction():
        for entry in reversed(doc.view()):  # (each at the front: Yrs walks to an index)
            fresh._items.insert(0, entry)
        for key, value in doc.meta().items():
            if value:
                fresh._meta[key] = value
        for entry_id, when in newest[:MAX_REMOVED]:
            fresh._removed[entry_id] = when
    return fresh.encode()


def diff(base: Snapshot, cur: Snapshot) -> list[list]:
    """The intents that turn `base` into `cur`: `["rm", id]`, `["add", entry, anchors]`,
    `["mv", entry, anchors]` (anchors: the ids just before it in `cur`, nearest first) and
    `["meta", key, value]`."""
    base_pos = {entry[0]: i for i, entry in enumerate(base.entries)}
    ops: list[list] = [["rm", entry_id] for entry_id in cur.removed if entry_id not in base.removed]
    common = [entry[0] for entry in cur.entries if entry[0] in base_pos]
    stay = _increasing(common, [base_pos[i] for i in common])
    for i, entry in enumerate(cur.entries):
        if entry[0] in stay:
            continue
        anchors = [cur.entries[j][0] for j in range(i - 1, max(-1, i - 1 - ANCHORS), -1)]
        ops.append(["mv" if entry[0] in base_pos else "add", entry, anchors])
    ops += [["meta", key, value] for key, value in sorted(cur.meta.items()) if base.meta.get(key, "") != value]
    return ops


def _increasing(ids: list[str], positions: list[int]) -> set[str]:
    """The ids of a longest strictly increasing subsequence of `positions` (patience sort)."""
    tails: list[int] = []  # positions
    tail_at: list[int] = []  # index into ids of each tail
    back = [-1] * len(ids)
    for k, pos in enumerate(positions):
        i = bisect_left(tails, pos)
        if i == len(tails):
            tails.append(pos)
            tail_at.append(k)
        else:
            tails[i], tail_at[i] = pos, k
        back[k] = tail_at[i - 1] if i else -1
    keep: set[str] = set()
    k = tail_at[-1] if tail_at else -1
    while k >= 0:
        keep.add(ids[k])
        k = back[k]
    return keep


def replay(doc: PlaylistDoc, ops: list[list], epoch: int) -> None:
    """Apply intents from `diff` to `doc` (of `epoch`)."""
    for op in ops:
        if op[0] == "rm":
            doc._delete_copies(op[1])
            doc._removed[op[1]] = epoch
        elif op[0] == "meta":
            doc.set_meta(op[1], op[2])
        elif op[1][0] not in doc.removed:
            entry, anchors = op[1], op[2]
            present = any(e[0] == entry[0] for e in doc.raw)
            if present == (op[0] == "add"):
                continue  # an add already there, or a move of an entry gone
            if present:
                doc._delete_copies(entry[0])
            ids = {e[0] for e in doc.raw}  # membership only
            doc._insert_after(next((a for a in anchors if a in ids), None), entry)
