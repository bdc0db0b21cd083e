"""Chat across nodes under the simulator: sessions on one node, their shard on another,
and a device that must not be left with a session that believes it is attached."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from chat_world import Device
from ray_app import Phone  # a device that confirms what it takes (so receipts flow)

from actors import NoProc
from apps.chat import ChatConfig, ChatService
from apps.common import ServerNodes
from sim.core import Simulation

LATENCY = 0.01  # one way, every link: the test times the crash by it


@pytest.mark.parametrize("loss", ["node crash", "dropped message"])
def test_a_replaced_session_is_not_left_believing_it_is_attached(tmp_path, loss):
    """A stale session of a device (one whose connect the device gave up on) attaches
    late and replaces the device's current session; the shard's node dies before word of
    it crosses, or the network drops the next message from that node. The replaced
    session must hear of it (and close) or attach again: left believing it is attached,
    it takes nothing more once the stale session is gone."""
    sim = Simulation(1)
    sim.network.set_latency(LATENCY, LATENCY)
    config = ChatConfig(shards=1, nodes=("chat1", "chat2"), resend_after=0.2, call_timeout=0.5)
    nodes = ServerNodes(SimpleNamespace(sim=sim, data_dir=tmp_path), ["chat1", "chat2"],
                        lambda node, store, resolve: ChatService(node, store, config, resolve=resolve))
    nodes.add()  # shard 0 lives on chat1; sessions connect through chat2
    frames: list = []
    seen: dict = {}

    async def script(proc):
        gateway = nodes.serving("chat2")
        outlet = proc.node.spawn(Device, frames)
        seen["outlet"] = outlet
        current = seen["current"] = await gateway.connect(proc, "bob", "phone", outlet)
        await gateway.attached(proc, current)
        alice = await gateway.connect(proc, "alice", "phone", proc.node.spawn(Device, []))
        await gateway.attached(proc, alice)
        await proc.sleep(0.5)
        if loss == "dropped message":  # the first one chat1 sends chat2 from now on
            sim.network.script({"src": "chat1", "dst": "chat2", "at": proc.now(), "kind": "drop"})
        seen["closed_before"] = len(frames)
        stale = await gateway.connect(proc, "bob", "phone", outlet)  # its attach replaces `current`
        if loss == "node crash":
            # Its attach left as this answer did, and reaches chat1 as this answer
            # reaches us; the shard acts on it at once: chat1 dies with its word to
            # `current` half way across.
            sim.call_after(0.5 * LATENCY, sim.crash_node, "chat1")
            await proc.sleep(0.5)
            sim.restart_node("chat1")
        await proc.sleep(2.5)  # the sessions cut off by the crash attach again by now
        try:
            await gateway.disconnect(proc, stale)  # the device never used it
        except NoProc:
            pass  # it was the one told it was replaced
        await proc.sleep(0.5)
        seen["msg_id"] = await gateway.send(proc, alice, "bob", 1, b"hi")
        await proc.sleep(1.0)
        seen["done"] = True

    sim.add_node("phones", lambda node: node.spawn(script), targets=False)
    sim.run(6.0)
    try:
        assert seen.get("done"), seen
        phones, chat2 = sim.node("phones"), sim.node("chat2")
        took = [item[2] for item in phones.get_process(seen["outlet"]).took]
        closed = ("closed", "replaced") in frames[seen["closed_before"]:]
        if chat2.is_alive(seen["current"]):
            assert seen["msg_id"] in took, (
                f"the device's session is alive but took nothing since it was replaced (frames {frames})")
        else:
            assert closed, f"the device's session ended without telling it (frames {frames})"
    finally:
        sim.close()
        nodes.close()


def test_users_connected_on_their_home_node_exchange_messages_without_crossing_nodes(tmp_path):
    """`home_node(user)` is the node of the user's home shard (placed by the same key):
    two users connected on theirs, both homed on chat1, send and confirm (receipts flow)
    with nothing crossing the network; to a user homed on chat2 it crosses."""
    sim = Simulation(1)
    config = ChatConfig(shards=4, nodes=("chat1", "chat2"), resend_after=0.2)
    nodes = ServerNodes(SimpleNamespace(sim=sim, data_dir=tmp_path), ["chat1", "chat2"],
                        lambda node, store, resolve: ChatService(node, store, config, resolve=resolve))
    nodes.add()
    service = {name: nodes.serving(name) for name in ("chat1", "chat2")}
    users = [f"u{i}" for i in range(40)]
    assert all(service["chat1"].home_node(u) == service["chat2"].home_node(u) for u in users)
    homed = {name: [u for u in users if service["chat1"].home_node(u) == name] for name in service}
    (alice, bob), carol = homed["chat1"][:2], homed["chat2"][0]
    seen: dict = {}

    async def connect(proc, user):
        chat = service[service["chat1"].home_node(user)]
        phone = chat.node.spawn(Phone, chat)
        session = await chat.connect(proc, user, "phone", phone)
        proc.cast(phone, ("session", session))
        await chat.attached(proc, session)
        return session, chat.node.get_process(phone)

    async def script(proc):
        sessions = {user: await connect(proc, user) for user in (alice, bob, carol)}
        chat1 = service["chat1"]
        assert all(chat1.router.locate(u).node_name == chat1.home_node(u) for u in users)
        await proc.sleep(1.0)
        for to in (bob, carol):
            before = sim.network.sent
            msg_id = await chat1.send(proc, sessions[alice][0], to, to, b"hi")
            await proc.sleep(1.0)  # taken, confirmed, its receipt stored and acknowledged
            seen[to] = (sim.network.sent - before, msg_id in sessions[to][1].taken)

    sim.node("chat1").spawn(script)
    sim.run(5.0)
    try:
        assert seen[bob] == (0, True), seen
        crossed, took = seen[carol]
        assert took and crossed >= 2, seen  # the store and its answer at least
    finally:
        sim.close()
        nodes.close()
