"""The attach protocol: how `letitcrash observe` and `letitcrash remsh` talk to a running node.

Frames. Each message is one msgpack map (the kernel codec: pids travel as pids), framed
by a 4-byte big-endian length; a frame longer than `MAX_FRAME` ends the connection. The
protocol assumes an ordered, reliable byte stream (a Unix socket, TCP on loopback). Over
distribution the same ops travel as calls to each node's agent process instead
(`apps.observer.remote`): the distribution's framing and handshake replace these.

Handshake (challenge and HMAC-SHA256; the secret never crosses the wire; each side proves
it holds the secret, so a client never sends code to an impostor):

    node   -> client  {"t": "hello", "v": VERSION, "node": name, "nonce": 16 random bytes}
    client -> node    {"t": "auth", "proof": proof(secret, CLIENT, nonce, cnonce), "nonce": cnonce}
    node   -> client  {"t": "welcome", "proof": proof(secret, NODE, cnonce, nonce)}
                   or {"t": "refused", "error": text}, then the node closes

Then requests, any number in flight; replies carry the request's id:

    client -> node    {"t": "req", "id": int, "op": str, "args": map}
    node   -> client  {"t": "ok", "id": id, "value": any}            the answer (ends the request)
                      {"t": "err", "id": id, "error": text}          a refusal (ends the request)
                      {"t": "event", "id": id, "value": any}         streaming ops: one event
    client -> node    {"t": "cancel", "id": id}                      end a streaming op early

Ops (args; value), all of them `Agent` methods but the streams:

    overview    {history}                  node counts, totals, store, the last seconds
    tree        {max_children}             supervision trees
    processes   {sort, limit, query}       the top processes
    process     {pid}                      one process in detail, or None
    kill        {pid}                      True if it was alive
    crashes     {n}                        the newest crash reports
    metrics     {}                         Prometheus text
    eval        {code}                     stream: {"out": text} events; then {"value", "error"}
    trace       {target, max_events, seconds}   stream: trace events; then their count
    watch       {}                         stream: crash reports as they happen (until cancel)

`MAX_INFLIGHT` requests per connection; more are refused with "err".
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import struct
from typing import Any

from actors import packb, unpackb

VERSION = 1
MAX_FRAME = 4 << 20
MAX_INFLIGHT = 32
NONCE_BYTES = 16
CLIENT, NODE = b"letitcrash attach client\x00", b"letitcrash attach node\x00"
OPS = ("overview", "tree", "processes", "process", "kill", "crashes", "metrics", "eval", "trace", "watch")
STREAMS = ("eval", "trace", "watch")
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the protocol or failed the handshake; the message says how."""


def proof(secret: bytes, role: bytes, their_nonce: bytes, our_nonce: bytes) -> bytes:
    """HMAC-SHA256 over the role and both nonces: worthless on any other connection."""
    return hmac.new(secret, role + their_nonce + our_nonce, hashlib.sha256).digest()


def check(secret: bytes, role: bytes, their_nonce: bytes, our_nonce: bytes, given: Any) -> bool:
    return isinstance(given, bytes) and hmac.compare_digest(proof(secret, role, their_nonce, our_nonce), given)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def encode(msg: dict[str, Any]) -> bytes:
    data = packb(msg)
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a {msg.get('t')!r} message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return _LEN.pack(len(data)) + data


async def read(reader: asyncio.StreamReader, node: Any = None) -> dict[str, Any]:
    """The next message; EOFError at a clean end, ProtocolError for a bad frame."""
    try:
        head = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError("the peer closed the connection") from None
        raise ProtocolError("the connection ended inside a frame header") from None
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME:
        raise ProtocolError(f"a frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    try:
        msg = unpackb(await reader.readexactly(size), node=node)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the connection ended inside a frame") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's
        raise ProtocolError(f"a frame is not msgpack: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError(f"a message must be a map with a string 't', got {type(msg).__name__}")
    return msg
