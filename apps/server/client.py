"""The asyncio client library of the chat server (see `docs/protocol.md`).

    client = await Client.connect("127.0.0.1", 7400, "alice", token)   # device "primary"
    msg_id = await client.send("bob", b"hi", preview="hi")     # returns once stored
    event = await client.next_event(timeout=5)                  # Message, Receipt, Presence...
    await client.close()

A user may be connected from several devices at once (`device="laptop"`): each gets
every message, and a `Sent` copy of what its user sends from any of them; `Read` says a
message to the user was read on one of them (only the first read sends the sender a
receipt). `client.linked` says the server linked the device at this connect (new, or
its earlier state dropped), so it starts from where the user's first device is.

Events come from one reader task per client, in the order the server sent them, into a
queue of at most `max_events` (then the reader waits: the server sees a slow reader), or
to `on_event(event)` if given (a load generator's counter, say). The client takes chat
items in sequence order, so each message is one `Message` event per client, even when the
server sends some again; pass `last_seq` (the `confirmed` of the previous client of this
user) when reconnecting, so nothing already taken comes twice.

A confirmed item is delivered for good: the server forgets it. By default the client
confirms items as it takes them (into the queue, or to `on_event`). With
`auto_confirm=False` the caller confirms each item once it has handled it,
`client.confirm(event.seq)`: what was still queued when the connection ended is pushed
again to the next connection (the terminal client confirms what it has shown). A
confirmation is written `CONFIRM_DELAY` (5 ms) after the first item it confirms, for
every item taken by then (one frame for a burst of items frames), or before the next
request if that comes first (a `read` never overtakes the confirmation of its messages).

A request raises `ServerError` (its `code` is one of `apps.server.protocol`'s codes) or
`ConnectionClosed`. A `send` that failed with `ConnectionClosed` or `unavailable` may or
may not be stored: send it again with the same `cid` after reconnecting; it is stored once.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from supervision import Backoff

from . import protocol as P
from .auth import prove

STATUS = {2: "delivered", 3: "read"}
MAX_INCOMING = 64 << 20
"""Largest frame taken from the server: a window of 256 items of 64 KiB fits."""
CONFIRM_DELAY = 0.005
"""Seconds a confirmation waits before it is written, so that one confirms the items
frames of that span together (a confirm costs the server a frame and a store write):
what it delays is the sender's `delivered` receipt, not a message."""
SHED_BACKOFF = Backoff(min_delay=0.02, max_delay=0.08, jitter=0.0)
"""Waits before sending a shed request again: bounded, however many retries a client allows."""


class ServerError(Exception):
    """An error frame: `code` (see `apps.server.protocol`) and the server's message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ConnectionClosed(ConnectionError):
    """The connection ended before the answer came."""


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    msg_id: int
    sender: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    seq: int
    msg_id: int
    status: str  # "delivered" or "read"


@dataclass(frozen=True, slots=True)
class Sent:
    """A message this user sent, from this device or another of its devices."""

    seq: int
    msg_id: int
    to: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Read:
    """A message to this user was read on one of its devices."""

    seq: int
    msg_id: int
    sender: str


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    status: str
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class Tweet:
    tweet_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection ended: the server's reason, or why the client saw it end."""

    reason: str


Event = Message | Receipt | Sent | Read | Presence | Tweet | Closed | ServerError


class Client:
    """One authenticated connection; make it with `Client.connect`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str,
                 last_seq: int | None, max_events: int,
                 on_event: Callable[[Event], None] | None, auto_confirm: bool = True) -> None:
        self.user = user
        self.device: str | None = None
        """The device the server took this connection for."""
        self.linked = False
        """The server linked the device at this connect (see the module docstring)."""
        self.last_seq = last_seq
        """The seq of the last chat item taken (None before the first items frame)."""
        self.confirmed = last_seq
        """The seq of the last chat item confirmed (or to be confirmed) to the server."""
        self.auto_confirm = auto_confirm
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._cids = itertools.count(1)
        self._cid_prefix = secrets.token_hex(6)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue(max_events)
        self._on_event = on_event
        self._tasks: list[asyncio.Task] = []
        self._confirming: asyncio.TimerHandle | None = None  # the confirmation to write
        self.closed: str | None = None
        """Why the connection ended, once it has."""

    @classmethod
    async def connect(cls, host: str, port: int, user: str, token: bytes, device: str | None = None, *,
                      last_seq: int | None = None, max_events: int = 10_000,
                      on_event: Callable[[Event], None] | None = None, timeout: float = 10.0,
                      auto_confirm: bool = True) -> Client:
        """Connect and authenticate as `user` on `device` (None: the server's "primary").
        Raises `ServerError` with code `auth_failed`, or `quota_exceeded` when the user
        has as many other devices linked as the server allows."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            hello = await asyncio.wait_for(_read_frame(reader, MAX_INCOMING), timeout)
            if hello.get("t") != "hello":
                raise ServerError(hello.get("code", P.MALFORMED), hello.get("message", f"not a hello: {hello!r:.80}"))
            client = cls(reader, writer, user, last_seq, max_events, on_event, auto_confirm)
        except BaseException:
            writer.close()
            raise
        client._tasks.append(asyncio.create_task(client._read_loop()))
        named = {} if device is None else {"device": device}
        try:
            answer = await asyncio.wait_for(client.request("auth", user=user, proof=prove(token, hello["nonce"]),
                                                           **named), timeout)
            client.device, client.linked = answer.get("device"), answer.get("linked", False)
        except BaseException:
            await client.close()
            raise
        client._tasks.append(asyncio.create_task(client._ping_loop(hello["idle_timeout"] / 3)))
        return client

    # -- requests --------------------------------------------------------------------------------

    shed_retries = 3
    """Times a request answered `overloaded` (nothing of it was done) is sent again, after
    `SHED_BACKOFF` (20, 40, then 80 ms each time), so a moment's overload goes unnoticed;
    past them, `ServerError`."""

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer (the `ok` frame's fields); one the
        server shed as `overloaded` is sent again, up to `shed_retries` times."""
        attempt = 0
        while True:
            try:
                return await self._request_once(kind, fields)
            except ServerError as exc:
                if exc.code != P.OVERLOADED or attempt >= self.shed_retries:
                    raise
            await asyncio.sleep(SHED_BACKOFF.delay(attempt, random.random))
            attempt += 1

    async def _request_once(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.closed is not None:
            raise ConnectionClosed(f"the connection is closed ({self.closed})")
        if self._confirming is not None:  # what was taken is confirmed before what follows
            self._confirm_now()
        req_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._pending[req_id] = answer
        try:
            self._writer.write(P.encode({"t": kind, "id": req_id, **fields}))
            await self._writer.drain()
            return await answer
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"{kind}: the connection ended: {exc}") from None
        finally:
            self._pending.pop(req_id, None)

    def next_cid(self) -> str:
        """A fresh client message id (unique to this client object)."""
        return f"{self._cid_prefix}.{next(self._cids)}"

    async def send(self, to: str, body: bytes, preview: str = "", cid: str | int | None = None) -> int:
        """Send `body` to `to`; the message id, once the server has stored it."""
        return (await self.request("send", to=to, cid=self.next_cid() if cid is None else cid,
                                   body=body, preview=preview))["msg_id"]

    def confirm(self, upto: int) -> None:
        """The chat items up to seq `upto` were handled (with `auto_confirm=False`): the
        server counts them delivered and never pushes them again. Needs no answer."""
        assert self.last_seq is not None and upto <= self.last_seq, (upto, self.last_seq)
        if self.confirmed is None or upto > self.confirmed:
            self.confirmed = upto
            self._write_confirm()

    async def read(self, msg_ids: list[int]) -> None:
        """Mark messages read: their senders get `read` receipts."""
        await self.request("read", ids=list(msg_ids))

    async def set_presence(self, status: str) -> None:
        await self.request("presence", status=status)

    async def presence_of(self, user: str) -> tuple[str, float | None]:
        answer = await self.request("presence_of", user=user)
        return answer["status"], answer["last_seen"]

    async def set_contacts(self, users: list[str]) -> None:
        """The users who may see this user's presence (those who list it too get its changes)."""
        await self.request("contacts", users=list(users))

    async def devices(self) -> list[tuple[str, bool, float | None]]:
        """This user's linked devices: (device, online, last seen)."""
        return [tuple(d) for d in (await self.request("devices"))["devices"]]

    async def unlink(self, device: str) -> None:
        """Unlink one of this user's devices (its connection closes, "unlinked")."""
        await self.request("unlink", device=device)

    async def post(self, text: str, cid: str | int | None = None) -> int:
        return (await self.request("post", text=text, cid=self.next_cid() if cid is None else cid))["tweet_id"]

    async def follow(self, user: str) -> None:
        await self.request("follow", user=user)

    async def unfollow(self, user: str) -> None:
        await self.request("unfollow", user=user)

    async def timeline(self, cursor: int | None = None) -> tuple[list[int], int | None]:
        """A page of this user's home timeline: tweet ids newest first, and the next cursor."""
        answer = await self.request("timeline", cursor=cursor)
        return answer["ids"], answer["cursor"]

    async def tweets(self, user: str, ids: list[int]) -> dict[int, str]:
        """The texts of those of `ids` that `user` posted (and still keeps)."""
        return dict((await self.request("tweets", user=user, ids=list(ids)))["tweets"])

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event (raises `TimeoutError` after `timeout` seconds)."""
        return await asyncio.wait_for(self._events.get(), timeout)

    async def close(self) -> None:
        """Say goodbye (if still connected) and close."""
        if self.closed is None:
            try:
                await asyncio.wait_for(self.request("bye"), 5.0)
            except (ServerError, ConnectionClosed, TimeoutError):
                pass
        self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the reader ----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection lost"
        try:
            while True:
                frame = await _read_frame(self._reader, MAX_INCOMING)
                kind = frame.get("t")
                if kind == "ok" or (kind == "error" and frame.get("id") in self._pending):
                    answer = self._pending.get(frame.get("id"))
                    if answer is not None and not answer.done():
                        if kind == "ok":
                            answer.set_result(frame)
                        else:
                            answer.set_exception(ServerError(frame["code"], frame["message"]))
                elif kind == "acks":  # the oks of several sends
                    for req_id, msg_id in zip(frame["ids"], frame["msg_ids"]):
                        answer = self._pending.get(req_id)
                        if answer is not None and not answer.done():
                            answer.set_result({"msg_id": msg_id})
                elif kind == "items":
                    await self._take(frame["items"], frame["acked"])
                elif kind == "closed":
                    reason = frame["reason"]
                    break
                else:
                    await self._emit(_event(frame))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ServerError as exc:  # an unreadable frame from the server
            reason = str(exc)
        finally:
            self.closed = reason
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ConnectionClosed(f"the connection ended: {reason}"))
            self._writer.close()
        await self._emit(Closed(reason))

    async def _take(self, items: list[list], acked: int) -> None:
        """Take the items that follow the last one taken, in order; confirm them now
        (`auto_confirm`) or leave that to `confirm`."""
        if self.last_seq is None or acked > self.last_seq:
            self.last_seq = acked
        if self.confirmed is None or acked > self.confirmed:
            self.confirmed = acked
        again = False
        for seq, kind, msg_id, who, body in items:
            if seq <= self.last_seq:
                again = True  # our confirmation was lost: confirm again
                continue
            if seq != self.last_seq + 1:
                break  # a gap: the missing item comes again first
            self.last_seq = seq
            if self.auto_confirm:
                self.confirmed = seq
                again = True
            await self._emit(_item(seq, kind, msg_id, who, body))
        if again and self.confirmed > acked:
            self._write_confirm()

    def _write_confirm(self) -> None:
        """Confirm `confirmed` in CONFIRM_DELAY seconds (with what is taken meanwhile)."""
        if self._confirming is None and self.closed is None:
            self._confirming = asyncio.get_running_loop().call_later(CONFIRM_DELAY, self._confirm_now)

    def _confirm_now(self) -> None:
        # Unanswered (unless wrong); a lost confirmation heals itself: the items come again.
        if self._confirming is not None:
            self._confirming.cancel()
            self._confirming = None
        if self.closed is None:
            self._writer.write(P.encode({"t": "confirm", "id": 0, "upto": self.confirmed}))

    async def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        else:
            await self._events.put(event)

    async def _ping_loop(self, every: float) -> None:
        while self.closed is None:
            await asyncio.sleep(every)
            try:
                await self.request("ping")
            except (ServerError, ConnectionClosed):
                return


def _item(seq: int, kind: str, msg_id: int, who: Any, body: bytes | None) -> Event:
    if kind == "m":
        return Message(seq, msg_id, who, body)
    if kind == "r":
        return Receipt(seq, msg_id, STATUS[who])
    if kind == "s":
        return Sent(seq, msg_id, who, body)
    if kind == "v":
        return Read(seq, msg_id, who)
    raise ServerError(P.UNKNOWN_TYPE, f"the server sent a chat item of unknown kind {kind!r:.40}")


def _event(frame: dict[str, Any]) -> Event:
    kind = frame.get("t")
    if kind == "presence":
        return Presence(frame["user"], frame["status"], frame["last_seen"])
    if kind == "tweet":
        return Tweet(frame["tweet_id"])
    if kind == "error":
        return ServerError(frame["code"], frame["message"])
    raise ServerError(P.UNKNOWN_TYPE, f"the server sent a frame of unknown type {kind!r:.40}")


async def _read_frame(reader: asyncio.StreamReader, max_frame: int) -> dict[str, Any]:
    size = int.from_bytes(await reader.readexactly(P.HEADER), "big")
    if size > max_frame:
        raise ServerError(P.FRAME_TOO_LARGE, f"the server sent a frame of {size} bytes")
    try:
        frame = msgpack.unpackb(await reader.readexactly(size), raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ServerError(P.MALFORMED, f"the server sent bad msgpack: {exc}") from None
    if type(frame) is not dict:
        raise ServerError(P.MALFORMED, "the server sent a frame that is not a map")
    return frame
