"""The wire protocol: length-prefixed msgpack frames, shared by the server and the client.

A frame is a 4-byte big-endian length, then that many bytes of msgpack: a map with `v`
(the protocol version, `VERSION`), `t` (the frame type) and the type's fields (see
`REQUESTS`, and `docs/protocol.md` for the whole protocol). A request carries an `id`
(an int the client chooses) that its answer (`ok` or `error`) repeats.

`FrameReader` splits a byte stream into frames and refuses one over the size limit
before buffering it; `decode` turns a frame into a checked request or raises
`ProtocolError` naming the bad field. Neither keeps anything but the bytes of one
unfinished frame.
"""
from __future__ import annotations

from typing import Any, Callable

import msgpack

VERSION = 1
HEADER = 4
MAX_FRAME = 1 << 20
"""Default largest frame body (bytes), both ways; a server may set a smaller one."""

MAX_LIST = 1_000
"""Longest list a request field may hold (read ids, contacts, tweet ids)."""

# Error codes (the `code` of an error frame). Those in FATAL are followed by a close.
BAD_REQUEST = "bad_request"            # a field is missing, of the wrong type, or out of range
MALFORMED = "malformed"                # the frame is not a msgpack map
UNKNOWN_TYPE = "unknown_type"
BAD_VERSION = "bad_version"
FRAME_TOO_LARGE = "frame_too_large"
UNAUTHENTICATED = "unauthenticated"    # a request before auth
AUTH_FAILED = "auth_failed"
RATE_LIMITED = "rate_limited"          # not executed: retry later (same cid)
TOO_FAST = "too_fast"                  # refused too often in a row: the connection closes
IDLE = "idle"                          # nothing heard for the idle timeout
UNAVAILABLE = "unavailable"            # a process the request needs is restarting: retry
OVERLOADED = "overloaded"
INTERNAL = "internal"
FATAL = frozenset({FRAME_TOO_LARGE, BAD_VERSION, AUTH_FAILED, TOO_FAST, IDLE})


class ProtocolError(Exception):
    """A frame the peer must be told about: `code` (above), the request `id` if known,
    and a message naming what is wrong."""

    def __init__(self, code: str, message: str, req_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.req_id = req_id

    @property
    def fatal(self) -> bool:
        return self.code in FATAL


def encode(frame: dict[str, Any]) -> bytes:
    """One frame on the wire (header and body); `v` is added."""
    body = msgpack.packb({"v": VERSION, **frame}, use_bin_type=True)
    return len(body).to_bytes(HEADER, "big") + body


class FrameReader:
    """Splits received bytes into frame bodies. `feed(data)` returns the complete bodies;
    it raises `ProtocolError(FRAME_TOO_LARGE)` as soon as a header announces more than
    `max_frame` bytes (nothing of that frame is buffered)."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        assert max_frame > 0, max_frame
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        start = 0
        while len(buf) - start >= HEADER:
            size = int.from_bytes(buf[start:start + HEADER], "big")
            if size > self.max_frame:
                raise ProtocolError(FRAME_TOO_LARGE, f"a frame of {size} bytes; the limit is {self.max_frame}")
            end = start + HEADER + size
            if len(buf) < end:
                break
            out.append(bytes(buf[start + HEADER:end]))
            start = end
        del buf[:start]
        return out


# -- field checks ------------------------------------------------------------------------------

def _str(value: Any) -> bool:
    return type(value) is str


def _int(value: Any) -> bool:
    return type(value) is int and 0 <= value < 1 << 63


def _cid(value: Any) -> bool:
    return _str(value) or _int(value)


def _ints(value: Any) -> bool:
    return type(value) is list and len(value) <= MAX_LIST and all(_int(v) for v in value)


def _strs(value: Any) -> bool:
    return type(value) is list and len(value) <= MAX_LIST and all(_str(v) for v in value)


def _opt_int(value: Any) -> bool:
    return value is None or _int(value)


def _bytes(value: Any) -> bool:
    return type(value) is bytes


_KINDS: dict[Callable[[Any], bool], str] = {
    _str: "a str", _int: "an int in [0, 2**63)", _cid: "a str or an int >= 0",
    _ints: f"a list of at most {MAX_LIST} ints >= 0", _strs: f"a list of at most {MAX_LIST} strs",
    _opt_int: "an int >= 0 or nil", _bytes: "bytes (msgpack bin)",
}

REQUESTS: dict[str, dict[str, tuple[Callable[[Any], bool], bool]]] = {
    # type: {field: (check, required)}
    "auth": {"user": (_str, True), "device": (_str, True), "proof": (_bytes, True)},
    "ping": {},
    "send": {"to": (_str, True), "cid": (_cid, True), "body": (_bytes, True), "preview": (_str, False)},
    "confirm": {"upto": (_int, True)},
    "read": {"ids": (_ints, True)},
    "presence": {"status": (_str, True)},
    "presence_of": {"user": (_str, True)},
    "contacts": {"users": (_strs, True)},
    "post": {"text": (_str, True), "cid": (_cid, False)},
    "follow": {"user": (_str, True)},
    "unfollow": {"user": (_str, True)},
    "timeline": {"cursor": (_opt_int, False)},
    "tweets": {"user": (_str, True), "ids": (_ints, True)},
    "bye": {},
}
"""What a client may send. Every request also needs `v` and `id`; other fields are refused."""


def decode(body: bytes) -> tuple[str, int, dict[str, Any]]:
    """`(type, id, fields)` of a request frame body, checked against `REQUESTS`."""
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(MALFORMED, f"the frame is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if type(frame) is not dict:
        raise ProtocolError(MALFORMED, f"a frame must be a msgpack map, got {type(frame).__name__}")
    req_id = frame.get("id")
    req_id = req_id if _int(req_id) else None
    if frame.get("v") != VERSION:
        raise ProtocolError(BAD_VERSION, f"field 'v' must be {VERSION} (the protocol version), "
                            f"got {frame.get('v')!r:.40}", req_id)
    kind = frame.get("t")
    spec = REQUESTS.get(kind) if type(kind) is str else None
    if spec is None:
        raise ProtocolError(UNKNOWN_TYPE, f"field 't': unknown request type {kind!r:.40}; known: "
                            f"{', '.join(REQUESTS)}", req_id)
    if req_id is None:
        raise ProtocolError(BAD_REQUEST, f"{kind}: field 'id' must be an int in [0, 2**63), got "
                            f"{frame.get('id')!r:.40}")
    fields = {}
    for name, (check, required) in spec.items():
        if name not in frame:
            if required:
                raise ProtocolError(BAD_REQUEST, f"{kind}: missing field {name!r}", req_id)
            continue
        value = frame[name]
        if not check(value):
            raise ProtocolError(BAD_REQUEST, f"{kind}: field {name!r} must be {_KINDS[check]}, got "
                                f"{type(value).__name__} {value!r:.40}", req_id)
        fields[name] = value
    if len(frame) != len(fields) + 3:  # more than v, t, id and the fields taken
        extra = sorted(str(name) for name in frame if name not in spec and name not in ("v", "t", "id"))
        raise ProtocolError(BAD_REQUEST, f"{kind}: unknown field(s) {', '.join(map(repr, extra))}", req_id)
    return kind, req_id, fields
