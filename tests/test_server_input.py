"""Bad clients against the real server (`letitcrash serve` in a subprocess): every kind of
bad input gets an error frame naming what is wrong and/or a closed connection, never a
server crash or a lost message; no connection can act as another user."""
from __future__ import annotations

import asyncio
import re
import socket
import time

import msgpack
import pytest
from conftest import arun
from server_harness import SECRET, ServerProcess, error

from apps.server import Message, Receipt
from apps.server import protocol as P
from apps.server.auth import prove, token_for

pytestmark = pytest.mark.xdist_group("server_input")  # one worker: its module fixture is made once

WAIT = 15.0
MAX_FRAME = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("input"), "--idle-timeout", "1.5", "--auth-timeout", "1.5",
                        "--rate", "500", "--burst", "100", "--max-frame", str(MAX_FRAME),
                        "--max-outgoing", str(256 << 10)).start()
    yield srv
    log = srv.log()
    assert srv.terminate() == 0, log  # still up after everything below, and stops cleanly
    assert "Traceback" not in log
    for user in ("alice", "bob", "mallory", "slow"):  # no secret, token or proof in the log
        token = token_for(SECRET, user)
        assert token.hex() not in log and repr(token)[2:-1] not in log
    assert SECRET.hex() not in log and repr(SECRET)[2:-1] not in log


# -- bad frames -------------------------------------------------------------------------------------

def test_an_oversized_frame_is_refused_and_the_connection_closed(server):
    conn = server.raw()
    conn.send_bytes((MAX_FRAME + 1).to_bytes(4, "big") + b"\x80" * 1000)
    assert f"the limit is {MAX_FRAME}" in error(conn.recv(), P.FRAME_TOO_LARGE)
    assert conn.closed()


def test_malformed_msgpack_is_refused_and_the_connection_goes_on(server):
    conn = server.raw()
    conn.send_body(b"\xc1\xc1")
    assert "not valid msgpack" in error(conn.recv(), P.MALFORMED)
    conn.send_body(msgpack.packb(["not", "a", "map"]))
    assert "must be a msgpack map" in error(conn.recv(), P.MALFORMED)
    assert conn.auth("alice")["t"] == "ok"  # the stream is still in step


def test_unknown_types_missing_and_wrong_fields_are_named(server):
    conn = server.raw()
    conn.send(t="ping", id=1)
    assert "authenticate first" in error(conn.recv(), P.UNAUTHENTICATED, 1)
    assert conn.auth("alice", req_id=2)["t"] == "ok"
    conn.send(t="teleport", id=3)
    assert "'teleport'" in error(conn.recv(), P.UNKNOWN_TYPE, 3)
    conn.send(t="send", id=4, to="bob", cid="c1")
    assert "missing field 'body'" in error(conn.recv(), P.BAD_REQUEST, 4)
    conn.send(t="send", id=5, to="bob", cid="c1", body="str, not bytes")
    assert "field 'body' must be bytes" in error(conn.recv(), P.BAD_REQUEST, 5)
    conn.send(t="send", id=6, to="", cid="c1", body=b"x")
    assert "send: recipient cannot be empty" in error(conn.recv(), P.BAD_REQUEST, 6)
    conn.send(t="send", id=7, to="bob", cid="c1", body=bytes(70_000))
    assert "payload is 70000 bytes; the limit is 65536" in error(conn.recv(), P.BAD_REQUEST, 7)
    conn.send(t="presence", id=8, status="invisible")
    assert "presence must be 'online' or 'away'" in error(conn.recv(), P.BAD_REQUEST, 8)
    conn.send(t="post", id=9, text="x" * 281)
    assert "280" in error(conn.recv(), P.BAD_REQUEST, 9)
    conn.send(t="ping", id=10)
    assert conn.recv() == {"v": P.VERSION, "t": "ok", "id": 10}  # none of it broke the connection
    conn.close()

    async def nothing_was_stored():
        alice = await server.client("alice")
        await alice.send("bob", b"the only one", cid="c1")  # c1 is new: nothing above stored it
        await alice.close()
        bob = await server.client("bob")
        first = await bob.next_event(WAIT)
        assert isinstance(first, Message) and first.body == b"the only one" and first.seq == 1
        await bob.close()
    arun(nothing_was_stored())


def test_another_protocol_version_is_refused(server):
    conn = server.raw()
    conn.send_body(msgpack.packb({"v": 2, "t": "ping", "id": 1}))
    assert "field 'v' must be 1" in error(conn.recv(), P.BAD_VERSION, 1)
    assert conn.closed()


# -- bad behaviour ------------------------------------------------------------------------------------

@pytest.mark.parametrize("authenticate, says", [(False, "not authenticated within 1.5 s"),
                                                (True, "nothing heard for")])
def test_a_silent_client_is_closed(server, authenticate, says):
    conn = server.raw()
    if authenticate:
        assert conn.auth("quiet")["t"] == "ok"
    assert says in error(conn.recv(), P.IDLE)
    assert conn.closed()


def test_a_too_fast_client_is_refused_then_closed(server):
    conn = server.raw()
    assert conn.auth("hasty")["t"] == "ok"
    conn.send_bytes(b"".join(P.encode({"t": "ping", "id": i}) for i in range(1, 1001)))
    codes = []
    try:
        while True:
            frame = conn.recv()
            codes.append(frame["t"] if frame["t"] == "ok" else frame["code"])
    except EOFError:
        pass
    assert codes[0] == "ok" and P.RATE_LIMITED in codes
    assert codes[-1] == P.TOO_FAST and codes.count(P.TOO_FAST) == 1
    assert len(codes) < 1000  # it stopped listening


def test_a_slow_reader_is_paced_and_loses_nothing(server):
    """A reader far slower than its sender, with a tiny socket buffer: the server holds
    its items while the socket is full and writes them as it drains, instead of cutting
    the reader off; every message comes once, in order."""
    slow = server.raw(rcvbuf=4096)
    assert slow.auth("slow")["t"] == "ok"
    count, size = 120, 60_000  # far more than the socket buffers and --max-outgoing hold

    def read_slowly():
        taken = []
        while len(taken) < count:
            frame = slow.recv()
            assert frame["t"] == "items", frame  # no error, no close
            for seq, _, _, _, body in frame["items"]:
                if seq == len(taken) + 1:  # in order; a repeat is skipped
                    taken.append(int.from_bytes(body[:4], "big"))
            slow.send(t="confirm", id=0, upto=len(taken))
            time.sleep(0.02)  # slow
        return taken

    async def flood():  # two senders: each stays within its quota of undelivered bytes
        reading = asyncio.create_task(asyncio.to_thread(read_slowly))
        senders = [await server.client("flooder"), await server.client("flooder2")]
        for i in range(count):
            await senders[i * 2 // count].send("slow", i.to_bytes(4, "big") * (size // 4), cid=i)
        for sender in senders:
            await sender.close()
        return await reading
    assert arun(flood()) == list(range(count))
    slow.send(t="ping", id=2)
    assert slow.recv() == {"v": P.VERSION, "t": "ok", "id": 2}  # still connected
    slow.close()
    assert "slow reader" not in server.log()


# -- impersonation ------------------------------------------------------------------------------------------

def test_a_token_proves_only_its_own_user(server):
    conn = server.raw()
    assert "does not match" in error(conn.auth("bob", token=token_for(SECRET, "mallory")), P.AUTH_FAILED, 1)
    assert conn.closed()
    conn = server.raw()
    error(conn.auth("bob", token=token_for(b"another server's secret", "bob")), P.AUTH_FAILED, 1)
    assert conn.closed()


def test_a_recorded_proof_does_not_work_on_another_connection(server):
    first = server.raw()
    proof = prove(token_for(SECRET, "alice"), first.hello["nonce"])
    first.send(t="auth", id=1, user="alice", device="d", proof=proof)
    assert first.recv()["t"] == "ok"
    second = server.raw()
    assert second.hello["nonce"] != first.hello["nonce"]
    second.send(t="auth", id=1, user="alice", device="d", proof=proof)
    error(second.recv(), P.AUTH_FAILED, 1)
    assert second.closed()


def test_an_authenticated_connection_cannot_act_as_another_user(server):
    conn = server.raw()
    assert conn.auth("mallory")["t"] == "ok"
    conn.send(t="send", id=2, to="bob", cid="x", body=b"hi", sender="alice")
    assert "unknown field(s) 'sender'" in error(conn.recv(), P.BAD_REQUEST, 2)
    # Even a valid proof for bob cannot switch the connection to bob.
    conn.send(t="auth", id=3, user="bob", device="d", proof=prove(token_for(SECRET, "bob"), conn.hello["nonce"]))
    assert "already authenticated as 'mallory'" in error(conn.recv(), P.BAD_REQUEST, 3)

    async def receipts_are_the_recipients_own():
        alice = await server.client("alice")
        msg_id = await alice.send("carol", b"for carol only")
        conn.send(t="read", id=4, ids=[msg_id])  # mallory marks carol's message read: ignored
        assert conn.recv()["t"] == "ok"
        conn.send(t="confirm", id=5, upto=10**9)  # confirms only mallory's own inbox (unanswered)
        conn.send(t="ping", id=6)
        assert conn.recv() == {"v": P.VERSION, "t": "ok", "id": 6}
        carol = await server.client("carol")
        assert (await carol.next_event(WAIT)).msg_id == msg_id
        await carol.read([msg_id])
        statuses = []
        while len(statuses) < 2:
            event = await alice.next_event(WAIT)
            if isinstance(event, Receipt) and event.msg_id == msg_id:
                statuses.append(event.status)
        assert statuses == ["delivered", "read"]  # had mallory's read counted, "read" came first
        await alice.close()
        await carol.close()
    arun(receipts_are_the_recipients_own())
    conn.close()


def test_connections_beyond_the_limit_are_refused(tmp_path):
    srv = ServerProcess(tmp_path, "--max-connections", "2").start()
    first, second = srv.raw(), srv.raw()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT)
    head = sock.recv(4, socket.MSG_WAITALL)  # connecting succeeds; the server then refuses
    frame = msgpack.unpackb(sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))
    assert frame["t"] == "error" and frame["code"] == P.OVERLOADED
    assert sock.recv(1) == b""  # closed
    first.close()
    assert srv.raw().auth("late")["t"] == "ok"  # a place came free
    second.close()
    assert srv.terminate() == 0


@pytest.mark.parametrize("field, value, message", [
    ("max_queued", 0, "Limits.max_queued must be a positive int, got 0"),
    ("burst", 1.5, "Limits.burst must be a positive int, got 1.5"),
    ("idle_timeout", -1, "Limits.idle_timeout must be a positive number, got -1"),
    ("rate", float("inf"), "Limits.rate must be a positive number, got inf"),
])
def test_bad_connection_limits_are_refused_naming_the_field(field, value, message):
    from apps.server.connection import Limits

    with pytest.raises(ValueError, match=re.escape(message)):
        Limits(**{field: value})
