"""The wire: deliveries between nodes as frames on a byte stream (TCP or a Unix socket).

Frames. A frame is a 4-byte big-endian length N, then N bytes:

- N = 0 is a tick: "still here", written when nothing else was for a tick (`actors.dist`);
- during the handshake (`actors.handshake`), a frame is one msgpack array naming its step;
- once the connection is up, a frame is a batch: a msgpack array of deliveries.

A delivery (one of the kinds of `actors.boundary`) is an array `[code, to, fields...]`:
its fields in the order of its named tuple, encoded with the wire's codec
(`actors.codec.encode_term`: pids, refs, tuples, named tuples and exceptions as extension
types; nothing is ever unpickled or run). `code` is the kind's number (`KINDS`), plus
`NAMED` when `to` is a term (a registered name, or None for a caller outside any
process) rather than the serial of a pid of the receiving node, plus `TUPLE` when the
last field, a tuple, travels as a plain array (the common message shape costs no
extension type). Sends and casts travel as runs: `[code, to, msg, msg...]` holds the
consecutive messages of one kind, one tuple-ness and one `to` in a batch, so the far
node resolves their process once (`Boundary.arrive_run`); order is unchanged.

What a receiver refuses (`WireError`, and the connection closes with one log line):
a frame over its limit, bytes that do not decode, a batch or delivery of the wrong
shape, an unknown kind, a field of the wrong type (a pid where a pid belongs, a ref
where a ref does, a flag that is not a bool), a delivery addressed to a pid of another node. A frame is checked
whole before any of it is delivered. A delivery for a pid of this node that does not
exist (it exited, or belonged to an earlier incarnation) is not an error: it is dropped,
as in Erlang.

What a sender refuses: a message that cannot be encoded, or whose encoding is larger
than the peer's frame limit, raises in the sender (`TypeError`, `ValueError`) naming it;
an exit reason that cannot be encoded crosses as its repr, so a link or monitor always
hears.

`Channel` is the asyncio protocol of one stream: it cuts frames and hands them to its
owner (a handshake, then the connection's `actors.dist.Peer`), in order, and stops at
once when closed: nothing read after a close is delivered.
"""
from __future__ import annotations

import asyncio
import logging
from itertools import islice
from typing import Any, Callable, NamedTuple

from .boundary import (CallRequest, Cast, Delivery, Demonitor, DownSignal, ExitSignal, Link, LinkedExit,
                       Monitor, Reply, Send, Unlink)
from .codec import decode_term, wire_encoder
from .ids import Pid, Ref

log = logging.getLogger("actors.dist")

TICK = b"\0\0\0\0"
ROOM = 9  # bytes reserved before a batch: its length, and the largest msgpack array header
KINDS = (Send, Cast, CallRequest, Reply, ExitSignal, LinkedExit, Link, Unlink, Monitor, Demonitor, DownSignal)
CODES = {cls: code for code, cls in enumerate(KINDS)}
NAMED = 16
TUPLE = 32
KIND_MASK = 15
SIGNALS = frozenset({CODES[ExitSignal], CODES[LinkedExit], CODES[DownSignal]})  # the last field is a reason
ARITY = tuple(len(cls._fields) for cls in KINDS)
# Which `to` a kind may carry besides a pid of the receiving node: a name (a send, cast,
# call, exit, monitor or demonitor may be addressed by registered name), None (a reply or
# a Down for a caller outside any process), or neither.
NAME_OK = frozenset(CODES[cls] for cls in (Send, Cast, CallRequest, ExitSignal, Monitor, Demonitor))
NONE_OK = frozenset(CODES[cls] for cls in (Reply, DownSignal))
# The fields of each kind that are ids, pids or refs: (index in the delivery, type, None
# allowed). They travel as their serial (an id of the sending node) or as [node, serial],
# never as the codec's extension types: a call costs five of them.
IDS: tuple[tuple[tuple[int, type, bool], ...], ...] = (
    (), (),  # send, cast: runs
    ((1, Pid, True), (2, Ref, False)),  # call: caller, tag
    ((1, Ref, False),),  # reply: tag
    ((1, Pid, True),),  # exit: sender
    ((1, Pid, False),),  # linked_exit: sender
    ((1, Pid, False),),  # link: sender
    ((1, Pid, False),),  # unlink: sender
    ((1, Pid, True), (2, Ref, False)),  # monitor: watcher, ref
    ((1, Ref, False),),  # demonitor: ref
    ((1, Ref, False),),  # down: ref
)
FLAGS = {CODES[CallRequest]: 3, CODES[Reply]: 2}  # the index of a kind's bool field: monitor, ended


_make = tuple.__new__
SEND, CAST = CODES[Send], CODES[Cast]
PID_RUNS = frozenset((SEND, CAST, SEND | TUPLE, CAST | TUPLE))  # runs to a pid of the receiving node
SEAL_COUNT = 1024  # sends and casts kept unencoded at most, per peer
SEAL_BYTES = 256 * 1024  # encoded, waiting: the outbox says so (its peer then flushes)


class Run(NamedTuple):
    """Several sends (or casts) to one address, in order, as one item of a batch."""

    kind: type
    to: Any
    msgs: list


class WireError(Exception):
    """What a peer sent cannot be taken (see the module docstring); the connection closes."""


# -- frames -----------------------------------------------------------------------------------

def frame(payload: bytes) -> bytes:
    """One frame: the length, then `payload`."""
    return len(payload).to_bytes(4, "big") + payload


def array_header(count: int) -> bytes:
    """msgpack's header of an array of `count` elements."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


class FrameReader:
    """Cuts a stream into frames of at most `limit` bytes; past it, `error` says why, and
    nothing more is cut."""

    __slots__ = ("limit", "buf", "need", "error")

    def __init__(self, limit: int) -> None:
        assert limit >= 1
        self.limit = limit
        self.buf = bytearray()  # the start of a frame not yet complete
        self.need = 4  # bytes that must be in `buf` before another frame can be cut
        self.error: WireError | None = None

    def feed(self, data: bytes) -> list[Any]:
        """The frames `data` completes, in order (payloads: bytes or memoryviews), up to
        the first over the limit."""
        if self.error is not None:
            return []
        buf = self.buf
        if buf:
            buf += data
            if len(buf) < self.need:
                return []
            data = bytes(buf)
            buf.clear()
        view = memoryview(data)
        frames: list[Any] = []
        pos, end, limit = 0, len(data), self.limit
        while end - pos >= 4:
            size = int.from_bytes(view[pos:pos + 4], "big")
            if size > limit:
                self.error = WireError(f"a frame of {size} bytes, over the limit of {limit}")
                return frames
            if end - pos - 4 < size:
                break
            frames.append(view[pos + 4:pos + 4 + size])
            pos += 4 + size
        if pos < end:
            buf += view[pos:]
            self.need = 4 + int.from_bytes(view[pos:pos + 4], "big") if end - pos >= 4 else 4
        return frames


class Outbox:
    """What this node has for node `peer`, turned into frames of at most `limit` bytes.

    Sends and casts are kept as they are, in runs, and encoded a run at a time (one call
    into msgpack for many messages) when the outbox is sealed: at a flush, or once
    `SEAL_COUNT` of them wait. One that cannot be encoded is then dropped, and
    `on_drop(description)` says so (its sender's turn is over by then). Every other
    delivery is encoded as it is added: a call, reply or link that cannot go raises in
    its sender (TypeError, ValueError), and an exit reason that cannot is sent as its repr.
    """

    __slots__ = ("own", "peer", "pack", "limit", "on_drop", "on_added", "sealed", "items", "count", "size",
                 "run", "run_code", "run_to")

    def __init__(self, own: str, peer: str, limit: int, on_drop: Callable[[str], None],
                 on_added: Callable[[], None]) -> None:
        self.own = own  # this node's name
        self.peer = peer
        self.on_added = on_added  # called when the outbox was empty, and when a seal leaves much waiting
        self.pack = wire_encoder()
        self.limit = limit - ROOM  # what the items of one frame may take
        assert self.limit > 0, "a frame must hold a batch's header"
        self.on_drop = on_drop
        self.sealed: list[bytes] = []  # whole frames
        self.items: list[Any] = []  # added since the last seal: bytes, or a run [code, to, msg...]
        self.count = 0  # messages in `items`
        self.size = 0  # bytes in `sealed`, and of the deliveries in `items`
        self.run: list | None = None  # the run at the end of `items`
        self.run_code = -1
        self.run_to: Any = None

    def message(self, kind: type, to: Any, msg: Any) -> None:
        """The send or cast `kind(to, msg)` (the hottest path)."""
        code = SEND if kind is Send else CAST
        if type(to) is Pid and to.node_name == self.peer:
            to = to.serial
        else:
            code |= NAMED
        if type(msg) is tuple:
            code |= TUPLE
        run = self.run
        if run is not None and code == self.run_code and type(to) is type(self.run_to) and to == self.run_to:
            run.append(msg)
        else:
            self.run = [code, to, msg]
            self.run_code, self.run_to = code, to
            if not self.items and not self.sealed:
                self.on_added()
            self.items.append(self.run)
        self.count += 1
        if self.count >= SEAL_COUNT:
            self.seal()
            self.on_added()

    def add(self, delivery: Delivery) -> None:
        """A delivery of any kind."""
        kind = type(delivery)
        if kind is Send or kind is Cast:
            self.message(kind, delivery[0], delivery[1])
            return
        data = self.encode(delivery)
        if not self.items and not self.sealed:
            self.on_added()
        self.items.append(data)
        self.size += len(data)
        self.run = None
        if self.size >= SEAL_BYTES:
            self.on_added()

    def encode(self, delivery: Delivery) -> bytes:
        """A delivery of any kind but a send or cast, as bytes."""
        code = CODES[type(delivery)]
        to = delivery.to
        if type(to) is Pid and to.node_name == self.peer:
            to = to.serial
        else:
            code |= NAMED
        item = [code, to, *delivery[1:]]
        own = self.own
        for i, _, _ in IDS[code & KIND_MASK]:
            x = item[i + 1]
            if x is not None:
                item[i + 1] = x.serial if x.node_name == own else [x.node_name, x.serial]
        last = item[-1]
        if type(last) is tuple:
            item[0] = code | TUPLE
            item[-1] = list(last)
        try:
            data = self.pack(item)
        except (TypeError, ValueError, OverflowError) as exc:
            if code & KIND_MASK not in SIGNALS:
                raise TypeError(f"a {type(delivery).__name__} to node {self.peer} cannot go over the wire: "
                                f"{exc}") from None
            item[0], item[-1] = code, repr(delivery[-1])
            data = self.pack(item)
        if len(data) > self.limit:
            if code & KIND_MASK not in SIGNALS:
                raise ValueError(f"a {type(delivery).__name__} of {len(data)} bytes to node {self.peer}: over "
                                 f"the limit of {self.limit} bytes a frame of that node takes")
            item[0], item[-1] = code, repr(delivery[-1])[:1000]
            data = self.pack(item)
        return data

    def seal(self) -> None:
        """Encode what was added into frames: the runs between two encoded deliveries in
        one call into msgpack when they fit the frame being filled, else one by one."""
        items = self.items
        if not items:
            return
        self.items, self.count, self.run = [], 0, None
        frame_items: list[bytes] = []
        count = taken = 0  # deliveries and bytes in `frame_items`
        limit = self.limit
        start, end = 0, len(items)
        while start < end:
            item = items[start]
            if type(item) is bytes:
                pieces: list[bytes] = [item]
                start += 1
            else:
                stop = start + 1
                while stop < end and type(items[stop]) is not bytes:
                    stop += 1
                whole = self.encode_runs(items[start:stop], limit - taken)
                if whole is not None:
                    frame_items.append(whole)
                    count += stop - start
                    taken += len(whole)
                    self.size += len(whole)
                    start = stop
                    continue
                pieces = self.encode_run(item)
                self.size += sum(map(len, pieces))
                start += 1
            for data in pieces:
                if taken + len(data) > limit and frame_items:
                    self.sealed.append(_framed(frame_items, count, taken))
                    frame_items, count, taken = [], 0, 0
                frame_items.append(data)
                count += 1
                taken += len(data)
        if frame_items:
            self.sealed.append(_framed(frame_items, count, taken))

    def encode_runs(self, runs: list[list], room: int) -> bytes | None:
        """Runs as consecutive items of a batch in one call into msgpack, if they all
        encode and take at most `room` bytes; else None (`encode_run` then takes each)."""
        for run in runs:
            if run[0] & TUPLE:
                run[2:] = map(list, run[2:])  # (again in `encode_run`, if it comes to that: harmless)
        try:
            data = self.pack(runs)
        except (TypeError, ValueError, OverflowError):
            return None
        skip = len(array_header(len(runs)))
        return data[skip:] if len(data) - skip <= room else None

    def encode_run(self, run: list) -> list[bytes]:
        """A run's bytes: one item, or several when it must be cut to fit a frame or some
        of its messages cannot be encoded (those are dropped)."""
        code = run[0]
        if code & TUPLE:
            run[2:] = map(list, run[2:])
        try:
            data = self.pack(run)
            if len(data) <= self.limit:
                return [data]
        except (TypeError, ValueError, OverflowError):
            pass
        head = self.pack(code) + self.pack(run[1])
        room = self.limit - len(head) - 5
        pieces: list[list[bytes]] = [[]]
        taken = 0
        for msg in run[2:]:
            try:
                payload = self.pack(msg)
            except (TypeError, ValueError, OverflowError) as exc:
                self.on_drop(f"a {KINDS[code & KIND_MASK].__name__} to {_to(run[1], code, self.peer)} that cannot "
                             f"go over the wire: {exc}")
                continue
            if len(payload) > room:
                self.on_drop(f"a {KINDS[code & KIND_MASK].__name__} of {len(payload)} bytes to "
                             f"{_to(run[1], code, self.peer)}: over node {self.peer}'s frame limit")
                continue
            if taken + len(payload) > room:
                pieces.append([])
                taken = 0
            pieces[-1].append(payload)
            taken += len(payload)
        return [array_header(len(piece) + 2) + head + b"".join(piece) for piece in pieces if piece]

    def take(self) -> list[bytes]:
        """Every frame waiting, in order; the outbox is then empty."""
        self.seal()
        frames, self.sealed, self.size = self.sealed, [], 0
        return frames


def _run(code: int, to: Any, item: list) -> Run:
    """The run of sends or casts to `to` that `item` carries (its messages from item[2:],
    arrays made tuples again when `code` says they were tuples)."""
    if not code & TUPLE:
        return _make(Run, (KINDS[code & KIND_MASK], to, item[2:]))
    msgs = []
    for msg in islice(item, 2, None):
        if type(msg) is not list:
            raise WireError(f"a {KINDS[code & KIND_MASK].__name__} whose message is not an array")
        msgs.append(tuple(msg))
    return _make(Run, (KINDS[code & KIND_MASK], to, msgs))


def _framed(items: list[bytes], count: int, size: int) -> bytes:
    """A frame of `count` deliveries whose encodings, `size` bytes, are `items`."""
    header = array_header(count)
    items.insert(0, (size + len(header)).to_bytes(4, "big") + header)
    return b"".join(items)


def _to(to: Any, code: int, node: str) -> str:
    return repr(Pid(node, to)) if not code & NAMED else repr(to)


class Inbox:
    """Deliveries from another node, decoded and checked (see the module docstring)."""

    __slots__ = ("node", "procs", "peer")

    def __init__(self, node: Any, peer: str) -> None:
        self.node = node
        self.procs = node._procs
        self.peer = peer  # the sending node's name

    def decode(self, payload: Any) -> list[Delivery | Run]:
        """A batch from the peer, checked whole (see the module docstring)."""
        try:
            items = decode_term(payload, self.node)
        except Exception as exc:  # noqa: BLE001 - whatever the bytes make msgpack or the codec raise
            raise WireError(f"a frame that does not decode ({type(exc).__name__}: {exc})") from None
        if type(items) is not list:
            raise WireError(f"a frame that is not a batch but a {type(items).__name__}")
        out: list[Delivery | Run] = []
        procs, peer_runs = self.procs, PID_RUNS
        for item in items:
            # the common item, inline: a run to a pid of this node by serial (else `delivery`)
            if type(item) is list and len(item) > 2 and type(item[0]) is int and item[0] in peer_runs \
                    and type(item[1]) is int:
                code = item[0]
                proc = procs.get(item[1])
                to = proc._pid if proc is not None else Pid(self.node.name, item[1])
                out.append(_run(code, to, item))
            else:
                out.append(self.delivery(item))
        return out

    def delivery(self, item: Any) -> Delivery | Run:
        if type(item) is not list or len(item) < 3 or type(item[0]) is not int or not 0 <= item[0] < 64:
            raise WireError(f"a delivery of the wrong shape: {item!r:.200}")
        code = item[0]
        kind = code & KIND_MASK
        if kind >= len(KINDS) or (len(item) != ARITY[kind] + 1 and kind > CAST):
            raise WireError(f"a delivery of an unknown kind or arity: {item!r:.200}")
        if code & NAMED:
            to = self.address(kind, item[1])
        else:  # a pid of this node, by serial: the common case, inline
            serial = item[1]
            if type(serial) is not int:
                raise WireError(f"a {KINDS[kind].__name__} to a pid serial that is a {type(serial).__name__}")
            proc = self.procs.get(serial)
            to = proc._pid if proc is not None else Pid(self.node.name, serial)
        if kind <= CAST:  # a run of sends or casts
            return _run(code, to, item)
        item[1] = to
        if code & TUPLE:
            if type(item[-1]) is not list:
                raise WireError(f"a {KINDS[kind].__name__} whose last field is not an array")
            item[-1] = tuple(item[-1])
        for i, cls, none_ok in IDS[kind]:
            item[i + 1] = self.ident(item[i + 1], cls, none_ok, kind)
        flag = FLAGS.get(kind)
        if flag is not None and type(item[flag + 1]) is not bool:
            raise WireError(f"a {KINDS[kind].__name__} whose flag is a {type(item[flag + 1]).__name__}, not a bool")
        del item[0]
        return _make(KINDS[kind], item)  # type: ignore[return-value]  # its fields, without its __new__

    def ident(self, value: Any, cls: type, none_ok: bool, kind: int) -> Any:
        """A pid or ref field as it travels: a serial of the sending node, or [node, serial]."""
        if type(value) is int:
            return cls(self.peer, value)
        if type(value) is list and len(value) == 2 and type(value[0]) is str and type(value[1]) is int:
            if cls is Pid and value[0] == self.node.name:
                proc = self.procs.get(value[1])
                if proc is not None:
                    return proc._pid
            return cls(value[0], value[1])
        if value is None and none_ok:
            return None
        raise WireError(f"a {KINDS[kind].__name__} with {value!r:.60} where a {cls.__name__} belongs")

    def address(self, kind: int, to: Any) -> Any:
        """`to` of a delivery given as a term: a name, None, or a pid of this node (where
        the kind allows)."""
        if to is None:
            if kind in NONE_OK:
                return None
        elif type(to) is Pid:
            if to.node_name != self.node.name:
                raise WireError(f"a {KINDS[kind].__name__} for {to!r}, a pid of another node")
            return to
        elif kind in NAME_OK:
            try:
                hash(to)
            except TypeError:
                raise WireError(f"a {KINDS[kind].__name__} to a name that is a {type(to).__name__}") from None
            return to
        raise WireError(f"a {KINDS[kind].__name__} addressed to {to!r:.100}, which it cannot be")


# -- the stream -------------------------------------------------------------------------------

class Channel(asyncio.Protocol):
    """One stream to another node; see the module docstring. Its owner has `frame(payload)`
    and `channel_lost(reason)`."""

    def __init__(self, owner: Any, limit: int, on_made: Callable[[Channel], None] | None = None) -> None:
        self.owner = owner
        self.reader = FrameReader(limit)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_read = 0.0
        self.on_made = on_made
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_read = self.loop.time()
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_read = self.loop.time()
        reader = self.reader
        for payload in reader.feed(data):
            if self.closed:
                return  # what came after a close is never delivered
            self.owner.frame(payload)
        if reader.error is not None:
            self.fail(str(reader.error))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.owner.channel_lost("connection_closed" if exc is None else f"connection_closed: {exc}")

    def write(self, data: Any) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def unsent(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def set_limit(self, limit: int) -> None:
        self.reader.limit = limit

    def fail(self, why: str) -> None:
        """The peer sent what cannot be taken: the owner hears, then the stream closes."""
        if not self.closed:
            self.closed = True
            self.owner.channel_lost(f"bad_frame: {why}")
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def peername(self) -> str:
        info = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(info) if info else "a local socket"
