"""`letitcrash serve` under abuse and at its edges (a real subprocess, real sockets on
loopback): others' traffic, deep nesting, clients that never log in, descriptors running
out, amplification, log injection and loose checks each get a bounded answer naming what
is wrong, and the server goes on serving everyone else."""
from __future__ import annotations

import asyncio
import os
import re
import resource
import socket
import time

import msgpack
import pytest
from conftest import arun
from server_harness import ServerProcess, error

from apps.chat import ChatConfig
from apps.chat.router import HashRing
from apps.server import Message, ServerError
from apps.server import protocol as P

pytestmark = pytest.mark.xdist_group("server_abuse")  # one worker: its module fixture is made once

WAIT = 15.0
BURST = 40
MAX_FRAME = 600_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("abuse"), "--rate", "5", "--burst", str(BURST),
                        "--auth-timeout", "1.5", "--max-frame", str(MAX_FRAME),
                        "--max-outgoing", str(256 << 10)).start()
    yield srv
    log = srv.log()
    assert srv.terminate() == 0, log  # still up after everything below, and stops cleanly
    assert "Traceback" not in log


def answers(conn):
    """Every frame until the server closes the connection, and their bytes on the wire."""
    frames, size = [], 0
    try:
        while True:
            frame = conn.recv()
            frames.append(frame)
            size += P.HEADER + len(msgpack.packb(frame))
    except (EOFError, ConnectionResetError):
        pass
    return frames, size


def log_lines(srv):
    return srv.log().splitlines()


def neighbour(prefix: str, of: str) -> str:
    """A user name starting with `prefix` that lives on the chat shard of user `of`."""
    home = HashRing(ChatConfig().shards).owner
    return next(f"{prefix}{i}" for i in range(10_000) if home(f"{prefix}{i}") == home(of))


# -- others' traffic ------------------------------------------------------------------------------

def test_eight_senders_do_not_cut_off_a_reader_who_confirms_everything(server):
    """Each sender stays within its own burst; the recipient confirms every items frame it
    gets, far more than its own rate allows: confirms of what it was sent are free."""
    per_sender = BURST - 10  # the auth frame and the sends fit each sender's burst

    async def main():
        events = []
        reader = await server.client("inbox5", on_event=events.append)

        async def sender(k):
            client = await server.client(f"sender5.{k}")
            for i in range(per_sender):
                await client.send("inbox5", f"{k}.{i}".encode(), cid=i)
            await client.close()
        await asyncio.gather(*(sender(k) for k in range(8)))
        deadline = time.monotonic() + WAIT
        while sum(isinstance(e, Message) for e in events) < 8 * per_sender and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await reader.request("ping")  # still connected, and within its own rate
        seen = list(events)
        await reader.close()
        return seen

    events = arun(main())
    assert [e for e in events if not isinstance(e, Message)] == []  # no rate_limited, no close
    bodies = [e.body.decode() for e in events]
    assert sorted(bodies) == sorted(f"{k}.{i}" for k in range(8) for i in range(per_sender))
    for k in range(8):  # each sender's messages in the order sent
        assert [b for b in bodies if b.startswith(f"{k}.")] == [f"{k}.{i}" for i in range(per_sender)]


# -- deep nesting -----------------------------------------------------------------------------------

DEEP = b"\x91" * 1000 + b"\x01"  # a list in a list ... 1000 deep: msgpack itself allows 1024


def frame_with(field: str, raw: bytes, **fields) -> bytes:
    """A request body whose `field` is the msgpack bytes `raw`, the others packed as usual."""
    fields.pop(field, None)
    assert len(fields) < 15
    return (bytes([0x80 | (len(fields) + 1)]) + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())
            + msgpack.packb(field) + raw)


def every_field():
    yield "v", {"t": "ping"}
    yield "t", {"v": P.VERSION}
    yield "id", {"v": P.VERSION, "t": "ping"}
    yield "unknown", {"v": P.VERSION, "t": "ping"}
    for kind, spec in P.REQUESTS.items():
        for name in spec:
            yield name, {"v": P.VERSION, "t": kind}


def test_deep_nesting_in_any_field_is_a_bad_request_and_the_connection_goes_on(server):
    conn = server.raw()
    for req_id, (field, frame) in enumerate(every_field(), 2):
        if field != "id":
            frame["id"] = req_id
        conn.send_body(frame_with(field, DEEP, **frame))
        message = error(conn.recv(), P.BAD_REQUEST, None if field == "id" else req_id)
        assert f"field {field!r}" in message and "nest" in message, (field, message)
    conn.send_body(b"\x91" * 2000 + b"\x01")  # deeper than msgpack's own limit
    assert "nest" in error(conn.recv(), P.BAD_REQUEST)
    assert conn.auth("nester")["t"] == "ok"
    conn.send(t="ping", id=99)
    assert conn.recv() == {"v": P.VERSION, "t": "ok", "id": 99}
    conn.close()


# -- clients that never log in; descriptors running out ------------------------------------------

def test_a_pinging_client_that_never_authenticates_is_cut_at_the_deadline(server):
    conn = server.raw()
    deadline = time.monotonic() + WAIT
    seen = []
    while time.monotonic() < deadline:
        conn.send(t="ping", id=len(seen) + 1)
        frame = conn.recv()
        seen.append(frame["code"])
        if frame["code"] != P.UNAUTHENTICATED:
            break
        time.sleep(0.3)
    assert seen[-1] == P.IDLE, seen
    assert conn.closed()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_are_capped_below_the_descriptor_limit(tmp_path):
    srv = ServerProcess(tmp_path, nofile=200).start()
    cap = int(re.search(r"at most (\d+) connections", srv.log()).group(1))
    assert 0 < cap < 200 - open_fds(srv.proc.pid)
    user = srv.raw()
    assert user.auth("steady")["t"] == "ok"
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) for _ in range(cap + 40)]
    refused = 0
    for sock in held:  # cap - 1 get their hello; the others are refused, and closed
        head = sock.recv(4, socket.MSG_WAITALL)
        frame = msgpack.unpackb(sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))
        if frame["t"] == "error":
            assert frame["code"] == P.OVERLOADED and sock.recv(1) == b""
            refused += 1
    assert refused == 41
    user.send(t="ping", id=2)
    assert user.recv()["t"] == "ok"  # the server kept serving
    for sock in held:
        sock.close()
    log = srv.log()
    assert len(log.splitlines()) < 10, log  # one line about the refusals, not one per refusal
    assert srv.terminate() == 0 and "Traceback" not in srv.log()


def test_accept_backs_off_with_one_line_when_descriptors_run_out(tmp_path):
    srv = ServerProcess(tmp_path).start()
    user = srv.raw()
    assert user.auth("steady")["t"] == "ok"
    pid = srv.proc.pid
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid) + 3, limit[1]))
    try:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) for _ in range(50)]
        deadline = time.monotonic() + WAIT
        while "cannot accept" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):  # meanwhile, the connected user is served
            user.send(t="ping", id=2)
            assert user.recv()["t"] == "ok"
            time.sleep(0.5)  # retries of accept happen meanwhile
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
    for sock in held:
        sock.close()
    late = srv.raw()  # accepting again
    assert late.auth("late")["t"] == "ok"
    log = srv.log()
    assert sum("cannot accept" in line for line in log.splitlines()) == 1, log
    assert len(log) < 4096 and "Traceback" not in log, log
    assert srv.terminate() == 0


# -- amplification ----------------------------------------------------------------------------------

def test_a_read_naming_one_id_a_thousand_times_logs_one_line(server):
    async def main():
        alice = await server.client("alice9")
        msg_id = await alice.send("bob9", b"for bob")
        await alice.close()
        before = len(log_lines(server))
        mallory = await server.client(reader)  # on bob's shard, which holds the message
        await mallory.read([msg_id] * P.MAX_LIST)
        await mallory.close()
        return msg_id, log_lines(server)[before:]

    reader = neighbour("mallory9.", "bob9")
    msg_id, lines = arun(main())
    about = [line for line in lines if str(msg_id) in line]
    assert len(about) == 1 and repr(reader) in about[0], lines


def test_a_flood_of_malformed_frames_gets_bounded_answers_then_a_close(server):
    conn = server.raw()
    conn.send_bytes((b"\x00\x00\x00\x01\xc1") * 12_000)  # 12,000 bad frames in one write
    frames, size = answers(conn)
    codes = [f["code"] for f in frames]
    assert codes[-1] == P.TOO_FAST and codes.count(P.TOO_FAST) == 1, codes[-3:]
    assert codes.count(P.MALFORMED) <= BURST  # what the rate allowed; the rest refused unread
    assert len(frames) == 100 and size < 10_000, (len(frames), size)  # 100 in a row: closed


def test_an_unknown_field_error_echoes_a_bounded_answer(server):
    conn = server.raw()
    names = {f"unknown_field_{i:06}": 0 for i in range(20_000)}
    body = msgpack.packb({"v": P.VERSION, "t": "ping", "id": 1, **names})
    assert len(body) > 400_000
    conn.send_body(body)
    frame = conn.recv()
    message = error(frame, P.BAD_REQUEST, 1)
    assert "unknown_field_000000" in message and "19995 more" in message
    assert len(msgpack.packb(frame)) < 1024
    conn.close()


# -- log injection ------------------------------------------------------------------------------------

FORGED = "2099-01-01 00:00:00,000 CRITICAL apps.server: FORGED"


def test_client_values_cannot_forge_a_log_line(server):
    """A user name with a newline wherever a client can put one: logged escaped, and
    refused as a name (it could never log in to take its messages)."""
    name = "eve\n" + FORGED
    conn = server.raw()  # a wrong proof: the name is logged
    error(conn.auth(name, token=b"x" * 32), P.AUTH_FAILED, 1)
    slow = server.raw(rcvbuf=4096)  # the right proof
    login = slow.auth(name)
    sent = []

    async def flood(k):  # 7.2 MB: more than the socket buffers and --max-outgoing hold
        sender = await server.client(f"sender10.{k}")
        for i in range(15):
            try:
                sent.append(await sender.send(name, bytes(60_000), cid=i))
            except ServerError as exc:
                sent.append(str(exc))
        await sender.close()

    async def main():
        await asyncio.gather(*(flood(k) for k in range(8)))
    arun(main())
    slow.close()
    lines = log_lines(server)
    assert not [line for line in lines if "FORGED" in line and not line.startswith("20") or
                line.startswith(FORGED)], lines
    assert any(repr(name) in line for line in lines)  # logged, escaped
    assert "control character" in error(login, P.BAD_REQUEST, 1)
    assert all("recipient 'eve\\n" in outcome and "control character" in outcome for outcome in sent), sent


# -- loose checks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1.0, True])
def test_a_version_that_only_equals_one_is_refused(server, version):
    conn = server.raw()
    conn.send_body(msgpack.packb({"v": version, "t": "ping", "id": 1}))
    assert "field 'v' must be 1" in error(conn.recv(), P.BAD_VERSION, 1)
    assert conn.closed()


@pytest.mark.parametrize("name, says", [("", "empty"), ("x" * 500_000, "500000 characters"),
                                        ("a\x00b", "control character"), ("a\nb", "control character")],
                         ids=["empty", "500k", "nul", "newline"])
def test_timeline_user_names_are_checked(server, name, says):
    conn = server.raw()
    assert conn.auth("follower12")["t"] == "ok"
    for req_id, (kind, fields) in enumerate([("follow", {}), ("unfollow", {}), ("tweets", {"ids": [1]})], 2):
        conn.send(t=kind, id=req_id, user=name, **fields)
        message = error(conn.recv(), P.BAD_REQUEST, req_id)
        assert "user name" in message and says in message and len(message) < 300, message
    conn.close()


def test_frame_too_large_reaches_a_client_whose_input_was_left_unread(server):
    """The answer, then the end of the stream (not a reset, which makes an asyncio client
    drop what it had received and not yet read)."""
    async def main():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        size = int.from_bytes(await reader.readexactly(P.HEADER), "big")
        assert msgpack.unpackb(await reader.readexactly(size))["t"] == "hello"
        writer.write((MAX_FRAME + 1).to_bytes(4, "big") + bytes(200_000))  # the server reads none of it
        await asyncio.sleep(0.5)  # the server has answered and closed by now; the answer must be readable
        size = int.from_bytes(await reader.readexactly(P.HEADER), "big")
        frame = msgpack.unpackb(await reader.readexactly(size))
        assert await reader.read() == b""  # then the end of the stream
        writer.close()
        return frame
    assert f"the limit is {MAX_FRAME}" in error(arun(main()), P.FRAME_TOO_LARGE)
