"""One user on several devices through the real chat server: `letitcrash serve` in a
subprocess and a real client connection per device over loopback (the asyncio client,
and the terminal client in subprocesses). Timeouts are safety
bounds for a loaded machine, never measurements."""
from __future__ import annotations

import asyncio

import pytest
from server_harness import ChatProcess, ServerProcess, take

from apps.chat import ChatConfig
from apps.chat.router import HashRing
from apps.server import Closed, Message, Read, Receipt, Sent, ServerError

pytestmark = pytest.mark.xdist_group("server_devices")  # one worker: its module fixture is made once


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("devices")).start()
    yield srv
    assert srv.terminate() == 0, srv.log()
    assert "Traceback" not in srv.log()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def neighbours(tag):
    """Two user names on the same chat shard (of the server's default 16): whatever one
    does is stored in the order it happened, before what the other does next."""
    ring, names = HashRing(ChatConfig().shards), [f"alice{tag}", f"bob{tag}"]
    i = 0
    while ring.owner(names[0]) != ring.owner(names[1]):
        i += 1
        names[1] = f"bob{tag}.{i}"
    return names


def test_both_devices_get_the_message_and_the_senders_devices_a_copy(server):
    async def main():
        phone = await server.client("bob1", device="phone")
        laptop = await server.client("bob1", device="laptop")
        assert (phone.device, phone.linked, laptop.linked) == ("phone", True, True)
        alice = await server.client("alice1", device="phone")
        alice_web = await server.client("alice1", device="web")
        msg_id = await alice.send("bob1", b"hi bob")
        for device in (phone, laptop):
            (msg,) = await take(device, Message)
            assert (msg.msg_id, msg.sender, msg.body) == (msg_id, "alice1", b"hi bob")
        for device in (alice_web, alice):  # the sending device's own copy too: same sequence
            copy, delivered = await take(device, (Sent, Receipt), 2)
            assert (copy.msg_id, copy.to, copy.body) == (msg_id, "bob1", b"hi bob")
            assert (delivered.msg_id, delivered.status) == (msg_id, "delivered")
        for client in (phone, laptop, alice, alice_web):
            await client.close()
    run(main())


def test_one_read_is_one_receipt_and_the_readers_other_device_learns_it(server):
    async def main():
        alice_name, bob_name = neighbours("2")
        phone = await server.client(bob_name, device="phone")
        laptop = await server.client(bob_name, device="laptop")
        alice = await server.client(alice_name)
        msg_id = await alice.send(bob_name, b"read me")
        await take(phone, Message)
        await take(laptop, Message)
        await phone.read([msg_id])
        (read,) = await take(laptop, Read)
        assert (read.msg_id, read.sender) == (msg_id, alice_name)
        await laptop.read([msg_id])  # read there too
        marker = await phone.send(alice_name, b"after both reads")  # stored after them
        got = await take(alice, (Receipt, Message), 3)
        assert [(r.msg_id, r.status) for r in got[:2]] == [(msg_id, "delivered"), (msg_id, "read")]
        assert got[2].msg_id == marker  # and no second read receipt before it
        for client in (phone, laptop, alice):
            await client.close()
    run(main())


def test_a_device_that_was_offline_catches_up_when_it_reconnects(server):
    async def main():
        phone = await server.client("bob3", device="phone")
        laptop = await server.client("bob3", device="laptop")
        await laptop.close()
        alice = await server.client("alice3")
        ids = [await alice.send("bob3", b"m%d" % i) for i in range(5)]
        got = await take(phone, Message, 5)  # the phone takes and confirms them meanwhile
        assert [m.msg_id for m in got] == ids
        assert [d[:2] for d in await phone.devices()] == [("phone", True), ("laptop", False)]
        laptop = await server.client("bob3", device="laptop")
        assert not laptop.linked
        got = await take(laptop, Message, 5)
        assert [m.msg_id for m in got] == ids and [m.body for m in got] == [b"m%d" % i for i in range(5)]
        for client in (phone, laptop, alice):
            await client.close()
    run(main())


def test_past_the_device_limit_auth_is_refused_naming_the_linked_ones(server):
    async def main():
        devices = [await server.client("bob4", device=f"d{i}") for i in range(5)]
        with pytest.raises(ServerError) as refused:
            await server.client("bob4", device="d5")
        assert refused.value.code == "quota_exceeded"
        assert "'bob4' has 5 devices linked ('d0', 'd1', 'd2', 'd3', 'd4')" in str(refused.value)
        await devices[0].unlink("d4")
        (closed,) = await take(devices[4], Closed)
        assert closed.reason == "unlinked"
        with pytest.raises(ServerError, match="bad_request: unlink: 'bob4' has no device 'd4' linked"):
            await devices[0].unlink("d4")
        sixth = await server.client("bob4", device="d5")  # room again
        assert sixth.linked and [d[0] for d in await sixth.devices()] == ["d0", "d1", "d2", "d3", "d5"]
        for client in (*devices[:4], sixth):
            await client.close()
    run(main())


def test_the_same_device_again_replaces_only_its_own_connection(server):
    async def main():
        phone = await server.client("bob5", device="phone")
        laptop = await server.client("bob5", device="laptop")
        again = await server.client("bob5", device="phone")
        (closed,) = await take(phone, Closed)
        assert closed.reason == "replaced" and not again.linked
        alice = await server.client("alice5")
        msg_id = await alice.send("bob5", b"to both")
        for device in (again, laptop):
            (msg,) = await take(device, Message)
            assert msg.msg_id == msg_id
        for client in (again, laptop, alice):
            await client.close()
    run(main())


def test_one_person_on_two_terminals_sees_the_conversation_on_both(server):
    phone = ChatProcess(server, "bob6", "--device", "phone")
    laptop = ChatProcess(server, "bob6", "--device", "laptop")
    alice = ChatProcess(server, "alice6")
    terms = (phone, laptop, alice)
    try:
        phone.expect("* connected as bob6 on phone")
        laptop.expect("* connected as bob6 on laptop")
        alice.expect("* connected as alice6 on primary")
        alice.type("@bob6 hi, both of you")
        for term in (phone, laptop):
            assert term.expect("alice6:").strip() == "alice6: hi, both of you"
        phone.type("@alice6 answered from the phone")
        assert laptop.expect("[you]").strip() == "[you] alice6: answered from the phone"
        assert alice.expect("bob6: answered").strip() == "bob6: answered from the phone"
        laptop.expect("[read] alice6: answered from the phone")  # receipts reach every device
        laptop.type("/devices")
        assert laptop.expect("* laptop").strip() == "* laptop (online) - this one"
        assert all(term.quit() == 0 for term in terms)
    finally:
        for term in terms:
            term.kill()
