"""The chat server end to end: `letitcrash serve` in a subprocess, real clients over loopback
(the asyncio client library in this process, the terminal client in subprocesses).
Timeouts are safety bounds for a loaded machine, never measurements."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from conftest import arun
from server_harness import ROOT, WAIT, ChatProcess, ServerProcess, acked, running_server, take

from apps.server import Closed, ConnectionClosed, Message, Presence, Receipt, Tweet
from apps.server import protocol as P

pytestmark = pytest.mark.xdist_group("server_e2e")  # one worker: its module fixture is made once


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("chat"), "--idle-timeout", "3") as srv:
        yield srv



def test_two_users_chat_with_receipts(server):
    async def main():
        alice, bob = await server.client("alice1"), await server.client("bob1")
        msg_id = await alice.send("bob1", b"hi bob", preview="hi")
        (msg,) = await take(bob, Message)
        assert (msg.sender, msg.body, msg.msg_id) == ("alice1", b"hi bob", msg_id)
        reply_id = await bob.send("alice1", b"hi alice")
        await bob.read([msg_id])
        got = await take(alice, (Message, Receipt), 3)
        (reply,) = [e for e in got if isinstance(e, Message)]  # its place among the receipts may vary
        assert (reply.msg_id, reply.sender, reply.body) == (reply_id, "bob1", b"hi alice")
        receipts = [(e.msg_id, e.status) for e in got if isinstance(e, Receipt)]
        assert receipts == [(msg_id, "delivered"), (msg_id, "read")]  # in order, each once
        await alice.close()
        await bob.close()
    arun(main())


def test_offline_delivery_after_reconnect(server):
    async def main():
        alice = await server.client("alice2")
        ids = [await alice.send("bob2", f"m{i}".encode()) for i in range(5)]  # bob2 never connected
        await alice.close()
        bob = await server.client("bob2")
        got = await take(bob, Message, 5)
        assert [m.msg_id for m in got] == ids and [m.body for m in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        await bob.read(ids[:2])
        await bob.close()
        bob = await server.client("bob2", last_seq=got[-1].seq)  # nothing comes twice
        alice = await server.client("alice2")  # the receipts waited for her
        receipts = await take(alice, Receipt, 7)
        assert sorted((r.msg_id, r.status) for r in receipts) == sorted(
            [(i, "delivered") for i in ids] + [(i, "read") for i in ids[:2]])
        await alice.send("bob2", b"after")
        (last,) = await take(bob, Message)
        assert (last.body, last.seq) == (b"after", 6)
        await alice.close()
        await bob.close()
    arun(main())


def test_presence_reaches_contacts(server):
    async def main():
        bob = await server.client("bob3")
        alice = await server.client("alice3")
        await alice.set_contacts(["bob3"])
        await bob.set_contacts(["alice3"])
        await alice.set_presence("away")
        (seen,) = await take(bob, Presence)
        assert (seen.user, seen.status) == ("alice3", "away")
        assert await bob.presence_of("alice3") == ("away", None)
        await alice.close()
        (gone,) = await take(bob, Presence)
        assert (gone.user, gone.status) == ("alice3", "offline") and gone.last_seen is not None
        await bob.close()
    arun(main())


def test_timeline_post_seen_by_follower(server):
    async def main():
        author, reader = await server.client("author4"), await server.client("reader4")
        await reader.follow("author4")
        tweet_id = await author.post("hello, timeline")
        (pushed,) = await take(reader, Tweet)
        assert pushed.tweet_id == tweet_id
        ids, cursor = await reader.timeline()
        assert ids == [tweet_id] and cursor is None
        assert await reader.tweets("author4", ids) == {tweet_id: "hello, timeline"}
        assert await author.post("hello, timeline", cid="same") == await author.post("x", cid="same")
        await author.close()
        await reader.close()
    arun(main())


def test_a_closed_connection_fails_its_requests_cleanly(server):
    async def main():
        alice = await server.client("alice5")
        await alice.close()
        with pytest.raises(ConnectionClosed):
            await alice.send("bob5", b"late")
    arun(main())


def test_a_second_login_of_a_device_replaces_the_first(server):
    async def main():
        old = await server.client("alice7")  # no device named: the primary
        new = await server.client("alice7")
        (closed,) = await take(old, Closed)
        assert closed.reason == "replaced" and (new.device, new.linked) == ("primary", False)
        bob = await server.client("bob7")
        await bob.send("alice7", b"to the new one")
        (msg,) = await take(new, Message)
        assert msg.body == b"to the new one"
        await new.close()
        await bob.close()
    arun(main())


# -- pipelining: requests sent without waiting for answers ------------------------------------------------

def test_pipelined_sends_are_each_answered_and_stored_in_order(server):
    conn = server.raw()
    assert conn.auth("piper")["t"] == "ok"
    n = 40
    sends = [{"t": "send", "id": 100 + i, "to": "pipesink", "cid": i, "body": i.to_bytes(2, "big")} for i in range(n)]
    sends.append({**sends[0], "id": 99})  # the first one again: a repeat, stored once
    conn.send_bytes(b"".join(map(P.encode, sends)))  # one write: none waits for an answer
    answers, frames = {}, 0
    while len(answers) < n + 1:
        answers |= acked(conn.recv())  # sends answered together share one acks frame
        frames += 1
    assert answers[99] == answers[100] and len(set(answers.values())) == n
    assert frames < n  # answered in batches, not a frame each

    async def sink():
        client = await server.client("pipesink")
        got = await take(client, Message, n)
        await client.close()
        return got
    got = arun(sink())
    assert [int.from_bytes(m.body, "big") for m in got] == list(range(n))  # in the order sent
    assert [m.msg_id for m in got] == [answers[100 + i] for i in range(n)]
    conn.close()


def test_other_requests_wait_for_those_before_them(server):
    """`contacts`, then `presence` and `ping` without waiting: presence starts only once
    contacts is answered (so the contact hears it), and ping waits behind presence."""
    async def main():
        bob = await server.client("bob8")
        await bob.set_contacts(["alice8"])  # presence goes between contacts both ways
        conn = server.raw()
        assert conn.auth("alice8")["t"] == "ok"
        conn.send_bytes(P.encode({"t": "contacts", "id": 2, "users": ["bob8"]})
                        + P.encode({"t": "presence", "id": 3, "status": "away"})
                        + P.encode({"t": "ping", "id": 4}))
        assert [conn.recv()["id"] for _ in range(3)] == [2, 3, 4]
        (seen,) = await take(bob, Presence)
        assert (seen.user, seen.status) == ("alice8", "away")
        conn.close()
        await bob.close()
    arun(main())


# -- the terminal client, as a person would use it ---------------------------------------------------

def test_two_people_chat_from_two_terminals(server):
    alice, bob = ChatProcess(server, "alice6"), ChatProcess(server, "bob6")
    try:
        alice.expect("* connected as alice6")
        bob.expect("* connected as bob6")
        alice.type("@bob6 hello from alice")
        assert alice.expect("[sent]").strip() == "[sent] bob6: hello from alice"
        assert bob.expect("alice6:").strip() == "alice6: hello from alice"
        alice.expect("[read] bob6: hello from alice")  # bob's terminal showed it: read
        bob.type("/follow alice6")
        bob.expect("* following alice6")
        alice.type("/post tweeting now")
        assert bob.expect("# alice6").strip() == "# alice6: tweeting now"
        alice.type("/nonsense")
        alice.expect("! unknown command /nonsense; /help lists them")
        assert alice.quit() == 0 and bob.quit() == 0
    finally:
        alice.kill()
        bob.kill()


def test_chat_refuses_a_wrong_secret(server, tmp_path):
    wrong = tmp_path / "secret"
    wrong.write_bytes(b"w" * 32)
    wrong.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "apps.cli", "chat", "--user", "alice", "--port",
                           str(server.port), "--secret-file", str(wrong)],
                          cwd=ROOT, capture_output=True, text=True, input="", timeout=WAIT * 2)
    assert done.returncode == 1
    assert "auth_failed" in done.stderr and "w" * 32 not in done.stderr + done.stdout


# -- stopping and crashing -----------------------------------------------------------------------------

def test_sigterm_stops_in_order_and_keeps_everything(tmp_path):
    srv = ServerProcess(tmp_path).start()

    async def before():
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        msg_id = await alice.send("carol", b"kept")
        srv.proc.send_signal(15)
        closed = await take(bob, Closed)
        return msg_id, closed[0].reason

    msg_id, reason = arun(before())
    assert reason == "server shutting down"
    assert srv.proc.wait(timeout=WAIT * 2) == 0
    log = srv.log()
    assert "stopping: connections, chat, timeline, then the store" in log and "server stopped" in log
    assert "Traceback" not in log

    srv.start()

    async def after():
        carol = await srv.client("carol")
        (msg,) = await take(carol, Message)
        assert (msg.msg_id, msg.body) == (msg_id, b"kept")
        await carol.close()

    arun(after())
    assert srv.terminate() == 0


def test_sigkill_during_a_burst_loses_no_acknowledged_message(tmp_path):
    """Four senders send in a burst; the server is SIGKILLed midway and restarted; each
    sender resends its unacknowledged message with the same cid and goes on. The receiver
    must get every message exactly once: the acknowledged ones above all."""
    srv = ServerProcess(tmp_path).start()
    per_sender, kill_after = 60, 80
    acked: dict[str, int] = {}
    killed = asyncio.Event()
    reconnects = []

    async def sender(name: str, restarted: asyncio.Event) -> None:
        client = await srv.client(name)
        i = 0
        while i < per_sender:
            cid = f"{name}.{i}"
            try:
                acked[cid] = await client.send("sink", cid.encode(), cid=cid)
                i += 1
                if len(acked) >= kill_after and not killed.is_set():
                    killed.set()
                    srv.kill()
                    srv.start()
                    restarted.set()
            except ConnectionClosed:
                await restarted.wait()
                client = await srv.client(name)  # then the same cid again
                reconnects.append(name)
        await client.close()

    async def main():
        restarted = asyncio.Event()
        await asyncio.gather(*(sender(f"s{k}", restarted) for k in range(4)))
        sink = await srv.client("sink")
        got = await take(sink, Message, 4 * per_sender)
        await sink.close()
        return got

    got = arun(main())
    assert killed.is_set() and reconnects  # the crash path ran
    bodies = [m.body.decode() for m in got]
    assert len(bodies) == len(set(bodies)) == 4 * per_sender  # exactly once
    assert {m.body.decode(): m.msg_id for m in got} == acked  # each with its acknowledged id
    assert srv.terminate() == 0
