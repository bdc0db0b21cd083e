"""WhatsApp-style chat: the pure pending store and receipts, then the service on the
deterministic driver with a real LMDB store (sessions, shards, presence, heartbeats,
rooms, bad input, crashes and restarts)."""
from __future__ import annotations

import pytest

from actors import CallExit, CallTimeout, Node, NoProc
from apps.chat import (DELIVERED, READ, SENT, BadRequest, ChatConfig, ChatService, Forbidden,
                       Overloaded, RateLimited)
from apps.chat import store as book
from apps.chat.receipts import advance
from apps.chat.router import HashRing
from chat_world import World
from storage import Store

# -- the pure parts ----------------------------------------------------------------------------


def test_receipts_only_move_forward():
    assert advance(SENT, DELIVERED) and advance(DELIVERED, READ) and advance(SENT, READ)
    assert not advance(READ, DELIVERED) and not advance(DELIVERED, DELIVERED)


def shard_book(local=("alice", "bob"), retention=100.0, pushes=3):
    return book.ShardBook(retention, pushes, lambda user: user in local)


def store_event(msg_id, sender, to, cid=None, t=0.0, push=None):
    return [book.E_STORE, msg_id, sender, cid if cid is not None else f"c{msg_id}", to, b"x", t, push]


def test_pending_store_keeps_each_users_items_in_order_until_confirmed():
    state, b = book.empty(0, 1), shard_book()
    for i in range(1, 6):
        effects = b.apply(state, store_event(i, "carol", "bob"))
        assert effects.users == ["bob"]
    assert [item[0] for item in book.pending(state, "bob")] == [1, 2, 3, 4, 5]
    effects = b.apply(state, [book.E_CONFIRM, [["bob", 3]], 1.0])
    assert [item[2] for item in book.pending(state, "bob")] == [4, 5]
    # carol is homed elsewhere: her delivered receipts wait in the outbox, in order
    assert effects.receipts == [["carol", i, DELIVERED] for i in (1, 2, 3)]
    assert state["outbox"] == {i: ["carol", DELIVERED, 1.0] for i in (1, 2, 3)}
    b.apply(state, [book.E_ACKED, [[1, DELIVERED], [2, SENT]]])  # an older ack keeps 2
    assert list(state["outbox"]) == [2, 3]


def test_a_local_sender_gets_receipt_items_and_never_a_step_back():
    state, b = book.empty(0, 1), shard_book()
    b.apply(state, store_event(7, "alice", "bob"))
    b.apply(state, [book.E_READ, "bob", [7], 1.0])  # read before the device confirmed
    b.apply(state, [book.E_CONFIRM, [["bob", 1]], 2.0])  # delivered after read: no news
    receipts = [(item[2], item[3]) for item in book.pending(state, "alice")]
    assert receipts == [(7, READ)]
    assert book.status_of(state, 7) == READ
    b.apply(state, [book.E_RECEIPTS, [["alice", 7, DELIVERED], ["alice", 7, READ]], 3.0])
    assert len(book.pending(state, "alice")) == 1  # both repeats dropped


def test_journals_from_before_batching_replay_and_unknown_events_are_refused_by_name():
    old, new, b = book.empty(0, 1), book.empty(0, 1), shard_book()
    for state in (old, new):
        for i in (1, 2):
            b.apply(state, store_event(i, "carol", "bob"))
    b.apply(old, ["c", "bob", 1, 5.0])  # one user's confirm, as journals before batching hold
    b.apply(new, [book.E_CONFIRM, [["bob", 1]], 5.0])
    assert old == new and [item[2] for item in book.pending(old, "bob")] == [2]
    with pytest.raises(ValueError, match="unknown chat shard event 'zz' .*another version"):
        b.apply(old, ["zz", "bob", 1, 0.0])


def test_records_and_duplicate_detection_are_forgotten_after_retention_only():
    state, b = book.empty(0, 1), shard_book(retention=100.0)
    b.apply(state, store_event(1, "alice", "bob", cid="x"))
    b.apply(state, [book.E_EXPIRE, 1000.0])
    assert book.status_of(state, 1) == SENT  # undelivered: kept however old
    b.apply(state, [book.E_CONFIRM, [["bob", 1]], 10.0])
    b.apply(state, [book.E_EXPIRE, 109.0])
    assert book.status_of(state, 1) == DELIVERED and state["dedup"]["alice"] == {"x": 1}
    b.apply(state, [book.E_EXPIRE, 110.0])
    assert book.status_of(state, 1) is None and state["dedup"] == {} and state["expiry"] == []


def test_a_client_id_reused_after_retention_is_a_new_message_and_expires_cleanly():
    state, b = book.empty(0, 1), shard_book(retention=100.0)
    b.apply(state, store_event(1, "alice", "bob", cid="x"))
    b.apply(state, [book.E_CONFIRM, [["bob", 1]], 0.0])
    b.apply(state, store_event(2, "alice", "bob", cid="x", t=50.0))  # reinstalled, counting again
    b.apply(state, [book.E_CONFIRM, [["bob", 2]], 60.0])
    b.apply(state, [book.E_EXPIRE, 100.0])  # the first one goes; the newer one's entry stays
    assert state["dedup"] == {"alice": {"x": 2}}
    b.apply(state, [book.E_EXPIRE, 160.0])
    assert state["dedup"] == {} and state["records"] == {}


def test_push_records_are_bounded_newest_kept():
    state, b = book.empty(0, 1), shard_book(pushes=3)
    for i in range(1, 6):
        b.apply(state, store_event(i, "alice", "bob", push=["Message from alice", "hi"]))
    assert [p[3] for p in state["pushes"]] == [3, 4, 5]


def test_a_senders_shard_remembers_receipts_longer_than_any_shard_resends_them():
    state, b = book.empty(0, 1), shard_book(retention=100.0)
    b.apply(state, [book.E_RECEIPTS, [["alice", 7, READ]], 0.0])
    b.apply(state, [book.E_EXPIRE, 150.0])  # past retention, when a resend can still come
    b.apply(state, [book.E_RECEIPTS, [["alice", 7, READ]], 150.0])  # ...it is a repeat
    assert len(book.pending(state, "alice")) == 1
    b.apply(state, [book.E_EXPIRE, 200.0])  # RECEIPT_MEMORY x retention: forgotten
    assert state["rstat"] == {} and state["rstat_expiry"] == []


def test_the_records_staged_are_the_state_and_bring_it_back():
    stored: dict = {}
    b = book.ShardBook(100.0, 2, lambda user: user in ("alice", "bob"),
                       lambda key, value, new=False: stored.__setitem__(  # a tuple is stored as an array
                           key, list(value) if type(value) is tuple else value),
                       lambda key: stored.pop(key, None))
    state = book.empty(0, 1)
    events = [store_event(1, "alice", "bob", push=["Message from alice", "hi"]),
              store_event(2, "carol", "bob", push=["Message from carol", "yo"]),
              store_event(3, "alice", "bob", push=["Message from alice", "hi"]),
              [book.E_CONFIRM, [["bob", 2]], 5.0], [book.E_READ, "bob", [1, 2], 6.0],
              [book.E_RECEIPTS, [["alice", 99, DELIVERED]], 7.0], [book.E_ACKED, [[2, READ]]],
              [book.E_SEEN, "bob", 8.0], [book.E_CONTACTS, "bob", ["alice"]],
              [book.E_CONFIRM, [["alice", 3]], 9.0], [book.E_EXPIRE, 106.0]]
    for event in events:
        b.apply(state, event)
    assert stored == dict(book.records_of(state))  # every change was staged, nothing else
    again = book.from_records(dict(state["head"]), list(stored.items()))
    live = [e for e in state["rstat_expiry"] if state["rstat"][e[1]][1] == e[0]]  # not superseded
    assert again["rstat_expiry"] == live and {**again, "rstat_expiry": live} == {**state, "rstat_expiry": live}
    assert [p[3] for p in again["pushes"]] == [2, 3] and again["dedup"] == {"alice": {"c3": 3}}


def test_consistent_hashing_is_stable_balanced_and_moves_few_keys():
    users = [f"user{i}" for i in range(4000)]
    ring8, ring9 = HashRing(8), HashRing(9)
    owners = [ring8.owner(u) for u in users]
    fresh = HashRing(8)  # built again, nothing cached: the same answers (no per-process randomness)
    assert owners == [fresh.owner(u) for u in users]
    counts = [owners.count(s) for s in range(8)]
    assert min(counts) > 0.6 * 500 and max(counts) < 1.4 * 500
    moved = sum(1 for u, o in zip(users, owners) if ring9.owner(u) != o)
    assert moved < 4000 * 0.2  # about 1/9 move, never a reshuffle
    assert all(ring9.owner(u) == 8 for u, o in zip(users, owners) if ring9.owner(u) != o)


# -- the service -------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    return World(str(tmp_path / "chat"))


def test_send_is_acknowledged_once_stored_and_offline_users_get_a_push_record(world):
    alice, _, _ = world.connect("alice")
    text = "a preview longer than fifty characters, which the push body must cut off"
    msg_id = world.run(world.svc.send(world.node, alice, "bob", "c1", b"\x00opaque", text))
    pending = world.run(world.svc.pending(world.node, "bob"))
    assert pending == [[1, "m", msg_id, "alice", b"\x00opaque"]]
    (push,) = world.run(world.svc.pushes(world.node, "bob"))
    assert push["title"] == "Message from alice" and push["body"] == text[:50] and push["msg_id"] == msg_id
    world.restart()  # acknowledged means stored: it survives the node
    assert world.run(world.svc.pending(world.node, "bob")) == pending


def test_online_delivery_with_delivered_then_read_receipts(world):
    alice, adev, aframes = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    msg_id = world.run(world.svc.send(world.node, alice, "bob", "c1", b"hi"))
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(bdev)] == [msg_id]
    assert world.run(world.svc.pushes(world.node, "bob")) == []  # online: no push
    world.svc.confirm(world.node, bob, world.node.get_process(bdev).last)
    world.run(world.svc.read(world.node, bob, [msg_id]))  # at once: still, delivered goes first
    world.run(world.svc.read(world.node, bob, [msg_id]))  # twice: one receipt
    world.node.run_for(0.01)
    assert [(i[1], i[2], i[3]) for i in world.took(adev)] == [("r", msg_id, DELIVERED), ("r", msg_id, READ)]
    assert world.run(world.svc.pending(world.node, "bob")) == []


def test_pending_messages_come_in_order_before_new_ones_and_stay_until_confirmed(world):
    alice, _, _ = world.connect("alice")
    ids = [world.run(world.svc.send(world.node, alice, "bob", f"c{i}", b"m%d" % i)) for i in range(5)]
    bob, bdev, _ = world.connect("bob")
    ids.append(world.run(world.svc.send(world.node, alice, "bob", "c5", b"m5")))
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(bdev)] == ids
    world.run(world.svc.disconnect(world.node, bob))  # gone before confirming anything
    world.node.run_for(0.01)
    assert len(world.run(world.svc.pending(world.node, "bob"))) == 6
    bob, bdev, _ = world.connect("bob")
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(bdev)] == ids  # all again, same order
    world.run(world.svc.confirm(world.node, bob, 4))
    world.node.run_for(0.01)
    assert [item[2] for item in world.run(world.svc.pending(world.node, "bob"))] == ids[4:]


def test_a_retried_send_is_stored_and_delivered_once(world):
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    first = world.run(world.svc.send(world.node, alice, "bob", "same", b"hi"))
    again = world.run(world.svc.send(world.node, alice, "bob", "same", b"hi"))
    world.node.run_for(0.01)
    assert first == again and [item[2] for item in world.took(bdev)] == [first]


def test_a_session_gets_at_most_a_window_of_unconfirmed_items_and_stalls_are_resent(tmp_path):
    world = World(str(tmp_path / "chat"), window=3, resend_after=1.0)
    alice, _, _ = world.connect("alice")
    bob, bdev, frames = world.connect("bob")
    for i in range(5):
        world.run(world.svc.send(world.node, alice, "bob", i, b"m"))
    world.node.run_for(0.01)
    assert [item[0] for item in world.took(bdev)] == [1, 2, 3]
    device = world.node.get_process(bdev)
    device.last, device.took = 1, device.took[:1]  # items 2 and 3 "lost on the way"
    frames.clear()
    world.node.run_for(2.5)  # no confirmation for a whole tick: sent again from item 1
    assert frames and frames[0][1][0][0] == 1
    world.confirm_all(bob, bdev)
    world.node.run_for(0.01)
    assert [item[0] for item in world.took(bdev)] == [1, 2, 3, 4, 5]


def test_presence_and_last_seen_go_to_contacts(world):
    world.run(world.svc.set_contacts(world.node, "alice", ["bob", "carol"]))
    world.run(world.svc.set_contacts(world.node, "bob", ["alice"]))
    bob, bdev, bframes = world.connect("bob")
    alice, _, _ = world.connect("alice")
    world.node.run_for(0.01)
    assert world.run(world.svc.presence(world.node, "alice", viewer="bob")) == ("online", None)
    world.run(world.svc.set_presence(world.node, alice, "away"))
    world.node.run_for(1.0)
    world.run(world.svc.disconnect(world.node, alice))
    world.node.run_for(0.01)
    status, seen = world.run(world.svc.presence(world.node, "alice", viewer="alice"))
    assert status == "offline" and seen == pytest.approx(1.01, abs=0.01)
    updates = [f[1:3] for f in bframes if f[0] == "presence"]
    assert updates == [("alice", "online"), ("alice", "away"), ("alice", "offline")]
    assert [f for f in bframes if f[0] == "presence"][-1][3] == seen


def test_presence_is_seen_by_contacts_only_and_pushed_only_to_who_listed_the_user(world):
    contacts = {"alice": ["bob", "carol"], "bob": ["alice"], "mallory": ["alice", "bob"]}
    for user, listed in contacts.items():  # carol lists nobody; alice does not list mallory
        world.run(world.svc.set_contacts(world.node, user, listed))
    devices = {user: world.connect(user) for user in ("bob", "carol", "mallory", "alice")}
    world.node.run_for(0.01)
    world.run(world.svc.set_presence(world.node, devices["mallory"][0], "away"))  # pushed to nobody
    world.node.run_for(0.01)
    seen = {user: [f[1:3] for f in frames if f[0] == "presence"] for user, (_, _, frames) in devices.items()}
    assert seen == {"bob": [("alice", "online")], "carol": [], "mallory": [], "alice": []}
    for viewer in ("bob", "carol", "alice"):  # alice lists bob and carol: they may look
        assert world.run(world.svc.presence(world.node, "alice", viewer=viewer)) == ("online", None)
    with pytest.raises(Forbidden, match="'alice' shares presence with its contacts only, and 'mallory'"):
        world.run(world.svc.presence(world.node, "alice", viewer="mallory"))
    with pytest.raises(Forbidden):  # nobody listed: nobody sees, not even who listed you
        world.run(world.svc.presence(world.node, "carol", viewer="alice"))
    world.run(world.svc.disconnect(world.node, devices["alice"][0]))  # last seen: the same rule
    world.node.run_for(0.01)
    with pytest.raises(Forbidden):
        world.run(world.svc.presence(world.node, "alice", viewer="mallory"))
    assert world.run(world.svc.presence(world.node, "alice", viewer="carol"))[0] == "offline"


def test_heartbeats_keep_a_session_and_silence_closes_it_at_a_check(world):
    alice, _, frames = world.connect("alice")
    world.node.run_for(5.0)
    world.run(world.svc.heartbeat(world.node, alice))  # at t=5: silent 30 s at t=35
    world.node.run_for(34.9)  # t=39.9: the checks are at 10, 20, 30, 40
    assert world.node.is_alive(alice)
    world.node.run_for(0.2)
    assert not world.node.is_alive(alice) and frames[-1] == ("closed", "heartbeat timeout")
    bob, _, _ = world.connect("bob")
    for _ in range(10):
        world.node.run_for(25.0)
        world.run(world.svc.heartbeat(world.node, bob))
    assert world.node.is_alive(bob)


def test_a_heartbeat_check_is_not_fooled_by_float_rounding(tmp_path):
    world = World(str(tmp_path / "chat"), heartbeat_timeout=0.3, heartbeat_check=0.1)
    world.node.run_for(0.30000000000000004)  # the third check, as 0.1 + 0.1 + 0.1 sums
    alice, _, frames = world.connect("alice")  # its last beat: now
    world.node.run_for(0.29)
    assert world.node.is_alive(alice)
    world.node.run_for(0.02)  # at the check at 0.6 it has been silent 0.3 s (0.2999... in floats)
    assert not world.node.is_alive(alice) and frames[-1] == ("closed", "heartbeat timeout")


def test_a_second_connection_of_a_device_replaces_the_first_and_other_devices_stay(world):
    old, _, old_frames = world.connect("bob", "phone")
    laptop, laptopdev, _ = world.connect("bob", "laptop")
    new, newdev, _ = world.connect("bob", "phone")
    alice, _, _ = world.connect("alice")
    world.node.run_for(0.01)
    assert old_frames[-1] == ("closed", "replaced") and not world.node.is_alive(old)
    assert world.node.is_alive(laptop)
    msg_id = world.run(world.svc.send(world.node, alice, "bob", 1, b"hi"))
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(newdev)] == [msg_id] == [item[2] for item in world.took(laptopdev)]


def test_a_stale_session_attaching_again_does_not_displace_a_newer_one(world):
    old, _, old_frames = world.connect("bob", "phone")
    world.node.run_for(0.01)
    world.node.exit(world.svc.router.locate("bob"), "kill")  # old will attach again, later
    world.node.run_for(0.01)
    new, newdev, _ = world.connect("bob", "phone")  # the device gave up on old meanwhile
    world.node.run_for(5.0)
    assert old_frames[-1] == ("closed", "replaced") and not world.node.is_alive(old)
    alice, _, _ = world.connect("alice")
    msg_id = world.run(world.svc.send(world.node, alice, "bob", 1, b"hi"))
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(newdev)] == [msg_id]


def test_rooms_broadcast_to_members_with_rate_and_length_limits(world):
    sessions = {u: world.connect(u) for u in ("ann", "ben", "cat")}
    for user, (session, _, _) in sessions.items():
        world.run(world.svc.join(world.node, session, "live"))
    ann = sessions["ann"][0]
    assert world.run(world.svc.say(world.node, ann, "live", "hello")) == 3
    world.node.run_for(0.01)
    for _, _, frames in sessions.values():
        assert ("room", "live", "ann", "hello") in frames
    with pytest.raises(BadRequest, match="at most 200 characters"):
        world.run(world.svc.say(world.node, ann, "live", "x" * 201))
    for _ in range(4):  # the burst is 5, one already spent
        world.run(world.svc.say(world.node, ann, "live", "again"))
    with pytest.raises(RateLimited):
        world.run(world.svc.say(world.node, ann, "live", "too fast"))
    world.node.run_for(1.0)  # one token back
    world.run(world.svc.say(world.node, ann, "live", "ok now"))
    world.run(world.svc.leave(world.node, sessions["ben"][0], "live"))
    world.run(world.svc.disconnect(world.node, sessions["cat"][0]))
    world.node.run_for(1.0)
    assert world.run(world.svc.say(world.node, ann, "live", "alone?")) == 1
    room = world.node.whereis("chat.room.live")
    world.run(world.svc.leave(world.node, ann, "live"))
    world.node.run_for(0.01)
    assert not world.node.is_alive(room)  # the last member left: the room stopped


def test_bad_input_is_refused_by_name_and_nothing_stored_is_lost(world):
    alice, _, _ = world.connect("alice")
    kept = world.run(world.svc.send(world.node, alice, "bob", "ok", b"fine"))
    cases = [
        (("bob", "c2", "not bytes", ""), "payload must be bytes"),
        (("bob", "c3", b"x" * (64 * 1024 + 1), ""), "payload is 65537 bytes"),
        (("", "c4", b"x", ""), "recipient must be a non-empty str"),
        (("bob", None, b"x", ""), "client message id"),
        (("bob", "c5", b"x", 5), "preview must be a str"),
    ]
    for args, error in cases:
        with pytest.raises(BadRequest, match=error):
            world.run(world.svc.send(world.node, alice, *args))
    with pytest.raises(BadRequest, match="confirm needs an item seq"):
        world.run(world.svc.confirm(world.node, alice, -1))
    with pytest.raises(BadRequest, match="presence must be"):
        world.run(world.svc.set_presence(world.node, alice, "busy"))
    with pytest.raises(BadRequest, match="user is 65 characters"):
        world.svc.connect(world.node, "u" * 65, "phone", alice)
    with pytest.raises(BadRequest, match="outlet must be the pid"):
        world.svc.connect(world.node, "bob", "phone", "not a pid")
    with pytest.raises(BadRequest, match="contacts"):
        world.run(world.svc.set_contacts(world.node, "alice", "bob"))
    assert world.node.is_alive(alice)
    assert world.run(world.svc.pending(world.node, "bob")) == [[1, "m", kept, "alice", b"fine"]]


def test_a_full_pending_store_refuses_more_until_it_drains(tmp_path):
    world = World(str(tmp_path / "chat"), max_pending=3)
    alice, _, _ = world.connect("alice")
    for i in range(3):
        world.run(world.svc.send(world.node, alice, "bob", i, b"m"))
    with pytest.raises(Overloaded, match="max_pending"):
        world.run(world.svc.send(world.node, alice, "bob", 3, b"m"))
    bob, bdev, _ = world.connect("bob")
    world.node.run_for(0.01)
    world.confirm_all(bob, bdev)
    world.run(world.svc.send(world.node, alice, "bob", 3, b"m"))


def test_a_session_crash_loses_nothing_acknowledged(world):
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    ids = [world.run(world.svc.send(world.node, alice, "bob", i, b"m")) for i in range(3)]
    world.node.exit(bob, "kill")
    world.node.exit(alice, "kill")
    world.node.run_for(0.01)
    with pytest.raises(NoProc):
        world.run(world.svc.send(world.node, alice, "bob", 9, b"m"))
    assert world.run(world.svc.presence(world.node, "bob", viewer="bob"))[0] == "offline"
    bob, bdev, _ = world.connect("bob")
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(bdev)] == ids


@pytest.mark.parametrize("path", ["route", "session"])
def test_a_send_whose_shard_dies_with_it_fails_and_its_retry_is_stored_once(world, path):
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    world.node.run_for(0.01)
    shard = world.svc.router.locate("bob")
    if path == "route":  # from alice's session's node: straight to bob's shard, which the caller watches
        pending, failure = world.svc.send(world.node, alice, "bob", "c1", b"m"), CallExit
    else:  # what a caller on another node does: alice's session takes it (the route table is this node's)
        pending, failure = world.node.call(alice, ("send", "bob", "c1", b"m", ""), timeout=5.0), CallTimeout
        world.node.step(1)  # the session hands the request to bob's shard, which would answer the caller
    world.node.exit(shard, "kill")  # bob's shard dies with the request
    with pytest.raises(failure):
        world.run(pending)
    world.node.run_for(3.0)  # restarted; bob's session attached again
    first = world.run(world.svc.send(world.node, alice, "bob", "c1", b"m"))
    again = world.run(world.svc.send(world.node, alice, "bob", "c1", b"m"))
    world.node.run_for(0.01)
    assert first == again and [item[2] for item in world.took(bdev)] == [first]


def test_confirmations_a_shard_took_but_had_not_stored_are_lost_safely(world):
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    ids = [world.run(world.svc.send(world.node, alice, "bob", i, b"m")) for i in range(3)]
    world.node.run_for(0.01)
    shard = world.svc.router.locate("bob")
    world.node.cast(shard, ("confirm", "bob", "phone", 3))  # what bob's session passes on
    world.node.step(1)  # taken, to be stored with the rest of its batch...
    assert list(world.node.get_process(shard).confirms.values()) == [["bob", 3, "phone"]]
    world.node.exit(shard, "kill")  # ...which never comes
    world.node.run_for(3.0)
    assert [item[2] for item in world.run(world.svc.pending(world.node, "bob"))] == ids
    assert [item[2] for item in world.took(bdev)] == ids  # taken once: the repeats were dropped
    done = world.svc.confirm(world.node, bob, 3)  # a cast: answered at once
    assert done.done() and done.result() == "ok"
    world.node.run_for(0.01)
    assert world.run(world.svc.pending(world.node, "bob")) == []


def test_a_shard_crash_restarts_it_and_its_sessions_attach_again(world):
    alice, adev, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    first = world.run(world.svc.send(world.node, alice, "bob", 1, b"m"))
    world.node.run_for(0.01)
    shard = world.svc.router.locate("bob")
    world.node.exit(shard, "kill")
    world.node.run_for(3.0)  # restarted by its supervisor; bob's session attaches again
    assert world.svc.router.locate("bob") not in (None, shard)
    second = world.run(world.svc.send(world.node, alice, "bob", 2, b"m"))
    world.node.run_for(0.01)
    assert [item[2] for item in world.took(bdev)] == [first, second]
    world.confirm_all(bob, bdev)
    assert world.run(world.svc.pending(world.node, "bob")) == []


def test_a_node_restart_recovers_every_pending_message_and_receipt(world):
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    read = world.run(world.svc.send(world.node, alice, "bob", 0, b"read me"))
    world.node.run_for(0.01)
    world.confirm_all(bob, bdev)
    world.run(world.svc.read(world.node, bob, [read]))
    world.run(world.svc.disconnect(world.node, bob))
    ids = [world.run(world.svc.send(world.node, alice, f"user{i}", i, b"m")) for i in range(1, 20)]
    world.node.run_for(0.01)
    world.restart()
    for i, msg_id in enumerate(ids, 1):
        assert [item[2] for item in world.run(world.svc.pending(world.node, f"user{i}"))] == [msg_id]
    alice, adev, _ = world.connect("alice")
    world.node.run_for(0.01)
    assert [(i[2], i[3]) for i in world.took(adev)] == [(read, DELIVERED), (read, READ)]
    assert world.run(world.svc.presence(world.node, "bob", viewer="bob"))[1] is not None  # last seen kept


def test_receipts_to_a_shard_that_is_down_arrive_once_it_is_back(world):
    alice, adev, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    router = world.svc.router
    assert router.home("alice") != router.home("bob")
    msg_id = world.run(world.svc.send(world.node, alice, "bob", 1, b"m"))
    world.node.run_for(0.01)
    alice_shard = router.locate("alice")
    world.node.exit(alice_shard, "kill")  # bob's delivered receipt has nowhere to go
    world.confirm_all(bob, bdev)
    world.node.run_for(11.0)  # resent at bob's shard's third tick (two unacknowledged), acknowledged at
    # alice's shard's next, which bob's stores at once
    assert [(i[2], i[3]) for i in world.took(adev)] == [(msg_id, DELIVERED)]
    assert world.node.get_process(router.locate("bob")).data["outbox"] == {}


def test_delivered_messages_are_forgotten_after_the_retention_period(tmp_path):
    world = World(str(tmp_path / "chat"), retention=60.0)
    alice, _, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    msg_id = world.run(world.svc.send(world.node, alice, "bob", "once", b"m"))
    world.node.run_for(0.01)
    world.confirm_all(bob, bdev)
    shard = world.node.get_process(world.svc.router.locate("bob"))
    assert book.status_of(shard.data, msg_id) == DELIVERED

    def wait(seconds):
        for _ in range(int(seconds // 5)):
            world.node.run_for(5.0)
            world.run(world.svc.heartbeat(world.node, bob))
            world.run(world.svc.heartbeat(world.node, alice))

    wait(55.0)
    assert book.status_of(shard.data, msg_id) == DELIVERED  # kept for the retention period
    wait(10.0)
    assert book.status_of(shard.data, msg_id) is None
    assert "alice" not in shard.data["dedup"]


def test_calls_to_a_dead_session_fail_fast(world):
    alice, _, _ = world.connect("alice")
    world.run(world.svc.disconnect(world.node, alice))
    world.node.run_for(0.01)
    with pytest.raises((NoProc, CallTimeout)):
        world.run(world.svc.heartbeat(world.node, alice))


@pytest.mark.parametrize("field, value, error", [
    ("window", 0, "ChatConfig.window must be a positive int, got 0"),
    ("max_payload", 1.5, "ChatConfig.max_payload must be a positive int, got 1.5"),
    ("retention", float("inf"), "ChatConfig.retention must be a positive number of seconds, got inf"),
    ("heartbeat_timeout", "30", "ChatConfig.heartbeat_timeout must be a positive number of seconds"),
    ("shards", 1025, "ChatConfig.shards must be an int in 1..1024"),
    ("heartbeat_check", 60.0, r"heartbeat_check \(60.0\) must not exceed heartbeat_timeout"),
    ("nodes", ("a", "a"), "ChatConfig.nodes must be at most 1024 distinct names"),
])
def test_a_bad_config_is_refused_naming_the_field(field, value, error):
    with pytest.raises(ValueError, match=error):
        ChatConfig(**{field: value})


def test_a_bad_restart_limit_is_refused_before_anything_starts(tmp_path):
    node = Node(seed=1)
    store = Store(str(tmp_path), node)
    with pytest.raises(ValueError, match="max_restarts must be an int >= 0, got -1"):
        ChatService(node, store, max_restarts=-1)
    service = ChatService(node, store, max_restarts=0)
    assert not service.running
    service.start()
    assert service.running
    store.close()


def test_sends_confirms_and_reads_from_the_sessions_node_go_straight_to_the_shards(world):
    alice, adev, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    world.node.run_for(0.01)
    taken = {pid: world.node.process_info(pid)["messages_in"] for pid in (alice, bob)}
    msg_id = world.run(world.svc.send(world.node, alice, "bob", "c1", b"m"))
    world.node.run_for(0.01)
    world.confirm_all(bob, bdev)
    world.run(world.svc.read(world.node, bob, [msg_id]))
    world.node.run_for(0.01)
    world.confirm_all(alice, adev)
    assert {pid: world.node.process_info(pid)["messages_in"] for pid in (alice, bob)} == taken  # no hop
    assert [(item[1], item[2], item[3]) for item in world.took(adev)] == [("r", msg_id, DELIVERED),
                                                                          ("r", msg_id, READ)]
    assert world.run(world.svc.pending(world.node, "alice")) == []
    with pytest.raises(BadRequest):  # checked on the way, as the session would
        world.run(world.svc.read(world.node, bob, "not a list"))


def test_a_killed_session_is_not_routed_around_and_its_route_is_swept(world):
    alice, _, _ = world.connect("alice")
    world.connect("bob")
    world.node.run_for(0.01)
    assert alice in world.svc.hub.routes
    world.node.exit(alice, "kill")  # no terminate: its entry stays until the heartbeat sweep
    with pytest.raises(NoProc):
        world.run(world.svc.send(world.node, alice, "bob", "c1", b"m"))
    assert world.run(world.svc.pending(world.node, "bob")) == []
    world.node.run_for(world.config.heartbeat_timeout + world.config.heartbeat_check)
    assert alice not in world.svc.hub.routes and alice not in world.svc.hub.beats


@pytest.mark.parametrize("batch", [2, 1000])
def test_stored_receipts_are_acknowledged_together_at_the_tick_or_once_a_batch_is_due(world, monkeypatch, batch):
    from apps.chat import shard as shard_module
    monkeypatch.setattr(shard_module, "ACK_BATCH", batch)
    alice, adev, _ = world.connect("alice")
    bob, bdev, _ = world.connect("bob")
    router = world.svc.router
    assert router.home("alice") != router.home("bob")
    ids = [world.run(world.svc.send(world.node, alice, "bob", i, b"m")) for i in range(3)]
    world.node.run_for(0.01)
    world.confirm_all(bob, bdev)  # bob's shard sends alice's shard 3 delivered receipts
    world.node.run_for(0.01)
    assert [(i[2], i[3]) for i in world.took(adev)] == [(msg_id, DELIVERED) for msg_id in ids]
    outbox = world.node.get_process(router.locate("bob")).data["outbox"]
    assert sorted(outbox) == ([] if batch == 2 else ids)  # 3 due: 2 make a batch, else the tick
    world.node.run_for(world.config.resend_after)
    assert outbox == {} and [(i[2], i[3]) for i in world.took(adev)] == [(msg_id, DELIVERED) for msg_id in ids]


def test_what_a_delivered_message_leaves_for_the_retention_period_is_not_traversed_by_the_collector():
    import gc
    state = book.empty(0, 1)
    b = book.ShardBook(100.0, 2, lambda user: True)
    for i in range(1, 4):
        b.apply(state, store_event(i, "alice", "bob"))
    b.apply(state, [book.E_CONFIRM, [["bob", 3]], 5.0])  # delivered: receipts in alice's box
    b.apply(state, [book.E_CONFIRM, [["alice", 3]], 6.0])
    gc.collect()
    kept = [*state["expiry"], *state["rstat_expiry"], *state["rstat"].values()]
    assert len(kept) == 9 and not any(gc.is_tracked(entry) for entry in kept)
