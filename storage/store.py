"""The store: one LMDB environment per node, written by one writer, group-committed.

Layout. Four named sub-databases:
- `snapshots`: id (16 bytes) -> the latest saved state of that key, with its revision
  (payload: the msgpack pair [key, state]);
- `journal`: id + big-endian u64 seq (24 bytes) -> one event of an event-sourced key;
- `records`: id + msgpack of a record key -> one record of that key (a process that owns
  many values, such as a chat shard, keeps each in a record of its own: a save writes
  the records it changed, never the whole; see `storage.persistent`);
- `meta`: b"format" -> the store's format marker; other names -> settings of the
  store's users (`get_meta`, `stage_meta`, `rewrite`: a cluster's node list, the keys a
  router holds; see `storage.cluster`).
`id` is blake2b-128 of the msgpack encoding of the user's key (e.g. `("timeline", 7)`);
the snapshot also stores the encoded key, so a mismatch is reported, never returned.
Stores written before `records` existed open as they are (the sub-database is added).

Values. Every value is `magic b"LC" | format u8 | kind u8 | crc32 u32 | revision u64 |
msgpack payload`; the crc covers revision and payload. A bad magic, format, kind or
checksum raises an error naming the store, the key and what was expected.

Group commit. Processes hand their writes to the store at the end of each turn; the
store gathers them in one batch and commits it in one LMDB write transaction when the
scheduler pass ends (`node.add_pass_hook`). On the real-time driver the commit runs on
one writer thread (LMDB releases the GIL while it syncs), so the next passes run
meanwhile and their writes gather in the next batch, committed as soon as the previous
one is; the deterministic driver commits inline, at the end of the pass. A batch that
reaches `max_batch_writes` / `max_batch_bytes` waits for the one in flight and goes at
once. A persistent process's outgoing messages and replies are held
(`node.hold_output`) until every batch holding its writes (or a pending write it read)
has committed, so an acknowledgement always means the write is stored as the mode
promises. Each key's write is checked, inside the transaction, against the stored
revision (remembered for keys this store committed, as it is the environment's only
writer; read and checksummed otherwise): a write from a stale incarnation is refused
(`StaleWrite`) and nothing is overwritten.

Space. The data file's blocks are reserved (`posix_fallocate`) for the whole map before
LMDB may use it: a new store starts with an 8 MiB map (1 MiB simulated); a full map is
grown (doubling, by at most 1 GiB at a time, or by a sixteenth on a disk too full to
double; up to `max_map_size`), its blocks reserved first, and the batch retried; users
never see `MapFullError`. So LMDB never writes a page the file system has no room for
(through a writable map that would be a SIGBUS killing the process; in `sync` mode a
short write LMDB reports as EIO). On a full disk the
reservation fails instead: that batch's writers get `StoreFull` (nothing of it is
written, nothing acknowledged is lost), reads go on, and a later batch grows the map once
space is freed. A store opened on a full disk maps only the pages in use. Copy-on-write
file systems (btrfs, zfs) do not honour reservations for rewritten pages: use `sync`
mode there.

Modes, and exactly what an acknowledged write (a reply or message sent after it) survives:
- `sync` (default): LMDB's default flags; each commit returns after `fdatasync` of the
  data and a synchronous write of the meta page. Survives process crashes, `kill -9`,
  OS crashes and power loss, as far as the device honours flushes (no network file
  systems).
- `process`: LMDB `sync=False`: a commit is in the OS page cache when it returns.
  Survives a crash or `kill -9` of the process, not an OS crash or power loss: those may
  lose the commits made since the last `store.sync()` (or close), and LMDB warns that the
  file can be corrupted if the file system reorders writes. With nothing to wait for, a
  commit's cost is its copying: the map is writable (`writemap`), so changed pages are
  written in place instead of copied out with a write call (commits of a few hundred
  keys into a 100k-key store took 1.7 ms instead of 2.6 ms, measured in the rides
  bench). LMDB's own caveats for it: the file is sized to the map (sparse), and a store
  much larger than RAM writes more slowly.
- `none` (tests, benchmarks): as `process`, and outputs are not held: a reply may be
  delivered before the write it follows has committed, so nothing is promised to the
  receiver about durability.
A process crash never tears a commit: LMDB commits are atomic in every mode.

Fault hooks for the simulator (deterministic: no clock, no randomness of their own):
- `commit_fault`: called before each commit; return a `StorageError` to fail that commit
  (nothing is written; its writers crash with that error). `fill_disk(True)` installs
  one that fails every commit with `StoreFull`.
- `crash_before_next_commit()`: the next commit does not happen; the store freezes (no
  write, no held output is ever released), as if the node died just before committing.
- `Store(..., simulated=True)`: LMDB runs without fsync and with a writable memory map
  (fast; such a store is private to one simulation process), starting from a 1 MiB map
  grown as needed (through a writable map, a new file's first commit costs time in
  proportion to the map size: about 2 ms at 1 GiB against 0.5 ms), and the store keeps an
  undo record of every commit the mode does not promise to survive power loss (in
  `sync` mode: none; otherwise those since the last `sync()`). `power_loss(keep)` then
  undoes all but the first `keep` of them and closes the store: the honest power-cut
  model of the mode (a kept prefix, never a torn commit; LMDB's possible corruption on
  write-reordering file systems is not modelled). `close()` and `crash()` end the window:
  a new store on the same path counts what is on disk as synced (after a process crash
  the OS writes the cached pages back; a simulation that wants a power cut then calls
  `power_loss()` instead of `crash()`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import logging
import os
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

import lmdb

from actors import Node, packb, unpackb

from .errors import (CorruptedValue, ForeignStore, FormatVersionError, LimitExceeded,
                     StaleWrite, StoreClosed, StoreFull, StorageError, StorageIOError,
                     UnencodableValue)
from .lock import DirectoryLock

if TYPE_CHECKING:
    from .persistent import PersistentServer

log = logging.getLogger("storage")

MODES = ("sync", "process", "none")
FORMAT = 1
MAGIC = b"LC"
# Value kinds: a PersistentServer's state, an event-sourced snapshot, an event, the marker,
# a record, a setting in `meta`.
STATE, SNAPSHOT, EVENT, MARKER, RECORD, META = 1, 2, 3, 4, 5, 6
KIND_NAMES = {STATE: "a PersistentServer state", SNAPSHOT: "an event-sourced snapshot",
              EVENT: "an event", MARKER: "a format marker", RECORD: "a record", META: "a setting"}
HEADER = struct.Struct(">2sBBIQ")
SEQ = struct.Struct(">Q")
_CRC = struct.Struct(">I")
_PREFIX = {kind: MAGIC + bytes((FORMAT, kind)) for kind in KIND_NAMES}
_DBS = (b"meta", b"snapshots", b"journal", b"records")
REVISIONS_CACHED = 1 << 16  # keys whose snapshot revision a store remembers (see _revs)
_MARKER_PAYLOAD = packb({"format": "letitcrash-store"})
MAX_KEY_BYTES = 1024
MAX_RECORD_KEY_BYTES = 511 - 16  # LMDB's largest key, less the owner's id
MAP_SIZE = 8 << 20  # a new store's map (and file); grown as needed
GROW_STEP = 1 << 30  # the map doubles, by at most this much at a time
GROW_UNIT = 64 << 10  # the smallest growth, when the disk has no room to double
FULL_BELOW = 64 << 10  # free bytes under which a commit's I/O error is taken for a full disk
_blake2b = hashlib.blake2b


def _has_work(batch: Batch) -> bool:
    return bool(batch.entries or batch.meta or batch.held)


def _check_meta_name(name: bytes) -> None:
    if type(name) is not bytes or not name or name == b"format" or len(name) > MAX_RECORD_KEY_BYTES:
        raise ValueError(f"a setting's name is non-empty bytes of at most {MAX_RECORD_KEY_BYTES}, "
                         f"not b'format': got {name!r:.80}")


def encode_value(kind: int, rev: int, *payload: bytes) -> bytes:
    """A stored value; the payload may come in parts (they are concatenated)."""
    revb = SEQ.pack(rev)
    crc = zlib.crc32(revb)
    for part in payload:
        crc = zlib.crc32(part, crc)
    return b"".join((_PREFIX[kind], _CRC.pack(crc), revb, *payload))


def where(path: str, db: str, key: Any, seq: int | None = None) -> str:
    """How errors name a stored value: the store, the sub-database, the user's key."""
    return f"{path} {db}[{key!r:.200}{'' if seq is None else f' seq {seq}'}]"


def decode_value(value: bytes, kind: int, *loc: Any) -> tuple[int, bytes]:
    """Check a stored value's header and checksum; returns (revision, payload). `loc`
    (`where`'s arguments) is formatted only for an error."""
    if len(value) >= HEADER.size:
        magic, version, found, crc, rev = HEADER.unpack_from(value)
        if magic == MAGIC and version == FORMAT and found == kind and zlib.crc32(value[8:]) == crc:
            return rev, value[HEADER.size:]
    raise _bad_value(value, kind, where(*loc))


def _bad_value(value: bytes, kind: int, place: str) -> StorageError:
    if len(value) < HEADER.size:
        return CorruptedValue(place, f"{len(value)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, found, crc, _ = HEADER.unpack_from(value)
    if magic != MAGIC:
        return CorruptedValue(place, f"not a letitcrash value (starts {bytes(value[:4])!r}, "
                                     f"expected {MAGIC!r})")
    if version != FORMAT:
        return FormatVersionError(place, version, FORMAT)
    if found != kind:
        return CorruptedValue(place, f"holds {KIND_NAMES.get(found, f'unknown kind {found}')}, "
                                     f"expected {KIND_NAMES[kind]}")
    return CorruptedValue(place, f"checksum mismatch (stored crc32 {crc:#010x}, "
                                 f"computed {zlib.crc32(value[8:]):#010x})")


def decode_payload(what: str, data: bytes, node: Node | None, *loc: Any) -> Any:
    """Unpack a checked payload; `loc` (`where`'s arguments) names it in an error."""
    try:
        return unpackb(data, node=node)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is corruption
        raise CorruptedValue(where(*loc), f"{what} does not decode: {exc!r}") from None


def record_key(rkey: bytes, *loc: Any) -> Any:
    """A record key back from its encoding (a tuple comes back a tuple); `loc` (`where`'s
    arguments) names it in an error."""
    key = decode_payload("record key", rkey, None, *loc)
    return tuple(key) if type(key) is list else key


class KeyRef:
    """A user key, its fixed-width id `kid` (blake2b-128 of its msgpack encoding) and the
    `prefix` its stored states start with."""

    __slots__ = ("key", "kid", "prefix")

    def __init__(self, key: Any) -> None:
        try:
            kb = packb(key)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableValue(f"key {key!r:.200} cannot be stored: {exc}") from None
        if len(kb) > MAX_KEY_BYTES:
            raise LimitExceeded(f"key {key!r:.100} is {len(kb)} bytes encoded; "
                                f"the limit is {MAX_KEY_BYTES}")
        self.key = key
        self.kid = _blake2b(kb, digest_size=16).digest()
        self.prefix = b"\x92" + kb  # a stored state is the msgpack pair [key, state]

    def __repr__(self) -> str:
        return repr(self.key)


class Entry:
    """The pending writes of one key in one batch."""

    __slots__ = ("ref", "kind", "base", "rev", "snap", "snap_rev", "events", "records", "procs")

    def __init__(self, ref: KeyRef, kind: int, base: int) -> None:
        self.ref = ref
        self.kind = kind
        self.base = base  # the revision the first write of this batch was based on
        self.rev = base
        self.snap: bytes | None = None  # state payload to store at snap_rev
        self.snap_rev = 0
        self.events: list[tuple[int, bytes]] = []  # (seq, encoded value)
        self.records: dict[bytes, bytes | None] = {}  # records db key -> payload, None: delete
        self.procs: list[PersistentServer] = []  # writers and readers: they fail with the batch


class Batch:
    """Writes for one transaction, and the processes whose outputs wait for it."""

    __slots__ = ("entries", "meta", "held", "writes", "bytes")

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.meta: dict[bytes, bytes | None] = {}  # meta name -> encoded setting, None: delete
        self.held: dict[PersistentServer, None] = {}
        self.writes = 0
        self.bytes = 0


class _MapFull(Exception):
    """The writer ran out of map; it is grown where no transaction is open."""


class Store:
    """One LMDB environment for `node`; see the module docstring.

        store = Store("/var/lib/app/store", node)              # mode="sync"
        pid = node.spawn(Counter, store, ("counter", 1))
    """

    def __init__(self, path: str | os.PathLike, node: Node, *, mode: str = "sync",
                 map_size: int | None = None, max_map_size: int = 1 << 40,
                 max_value_bytes: int = 16 << 20, max_batch_writes: int = 100_000,
                 max_batch_bytes: int = 64 << 20, simulated: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if map_size is None:  # see "simulated" and "Space" in the module docstring
            map_size = 1 << 20 if simulated else MAP_SIZE
        if not 0 < map_size <= max_map_size:
            raise ValueError(f"need 0 < map_size <= max_map_size, got {map_size} and {max_map_size}")
        for name, value in (("max_value_bytes", max_value_bytes), ("max_batch_writes", max_batch_writes),
                            ("max_batch_bytes", max_batch_bytes)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.path = os.fspath(path)
        self.node = node
        self.mode = mode
        self.simulated = simulated
        self.max_map_size = max_map_size
        self.max_value_bytes = max_value_bytes
        self.max_batch_writes = max_batch_writes
        self.max_batch_bytes = max_batch_bytes
        self.holds = mode != "none"
        self.commit_fault: Callable[[], StorageError | None] | None = None
        """Called before each commit; a returned error fails the commit (fault injection)."""
        self.commits = 0
        self.writes = 0
        self.on_commit: Callable[[int, float], None] | None = None
        """Called after each commit with its writes and its seconds, on the committing thread
        (the writer's, in real time): for metrics. It must be quick and must not raise."""
        self._batch = Batch()  # gathering writes
        self._inflight: Batch | None = None  # with the writer thread, not yet committed
        self._inflight_future: concurrent.futures.Future | None = None
        self._suspended: dict[PersistentServer, None] = {}  # in an async callback: flushed every pass
        self._reader: lmdb.Transaction | None = None
        self._undo: list[list[tuple[Any, bytes, bytes | None]]] | None = [] if simulated else None
        # key id -> revision of its stored snapshot, as this store last committed it (the
        # only writer of its environment). Touched only by the committing thread. Spares
        # each commit reading and checksumming every written key's snapshot, which for a
        # large state (a chat shard with a backlog) costs milliseconds.
        self._revs: dict[bytes, tuple[int, int]] = {}  # key id -> (kind, revision)
        self._crash_next = False
        self.crashed = False
        self.closed = False
        self._lock = DirectoryLock(self.path)  # see storage.lock: one process per store
        try:
            self.env = self._open(map_size, sync=mode == "sync" and not simulated,
                                  writemap=simulated or mode != "sync")
        except BaseException:
            self._lock.release(discard=True)
            raise
        # Real time in sync mode overlaps the fsync of a commit with the next passes' work.
        # Without fsync a commit takes microseconds: a thread hop (and a GIL hand-off, up
        # to the 5 ms switch interval) would cost more than it saves. The deterministic
        # driver always commits inline.
        self._writer = (concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmdb-writer")
                        if node.seed is None and mode == "sync" and not simulated else None)
        self._loop: asyncio.AbstractEventLoop | None = None
        node.add_pass_hook(self._end_pass)

    # -- opening -----------------------------------------------------------------------------

    def _open(self, map_size: int, sync: bool, writemap: bool) -> lmdb.Environment:
        try:
            env = lmdb.open(self.path, map_size=map_size, max_dbs=len(_DBS), sync=sync,
                            metasync=sync, max_spare_txns=0, writemap=writemap)
        except lmdb.InvalidError as exc:
            raise ForeignStore(f"{self.path} is not a letitcrash store: {exc}") from None
        except (lmdb.Error, OSError) as exc:  # py-lmdb raises FileNotFoundError for a missing parent
            if self._disk_full():
                raise StoreFull(f"disk full: cannot open the store at {self.path}: {exc}") from None
            raise StorageIOError(f"cannot open the store at {self.path}: {exc}") from None
        try:
            self._data = os.open(os.path.join(self.path, "data.mdb"), os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            env.close()
            raise StorageIOError(f"cannot open the store's data file in {self.path}: {exc}") from None
        try:
            self._reserve_map(env)
            self._check_format(env)
            with env.begin(write=True) as txn:
                self.meta, self.snapshots, self.journal, self.records = (
                    env.open_db(name, txn=txn) for name in _DBS)
                if txn.get(b"format", db=self.meta) is None:
                    txn.put(b"format", encode_value(MARKER, FORMAT, _MARKER_PAYLOAD), db=self.meta)
        except BaseException:
            env.close()
            os.close(self._data)
            raise
        return env

    def _reserve_map(self, env: lmdb.Environment) -> None:
        """Reserve the file's blocks for the map LMDB opened with; on a full disk, shrink
        the map to the pages in use (theirs are allocated), so the store opens for reading
        and its writes fail with `StoreFull` until space is freed (see `_grow`)."""
        try:
            self._reserve(env.info()["map_size"])
        except StoreFull as exc:
            used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
            env.set_mapsize(used)  # LMDB keeps at least the pages in use
            log.warning("store %s opened on a full disk with a %d-byte map: %s", self.path,
                        env.info()["map_size"], exc)

    def _reserve(self, size: int) -> None:
        """Allocate the data file's blocks up to `size` bytes, the map's size: LMDB then
        never writes a page the file system has no room for. Through a writable map such
        a write is a SIGBUS that kills the process, and in `sync` mode a short write LMDB
        reports as EIO; a reservation that fails is a clean `StoreFull` instead."""
        try:
            os.posix_fallocate(self._data, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFull(f"disk full: cannot reserve {size} bytes for the store at "
                                f"{self.path}: {exc.strerror}") from None
            raise StorageIOError(f"cannot reserve {size} bytes for the store at {self.path}: "
                                 f"{exc}") from None

    def _disk_full(self) -> bool:
        """Whether the store's file system has less room than a page or two (an error
        LMDB reports as EIO may be a full disk: its short writes)."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < FULL_BELOW

    def _check_format(self, env: lmdb.Environment) -> None:
        """A new environment, or one of ours of this format; anything else is refused
        before a byte is written."""
        with env.begin() as txn:
            names = list(txn.cursor().iternext(values=False))
            if not names:
                return
            foreign = [n for n in names if n not in _DBS]
            if foreign or b"meta" not in names:
                raise ForeignStore(f"{self.path} is an LMDB environment not created by letitcrash "
                                   f"(its main database holds {foreign[:5] or names[:5]!r}); "
                                   "refusing to use it")
            marker = txn.get(b"format", db=env.open_db(b"meta", txn=txn, create=False))
            if marker is None:
                raise ForeignStore(f"{self.path}: meta database has no letitcrash format marker")
            rev, payload = decode_value(marker, MARKER, self.path, "meta", b"format")
            if payload != _MARKER_PAYLOAD:
                raise ForeignStore(f"{self.path}: unknown format marker {bytes(payload)!r:.100}")
            if rev != FORMAT:
                raise FormatVersionError(f"store {self.path}", rev, FORMAT)

    # -- reading (for processes starting up) -----------------------------------------------------

    def _read_txn(self) -> lmdb.Transaction:
        # One read transaction per pass: closed at every pass end and commit, so it never
        # pins old pages for long.
        if self.closed:
            raise StoreClosed(f"store {self.path} is closed")
        if self._reader is None:
            self._reader = self.env.begin()
        return self._reader

    def _abort_reader(self) -> None:
        if self._reader is not None:
            self._reader.abort()
            self._reader = None

    def load(self, proc: PersistentServer | None, ref: KeyRef, kind: int
             ) -> tuple[int, int, bytes | None, list[bytes]]:
        """The latest state of a key, committed or pending: (revision, snapshot revision,
        snapshot payload or None, event payloads after the snapshot). A process that reads
        a pending write depends on its batch: held and failed with it."""
        kid = ref.kid
        inflight = self._inflight
        if kid not in self._batch.entries and (inflight is None or kid not in inflight.entries):
            return self._load_committed(ref, kind)  # the common case
        pending = [b.entries[kid] for b in (inflight, self._batch) if b is not None and kid in b.entries]
        for entry in pending:
            if entry.kind != kind:
                raise CorruptedValue(where(self.path, "snapshots", ref), f"a pending write of "
                                     f"{KIND_NAMES[entry.kind]}, expected {KIND_NAMES[kind]}")
        if proc is not None:
            pending[-1].procs.append(proc)
            if self.holds:
                self.node.hold_output(proc)
                batch = self._batch if kid in self._batch.entries else self._inflight
                assert batch is not None, "a pending write is in the open batch or in flight"
                batch.held[proc] = None
        # Start from the newest pending snapshot, else from what is committed.
        start = next((i for i in range(len(pending) - 1, -1, -1) if pending[i].snap is not None), None)
        if start is not None:
            entry = pending[start]
            rev, snap_rev, snap = entry.snap_rev, entry.snap_rev, entry.snap
            events: list[bytes] = []
            pending = pending[start:]
        else:
            rev, snap_rev, snap, events = self._load_committed(ref, kind)
        for entry in pending:
            if entry.rev <= rev:
                continue  # committed after the reader began: already read
            if entry.base > rev:
                raise CorruptedValue(where(self.path, "journal", ref), f"pending writes start after "
                                     f"revision {entry.base}, the store ends at {rev}")
            events += [self._event_payload(ref, seq, value) for seq, value in entry.events if seq > rev]
            rev = entry.rev
        assert len(events) == rev - snap_rev, (ref, rev, snap_rev, len(events))
        return rev, snap_rev, snap, events

    def _load_committed(self, ref: KeyRef, kind: int) -> tuple[int, int, bytes | None, list[bytes]]:
        txn = self._read_txn()
        snap_rev, snap = 0, None
        raw = txn.get(ref.kid, db=self.snapshots)
        if raw is not None:
            snap_rev = self._checked_rev(ref, raw, kind)
            snap = raw[HEADER.size + len(ref.prefix):]
        rev = snap_rev
        events: list[bytes] = []
        if kind == SNAPSHOT:
            with txn.cursor(db=self.journal) as cur:
                if cur.set_range(ref.kid + SEQ.pack(snap_rev + 1)):
                    for jkey, value in cur:
                        if jkey[:16] != ref.kid:
                            break
                        seq = SEQ.unpack_from(jkey, 16)[0]
                        if seq != rev + 1:
                            raise CorruptedValue(where(self.path, "journal", ref, seq),
                                                 f"expected seq {rev + 1} next")
                        events.append(self._event_payload(ref, seq, value))
                        rev = seq
        return rev, snap_rev, snap, events

    def load_records(self, ref: KeyRef) -> list[tuple[bytes, bytes]]:
        """Every record of a key, committed or pending: (encoded record key, payload), in
        no promised order. (Records are written only with a state, so a process that
        reads pending ones is already held by `load`.)"""
        kid = ref.kid
        found: dict[bytes, bytes] = {}
        with self._read_txn().cursor(db=self.records) as cur:
            if cur.set_range(kid):
                for key, value in cur:
                    if key[:16] != kid:
                        break
                    found[key[16:]] = decode_value(value, RECORD, self.path, "records", ref)[1]
        for batch in (self._inflight, self._batch):
            entry = batch.entries.get(kid) if batch is not None else None
            if entry is not None:
                for rkey, payload in entry.records.items():
                    if payload is None:
                        found.pop(rkey, None)
                    else:
                        found[rkey] = payload
        return list(found.items())

    def _checked_rev(self, ref: KeyRef, raw: bytes, kind: int) -> int:
        """The revision of `raw`, the stored snapshot of `ref`, once its header, key and
        checksum are checked; else the error that names what is wrong."""
        # The checks of decode_value, without copying the payload: this runs per load and write.
        if raw.startswith(_PREFIX[kind]) and raw.startswith(ref.prefix, HEADER.size) \
                and zlib.crc32(raw[8:]) == _CRC.unpack_from(raw, 4)[0]:
            return SEQ.unpack_from(raw, 8)[0]
        _, payload = decode_value(raw, kind, self.path, "snapshots", ref)
        if not payload.startswith(ref.prefix):
            raise CorruptedValue(where(self.path, "snapshots", ref), "the value belongs to another key")
        raise AssertionError(f"{ref!r}: a value failed the fast checks only")

    def _event_payload(self, ref: KeyRef, seq: int, value: bytes) -> bytes:
        found, payload = decode_value(value, EVENT, self.path, "journal", ref, seq)
        if found != seq:
            raise CorruptedValue(where(self.path, "journal", ref, seq), f"the event says seq {found}")
        return payload

    def read(self, key: Any) -> tuple[int, Any, list[Any]] | None:
        """Inspect a key (tests, tools): (revision, stored state or None, events after it)
        as a newly started process would see them, or None if nothing is stored."""
        ref = KeyRef(key)
        rev, _, snap, events = self.load(None, ref, self._kind_of(ref))
        if rev == 0:
            return None
        node, path = self.node, self.path
        state = None if snap is None else decode_payload("state", snap, node, path, "snapshots", ref)
        return rev, state, [decode_payload("event", e, node, path, "journal", ref) for e in events]

    def read_records(self, key: Any) -> dict[Any, Any]:
        """Inspect a key's records (tests, tools): record key -> value, as a newly started
        process would load them."""
        ref = KeyRef(key)
        node, path = self.node, self.path
        return {record_key(rkey, path, ref): decode_payload("record", payload, node, path, "records", ref)
                for rkey, payload in self.load_records(ref)}

    # -- settings, and keys moving between stores (see storage.cluster) ---------------------------

    def get_meta(self, name: bytes) -> Any:
        """Setting `name` (staged or committed), or None."""
        _check_meta_name(name)
        for batch in (self._batch, self._inflight):
            if batch is not None and name in batch.meta:
                staged = batch.meta[name]
                return None if staged is None else self._meta_value(name, staged)
        raw = self._read_txn().get(name, db=self.meta)
        return None if raw is None else self._meta_value(name, raw)

    def scan_meta(self, prefix: bytes) -> list[tuple[bytes, Any]]:
        """Every setting whose name starts with `prefix` (staged or committed), by name."""
        _check_meta_name(prefix)
        found: dict[bytes, bytes | None] = {}
        with self._read_txn().cursor(db=self.meta) as cur:
            if cur.set_range(prefix):
                for name, raw in cur:
                    if not name.startswith(prefix):
                        break
                    found[name] = raw
        for batch in (self._inflight, self._batch):
            if batch is not None:
                found.update((n, v) for n, v in batch.meta.items() if n.startswith(prefix))
        return [(n, self._meta_value(n, v)) for n, v in sorted(found.items()) if v is not None]

    def stage_meta(self, name: bytes, value: Any) -> None:
        """Store setting `name` (None deletes it) with the group's next commit: whatever
        any process writes after this call commits with it or later (a failed commit
        stages it again)."""
        _check_meta_name(name)
        self._batch.meta[name] = None if value is None else encode_value(META, 0, packb(value))

    def export_key(self, key: Any) -> list[tuple[int, bytes, bytes]]:
        """Every stored value of `key` as (sub-database: 0 snapshots, 1 journal, 2 records;
        its name after the key's id; the stored, checksummed bytes): what `rewrite` stores
        in another store. What is pending is committed first."""
        ref = KeyRef(key)
        self._settle()
        txn = self._read_txn()
        kid = ref.kid
        out: list[tuple[int, bytes, bytes]] = []
        raw = txn.get(kid, db=self.snapshots)
        if raw is not None:
            out.append((0, b"", bytes(raw)))
        for db, index in ((self.journal, 1), (self.records, 2)):
            with txn.cursor(db=db) as cur:
                if cur.set_range(kid):
                    for name, value in cur:
                        if name[:16] != kid:
                            break
                        out.append((index, bytes(name[16:]), bytes(value)))
        return out

    def rewrite(self, keys: dict[Any, list], meta: dict[bytes, Any]) -> None:
        """Commit now, in one transaction: the stored values of each key of `keys` replaced
        by its list (`export_key` of another store; [] deletes the key), and the `meta`
        settings (None deletes). What is pending is committed first. A value that is not
        one of its key's is refused (`CorruptedValue`, naming it) before anything is
        written; a failed commit raises its `StorageError` and writes nothing."""
        for name in meta:
            _check_meta_name(name)
        refs = [(KeyRef(key), values) for key, values in keys.items()]
        for ref, values in refs:
            for value in values:
                self._check_moved(ref, value)
        encoded = {n: None if v is None else encode_value(META, 0, packb(v)) for n, v in meta.items()}
        self._settle()
        if self.closed or self.crashed:
            raise StoreClosed(f"store {self.path} is closed; {len(keys)} keys not rewritten")
        fault = self.commit_fault() if self.commit_fault is not None else None
        if fault is not None:
            raise fault
        undo: list | None = [] if self._undo is not None and self.mode != "sync" else None
        self._abort_reader()
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for ref, values in refs:
                        self._replace_key(txn, ref.kid, values, undo)
                    self._put_meta(txn, encoded, undo)
                break
            except lmdb.MapFullError:
                if undo is not None:
                    undo.clear()
                self._grow()
            except lmdb.Error as exc:
                raise self._io_error(exc, len(refs)) from exc
        for ref, _ in refs:
            self._revs.pop(ref.kid, None)  # read from disk again
        self.commits += 1
        if undo is not None and self._undo is not None:
            self._undo.append(undo)

    def _check_moved(self, ref: KeyRef, value: Any) -> None:
        """`value` is (sub-database, name, stored bytes) of `ref`'s, well formed."""
        db, name, raw = value
        dbname = ("snapshots", "journal", "records")[db] if db in (0, 1, 2) else db
        if db == 0 and name == b"" and type(raw) is bytes and raw[3:4] in (bytes((STATE,)), bytes((SNAPSHOT,))):
            _, payload = decode_value(raw, raw[3], self.path, dbname, ref)
            if payload.startswith(ref.prefix):
                return
        elif db == 1 and type(name) is bytes and len(name) == SEQ.size and type(raw) is bytes:
            if decode_value(raw, EVENT, self.path, dbname, ref, SEQ.unpack(name)[0])[0] == SEQ.unpack(name)[0]:
                return
        elif db == 2 and type(name) is bytes and 0 < len(name) <= MAX_RECORD_KEY_BYTES and type(raw) is bytes:
            decode_value(raw, RECORD, self.path, dbname, ref)
            return
        raise CorruptedValue(where(self.path, str(dbname), ref), f"a moved value {bytes(name)!r:.60} "
                             "is not one of this key's")

    def _replace_key(self, txn: lmdb.Transaction, kid: bytes, values: list, undo: list | None) -> None:
        old = txn.get(kid, db=self.snapshots)
        if old is not None:
            if undo is not None:
                undo.append((self.snapshots, kid, old))
            txn.delete(kid, db=self.snapshots)
        for db in (self.journal, self.records):
            with txn.cursor(db=db) as cur:
                found = cur.set_range(kid)
                while found and cur.key()[:16] == kid:
                    if undo is not None:
                        undo.append((db, cur.key(), cur.value()))
                    found = cur.delete()
        dbs = (self.snapshots, self.journal, self.records)
        for db, name, raw in values:
            self._put(txn, dbs[db], kid + name, raw, undo, None)

    def _put_meta(self, txn: lmdb.Transaction, meta: dict[bytes, bytes | None], undo: list | None) -> None:
        for name, value in meta.items():
            old = txn.get(name, db=self.meta) if undo is not None else None
            if value is not None:
                self._put(txn, self.meta, name, value, undo, old)
            elif txn.delete(name, db=self.meta) and undo is not None:
                undo.append((self.meta, name, old))

    def _meta_value(self, name: bytes, raw: bytes) -> Any:
        _, payload = decode_value(raw, META, self.path, "meta", name)
        return decode_payload("setting", payload, self.node, self.path, "meta", name)

    def _kind_of(self, ref: KeyRef) -> int:
        """STATE or SNAPSHOT (event sourced), from what is pending or stored."""
        for batch in (self._batch, self._inflight):
            if batch is not None and ref.kid in batch.entries:
                return batch.entries[ref.kid].kind
        txn = self._read_txn()
        raw = txn.get(ref.kid, db=self.snapshots)
        if raw is not None:
            return SNAPSHOT if raw[3:4] == bytes((SNAPSHOT,)) else STATE
        with txn.cursor(db=self.journal) as cur:
            journal = cur.set_range(ref.kid) and cur.key()[:16] == ref.kid
        return SNAPSHOT if journal else STATE

    # -- writing ----------------------------------------------------------------------------------

    def write(self, proc: PersistentServer, ref: KeyRef, kind: int, base: int, rev: int,
              snap: bytes | None, events: list[bytes],
              records: dict[bytes, bytes | None] | None = None) -> None:
        """Add a process's writes to the batch: the state at `rev` (if `snap`), the
        events numbered base+1..rev, and with the state its changed `records` (encoded
        record key -> encoded value, None to delete it). Raises in the writer when they
        cannot be accepted."""
        if self.closed:
            raise StoreClosed(f"store {self.path} is closed; {ref!r:.100} not saved")
        assert len(events) == rev - base >= 0 and (events or snap is not None) if kind == SNAPSHOT \
            else rev == base + 1 and snap is not None and not events, (ref, kind, base, rev)
        if self.crashed:
            return  # frozen: nothing is written, nothing released
        batch = self._batch
        entry = batch.entries.get(ref.kid)
        if entry is None:
            entry = batch.entries[ref.kid] = Entry(ref, kind, base)
        elif entry.rev != base or entry.kind != kind:
            raise StaleWrite(ref.key, base, f"{entry.rev} (pending in this batch)")
        entry.rev = rev
        if snap is not None:
            entry.snap = snap
            entry.snap_rev = rev
            batch.bytes += len(snap)
            batch.writes += 1
            if records:
                entry.records.update(records)  # a record saved twice in a batch is written once
                batch.bytes += sum(len(v) for v in records.values() if v is not None)
                batch.writes += len(records)
        else:
            assert not records, (ref, "records are saved with a state")
        if events:
            entry.events += [(seq, encode_value(EVENT, seq, value))
                             for seq, value in enumerate(events, base + 1)]
            batch.bytes += sum(map(len, events))
            batch.writes += len(events)
        procs = entry.procs
        if not procs or procs[-1] is not proc:
            procs.append(proc)
        if self.holds:
            batch.held[proc] = None
        if batch.writes >= self.max_batch_writes or batch.bytes >= self.max_batch_bytes:
            self._settle()

    def _waits(self, proc: PersistentServer) -> bool:
        return proc in self._batch.held or (self._inflight is not None and proc in self._inflight.held)

    def end_turn(self, proc: PersistentServer, suspended: bool) -> None:
        """A persistent process finished a turn: let its outputs go unless they wait for
        a batch (it wrote, read a pending write, or is suspended in an async callback)."""
        if not self.holds or self.crashed:
            return
        if suspended:
            self._suspended[proc] = None
            self._batch.held[proc] = None
        elif not self._waits(proc):
            self.node.release_output(proc, keep_holding=True)

    def _end_pass(self) -> None:
        if self._suspended:
            for proc in list(self._suspended):
                self._flush_suspended(proc)
        batch = self._batch  # _has_work, inline: this runs at the end of every pass
        if (batch.entries or batch.meta or batch.held) and self._inflight is None:
            self._submit(wait=False)
        if self._reader is not None:
            self._abort_reader()

    def _flush_suspended(self, proc: PersistentServer) -> None:
        # A suspended async callback may already have sent what its changes imply: save
        # them before releasing. Errors come back as the process's fault.
        if not self.node.is_suspended(proc.pid):  # exited, or its async callback ended
            del self._suspended[proc]
            return
        self._batch.held[proc] = None
        try:
            proc._flush()
        except StorageError as exc:
            self._fail(proc, exc)

    # -- committing ---------------------------------------------------------------------------------

    def _submit(self, wait: bool) -> None:
        """Commit the open batch: inline (deterministic driver, or `wait`) or on the writer."""
        assert self._inflight is None
        batch, self._batch = self._batch, Batch()
        if self.crashed:
            return
        if self._crash_next:
            self._crash_next = False
            self.crashed = True  # frozen: the held outputs stay held until the node is dropped
            return
        if not batch.entries and not batch.meta:
            self._finish(batch, [])
            return
        fault = self.commit_fault() if self.commit_fault is not None else None
        if fault is not None:
            self._finish(batch, fault)
        elif self._writer is None or wait:
            self._abort_reader()
            self._finish(batch, self._commit_inline(batch))
        else:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._start_writer(batch)

    def _commit_inline(self, batch: Batch) -> list[tuple[Entry, StorageError]] | StorageError:
        try:
            while True:
                try:
                    return self._write_batch(batch)
                except _MapFull:
                    self._grow()
        except StorageError as exc:
            return exc

    def _start_writer(self, batch: Batch) -> None:
        self._inflight = batch
        writer, loop = self._writer, self._loop
        assert writer is not None and loop is not None, "a writer thread runs on a loop"
        future = self._inflight_future = writer.submit(self._write_batch, batch)

        def committed(done: concurrent.futures.Future) -> None:
            try:
                loop.call_soon_threadsafe(self._committed, batch, done)
            except RuntimeError:
                pass  # the loop is closed: close() drains the writer itself

        future.add_done_callback(committed)

    def _committed(self, batch: Batch, future: concurrent.futures.Future) -> None:
        """The writer finished `batch` (on the node's thread)."""
        if batch is not self._inflight:
            return  # already handled by _drain
        exc = future.exception()
        if isinstance(exc, _MapFull):
            self._abort_reader()  # set_mapsize needs no transaction open in the process
            try:
                self._grow()
            except StorageError as full:
                exc = full
            else:
                self._start_writer(batch)
                return
        self._inflight = None
        self._abort_reader()  # it may predate this commit
        if exc is None:
            self._finish(batch, future.result())
        else:
            self._finish(batch, exc if isinstance(exc, StorageError)
                         else StorageIOError(f"committing to {self.path} failed: {exc!r}"))
        if _has_work(self._batch):
            self._submit(wait=False)

    def _drain(self) -> None:
        """Wait for the writer (blocking the node's thread) and handle what it finished."""
        while self._inflight is not None:
            batch, future = self._inflight, self._inflight_future
            assert future is not None, "a batch in flight has its writer's future"
            concurrent.futures.wait([future])
            self._committed(batch, future)

    def _settle(self) -> None:
        """Commit everything pending now."""
        self._drain()
        if _has_work(self._batch):
            self._submit(wait=True)

    def _finish(self, batch: Batch, outcome: list[tuple[Entry, StorageError]] | StorageError) -> None:
        """Fail the writers of refused entries (all of them for an error), release the rest."""
        if isinstance(outcome, StorageError):  # every writer fails
            log.error("commit of %d keys to %s failed: %s", len(batch.entries), self.path, outcome)
            for name, value in batch.meta.items():  # staged settings go with the next batch
                self._batch.meta.setdefault(name, value)
            outcome = [(entry, outcome) for entry in batch.entries.values()]
        if outcome:
            failed: dict[PersistentServer, StorageError] = {}
            for entry, exc in outcome:
                for proc in entry.procs:
                    failed.setdefault(proc, exc)
            for proc, exc in failed.items():
                self._fail(proc, exc)
        node, later = self.node, self._batch.held
        for proc in batch.held:
            if proc._fault is None and proc not in later:  # else it waits for the open batch
                node.release_output(proc, keep_holding=True)

    def _fail(self, proc: PersistentServer, exc: StorageError) -> None:
        """Crash a process whose writes (or reads) were not stored: it raises `exc` on its
        next turn. Its held outputs are dropped, never seen (its exit, if it has exited,
        goes out now)."""
        self._suspended.pop(proc, None)
        self.node.discard_output(proc)
        if proc._fault is not None:
            return  # the first fault is the reason
        if self.node.is_alive(proc.pid):
            proc._fail(exc)
        else:
            log.error("writes of exited process %r were not stored: %s", proc.pid, exc)

    def _write_batch(self, batch: Batch) -> list[tuple[Entry, StorageError]]:
        """One write transaction (on the writer thread in real time); returns the refused
        entries."""
        entries = batch.entries
        # What a power cut could take back, to undo it (simulated stores); a sync commit is
        # durable once it returns, so nothing of it is kept.
        undo: list[tuple[Any, bytes, bytes | None]] | None = (
            [] if self._undo is not None and self.mode != "sync" else None)
        refused: list[tuple[Entry, StorageError]] = []
        revs: dict[bytes, tuple[int, int]] = {}  # (kind, snapshot revision) once this commits
        writes = 0
        started = time.perf_counter() if self.on_commit is not None else 0.0
        try:
            with self.env.begin(write=True) as txn:
                for kid, entry in entries.items():
                    self._apply(txn, kid, entry, refused, undo, revs)
                    writes += len(entry.events) + (entry.snap is not None) + len(entry.records)
                if batch.meta:
                    self._put_meta(txn, batch.meta, undo)
                    writes += len(batch.meta)
        except lmdb.MapFullError:
            raise _MapFull() from None
        except lmdb.Error as exc:
            raise self._io_error(exc, len(entries)) from exc
        if len(self._revs) + len(revs) > REVISIONS_CACHED:
            self._revs.clear()  # bounded: forgotten keys are read from disk again
        self._revs.update(revs)
        self.commits += 1
        self.writes += writes
        if self.on_commit is not None:
            self.on_commit(writes, time.perf_counter() - started)
        if undo is not None and self._undo is not None:
            self._undo.append(undo)
        return refused

    def _apply(self, txn: lmdb.Transaction, kid: bytes, entry: Entry,
               refused: list[tuple[Entry, StorageError]], undo: list | None,
               revs: dict[bytes, tuple[int, int]]) -> None:
        cached = self._revs.get(kid)
        # A key written as the other kind is read, so its check names the mismatch.
        stored = cached[1] if cached is not None and cached[0] == entry.kind else None
        old = txn.get(kid, db=self.snapshots) if stored is None or undo is not None else None
        if stored is None:
            stored = 0
            if old is not None:
                try:
                    stored = self._checked_rev(entry.ref, old, entry.kind)
                except StorageError as exc:
                    refused.append((entry, exc))
                    return
        if entry.kind == STATE:
            stale = stored != entry.base
        else:  # events after the stored snapshot stay in the journal until the next one
            stale = (stored > entry.base
                     or txn.get(kid + SEQ.pack(entry.base + 1), db=self.journal) is not None)
        if stale:
            refused.append((entry, StaleWrite(entry.ref.key, entry.base, stored)))
            return
        if entry.snap is not None:
            # Encoded here, once per batch, however many times the key was saved in it.
            assert entry.base <= entry.snap_rev <= entry.rev, (entry.ref, entry.base, entry.snap_rev)
            value = encode_value(entry.kind, entry.snap_rev, entry.ref.prefix, entry.snap)
            self._put(txn, self.snapshots, kid, value, undo, old)
            if entry.kind == SNAPSHOT:
                self._compact(txn, kid, stored, entry.snap_rev, undo)
            stored = entry.snap_rev
        revs[kid] = (entry.kind, stored)
        records = self.records
        for rkey, payload in entry.records.items():
            key = kid + rkey
            old = txn.get(key, db=records) if undo is not None else None
            if payload is not None:
                self._put(txn, records, key, encode_value(RECORD, stored, payload), undo, old)
            elif undo is None:
                txn.delete(key, db=records)
            elif old is not None:
                undo.append((records, key, old))
                txn.delete(key, db=records)
        for seq, value in entry.events:
            if seq > entry.snap_rev:
                self._put(txn, self.journal, kid + SEQ.pack(seq), value, undo, None)

    def _put(self, txn: lmdb.Transaction, db: Any, key: bytes, value: bytes, undo: list | None,
             old: bytes | None) -> None:
        if undo is not None:
            undo.append((db, key, old))
        txn.put(key, value, db=db)

    def _compact(self, txn: lmdb.Transaction, kid: bytes, after: int, upto: int,
                 undo: list | None) -> None:
        """Delete the journal entries a new snapshot covers: seq after+1..upto."""
        with txn.cursor(db=self.journal) as cur:
            found = cur.set_range(kid + SEQ.pack(after + 1))
            while found and cur.key()[:16] == kid and SEQ.unpack_from(cur.key(), 16)[0] <= upto:
                if undo is not None:
                    undo.append((self.journal, cur.key(), cur.value()))
                found = cur.delete()

    def _grow(self) -> None:
        """Grow the map, its file's blocks reserved first: doubling (by at most
        GROW_STEP); on a disk too full for that, by a sixteenth; else `StoreFull` (this
        batch fails; a later one grows once there is room)."""
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            raise StoreFull(f"store {self.path} reached its max_map_size of {self.max_map_size} bytes")
        small = min(size + max(size // 16 // GROW_UNIT * GROW_UNIT, GROW_UNIT), self.max_map_size)
        new = min(size + min(size, GROW_STEP), self.max_map_size)
        try:
            self._reserve(new)
        except StoreFull:
            if small >= new:
                raise
            self._reserve(small)
            new = small
        log.info("store %s: map full at %d bytes, growing to %d", self.path, size, new)
        self.env.set_mapsize(new)

    def _io_error(self, exc: lmdb.Error, n: int) -> StorageError:
        what = f"committing {n} keys to {self.path}"
        if isinstance(exc, lmdb.DiskError) or getattr(exc, "errno", None) == errno.ENOSPC \
                or "No space left" in str(exc) or self._disk_full():
            return StoreFull(f"disk full {what}: {exc}")
        return StorageIOError(f"I/O error {what}: {exc}")

    # -- durability points and fault hooks ----------------------------------------------------------

    def sync(self) -> None:
        """Make every commit so far durable against power loss (`process`/`none` modes)."""
        if self.closed:
            raise StoreClosed(f"store {self.path} is closed")
        self._drain()
        if not self.simulated:
            self.env.sync(True)
        if self._undo is not None:
            self._undo.clear()

    @property
    def unsynced_commits(self) -> int:
        """Commits a power cut may lose (tracked only with `simulated=True`)."""
        return len(self._undo) if self._undo is not None else 0

    def fill_disk(self, full: bool) -> None:
        """While full, every commit fails with `StoreFull` and writes nothing."""
        self.commit_fault = (lambda: StoreFull(f"disk full (injected) at {self.path}")) if full else None

    def crash_before_next_commit(self) -> None:
        """Freeze the store at its next commit, which does not happen (see module docstring)."""
        self._crash_next = True

    def power_loss(self, keep: int = 0) -> int:
        """Simulate a power cut: undo the unsynced commits after the first `keep`, drop the
        pending batch and close. Returns how many commits were lost."""
        if self._undo is None:
            raise RuntimeError("power_loss needs Store(..., simulated=True)")
        assert keep >= 0, keep
        self._drain()
        lost = self._undo[keep:]
        del self._undo[keep:]
        if lost:
            with self.env.begin(write=True) as txn:
                for undo in reversed(lost):
                    for db, key, old in reversed(undo):
                        if old is None:
                            txn.delete(key, db=db)
                        else:
                            txn.put(key, old, db=db)
        self.close(commit=False)
        return len(lost)

    def crash(self) -> None:
        """The node's OS process died: the pending batch is lost, commits are kept."""
        self.close(commit=False)

    def close(self, commit: bool = True) -> None:
        """Commit the pending batch (unless `commit=False`), sync, close the environment."""
        if self.closed:
            return
        if commit:
            for proc in list(self._suspended):
                self._flush_suspended(proc)
            self._settle()
        else:
            self._drain()  # the writer already has it: LMDB finishes or drops it atomically
        if not self.crashed:
            self.sync()
        self._abort_reader()
        self.closed = True
        self._batch, self._suspended = Batch(), {}
        self.node.remove_pass_hook(self._end_pass)
        if self._writer is not None:
            self._writer.shutdown()
        self.env.close()
        os.close(self._data)
        self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.path} mode={self.mode} commits={self.commits}>"
