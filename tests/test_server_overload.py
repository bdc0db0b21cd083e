"""Admission control of `letitcrash serve` (a real subprocess, real sockets): a request the
server has no room for is answered `overloaded` at once, nothing of it is stored, and the
client may send it again (same `cid`). The room is made small (`--max-inflight 1`) so that
pipelined sends overload it by count, whatever the machine's speed."""
from __future__ import annotations

import asyncio

import pytest
from conftest import arun
from server_harness import acked, error, running_server, take

from apps.server import Message
from apps.server import protocol as P

pytestmark = pytest.mark.xdist_group("server_overload")  # one worker: its module fixture is made once

N = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("overload"), "--max-inflight", "1") as srv:
        yield srv


def answer(conn) -> dict:
    """The next frame that answers a request (receipts for the sends come between)."""
    while (frame := conn.recv())["t"] == "items":
        pass
    return frame


def pipelined_sends(conn, to: str) -> tuple[dict[int, int], list[int]]:
    """N sends to `to` in one write: `({id: msg_id} of those stored, [ids shed])`."""
    conn.send_bytes(b"".join(P.encode({"t": "send", "id": 100 + i, "to": to, "cid": i, "body": bytes([i])})
                             for i in range(N)))
    stored: dict[int, int] = {}
    shed: list[int] = []
    while len(stored) + len(shed) < N:
        frame = answer(conn)
        if frame["t"] == "error":
            assert "overloaded; not executed, retry later" in error(frame, P.OVERLOADED, frame["id"])
            shed.append(frame["id"])
        else:
            stored |= acked(frame)
    return stored, shed


def test_shed_sends_store_nothing_and_are_stored_once_when_sent_again(server):
    conn = server.raw()
    assert conn.auth("eager")["t"] == "ok"
    stored, shed = pipelined_sends(conn, "calm")
    assert 100 in stored and shed  # the first one had the room; some behind it did not
    assert set(stored) | set(shed) == set(range(100, 100 + N))

    async def main():
        calm = await server.client("calm")
        other = await server.client("marker")
        got = await take(calm, Message, len(stored))
        assert [m.msg_id for m in got] == [stored[i] for i in sorted(stored)]
        # Stored after any shed send would have been: if one had been, it would come first.
        marker = await other.send("calm", b"marker")
        (next_one,) = await take(calm, Message)
        assert (next_one.msg_id, next_one.body) == (marker, b"marker")
        # Sent again, one at a time (so each finds room), with the same cids: stored now.
        again = {}
        for req_id in sorted(shed):
            i = req_id - 100
            conn.send(t="send", id=req_id, to="calm", cid=i, body=bytes([i]))
            again |= acked(answer(conn))
        got = await take(calm, Message, len(shed))
        assert [m.body for m in got] == [bytes([r - 100]) for r in sorted(shed)]
        assert [m.msg_id for m in got] == [again[r] for r in sorted(shed)]
        conn.send(t="send", id=7, to="calm", cid=sorted(shed)[0] - 100, body=b"repeat")
        assert acked(answer(conn)) == {7: again[sorted(shed)[0]]}  # a third time: stored once
        await calm.close()
        await other.close()
    arun(main())
    conn.close()


def test_confirms_and_pings_are_never_shed(server):
    conn = server.raw()
    assert conn.auth("pinger")["t"] == "ok"
    conn.send_bytes(P.encode({"t": "send", "id": 1, "to": "calm2", "cid": 1, "body": b"x"})
                    + b"".join(P.encode({"t": "ping", "id": 10 + i}) for i in range(5))
                    + P.encode({"t": "confirm", "id": 20, "upto": 0}))
    answers = {}
    while len(answers) < 6:  # a confirm is not answered unless it fails
        frame = answer(conn)
        assert frame["t"] in ("ok", "acks"), frame
        answers |= {frame["id"]: frame} if "id" in frame else acked(frame)
    assert set(answers) == {1, 10, 11, 12, 13, 14}
    conn.close()


def test_the_client_sends_a_shed_request_again_and_each_message_is_stored_once(server):
    async def main():
        sender = await server.client("burst")
        sender.shed_retries = 20  # the room is one request: most of a burst waits its turn
        receiver = await server.client("calm3")
        ids = await asyncio.gather(*(sender.send("calm3", bytes([i])) for i in range(N)))
        assert len(set(ids)) == N  # every send answered with its own message
        got = await take(receiver, Message, N)
        assert sorted(m.body for m in got) == [bytes([i]) for i in range(N)]  # each once
        assert sorted(m.msg_id for m in got) == sorted(ids)
        await sender.close()
        await receiver.close()
    arun(main())
