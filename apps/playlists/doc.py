"""A playlist as a CRDT document (Yjs's YATA sequence, through pycrdt's Yrs bindings), as
pure functions: opening, reading, editing, checking a merged update, and carrying edits
over to a compacted document.

A document has three root types: `items`, an Array of entries `[entry_id, track,
added_by]` (plain lists: Yrs keeps a dict value as a hash map whose order, and so whose
encoding, changes from one interpreter to the next); `meta`, a Map of the playlist's
`name` and `description` (last writer wins, ties broken by client id); and `removed`, a
Map from the ids of removed entries to the epoch they were removed in. Every replica (each
server node's, each device's) edits its own `Doc` under its own client id and exchanges
updates as bytes; merged in any order, they give the same document, byte for byte.

The view. An entry id is unique to one add within its playlist. The view shows each entry
once, at its first position, unless it was removed: a remove wins over everything
concurrent with it (a move, another copy). A move deletes the entry's copies and inserts
it again; two devices moving one entry at once leave two copies, of which the view keeps
the first.

Compaction. Deleted entries leave tombstones (a few bytes each), so a document grows with
its edit history. `compacted` starts a new epoch: a fresh document holding only the view,
the meta fields and the removals of the last `KEEP_REMOVED` epochs. A replica or device
still editing the old epoch carries its edits over as intents (`diff` of two snapshots:
removes, adds and moves by entry id, moves found with a longest increasing subsequence)
replayed on the new document (`replay`): adding an entry already there, moving or
removing one that is not does nothing, and a removal recorded in the new epoch keeps a
copy carried over hidden, so carrying the same edit over twice is harmless. A removal is
remembered for `KEEP_REMOVED` epochs; an add carried over from an older epoch than that
whose first sync reached a server but whose answer was lost, and which someone removed
meanwhile, would come back.
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
KEEP_REMOVED = 2  # epochs a removal is remembered across compactions


class BadUpdate(ValueError):
    """An update that does not decode, or holds something that is not a playlist edit."""


class Snapshot(NamedTuple):
    """What a document shows: its view, meta fields and removals (entry id -> epoch)."""

    entries: list[list[str]]
    meta: dict[str, str]
    removed: dict[str, int]


def open_doc(client_id: int, data: bytes | None = None) -> Doc:
    """A document editing as `client_id` (unique per writer of one document: a replica,
    a device session), holding the update `data` (None: empty)."""
    doc = Doc(client_id=client_id)
    doc.get(ITEMS, type=Array)
    doc.get(META, type=Map)
    doc.get(REMOVED, type=Map)
    if data is not None:
        doc.apply_update(data)
    return doc


def items(doc: Doc) -> Array:
    return doc.get(ITEMS, type=Array)


def meta_map(doc: Doc) -> Map:
    return doc.get(META, type=Map)


def removed_map(doc: Doc) -> Map:
    return doc.get(REMOVED, type=Map)


def encode(doc: Doc) -> bytes:
    """The whole document as one update."""
    return doc.get_update()


def raw(doc: Doc) -> list[list[str]]:
    """Every entry copy in the sequence, removed or not."""
    return items(doc).to_py()


def removed(doc: Doc) -> dict[str, int]:
    return {key: int(value) for key, value in removed_map(doc).items()}


def view(doc: Doc) -> list[list[str]]:
    """The playlist: its entries in order, each once (its first copy), none removed."""
    gone = removed_map(doc)
    seen: dict[str, None] = {}
    out = []
    for entry in raw(doc):
        if entry[0] not in seen and entry[0] not in gone:
            seen[entry[0]] = None
            out.append(entry)
    return out


def meta(doc: Doc) -> dict[str, str]:
    """`name` and `description`, as set so far ("" when never set)."""
    m = meta_map(doc)
    return {key: m.get(key) or "" for key in META_KEYS}


def snapshot(doc: Doc) -> Snapshot:
    return Snapshot(view(doc), meta(doc), removed(doc))


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


# -- edits (each one transaction: one update) ------------------------------------------------------

def _raw_after(raw_entries: list[list[str]], anchor: str | None) -> int:
    """The raw index just after the first copy of `anchor` (0 for None or a missing one)."""
    if anchor is None:
        return 0
    for i, entry in enumerate(raw_entries):
        if entry[0] == anchor:
            return i + 1
    return 0


def insert(doc: Doc, entry: list[str], position: int | None = None) -> None:
    """Insert `entry` (a new entry id) at view position `position` (None: at the end)."""
    check_entry(entry)
    shown = view(doc)
    if position is None or position > len(shown):
        position = len(shown)
    anchor = shown[position - 1][0] if position > 0 else None
    with doc.transaction():
        array = items(doc)
        array.insert(_raw_after(array.to_py(), anchor), entry)


def _delete_copies(doc: Doc, entry_id: str) -> None:
    array = items(doc)
    for i in reversed([i for i, entry in enumerate(array.to_py()) if entry[0] == entry_id]):
        del array[i]


def remove(doc: Doc, entry_id: str, epoch: int) -> bool:
    """Remove `entry_id` for good (its copies, and a removal record); False if the view
    did not show it."""
    if all(entry[0] != entry_id for entry in view(doc)):
        return False
    with doc.transaction():
        _delete_copies(doc, entry_id)
        removed_map(doc)[entry_id] = epoch
    return True


def move(doc: Doc, entry_id: str, position: int) -> bool:
    """Move `entry_id` to view position `position` (counted without it); False if the
    view does not show it."""
    shown = view(doc)
    entry = next((e for e in shown if e[0] == entry_id), None)
    if entry is None:
        return False
    others = [e for e in shown if e[0] != entry_id]
    position = max(0, min(position, len(others)))
    anchor = others[position - 1][0] if position > 0 else None
    with doc.transaction():
        _delete_copies(doc, entry_id)
        array = items(doc)
        array.insert(_raw_after(array.to_py(), anchor), entry)
    return True


def set_meta(doc: Doc, key: str, value: str) -> None:
    check_meta(key, value)
    meta_map(doc)[key] = value


def changes(doc: Doc, edit: Callable[[], Any]) -> tuple[Any, bytes | None]:
    """Run `edit()` on `doc`: its result, and the update it made (None: no change)."""
    deltas: list[bytes] = []
    sub = doc.observe(lambda event: deltas.append(event.update))
    try:
        result = edit()
    finally:
        doc.unobserve(sub)
    if not deltas:
        return result, None
    return result, deltas[0] if len(deltas) == 1 else merge_updates(*deltas)


def new_entry_id(doc: Doc, epoch: int) -> str:
    """An entry id no other add of this playlist ever had: the epoch, this writer's client
    id and its next clock (a compaction keeps entry ids, and clocks start again)."""
    return f"{doc.client_id:x}.{epoch}.{clocks(doc.get_state()).get(doc.client_id, 0)}"


def clocks(state_vector: Any) -> dict[int, int]:
    """A state vector (`doc.get_state()`) decoded: client id -> clock. Raises BadUpdate
    if it is not one."""
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


# -- checking what a merge brought ----------------------------------------------------------------

class Watch:
    """Records what updates applied to `doc` insert, to check them (`apply_checked`)."""

    def __init__(self, doc: Doc) -> None:
        self.inserted: list[Any] = []
        self.meta: list[tuple[Any, Any]] = []
        self.removed: list[tuple[Any, Any]] = []
        self._subs = (items(doc).observe(self._on_items), meta_map(doc).observe(self._on_meta),
                      removed_map(doc).observe(self._on_removed))

    def _on_items(self, event: Any) -> None:
        for part in event.delta:
            self.inserted += part.get("insert", ())

    def _on_meta(self, event: Any) -> None:
        self.meta += _set_keys(event)

    def _on_removed(self, event: Any) -> None:
        self.removed += _set_keys(event)

    def check(self, doc: Doc) -> None:
        try:
            for entry in self.inserted:
                check_entry(entry)
            for key, value in self.meta:
                check_meta(key, value)
            for key, value in self.removed:
                check_removal(key, value)
            roots = sorted(doc.keys())
            if roots != ROOTS:
                raise BadUpdate(f"a playlist document has the roots {ROOTS!r}, this update made {roots!r:.100}")
        finally:
            self.inserted, self.meta, self.removed = [], [], []


def _set_keys(event: Any) -> list[tuple[Any, Any]]:
    return [(key, change.get("newValue")) for key, change in event.keys.items() if change.get("action") != "delete"]


def apply_checked(doc: Doc, watch: Watch, update: Any, max_bytes: int) -> bytes | None:
    """Merge `update` into `doc`: the delta it made (None if it changed nothing). Raises
    BadUpdate if it is not bytes, too big, does not decode, or brought anything but
    well-formed entries, meta fields and removals; `doc` must then be thrown away (a
    merged update cannot be taken back)."""
    if type(update) is not bytes:
        raise BadUpdate(f"an update is bytes, not {type(update).__name__}")
    if len(update) > max_bytes:
        raise BadUpdate(f"an update is at most {max_bytes} bytes, this one has {len(update)}")
    try:
        _, delta = changes(doc, lambda: doc.apply_update(update))
    except ValueError as exc:
        raise BadUpdate(f"the update does not decode: {exc}") from None
    watch.check(doc)
    return delta


# -- compaction: carrying edits over to a new epoch -----------------------------------------------

def compacted(doc: Doc, client_id: int, epoch: int) -> bytes:
    """The first document of `epoch` (written as `client_id`): `doc`'s view and meta, and
    its removals of the last `KEEP_REMOVED` epochs."""
    fresh = open_doc(client_id)
    shown, fields, gone = snapshot(doc)
    with fresh.transaction():
        items(fresh).extend(shown)
        for key, value in fields.items():
            if value:
                meta_map(fresh)[key] = value
        for entry_id, when in gone.items():
            if when > epoch - KEEP_REMOVED:
                removed_map(fresh)[entry_id] = when
    return encode(fresh)


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


def replay(doc: Doc, ops: list[list], epoch: int) -> None:
    """Apply intents from `diff` to `doc` (of `epoch`), in one transaction."""
    with doc.transaction():
        gone = removed_map(doc)
        for op in ops:
            if op[0] == "rm":
                _delete_copies(doc, op[1])
                gone[op[1]] = epoch
            elif op[0] == "meta":
                set_meta(doc, op[1], op[2])
            elif op[1][0] not in gone:
                entry, anchors = op[1], op[2]
                current = raw(doc)
                present = any(e[0] == entry[0] for e in current)
                if present == (op[0] == "add"):
                    continue  # an add already there, or a move of an entry gone
                if present:
                    _delete_copies(doc, entry[0])
                    current = raw(doc)
                ids = {e[0] for e in current}  # membership only
                anchor = next((a for a in anchors if a in ids), None)
                items(doc).insert(_raw_after(current, anchor), entry)
