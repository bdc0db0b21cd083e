"""The chat server's wire protocol and authentication, without a server: frames, checks
that name the bad field, tokens and proofs, the secret file, the limits."""
from __future__ import annotations

import os

import msgpack
import pytest

from apps.server import auth
from apps.server import protocol as P
from apps.server.connection import Limits
from apps.timeline import user_id


def body(**frame):
    return msgpack.packb({"v": P.VERSION, **frame})


def refused(data: bytes) -> P.ProtocolError:
    with pytest.raises(P.ProtocolError) as info:
        P.decode(data)
    return info.value


# -- frames ---------------------------------------------------------------------------------------

def test_encode_then_read_back_in_any_chunking():
    frames = [{"t": "ok", "id": i, "blob": bytes(i * 7)} for i in range(40)]
    wire = b"".join(P.encode(f) for f in frames)
    for step in (1, 3, 64, len(wire)):
        reader = P.FrameReader()
        got = []
        for i in range(0, len(wire), step):
            got += reader.feed(wire[i:i + step])
        assert [msgpack.unpackb(b) for b in got] == [{"v": P.VERSION, **f} for f in frames]


def test_an_oversized_frame_is_refused_from_its_header_alone():
    reader = P.FrameReader(max_frame=100)
    assert reader.feed(P.encode({"t": "ping", "id": 1})) != []
    with pytest.raises(P.ProtocolError) as info:
        reader.feed((101).to_bytes(4, "big") + b"x")  # the body never needs to arrive
    assert info.value.code == P.FRAME_TOO_LARGE and info.value.fatal
    assert "101 bytes" in str(info.value) and "100" in str(info.value)


def test_a_good_request_decodes_to_its_fields():
    assert P.decode(body(t="send", id=7, to="bob", cid="c1", body=b"hi")) == (
        "send", 7, {"to": "bob", "cid": "c1", "body": b"hi"})
    assert P.decode(body(t="timeline", id=1, cursor=None)) == ("timeline", 1, {"cursor": None})


@pytest.mark.parametrize("data, code, names", [
    (b"\xc1", P.MALFORMED, "not valid msgpack"),                       # a reserved byte
    (b"\x92\x01", P.MALFORMED, "not valid msgpack"),                   # truncated
    (msgpack.packb([1, 2]), P.MALFORMED, "must be a msgpack map"),
    (msgpack.packb({"t": "ping", "id": 1}), P.BAD_VERSION, "'v'"),
    (body(t="teleport", id=1), P.UNKNOWN_TYPE, "'teleport'"),
    (body(t=5, id=1), P.UNKNOWN_TYPE, "field 't'"),
    (body(t="ping"), P.BAD_REQUEST, "'id'"),
    (body(t="ping", id=-1), P.BAD_REQUEST, "'id'"),
    (body(t="send", id=1, to="bob", cid="c"), P.BAD_REQUEST, "missing field 'body'"),
    (body(t="send", id=1, to="bob", cid="c", body="text, not bytes"), P.BAD_REQUEST, "field 'body'"),
    (body(t="send", id=1, to=["bob"], cid="c", body=b""), P.BAD_REQUEST, "field 'to'"),
    (body(t="read", id=1, ids=[1, "2"]), P.BAD_REQUEST, "field 'ids'"),
    (body(t="read", id=1, ids=list(range(P.MAX_LIST + 1))), P.BAD_REQUEST, "field 'ids'"),
    (body(t="send", id=1, to="bob", cid="c", body=b"", sender="mallory"), P.BAD_REQUEST, "'sender'"),
])
def test_every_bad_frame_is_refused_naming_what_is_wrong(data, code, names):
    exc = refused(data)
    assert exc.code == code
    assert names in str(exc)


def test_an_error_keeps_the_request_id_when_there_is_one():
    assert refused(body(t="confirm", id=42)).req_id == 42
    assert refused(body(t="nope", id=9)).req_id == 9
    assert refused(b"\xc1").req_id is None


def test_only_stream_breaking_errors_are_fatal():
    assert P.FATAL == {P.FRAME_TOO_LARGE, P.BAD_VERSION, P.AUTH_FAILED, P.TOO_FAST, P.IDLE}


# -- authentication ----------------------------------------------------------------------------------

def test_a_proof_answers_one_nonce_for_one_user():
    secret = os.urandom(32)
    nonce = auth.new_nonce()
    proof = auth.prove(auth.token_for(secret, "alice"), nonce)
    assert auth.check(secret, "alice", nonce, proof)
    assert not auth.check(secret, "bob", nonce, proof)                 # another user
    assert not auth.check(secret, "alice", auth.new_nonce(), proof)    # a replay on another connection
    assert not auth.check(os.urandom(32), "alice", nonce, proof)       # another server
    assert not auth.check(secret, "alice", nonce, proof[:-1])
    assert auth.token_for(secret, "alice") != auth.token_for(secret, "alicE")


def test_a_secret_file_is_made_private_and_checked(tmp_path):
    path = str(tmp_path / "secret")
    made = auth.load_secret(path, create=True)
    assert len(made) == auth.SECRET_BYTES and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert auth.load_secret(path) == made  # not made again
    with pytest.raises(auth.SecretError, match="cannot read the secret file .*missing"):
        auth.load_secret(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_bytes(b"12345")
    short.chmod(0o600)
    with pytest.raises(auth.SecretError, match="holds 5 bytes; at least 16"):
        auth.load_secret(str(short))
    os.chmod(path, 0o644)
    with pytest.raises(auth.SecretError, match="readable by others"):
        auth.load_secret(path)


def test_no_repr_or_error_shows_the_secret(tmp_path):
    from apps.server.connection import Context

    secret = b"S3CRET-" * 5
    ctx = Context(None, None, secret, Limits())
    assert "S3CRET" not in repr(ctx)


# -- limits and ids ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("max_frame", 0), ("rate", -1.0), ("burst", 1.5),
                                          ("idle_timeout", float("inf")), ("max_outgoing", "4M")])
def test_limits_refuse_nonsense_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"Limits.{field} must be"):
        Limits(**{field: value})


def test_timeline_ids_of_names_are_stable_and_in_range():
    assert user_id("alice") == user_id("alice") != user_id("bob")
    assert all(0 <= user_id(name) < 1 << 63 for name in ("a", "alice smith", "x" * 64))
