"""The handshake that opens a connection between two nodes: Erlang's, with HMAC-SHA256.

Both nodes hold the same secret (Erlang's cookie); it never crosses the wire. Each side
proves it holds it by answering the other's random challenge with an HMAC of it:

    A (connects)                                      B (accepts)
    hello [version, name, creation, address, max_frame] ->
                   <- challenge [version, name, creation, address, max_frame, status, nonce B]
                      (or refuse [reason], and B closes)
    reply [nonce A, HMAC(secret, "A", nonce B, A's name, B's name), peers] ->
                      B checks the digest (else refuse "not_allowed", close)
                   <- ack [HMAC(secret, "B", nonce A, B's name, A's name), peers]
    A checks the digest (else closes); both sides are up.

`version` must be the same on both sides. `creation` is the node's incarnation. `status`
is "ok"; "ok_simultaneous" when B was connecting to A at the same moment and gave way;
"alive" when B holds a connection to that very incarnation of A already: A, which makes
a connection only when it holds none, refuses ("alive") if it does hold one, and else
goes on, and B then drops the old connection as dead. Only once the digests match does
a new connection replace an old one (an incarnation of A that restarted, or "alive"):
a peer without the secret cannot take a connection down.
Erlang's tie-break decides which of two simultaneous connections stays: the one made by
the node with the greater name; the other is refused with "nok" (see `actors.dist`). An
attempt past its reply stays whatever the names (its acceptor, having sent the ack, holds
the connection as up): the other is refused.
`address` is where the node accepts connections (or None), `max_frame` the largest frame
it takes, `peers` the nodes it knows (name -> address), so a newcomer meets them all.

Every handshake frame is one msgpack array of plain values, checked field by field; a
frame of the wrong shape, a digest that does not match, or no answer within the setup
time ends the handshake, and the stream closes. Refusal reasons: "version", "name" (not
`name@host`, or the acceptor's own), "alive", "nok", "busy" (too many handshakes at
once), "not_allowed" (the digest), "gave_way" (a simultaneous attempt that gave way).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from .wire import Channel, frame

if TYPE_CHECKING:
    from .dist import Distribution

VERSION = 2  # 2: a call carries its monitor, a reply may end it
HANDSHAKE_LIMIT = 256 * 1024  # bytes in one handshake frame (a peers table of a large cluster fits)
MAX_SHARED_PEERS = 1024  # entries of a peers table one node shares with another
NONCE = 32
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}@[A-Za-z0-9_.:\-\[\]]{1,128}")


def valid_name(name: Any) -> bool:
    """True for a node name of the form `name@host`."""
    return type(name) is str and _NAME.fullmatch(name) is not None


def digest(secret: bytes, side: bytes, nonce: bytes, own: str, other: str) -> bytes:
    """What proves that `own` holds the secret, answering `other`'s challenge `nonce`."""
    return hmac.new(secret, side + nonce + own.encode() + b"\0" + other.encode(), hashlib.sha256).digest()


class HandshakeError(Exception):
    """The handshake ended without a connection; `reason` says why, `refused` whether the
    peer said so."""

    def __init__(self, reason: str, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


class Handshake:
    """One side of one handshake, on `channel`; `done(handshake, error)` hears the end
    (error None: the connection is up, and `peer` describes the other node)."""

    def __init__(self, dist: Distribution, initiator: bool, expected: str | None,
                 done: Callable[[Handshake, HandshakeError | None], None]) -> None:
        self.dist = dist
        self.initiator = initiator
        self.expected = expected  # the node an initiator means to reach, if it knows its name
        self.done = done
        self.channel: Channel | None = None
        self.step = "hello" if not initiator else "challenge"  # the frame awaited next
        self.nonce = os.urandom(NONCE)
        self.peer: dict[str, Any] = {}  # name, creation, address, max_frame, peers, status
        self.target: Any = None  # what the distribution waits on: a Peer, or a future
        self.address: str | None = None  # where an initiator dialled
        self.finished = False
        self.timer = asyncio.get_running_loop().call_later(dist.setup_time, self.fail,
                                                           HandshakeError("setup_timeout"))

    # -- the stream -----------------------------------------------------------------------------

    def start(self, channel: Channel) -> None:
        """The stream is open (the initiator speaks first)."""
        self.channel = channel
        if self.initiator:
            self.send(["hello", VERSION, *self.dist.announce()])

    def send(self, message: list) -> None:
        assert self.channel is not None
        self.channel.write(frame(msgpack.packb(message, use_bin_type=True)))

    def frame(self, payload: Any) -> None:
        try:
            message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            if type(message) is not list or not message or type(message[0]) is not str:
                raise HandshakeError("bad_handshake: not a handshake frame")
            if message[0] == "refuse":
                raise HandshakeError(f"refused: {message[1] if len(message) > 1 else '?'}", refused=True)
            if message[0] != self.step:
                raise HandshakeError(f"bad_handshake: {message[0]!r:.40} where {self.step!r} belongs")
            getattr(self, "on_" + self.step)(message[1:])
        except HandshakeError as exc:
            self.fail(exc)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self.fail(HandshakeError(f"bad_handshake: {type(exc).__name__}: {exc}"))

    def channel_lost(self, reason: str) -> None:
        self.fail(HandshakeError(reason))

    # -- the steps ------------------------------------------------------------------------------

    def on_hello(self, fields: list) -> None:
        version, name, creation, address, max_frame = _fields(fields, 5)
        self.check_version(version)
        self.take_identity(name, creation, address, max_frame)
        status = self.dist.admit(self)  # raises HandshakeError to refuse
        self.peer["status"] = status
        self.send(["challenge", VERSION, *self.dist.announce(), status, self.nonce])
        self.step = "reply"

    def on_challenge(self, fields: list) -> None:
        version, name, creation, address, max_frame, status, nonce = _fields(fields, 7)
        self.check_version(version)
        self.take_identity(name, creation, address, max_frame)
        if self.expected is not None and name != self.expected:
            raise HandshakeError(f"wrong_node: the node there is {name}, not {self.expected}")
        if status not in ("ok", "ok_simultaneous", "alive") or type(nonce) is not bytes or len(nonce) != NONCE:
            raise HandshakeError("bad_handshake: a malformed challenge")
        if status == "alive" and name in self.dist.up:
            raise self.refuse("alive")  # connected already: this attempt was a mistake
        self.peer["status"] = status
        own = self.dist.node.name
        self.send(["reply", self.nonce, digest(self.dist.secret, b"A", nonce, own, name), self.dist.shared_peers()])
        self.step = "ack"

    def on_reply(self, fields: list) -> None:
        nonce, proof, peers = _fields(fields, 3)
        name = self.peer["name"]
        own = self.dist.node.name
        if type(proof) is not bytes or not hmac.compare_digest(proof, digest(self.dist.secret, b"A", self.nonce,
                                                                             name, own)):
            self.send(["refuse", "not_allowed"])
            raise HandshakeError("not_allowed: the digest does not match (a different secret)")
        if type(nonce) is not bytes or len(nonce) != NONCE:
            raise HandshakeError("bad_handshake: a malformed reply")
        self.peer["peers"] = _peers(peers)
        self.send(["ack", digest(self.dist.secret, b"B", nonce, own, name), self.dist.shared_peers()])
        self.finish(None)

    def on_ack(self, fields: list) -> None:
        proof, peers = _fields(fields, 2)
        name = self.peer["name"]
        if type(proof) is not bytes or not hmac.compare_digest(proof, digest(self.dist.secret, b"B", self.nonce,
                                                                             name, self.dist.node.name)):
            raise HandshakeError("not_allowed: the peer's digest does not match (a different secret)")
        self.peer["peers"] = _peers(peers)
        self.finish(None)

    def check_version(self, version: Any) -> None:
        if version != VERSION:
            if not self.initiator:
                self.send(["refuse", "version"])
            raise HandshakeError(f"version: the peer speaks version {version!r:.20}, this node {VERSION}")

    def take_identity(self, name: Any, creation: Any, address: Any, max_frame: Any) -> None:
        if not valid_name(name) or name == self.dist.node.name:
            if not self.initiator:
                self.send(["refuse", "name"])
            raise HandshakeError(f"name: {name!r:.140} is not another node's name@host")
        if type(creation) is not int or not 0 <= creation < 2**20 or type(max_frame) is not int \
                or max_frame < 1024 or (address is not None and type(address) is not str):
            raise HandshakeError("bad_handshake: a malformed identity")
        self.peer.update(name=name, creation=creation, address=address, max_frame=max_frame)

    # -- the end --------------------------------------------------------------------------------

    def refuse(self, reason: str) -> HandshakeError:
        """Tell the peer no; returns the error to raise."""
        self.send(["refuse", reason])
        return HandshakeError(f"refused it: {reason}")

    def give_way(self) -> None:
        """End this node's own attempt: the peer's, made at the same moment, stays."""
        if not self.finished and self.channel is not None:
            self.send(["refuse", "gave_way"])
        self.fail(HandshakeError("gave_way"))

    def fail(self, error: HandshakeError) -> None:
        if not self.finished:
            self.finish(error)
            if self.channel is not None:
                self.channel.close()

    def finish(self, error: HandshakeError | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        self.done(self, error)


def _fields(fields: list, count: int) -> list:
    if len(fields) != count:
        raise HandshakeError(f"bad_handshake: {len(fields)} fields where {count} belong")
    return fields


def _peers(peers: Any) -> dict[str, str]:
    """A peers table from the wire, checked: names to addresses."""
    if type(peers) is not dict or len(peers) > MAX_SHARED_PEERS:
        raise HandshakeError("bad_handshake: a malformed peers table")
    if not all(valid_name(name) and type(address) is str and len(address) < 512 for name, address in peers.items()):
        raise HandshakeError("bad_handshake: a malformed peers table")
    return peers
