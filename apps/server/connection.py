"""The connection process: one per accepted TCP connection, like an Erlang process owning a
socket in `{active, N}` mode.

Its `Port` (the asyncio protocol of the socket) cuts the byte stream into frames and
sends the frames of each read to the process as one message (one turn takes them all);
after `max_queued` frames not yet answered it pauses reading, so a client cannot grow the
mailbox (TCP pushes back on it instead).
The process checks a frame (`apps.server.protocol`) and hands the request on without
waiting for its answer (OTP's `send_request`: the answer comes back as a message), so a
connection keeps reading frames and writing pushes while its requests are being stored.
`PIPELINED` requests may be in flight together: a client's sends share group commits
instead of waiting for each other's. Any other request is an ordering point: it starts
once every earlier request is answered, and later ones wait for its answer (a `contacts`
before a `presence` must reach the shard first). A frame counts against `max_queued`
until it is answered, so requests in flight and waiting are bounded too. The answers of
one turn leave in one socket write, and the `ok`s of several sends in one `acks` frame.

Admission control (the server's, not the client's fault): a request that would make work
(`SHEDDABLE`) is answered `overloaded` without being executed, so nothing of it is stored,
when its frame waited for its turn over `max_delay` seconds, or a backlog of requests of
the whole server (`Load.BACKLOG`, 8) has been handed on and unanswered for over
`max_delay` (the work admitted ahead of it drains that slowly; a few slow requests alone
shed nothing; the bound is raised for a slow store: see `Load`), or `max_inflight`
requests are in flight. A server offered more than it can do so answers the excess at
once, and a request it takes waits about `max_delay` for its turn and about as long
behind older work, not seconds of queue; the client may retry (a send with the same
`cid`). Shed requests do not count towards `max_refused`: a client is never cut off for
the server's load.

The first frame must authenticate (`apps.server.auth`): the process then starts the
chat session of the user's device (the `auth`'s `device`, else `protocol.PRIMARY`) with
itself as the session's `outlet` (so the session's frames become pushes on the socket),
waits for it to attach (a device past the user's limit is refused there), and subscribes
itself to the user's timeline pushes. Every later request acts as that user only: no
request has a field naming another actor.

Limits, each answered with an error frame (see `protocol.FATAL` for those that close):
frames over `max_frame` (the connection closes: its stream cannot be trusted further); a
token bucket of `rate` requests per second with bursts of `burst`, taken before a frame
is decoded (a refused frame is not decoded, nor executed: only its `id` is looked up to
answer it; `max_refused` frames in a row refused or not valid close the connection, so a
flood of bad frames gets a bounded number of answers), except that a
`confirm` gets its token back while it answers an items frame the connection wrote (one
per frame, so a reader that confirms what others' traffic brings it is never refused);
nothing heard for `idle_timeout` seconds once authenticated; no successful `auth` within
`auth_timeout` seconds of connecting (an absolute deadline: frames do not extend it).

The outgoing side is paced, not punished: chat items are written only while the
socket's unsent bytes are under half of `max_outgoing`; beyond it they are held (the
newest copy of each, by seq: bounded by the chat window) and written as the socket
drains. Only a reader that lets other frames (answers, presence, tweets) pile past
`max_outgoing` is cut off, at once: no frame could reach it. Nothing stored is lost by
any of these: undelivered messages stay pending and come again when the user
reconnects.

Closing, the connection sends its last frames, then the end of its stream, and reads and
drops what the client still sends until it closes too (or `CLOSE_GRACE` passes): a close
with unread input would reset the connection, and a reset makes the client drop what it
received and had not yet read, such as the answer saying why the connection closed.
Client values in log lines are escaped (`%r`): a user name cannot forge a line.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from actors import CallExit, CallTimeout, Down, Future, GenServer, NoProc, Pid
from apps.chat import BadRequest as ChatBadRequest
from apps.chat import ChatService, Forbidden, Overloaded, QuotaExceeded, RateLimited
from apps.common import check_limits
from apps.chat import Unavailable as ChatUnavailable
from apps.chat.protocol import check_name
from apps.timeline import BadRequest as TimelineBadRequest
from apps.timeline import TimelineService
from apps.timeline import Unavailable as TimelineUnavailable
from apps.timeline import check_name as check_user_name
from apps.timeline import user_id

from . import auth
from . import protocol as P

log = logging.getLogger("apps.server")

FRAME, LOST, TICK, ANSWERS = "$frame", "$lost", ("$tick",), ("$answers",)
DRAINED, AUTH_DEADLINE = ("$drained",), ("$auth_deadline",)
PIPELINED = frozenset({"send", "confirm", "ping"})
"""Requests that may be in flight together (see the module docstring): each acts alone,
and a sender's messages to one recipient still reach its shard, and are stored, in order
(connection -> session -> shard: each hop keeps the order of one sender's messages)."""
SHEDDABLE = frozenset(P.REQUESTS) - {"auth", "ping", "confirm", "bye"}
"""Requests shed under overload (see the module docstring): those that make work. A
confirm lightens the server (what it confirms is forgotten), so it is always taken."""
CLOSE_GRACE = 5.0  # seconds a closing connection has to take its last frames
ITEM_BYTES = 96  # a chat item's bytes on the wire besides its payload (seq, ids, sender name)
UNAVAILABLE = (ChatUnavailable, TimelineUnavailable, CallTimeout, CallExit, NoProc)
ERROR_CODES = ((ChatBadRequest, P.BAD_REQUEST), (TimelineBadRequest, P.BAD_REQUEST),
               (UNAVAILABLE, P.UNAVAILABLE), (QuotaExceeded, P.QUOTA_EXCEEDED), (Overloaded, P.OVERLOADED),
               (RateLimited, P.RATE_LIMITED), (Forbidden, P.FORBIDDEN))


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits (see the module docstring)."""

    max_frame: int = P.MAX_FRAME
    max_outgoing: int = 4 << 20
    rate: float = 2_000.0
    burst: int = 4_000
    max_refused: int = 100
    max_queued: int = 64
    idle_timeout: float = 60.0
    auth_timeout: float = 10.0
    max_delay: float = 0.05
    """Seconds a request may wait for its turn, and a backlog of admitted ones be in flight,
    before new requests are shed (see `Load`)."""
    max_inflight: int = 1_000
    """Requests of the whole server handed on and unanswered; beyond, new ones are shed."""

    def __post_init__(self) -> None:
        check_limits(self, ints=("max_frame", "max_outgoing", "burst", "max_refused", "max_queued",
                                 "max_inflight"))
        # The CLI shows these messages as they are.
        for name in ("rate", "idle_timeout", "auth_timeout", "max_delay"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 < value < float("inf"):
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")


class Load:
    """The server's requests in flight, in admission order: `admit(now)` when a connection
    hands one on, `answered(entry, now)` from the answer's callback (which comes even if
    the connection is gone: every request has a timeout), so no ending of a connection can
    leak one. `overloaded(waited, now)` is the admission test (see the module docstring).

    A request is shed when its frame waited for its turn over `max_delay`, or when
    `BACKLOG` requests have been in flight for over `bound()` (`late`): the admitted work
    drains that slowly. Fewer late ones are slow requests, not a queue (a big contacts
    list, the callers of a restarting shard), and must not shed everyone's. The bound is
    `max_delay`, raised to `SLOW_COMMIT` times the quickest answer of the last `WINDOW`
    seconds when even unqueued requests take that long (a slow fsync: every answer waits
    for one), and at most `MAX_STRETCH` times `max_delay`, so a server slowed by its own
    backlog cannot raise its bound with it."""

    __slots__ = ("max_delay", "max_inflight", "inflight", "late", "entries", "quickest", "previous",
                 "window_end")

    BACKLOG = 8
    SLOW_COMMIT = 2.0
    MAX_STRETCH = 10.0
    WINDOW = 1.0  # seconds

    def __init__(self, max_delay: float, max_inflight: int) -> None:
        self.max_delay = max_delay
        self.max_inflight = max_inflight
        self.inflight = 0
        self.late = 0  # requests in flight for over the bound (when last looked)
        # [admitted at (None once answered), counted late], in admission order, from the
        # oldest not yet answered nor counted late: each leaves once, at its first look (or, answered,
        # at the next admission).
        self.entries: deque[list] = deque()
        self.quickest = self.previous = math.inf  # answer times: this window, the last one
        self.window_end = -math.inf

    def admit(self, now: float) -> list:
        """A request handed on at `now`: its entry, for `answered`."""
        self.inflight += 1
        entries = self.entries
        while entries and entries[0][0] is None:  # answered: requests never shed (pings) look at none
            entries.popleft()
        entry = [now, False]
        entries.append(entry)
        return entry

    def answered(self, entry: list, now: float) -> None:
        assert entry[0] is not None and self.inflight > 0, "a request answered twice"
        took = now - entry[0]
        entry[0] = None
        self.inflight -= 1
        if entry[1]:
            self.late -= 1
        if now >= self.window_end:
            self.previous, self.quickest, self.window_end = self.quickest, took, now + self.WINDOW
        elif took < self.quickest:
            self.quickest = took

    def bound(self) -> float:
        """Seconds a request may be in flight before it counts late (see the class docstring)."""
        quickest = min(self.quickest, self.previous)
        slow = self.SLOW_COMMIT * quickest if quickest < math.inf else 0.0
        return min(max(self.max_delay, slow), self.MAX_STRETCH * self.max_delay)

    def overloaded(self, waited: float, now: float) -> bool:
        """Whether a request whose frame `waited` seconds before its turn is shed."""
        if waited > self.max_delay or self.inflight >= self.max_inflight:
            return True
        entries, admitted_by = self.entries, now - self.bound()
        while entries and (entries[0][0] is None or entries[0][0] < admitted_by):
            first = entries.popleft()
            if first[0] is not None:  # in flight past the bound
                first[1] = True
                self.late += 1
        assert 0 <= self.late <= self.inflight, (self.late, self.inflight)
        return self.late >= self.BACKLOG


@dataclass(frozen=True, slots=True)
class Context:
    """What every connection of a server shares."""

    chat: ChatService
    timeline: TimelineService
    secret: bytes
    limits: Limits
    load: Load = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "load", Load(self.limits.max_delay, self.limits.max_inflight))

    def __repr__(self) -> str:  # never show the secret
        return f"<server Context {self.limits}>"


class Port(asyncio.Protocol):
    """The socket side of a connection process (see the module docstring). It reads
    unless `full` (max_queued frames unanswered, until half are) or `broken` (the stream
    cannot be trusted); once `closing`, it reads only to drop what arrives. `blocked`:
    the transport's unsent bytes are over its high-water mark (held items wait for the
    DRAINED message). Reading goes on meanwhile: a slow reader's pings are still heard."""

    def __init__(self, conn: Connection, transport: asyncio.Transport) -> None:
        self.node = conn.node
        self.pid = conn.pid
        self.transport = transport
        self.reader = P.FrameReader(conn.ctx.limits.max_frame)
        self.max_queued = conn.ctx.limits.max_queued
        self.queued = 0
        self.reading = False  # the acceptor paused the transport; `update` resumes it
        self.full = self.blocked = self.broken = self.closing = False

    def update(self) -> None:
        reading = self.closing or not (self.full or self.broken)
        if reading != self.reading:
            self.reading = reading
            (self.transport.resume_reading if reading else self.transport.pause_reading)()

    def data_received(self, data: bytes) -> None:
        if self.broken or self.closing:
            return
        try:
            frames = self.reader.feed(data)
        except P.ProtocolError as exc:
            self.broken = True
            self.update()
            self.node.send(self.pid, (FRAME, [exc], self.node.now()))
            return
        if not frames:
            return
        self.node.send(self.pid, (FRAME, frames, self.node.now()))
        self.queued += len(frames)
        if self.queued >= self.max_queued and not self.full:
            self.full = True
            self.update()

    def taken(self) -> None:
        """The connection answered one frame (or refused it)."""
        self.queued -= 1
        assert self.queued >= 0, "more frames handled than received"
        if self.full and self.queued <= self.max_queued // 2:
            self.full = False
            self.update()

    def pause_writing(self) -> None:
        self.blocked = True

    def resume_writing(self) -> None:
        self.blocked = False
        self.node.send(self.pid, DRAINED)

    def linger(self) -> None:
        """The connection has ended its side: drop what arrives until the peer's end."""
        self.closing = True
        self.update()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.send(self.pid, (LOST,))


class Connection(GenServer):
    """See the module docstring. Spawned as `(ctx, transport)`."""

    def init(self, ctx: Context, transport: asyncio.Transport) -> None:
        self.trap_exit = True  # a supervisor's shutdown runs terminate: the client is told
        self.ctx = ctx
        self.transport = transport
        self.out: list[bytes] = []  # frames of this tick, not yet handed to the transport
        self.out_bytes = 0
        self.acks: list[int] = []  # [req_id, msg_id, ...] of sends answered this tick
        self.shut = False  # the end of the stream was sent: nothing more is written
        self.high = ctx.limits.max_outgoing // 2  # items wait while this much is unsent
        self.held: dict[int, list] = {}  # seq -> chat item waiting for the socket to drain
        self.held_acked = 0  # what the shard said was confirmed, with the items held
        self.max_held = 2 * ctx.chat.config.window
        self.credits = 0  # items frames written and not yet confirmed: free confirms
        self.port = Port(self, transport)
        transport.set_protocol(self.port)
        transport.set_write_buffer_limits(high=self.high)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.user: str | None = None
        self.tuser = 0
        self.session: Pid | None = None
        self.nonce = auth.new_nonce()
        limits = ctx.limits
        self.tokens = float(limits.burst)
        self.refill_at = self.heard = self.now()
        self.refused = 0
        self.active = False  # a request since the last tick: the chat session gets a heartbeat
        self.inflight = 0  # requests handed on, not answered yet
        # (kind, req_id, Future, Shape) of answers come since the last ANSWERS message:
        # filled by the Futures' callbacks, which send ANSWERS when it was empty.
        self.answers: list[tuple[str, int, Future, Shape]] = []
        self.barrier = False  # the one in flight is not PIPELINED: nothing else may start
        # Requests waiting for the above: at most max_queued (a list: an idle connection
        # holds 56 bytes for it, an empty deque 600).
        self.backlog: list[tuple[str, int, dict[str, Any]]] = []
        self.every = min(limits.idle_timeout, ctx.chat.config.heartbeat_timeout) / 3
        self.send_after(self.every, self.pid, TICK)
        self.send_after(limits.auth_timeout, self.pid, AUTH_DEADLINE)
        if transport.is_closing():  # lost while this process was starting
            self.send(self.pid, (LOST,))
            return
        self.write({"t": "hello", "nonce": self.nonce, "max_frame": limits.max_frame,
                    "idle_timeout": limits.idle_timeout})
        self.port.update()

    # -- the socket --------------------------------------------------------------------------

    def write(self, frame: dict[str, Any]) -> None:
        """Queue a frame; the frames of one scheduler tick leave in one socket write (a
        send on loopback costs tens of microseconds, more than encoding a frame)."""
        transport = self.transport
        if self.shut or transport.is_closing():
            return
        unsent = self._unsent()
        if unsent > self.ctx.limits.max_outgoing:
            # Checked before writing, so one frame larger than the limit (a window of big
            # messages) still goes; the buffer stays under the limit plus one frame.
            log.info("connection %s (%r): a slow reader, %d bytes unsent; disconnected", self.peer,
                     self.user, unsent)
            self.out.clear()
            transport.abort()
            self.stop("normal")
            return
        if self.acks and frame["t"] in ("closed", "error"):  # a close may follow: answers first
            self._put_acks()
        data = P.encode(frame)
        self._flush_soon()
        self.out.append(data)
        self.out_bytes += len(data)

    def _flush_soon(self) -> None:
        if not self.out and not self.acks:
            asyncio.get_running_loop().call_soon(self._flush_out)  # after this tick

    def _ack(self, req_id: int, msg_id: int) -> None:
        """A send's `ok`: those of one tick leave in one `acks` frame."""
        if self.shut or self.transport.is_closing():
            return
        self._flush_soon()
        self.acks += (req_id, msg_id)

    def _unsent(self) -> int:
        return self.transport.get_write_buffer_size() + self.out_bytes

    def _put_acks(self) -> None:
        acks, self.acks = self.acks, []
        if len(acks) == 2:
            data = P.encode({"t": "ok", "id": acks[0], "msg_id": acks[1]})
        else:
            data = P.encode({"t": "acks", "ids": acks[0::2], "msg_ids": acks[1::2]})
        self.out.append(data)
        self.out_bytes += len(data)

    def _flush_out(self) -> None:
        if self.acks:
            self._put_acks()
        out, self.out, self.out_bytes = self.out, [], 0
        if out and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            if self.held and not self.port.blocked:  # the socket took it: room for more
                self.node.send(self.pid, DRAINED)

    def _items(self, items: list[list], acked: int) -> None:
        """Chat items from the user's shard (`acked`: what it has had confirmed): written
        at once while the unsent bytes stay under `high`, else held until they drain."""
        if not self.held and self._unsent() + sum(ITEM_BYTES + len(item[4] or b"") for item in items) <= self.high:
            self._write_items(items, acked)
            return
        held = self.held
        self.held_acked = acked
        for item in items:
            held[item[0]] = item  # a resent item replaces its older copy
        while len(held) > self.max_held:  # only after a shard forgot confirmations: they come again
            del held[max(held)]
        self._write_held()

    def _write_held(self) -> None:
        """Write held items in seq order, as many as fit under `high` (at least one)."""
        held = self.held
        for seq in [seq for seq in held if seq <= self.held_acked]:
            del held[seq]  # confirmed meanwhile
        room = self.high - self._unsent()
        if not held or room <= 0:
            return  # DRAINED comes once the socket has taken what is unsent
        batch, size = [], 0
        for seq in sorted(held):
            batch.append(held.pop(seq))
            size += ITEM_BYTES + len(batch[-1][4] or b"")
            if size >= room:
                break
        self._write_items(batch, self.held_acked)

    def _write_items(self, items: list[list], acked: int) -> None:
        self.write({"t": "items", "items": items, "acked": acked})
        self.credits = min(self.credits + 1, self.max_held)  # one free confirm for it

    def error(self, code: str, message: str, req_id: int | None = None) -> None:
        self.write({"t": "error", "id": req_id, "code": code, "message": message})
        if code in P.FATAL:
            self.close()

    def close(self) -> None:
        self._shut()
        self.stop("normal")

    def _shut(self) -> None:
        """Send what is queued and then the end of the stream; drop what the client still
        sends until it closes too, or cut it off after CLOSE_GRACE (see the module
        docstring: a close with unread input resets the connection)."""
        if self.shut:
            return
        self._flush_out()
        self.shut = True
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self.port.linger()
        else:
            transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)

    def terminate(self, reason: Any) -> None:
        if reason != "normal":
            self.write({"t": "closed", "reason": "server shutting down" if reason == "shutdown" else "error"})
            self._shut()
        if self.session is not None:
            self.cast(self.session, ("close", "disconnected"))

    # -- messages ------------------------------------------------------------------------------

    def handle_info(self, msg: Any) -> Any:
        tag = msg[0] if type(msg) is tuple and msg else None
        if tag == FRAME:
            return self._frames(msg[1], msg[2])
        if msg == ANSWERS:
            self._answers_came()
        elif tag == "items":
            self._items(msg[1], msg[2])
        elif tag == "tweet":
            self.write({"t": "tweet", "tweet_id": msg[2]})
        elif tag == "presence":
            self.write({"t": "presence", "user": msg[1], "status": msg[2], "last_seen": msg[3]})
        elif tag == "closed":  # the chat session ended (replaced, heartbeat timeout)
            self.write({"t": "closed", "reason": msg[1]})
            self.session = None
            self.close()
        elif tag == LOST:
            self.stop("normal")
        elif msg == TICK:
            return self._tick()
        elif msg == DRAINED:
            self._write_held()
        elif msg == AUTH_DEADLINE:
            if self.user is None:
                self.error(P.IDLE, f"not authenticated within {self.ctx.limits.auth_timeout:g} s; closing")
        elif type(msg) is Down and msg.pid == self.session:
            self.session = None
            self.write({"t": "closed", "reason": "session ended"})
            self.close()
        else:
            return super().handle_info(msg)
        return None

    def _tick(self) -> None:
        limits = self.ctx.limits
        silent = self.now() - self.heard
        if self.user is not None and silent >= limits.idle_timeout:
            self.error(P.IDLE, f"nothing heard for {silent:.0f} s; closing")
            return
        self.send_after(self.every, self.pid, TICK)
        if self.active and self.session is not None:
            self.active = False
            # Not awaited: a session that is going sends its Down or "closed" frame.
            self.ctx.chat.heartbeat(self.node, self.session)

    def _frames(self, bodies: list, stamp: float) -> Any:
        """The frames of one read, received at `stamp`; those after an `auth` wait for it."""
        now = self.heard = self.now()
        for i, body in enumerate(bodies):
            pending = self._frame(body, now - stamp, now)
            if pending is not None:
                return self._after(pending, bodies[i + 1:], stamp) if i + 1 < len(bodies) else pending
        return None

    async def _after(self, pending: Any, rest: list, stamp: float) -> None:
        await pending
        more = self._frames(rest, stamp)
        if more is not None:
            await more

    def _frame(self, body: bytes | P.ProtocolError, waited: float, now: float) -> Any:
        """One frame, which `waited` seconds for this turn (at `now`)."""
        if isinstance(body, P.ProtocolError):  # the port found the stream unusable
            self.error(body.code, str(body))
            return None
        if not self._admit(now):  # before decoding: a refused frame costs no decoding
            self._refuse(P.RATE_LIMITED, f"over {self.ctx.limits.rate:g} requests/s; retry later",
                         P.request_id(body))
            return None
        self.active = True
        try:
            kind, req_id, fields = P.decode(body)
        except P.ProtocolError as exc:
            self._refuse(exc.code, str(exc), exc.req_id)
            return None
        self.refused = 0
        if kind == "confirm" and self.credits:  # it confirms what others' traffic brought
            self.credits -= 1
            self.tokens += 1.0
        if kind in SHEDDABLE and self.user is not None and self.ctx.load.overloaded(waited, now):
            self.port.taken()
            self.error(P.OVERLOADED, f"{kind}: the server is overloaded; not executed, retry later", req_id)
            return None
        return self._request(kind, req_id, fields)

    def _refuse(self, code: str, message: str, req_id: int | None) -> None:
        """Answer a frame refused (over the rate) or not valid; `max_refused` of them in
        a row close the connection: a working client sends neither so many times."""
        self.port.taken()
        self.refused += 1
        if self.refused >= self.ctx.limits.max_refused:
            self.error(P.TOO_FAST, f"{self.refused} frames in a row over the rate or not valid; closing", req_id)
        else:
            self.error(code, message, req_id)

    def _admit(self, now: float) -> bool:
        """Take a token from the bucket."""
        limits = self.ctx.limits
        self.tokens = min(float(limits.burst), self.tokens + (now - self.refill_at) * limits.rate)
        self.refill_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def _request(self, kind: str, req_id: int, fields: dict[str, Any]) -> Any:
        if kind == "auth":
            return self._authenticate(req_id, fields)
        if self.user is None:
            self.port.taken()
            self.error(P.UNAUTHENTICATED, f"{kind}: authenticate first (send auth)", req_id)
        elif self.backlog or self.barrier or (self.inflight and kind not in PIPELINED):
            self.backlog.append((kind, req_id, fields))  # bounded by max_queued, as frames
        else:
            self._begin(kind, req_id, fields)
        return None

    def _begin(self, kind: str, req_id: int, fields: dict[str, Any]) -> None:
        """Hand a request on; its answer comes back in `answers` (or now, if done)."""
        try:
            answer, shape = HANDLERS[kind](self, **fields)
        except Exception as exc:  # noqa: BLE001 - a request refused at once: its answer
            self._answer(kind, req_id, exc)
            return
        if answer.done():
            self._answer(kind, req_id, answer, shape)
            return
        assert not self.barrier and (kind in PIPELINED or not self.inflight), "out of order"
        self.inflight += 1
        self.barrier = kind not in PIPELINED
        node, pid, load, answers = self.node, self.pid, self.ctx.load, self.answers
        entry = load.admit(node.now())

        def answered(done: Future) -> None:
            load.answered(entry, node.now())
            if not answers:  # the first since the connection's last look: one message for all
                node.send(pid, ANSWERS)
            answers.append((kind, req_id, done, shape))

        answer.add_done_callback(answered)

    def _answers_came(self) -> None:
        """Write the answers that came since the last ANSWERS (the list is the callbacks'
        own: emptied, never replaced), then start what waited for them."""
        came = self.answers[:]
        self.answers.clear()
        self.inflight -= len(came)
        assert self.inflight >= 0 and (not self.barrier or self.inflight == 0), (self.inflight, self.barrier)
        self.barrier = False
        for kind, req_id, answer, shape in came:
            self._answer(kind, req_id, answer, shape)
        backlog = self.backlog
        while backlog and not self.barrier and (not self.inflight or backlog[0][0] in PIPELINED):
            self._begin(*backlog.pop(0))

    def _answer(self, kind: str, req_id: int, outcome: Future | Exception, shape: Shape | None = None) -> None:
        """Write a request's answer: `ok` with `shape(result)`'s fields, or its error."""
        self.port.taken()
        exc = outcome if isinstance(outcome, Exception) else outcome.exception()
        if exc is None:
            if kind == "send":
                self._ack(req_id, outcome.result())
            elif kind != "confirm":  # sent for every items frame: its ok would be pure cost
                self.write({"t": "ok", "id": req_id, **shape(outcome.result())})
            if kind == "bye":
                self.close()
            return
        self._failed(kind, req_id, exc)

    def _failed(self, kind: str, req_id: int, exc: Exception) -> None:
        code = next((code for types, code in ERROR_CODES if isinstance(exc, types)), None)
        if code is None:
            log.error("connection %s (%r): %s request failed", self.peer, self.user, kind, exc_info=exc)
            code = P.INTERNAL
        self.error(code, f"{kind}: {exc}", req_id)

    # -- requests ------------------------------------------------------------------------------
    # Authenticating suspends the connection (nothing else can be done before it); every
    # other `_do_<request>` returns (a Future of the result, how the result becomes the
    # `ok` frame's fields), calling the services from outside (`self.node` as the caller)
    # so that nothing waits.

    async def _authenticate(self, req_id: int, fields: dict[str, Any]) -> None:
        try:
            await self._auth(req_id, **fields)
        except Exception as exc:  # noqa: BLE001 - every failure of a request becomes its answer
            self._failed("auth", req_id, exc)
        finally:
            self.port.taken()

    async def _auth(self, req_id: int, user: str, proof: bytes, device: str = P.PRIMARY) -> None:
        if self.user is not None:
            self.error(P.BAD_REQUEST, f"auth: this connection is already authenticated as {self.user!r}", req_id)
            return
        ctx = self.ctx
        if not auth.check(ctx.secret, user, self.nonce, proof):
            log.warning("connection %s: authentication as %r failed", self.peer, user[:64])
            self.error(P.AUTH_FAILED, "auth: the proof does not match this user's token", req_id)
            return
        check_name("user", user, ctx.chat.config)
        check_name("device", device, ctx.chat.config)
        tuser = self._timeline_user(user)
        await ctx.timeline.subscribe(self, tuser, self.pid)  # idempotent: first
        self.session = await ctx.chat.connect(self, user, device, self.pid)
        self.monitor(self.session)
        attached = await ctx.chat.attached(self, self.session)  # QuotaExceeded past the device limit
        self.user, self.tuser = user, tuser
        self.write({"t": "ok", "id": req_id, "user": user, "device": device, "linked": attached["new"]})

    def _timeline_user(self, name: str) -> int:
        return user_id(name, self.ctx.chat.config.max_id_len)

    def _named(self, what: str, name: str) -> str:
        """A user name a request gives, checked as the timeline checks them (printable)."""
        return check_user_name(name, self.ctx.chat.config.max_id_len, what)

    def _do_ping(self) -> Answer:
        return DONE, _nothing

    def _do_send(self, to: str, cid: str | int, body: bytes, preview: str = "") -> Answer:
        # Its ok (the msg_id) goes out with the others of its tick, in one acks frame (`_ack`).
        return self.ctx.chat.send(self.node, self.session, self._named("recipient", to), cid, body, preview), _nothing

    def _do_confirm(self, upto: int) -> Answer:
        return self.ctx.chat.confirm(self.node, self.session, upto), _nothing

    def _do_read(self, ids: list[int]) -> Answer:
        return self.ctx.chat.read(self.node, self.session, ids), _nothing

    def _do_presence(self, status: str) -> Answer:
        return self.ctx.chat.set_presence(self.node, self.session, status), _nothing

    def _do_presence_of(self, user: str) -> Answer:
        return self.ctx.chat.presence(self.node, self._named("user", user), viewer=self.user), _presence

    def _do_contacts(self, users: list[str]) -> Answer:
        return self.ctx.chat.set_contacts(self.node, self.user, [self._named("contact", user) for user in users]), _nothing

    def _do_post(self, text: str, cid: str | int | None = None) -> Answer:
        return self.ctx.timeline.post(self.node, self.tuser, text, cid), _tweet_id

    def _do_follow(self, user: str) -> Answer:
        return self.ctx.timeline.follow(self.node, self.tuser, self._timeline_user(user)), _since

    def _do_unfollow(self, user: str) -> Answer:
        return self.ctx.timeline.unfollow(self.node, self.tuser, self._timeline_user(user)), _until

    def _do_timeline(self, cursor: int | None = None) -> Answer:
        return self.ctx.timeline.read_page(self.node, self.tuser, cursor), _page

    def _do_tweets(self, user: str, ids: list[int]) -> Answer:
        return self.ctx.timeline.tweets(self.node, self._timeline_user(user), ids), _tweets

    def _do_devices(self) -> Answer:
        return self.ctx.chat.devices(self.node, self.user), _devices

    def _do_unlink(self, device: str) -> Answer:
        return self.ctx.chat.unlink(self.node, self.user, device), _nothing

    def _do_bye(self) -> Answer:
        return DONE, _nothing


Shape = Callable[[Any], dict]
Answer = tuple[Future, Shape]
DONE = Future()
DONE.set_result(None)


def _nothing(_: Any) -> dict:
    return {}


def _presence(found: tuple[str, float | None]) -> dict:
    return {"status": found[0], "last_seen": found[1]}


def _devices(devices: list[list]) -> dict:
    return {"devices": devices}


def _tweet_id(tweet_id: int) -> dict:
    return {"tweet_id": tweet_id}


def _since(since: int | None) -> dict:
    return {"since": since}


def _until(until: int | None) -> dict:
    return {"until": until}


def _page(page: Any) -> dict:
    return {"ids": page.ids, "cursor": page.cursor}


def _tweets(texts: dict[int, str]) -> dict:
    return {"tweets": sorted(texts.items())}


HANDLERS: dict[str, Callable[..., Answer]] = {
    kind: getattr(Connection, "_do_" + kind) for kind in P.REQUESTS if kind != "auth"}
"""Every request after `auth`: its `Connection._do_<request>` (one for each, or no import)."""
