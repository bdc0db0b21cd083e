"""The trace: every event of a run as a compact record, hashed and optionally written out.

Records are msgpack values, one per event. The common one is a bare int: a turn of the
process with that serial on the current node. Context records set what the bare ints
mean: `["t", time]` (the global clock moved) and `["@", node]` (events now come from that
node). Everything else is a list whose first item names the event:

    ["spawn", serial, qualname]            ["exit", serial, reason]
    ["send", src, dst, serial, kind, fault, arrival]   (fault: "", a message fault,
                                            "cut" across a partition; "noconnection":
                                            a link or monitor set up with no connection)
    ["arr", dst, serial, kind]             (or with "node down", "connection lost")
    ["commit", node, n]                    ["lost", node, commits]
    ["fault", kind, target, ...]           ["restart", node, creation]
    ["heal", "partition"]                  ["phase", name]          ["check", name]
    ["bug", site, enabled]  ["bug", site]  (a buggify site drawn on or off; a site firing)

Records are packed a chunk at a time (one C call), the chunk's bytes feed an incremental
blake2b, and every chunk ends with a checkpoint `["ckpt", records so far, time, hash]`
in the file, so a divergence can be located without decoding the whole file. The file
is: a header map, chunks and checkpoints, a footer map. `TraceReader.verify` checks a
file against its own checkpoints (a truncated or altered file is "damaged", not a
divergence); `events` decodes records for people and tools (`letitcrash trace show`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import msgpack

FORMAT = "letitcrash-trace"
VERSION = 1
KINDS_LIMIT = 1 << 20  # processes whose kind is remembered for readable failure reports
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def canon(value: Any, depth: int = 0) -> Any:
    """A value safe to put in a trace: the same in every interpreter. Exceptions and other
    objects become their type's qualified name (their repr may hold an address)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if type(value) in (tuple, list) and depth < 4:
        return [canon(v, depth + 1) for v in value[:8]]
    node_name = getattr(value, "node_name", None)
    serial = getattr(value, "serial", None)
    if type(node_name) is str and type(serial) is int:  # a Pid or a Ref
        return f"<{node_name}.{serial}>"
    return type(value).__qualname__


def clean_name(text: str) -> str:
    """A spawn target's name without memory addresses (a partial's repr has one)."""
    return _ADDRESS.sub("", text) if " at 0x" in text else text


def _array_header_len(n: int) -> int:
    return 1 if n < 16 else 3 if n < 65536 else 5


class Divergence(Exception):
    """A replayed run produced a record other than the one recorded. `checkpoint` is the
    last (records, time) at which both traces' hashes still agreed."""

    def __init__(self, index: int, time: float, node: str | None, expected: Any, got: Any,
                 checkpoint: tuple[int, float]) -> None:
        super().__init__(f"record #{index} at virtual time {time:.6f}"
                         f"{f' on node {node}' if node else ''}: recorded {expected!r:.300}, "
                         f"replay produced {got!r:.300} (the hashes last agreed at checkpoint "
                         f"record #{checkpoint[0]}, t={checkpoint[1]:.6f})")
        self.index, self.time, self.node, self.expected, self.got = index, time, node, expected, got
        self.checkpoint = checkpoint


class Trace:
    """Collects records; `flush()` closes a chunk (the simulator calls it between steps).

    `out`: a binary file to write the trace to, or None to only hash it.
    `expect`: a `TraceReader` to compare against (replay); the first difference raises
    `Divergence`.
    """

    def __init__(self, checkpoint: int = 4096, out: BinaryIO | None = None,
                 expect: TraceReader | None = None, keep: int = 40) -> None:
        assert checkpoint >= 1, "checkpoint must be at least one record"
        assert keep >= 1, "keep at least one event for failure reports"
        self.checkpoint = checkpoint
        self.records: list[Any] = []
        self.append = self.records.append  # hot paths record with trace.append((kind, ...))
        self.node: str | None = None
        self.time = 0.0
        self.count = 0  # records closed into chunks
        self.context = 0  # context records ("t", "@") so far
        self.chunks = 0
        self._hash = hashlib.blake2b(digest_size=16)
        self._out = out
        self._expect = expect
        self._keep = keep
        self._start: tuple[float, str | None] = (0.0, None)  # the (time, node) context at the open chunk's start
        self._tail: list[Any] = []  # the last records of closed chunks, for failure reports
        self._tail_start: tuple[float, str | None] = (0.0, None)
        self.kinds: dict[tuple[str | None, int], str] = {}  # (node, serial) -> what was spawned
        self.crashes = 0  # process crashes (kernel crash reports)

    # -- recording (hot) -------------------------------------------------------------

    def at_time(self, t: float) -> None:
        self.time = t
        self.records.append(("t", t))
        self.context += 1

    def at_node(self, name: str) -> None:
        self.node = name
        self.records.append(("@", name))
        self.context += 1

    def event(self, *record: Any) -> None:
        self.records.append(record)

    def tracer(self, name: str) -> Callable[[str, Any, Any], None]:
        """The kernel tracer for the node called `name`. A crash is counted, not recorded:
        the exit that follows it is."""
        append = self.records.append
        trace = self

        def tracer(event: str, pid: Any, detail: Any) -> None:
            if event == "run":  # by far the most frequent
                if trace.node is not name:
                    trace.at_node(name)
                append(pid.serial)
                return
            if event == "crash":
                trace.crashes += 1
                return
            if trace.node is not name:
                trace.at_node(name)
            if event == "spawn":
                kind = clean_name(detail)
                if len(trace.kinds) < KINDS_LIMIT:  # past it, failure reports show bare pids
                    trace.kinds[(name, pid.serial)] = kind
                append(("spawn", pid.serial, kind))
            else:
                append((event, pid.serial, canon(detail)))
        return tracer

    # -- chunks ----------------------------------------------------------------------

    def flush(self) -> None:
        """Close the open chunk: hash it, compare it, write it with its checkpoint."""
        records = self.records
        if not records:
            return
        chunk = msgpack.packb(records)[_array_header_len(len(records)):]
        self._hash.update(chunk)
        start = self.count
        self.count += len(records)
        self.chunks += 1
        if self._expect is not None or self._out is not None:
            digest = self._hash.hexdigest()
            if self._expect is not None:
                self._expect.compare(chunk, records, start, self._start, digest)
            if self._out is not None:
                self._out.write(chunk)
                self._out.write(msgpack.packb(("ckpt", self.count, self.time, digest)))
        cut = max(0, len(records) - self._keep)
        self._tail_start = _context_at(records, cut, self._start)
        self._tail = records[cut:]
        self._start = (self.time, self.node)
        records.clear()

    @property
    def events(self) -> int:
        """Events so far (records that are not context)."""
        return self.count + len(self.records) - self.context

    def digest(self) -> str:
        """The blake2b hash of every record so far (closes the open chunk)."""
        self.flush()
        return self._hash.hexdigest()

    def last_events(self, n: int = 20) -> list[str]:
        """The last `n` events, readable."""
        self.flush()
        return list(describe(self._tail, self._tail_start, self.kinds))[-n:]

    # -- file ---------------------------------------------------------------------------

    def write_header(self, header: dict) -> None:
        if self._out is not None:
            self._out.write(msgpack.packb({"format": FORMAT, "version": VERSION, **header}))

    def finish(self, footer: dict) -> None:
        """End the trace: the footer goes to the file; a replay checks the recording ends too."""
        self.flush()
        if self._expect is not None:
            self._expect.finish(self.count, self.time)
        if self._out is not None:
            self._out.write(msgpack.packb({"end": True, "records": self.count,
                                           "hash": self._hash.hexdigest(), **footer}))


def _context(rec: Any, t: float, node: str | None) -> tuple[float, str | None]:
    """The (time, node) context after `rec`."""
    if type(rec) is not int and rec[0] == "t":
        return rec[1], node
    if type(rec) is not int and rec[0] == "@":
        return t, rec[1]
    return t, node


def _context_at(records: list[Any], index: int, start: tuple[float, str | None]) -> tuple[float, str | None]:
    """The context in force at `records[index]`: found by looking back, not replaying."""
    t = node = None
    for i in range(index - 1, -1, -1):
        rec = records[i]
        if type(rec) is int:
            continue
        if t is None and rec[0] == "t":
            t = rec[1]
        elif node is None and rec[0] == "@":
            node = rec[1]
        if t is not None and node is not None:
            break
    return (start[0] if t is None else t, start[1] if node is None else node)


def pid_text(node: str | None, serial: int) -> str:
    """A pid for people: `<node.n>`, or `<node#k.n>` in the node's k-th restart."""
    creation, n = divmod(serial, 1 << 40)
    return f"<{node}#{creation}.{n}>" if creation else f"<{node}.{n}>"


# What `Event.kind` can be: the first item of a record (a bare int is a "run").
EVENT_KINDS = ("run", "spawn", "exit", "send", "arr", "commit", "lost", "fault", "restart", "heal",
               "phase", "check", "bug")


@dataclass(slots=True)
class Event:
    """One event record, decoded: `record` is its number in the trace (context records
    counted, as in a divergence report), `node` where it happened (a send on its source,
    an arrival on its destination; None for phases, checks, heals, buggify and
    partitions), `pid` the process it concerns (a send's and an arrival's receiver)."""

    record: int
    time: float
    node: str | None
    kind: str
    pid: str | None
    text: str
    fields: list[Any]

    def as_json(self) -> dict[str, Any]:
        return {"record": self.record, "t": self.time, "node": self.node, "kind": self.kind,
                "pid": self.pid, "text": self.text, "fields": self.fields}


def events(records: Iterable[Any], start: tuple[float, str | None] = (0.0, None),
           kinds: dict[tuple[str | None, int], str] | None = None, first: int = 0) -> Iterator[Event]:
    """The event records among `records` (which start in the (time, node) context `start`
    at record number `first`) as Events; `kinds` names spawned processes, and learns
    the spawns it sees."""
    kinds = {} if kinds is None else kinds
    t, node = start
    pid: str | None
    for n, rec in enumerate(records, first):
        if type(rec) is int:
            pid = pid_text(node, rec)
            yield Event(n, t, node, "run", pid, f"t={t:.6f} {node} run {pid} {kinds.get((node, rec), '')}".rstrip(),
                        [rec])
            continue
        what = rec[0]
        if what in ("t", "@"):
            t, node = _context(rec, t, node)
        elif what in ("spawn", "exit"):
            pid = pid_text(node, rec[1])
            if what == "spawn" and len(kinds) < KINDS_LIMIT:
                kinds[(node, rec[1])] = rec[2]
            yield Event(n, t, node, what, pid, f"t={t:.6f} {node} {what} {pid} {rec[2]}", list(rec))
        elif what == "send":
            _, src, dst, serial, kind, fault, *arrival = rec
            pid = pid_text(dst, serial)
            text = (f"t={t:.6f} send {src} -> {pid} {kind}" + (f" {fault}" if fault else "")
                    + (f" (arrives {arrival[0]:.6f})" if arrival else ""))
            yield Event(n, t, src, what, pid, text, list(rec))
        elif what == "arr":
            _, dst, serial, kind, *why = rec
            pid = pid_text(dst, serial)
            yield Event(n, t, dst, what, pid, f"t={t:.6f} arrive {pid} {kind}" + (f" ({why[0]})" if why else ""),
                        list(rec))
        else:
            where = rec[1] if what in ("commit", "lost", "restart") else (
                rec[2] if what == "fault" and type(rec[2]) is str else None)
            pid = None
            shown = rec
            if what == "fault" and rec[1] in ("kill_process", "kill_tree"):  # name the victim, not its serial
                pid = pid_text(where, rec[3])
                shown = [*rec[:2], pid, *rec[4:]]
            text = f"t={t:.6f} " + " ".join(f"{x:.6f}" if type(x) is float else str(x) for x in shown)
            yield Event(n, t, where, what, pid, text, list(rec))


def describe(records: list[Any], start: tuple[float, str | None],
             kinds: dict[tuple[str | None, int], str] | None = None) -> Iterator[str]:
    """Readable lines for event records, given the (time, node) context they start in."""
    return (event.text for event in events(records, start, kinds))


class TraceReader:
    """Reads a trace file: `header`, then chunks for `Trace(expect=reader)` to compare."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise TraceError(f"{path}: cannot read the trace: {exc.strerror}") from None
        self._unpacker = msgpack.Unpacker(self._file, raw=False, strict_map_key=False,
                                          max_buffer_size=1 << 30)
        try:
            header = next(self._unpacker)
        except (StopIteration, ValueError, msgpack.UnpackException) as exc:
            self.close()
            raise TraceError(f"{path}: not a letitcrash trace (no header: {exc or 'empty file'})") from None
        if type(header) is not dict or header.get("format") != FORMAT:
            self.close()
            raise TraceError(f"{path}: not a letitcrash trace (the first record is not a "
                             f"'{FORMAT}' header)")
        if header.get("version") != VERSION:
            self.close()
            raise TraceError(f"{path}: trace format version {header.get('version')!r}; "
                             f"this letitcrash reads version {VERSION}")
        self.header = header
        self.footer: dict | None = None
        self.checkpoint: tuple[int, float] = (0, 0.0)  # the last one that matched: (records, time)

    def close(self) -> None:
        self._file.close()

    def _chunk(self) -> tuple[list[Any], list[Any] | None]:
        """The next chunk's records and the checkpoint that ends it (None at the end)."""
        records: list[Any] = []
        while True:
            try:
                rec = next(self._unpacker)
            except StopIteration:
                return records, None
            except (ValueError, msgpack.UnpackException) as exc:
                raise TraceError(f"{self.path}: corrupt trace after record {self.checkpoint[0]}: "
                                 f"{exc}") from None
            if type(rec) is dict:
                self.footer = rec
                return records, None
            if type(rec) is list and rec and rec[0] == "ckpt":
                return records, rec
            records.append(rec)

    def compare(self, chunk: bytes, records: list[Any], start: int,
                context: tuple[float, str | None], digest: str) -> None:
        """Compare the replay's next chunk (and its hash so far) with the recording's."""
        expected, ckpt = self._chunk()
        if len(expected) == len(records) and \
                msgpack.packb(expected)[_array_header_len(len(expected)):] == chunk:
            if ckpt is None or ckpt[3] != digest:
                raise Divergence(start + len(records), context[0], None,
                                 f"checkpoint {ckpt!r}", f"hash {digest}", self.checkpoint)
            self.checkpoint = (ckpt[1], ckpt[2])
            return
        got = msgpack.unpackb(msgpack.packb(records))  # as a reader sees them: lists
        t, node = context
        for i, have in enumerate(got):
            want = expected[i] if i < len(expected) else _END
            if want != have:
                on_node = type(have) is int or have[0] in ("spawn", "exit")  # node events
                raise Divergence(start + i, t, node if on_node else None, want, have, self.checkpoint)
            t, node = _context(have, t, node)
        raise Divergence(start + len(got), t, node, expected[len(got)], _END, self.checkpoint)

    def finish(self, count: int, time: float) -> None:
        """The replay ended: the recording must end here too."""
        rest, _ = self._chunk()
        if rest:
            raise Divergence(count, time, None, rest[0], "the end of the run", self.checkpoint)

    def records(self) -> Iterator[Any]:
        """Every event record of the file, in order (for tools and tests)."""
        while True:
            chunk, ckpt = self._chunk()
            yield from chunk
            if ckpt is None:
                return

    def verify(self) -> dict:
        """Check that the file is whole, on its own: each chunk hashes to its checkpoint,
        the footer ends it and counts every record. Returns the footer; raises TraceError
        ("damaged") for a truncated or altered file. Reads the file through its own
        handle, so the reader's position is unchanged."""
        digest = hashlib.blake2b(digest_size=16)
        count, records = 0, []  # type: tuple[int, list[Any]]
        with open(self.path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False, max_buffer_size=1 << 30)
            try:
                next(unpacker)  # the header, checked by the constructor
                for rec in unpacker:
                    if type(rec) is dict:
                        footer = rec
                        break
                    if type(rec) is list and rec and rec[0] == "ckpt":
                        digest.update(msgpack.packb(records)[_array_header_len(len(records)):])
                        count += len(records)
                        records = []
                        if rec[1:2] != [count] or rec[3:4] != [digest.hexdigest()]:
                            raise self._damaged(f"the records before the checkpoint at record {count} "
                                                "do not match its hash")
                    else:
                        records.append(rec)
                else:
                    raise self._damaged(f"it ends after record {count + len(records)} without its end "
                                        "record (truncated?)")
                extra = next(unpacker, None)
            except (ValueError, msgpack.UnpackException) as exc:
                raise self._damaged(f"undecodable data after record {count + len(records)} ({exc})") from None
        if records or extra is not None:
            raise self._damaged(f"records after the last checkpoint (record {count})")
        if footer.get("records") != count or footer.get("hash") != digest.hexdigest():
            raise self._damaged(f"the end record does not match the {count} records before it")
        return footer

    def _damaged(self, why: str) -> TraceError:
        return TraceError(f"{self.path}: damaged trace: {why}; the file was cut short or changed "
                          "after it was written, so it cannot be replayed")


class TraceError(Exception):
    """A trace file that cannot be read."""


class _End:
    def __repr__(self) -> str:
        return "the end of the recording"


_END = _End()
