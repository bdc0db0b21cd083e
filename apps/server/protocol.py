"""The wire protocol: length-prefixed msgpack frames, shared by the server and the client.

A frame is a 4-byte big-endian length, then that many bytes of msgpack: a map with `v`
(the protocol version, `VERSION`), `t` (the frame type) and the type's fields (see
`REQUESTS`, and `docs/protocol.md` for the whole protocol). A request carries an `id`
(an int the client chooses) that its answer (`ok` or `error`) repeats.

`FrameReader` splits a byte stream into frames and refuses one over the size limit
before buffering it; `decode` turns a frame into a checked request or raises
`ProtocolError` naming the bad field; `request_id` finds a frame's `id` without decoding
the rest (to answer a frame that is refused unread). Neither keeps anything but the bytes
of one unfinished frame.

An error message shows a client's values only in part (`SHOWN` characters of a value, at
most `NAMED` unknown field names), so an answer never grows with the frame it answers. A
field holds a scalar or a list of scalars: a value nesting lists or maps deeper is
refused naming the field, as is a frame nested deeper than msgpack's own limit (1,024).
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
SHOWN = 40
"""Characters of a client's value an error message shows at most."""
NAMED = 5
"""Unknown field names an error message names at most (then says how many more)."""

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
QUOTA_EXCEEDED = "quota_exceeded"      # the sender's own quota: retry once its messages are delivered
FORBIDDEN = "forbidden"                # not allowed for this user (another's presence, not a contact)
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


def _nests(value: Any) -> bool:
    """Whether `value` is deeper than any field may be (a list of scalars)."""
    return type(value) is dict or type(value) is list and any(type(v) in (list, dict) for v in value)


def show(value: Any) -> str:
    """A client's value for an error or log message: its type and at most `SHOWN`
    characters of its repr, however large or deeply nested it is."""
    if type(value) in (list, dict):
        return f"a {type(value).__name__} of {len(value)}"
    if type(value) in (str, bytes) and len(value) > SHOWN:
        return f"{type(value).__name__} {value[:SHOWN]!r}... ({len(value)} long)"
    return f"{type(value).__name__} {repr(value)[:SHOWN]}"


def _named(name: str | bytes) -> str:
    """A field name (a map key: str or bytes) for an error message, at most `SHOWN` long."""
    return repr(name[:SHOWN]) + ("..." if len(name) > SHOWN else "")


_KINDS: dict[Callable[[Any], bool], str] = {
    _str: "a str", _int: "an int in [0, 2**63)", _cid: "a str or an int >= 0",
    _ints: f"a list of at most {MAX_LIST} ints >= 0", _strs: f"a list of at most {MAX_LIST} strs",
    _opt_int: "an int >= 0 or nil", _bytes: "bytes (msgpack bin)",
}

REQUESTS: dict[str, dict[str, tuple[Callable[[Any], bool], bool]]] = {
    # type: {field: (check, required)}
    "auth": {"user": (_str, True), "device": (_str, False), "proof": (_bytes, True)},
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
    "devices": {},
    "unlink": {"device": (_str, True)},
    "bye": {},
}
"""What a client may send. Every request also needs `v` and `id`; other fields are refused."""
PRIMARY = "primary"
"""The device of a client whose `auth` names none."""


def decode(body: bytes) -> tuple[str, int, dict[str, Any]]:
    """`(type, id, fields)` of a request frame body, checked against `REQUESTS`."""
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except msgpack.StackError:
        raise ProtocolError(BAD_REQUEST, "the frame nests lists or maps over 1024 deep; a field holds "
                            "a scalar or a list of scalars") from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(MALFORMED, f"the frame is not valid msgpack: {type(exc).__name__}: "
                            f"{str(exc)[:2 * SHOWN]}") from None
    if type(frame) is not dict:
        raise ProtocolError(MALFORMED, f"a frame must be a msgpack map, got {type(frame).__name__}")
    try:
        return _checked(frame)
    except ProtocolError as exc:  # a nesting value is named first: it is what is wrong
        nested = next((name for name, value in frame.items() if _nests(value)), None)
        if nested is None:
            raise
        raise ProtocolError(BAD_REQUEST, f"field {_named(nested)} nests lists or maps; a field holds "
                            f"a scalar or a list of scalars", exc.req_id) from None


def _checked(frame: dict) -> tuple[str, int, dict[str, Any]]:
    req_id = frame.get("id")
    req_id = req_id if _int(req_id) else None
    version = frame.get("v")
    if type(version) is not int or version != VERSION:  # 1.0 and True equal 1, but are not it
        raise ProtocolError(BAD_VERSION, f"field 'v' must be {VERSION} (the protocol version), "
                            f"got {show(version)}", req_id)
    kind = frame.get("t")
    spec = REQUESTS.get(kind) if type(kind) is str else None
    if spec is None:
        raise ProtocolError(UNKNOWN_TYPE, f"field 't': unknown request type {show(kind)}; known: "
                            f"{', '.join(REQUESTS)}", req_id)
    if req_id is None:
        raise ProtocolError(BAD_REQUEST, f"{kind}: field 'id' must be an int in [0, 2**63), got "
                            f"{show(frame.get('id'))}")
    fields = {}
    for name, (check, required) in spec.items():
        if name not in frame:
            if required:
                raise ProtocolError(BAD_REQUEST, f"{kind}: missing field {name!r}", req_id)
            continue
        value = frame[name]
        if not check(value):
            raise ProtocolError(BAD_REQUEST, f"{kind}: field {name!r} must be {_KINDS[check]}, got "
                                f"{show(value)}", req_id)
        fields[name] = value
    if len(frame) != len(fields) + 3:  # more than v, t, id and the fields taken
        extra = [name for name in frame if name not in spec and name not in ("v", "t", "id")]
        named = ", ".join(map(_named, extra[:NAMED]))  # in the order sent
        more = f" and {len(extra) - NAMED} more" if len(extra) > NAMED else ""
        raise ProtocolError(BAD_REQUEST, f"{kind}: unknown field(s) {named}{more}", req_id)
    return kind, req_id, fields


def request_id(body: bytes) -> int | None:
    """The `id` of a request frame body, or None: looked for among the map's first few
    keys with every value skipped, not decoded (for answering a frame refused unread)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    try:
        for _ in range(min(unpacker.read_map_header(), 8)):  # a request has at most 7 keys
            if unpacker.unpack() == "id":
                req_id = unpacker.unpack()
                return req_id if _int(req_id) else None
            unpacker.skip()
    except Exception:  # noqa: BLE001 - not a map, or broken: no id to answer with
        pass
    return None
