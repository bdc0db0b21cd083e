"""Chat from several devices of one user: the pending store's per-device positions (pure),
then the service on the deterministic driver with a real LMDB store: every device gets
every message, the sender's other devices a copy, one `delivered` and one `read` per
message, a device that was away catches up, the device limit, unlinking and expiry."""
from __future__ import annotations

import pytest

from apps.chat import DELIVERED, READ, BadRequest, QuotaExceeded
from apps.chat import store as book
from chat_world import World

# -- the pure parts ----------------------------------------------------------------------------


class Staged(dict):
    """The records a book staged, as a shard would store them."""

    def put(self, key, value, new=False):
        self[key] = list(value)

    def delete(self, key):
        self.pop(key, None)


def shard_book(staged=None, **limits):
    staged = staged if staged is not None else Staged()
    return book.ShardBook(100.0, 10, lambda user: True, staged.put, staged.delete, **limits)


def message(msg_id, sender="alice", to="bob", t=0.0, payload=b"x", echo=False):
    event = [book.E_STORE, msg_id, sender, f"c{msg_id}", to, payload, t, None]
    return event + [True] if echo else event


def confirm(user, device, upto, t=1.0):
    return [book.E_CONFIRM, [[user, upto, device]], t]


def test_each_device_confirms_on_its_own_and_the_first_delivers():
    state, staged = book.empty(), Staged()
    b = shard_book(staged)
    for device in ("phone", "laptop"):
        b.apply(state, [book.E_LINK, "bob", device, 0.0])
    for i in (1, 2, 3):
        b.apply(state, message(i))
    b.apply(state, confirm("bob", "phone", 2))
    assert [(i[2], i[3]) for i in book.pending(state, "alice")] == [(1, DELIVERED), (2, DELIVERED)]
    assert [i[0] for i in book.pending(state, "bob")] == [1, 2, 3]  # the laptop has none yet
    assert book.position(state, "bob", "phone") == 2 and book.position(state, "bob", "laptop") == 0
    b.apply(state, confirm("bob", "laptop", 3))  # the laptop takes all: 3 delivered now, not 1, 2 again
    assert [(i[2], i[3]) for i in book.pending(state, "alice")][2:] == [(3, DELIVERED)]
    assert [i[0] for i in book.pending(state, "bob")] == [3]  # the phone still lacks 3
    b.apply(state, confirm("bob", "phone", 3))
    assert book.pending(state, "bob") == [] and state["inbox"]["bob"][:2] == [3, 3]
    assert staged == dict(book.records_of(state))


def test_a_single_device_confirming_writes_no_device_record():
    state, staged = book.empty(), Staged()
    b = shard_book(staged)
    b.apply(state, [book.E_LINK, "bob", "phone", 0.0])
    b.apply(state, message(1))
    staged.clear()
    b.apply(state, confirm("bob", "phone", 1))
    assert ("dev", "bob", "phone") not in staged and ("box", "bob") in staged
    assert book.position(state, "bob", "phone") == 1  # held by the box: its oldest item


def test_a_new_device_starts_where_the_first_device_is():
    state, b = book.empty(), shard_book()
    b.apply(state, [book.E_LINK, "bob", "phone", 0.0])
    for i in (1, 2, 3):
        b.apply(state, message(i))
    b.apply(state, confirm("bob", "phone", 2))
    b.apply(state, [book.E_LINK, "bob", "laptop", 5.0])
    assert book.position(state, "bob", "laptop") == 2  # gets 3, which no device has taken


def test_unlinking_the_slow_device_drops_what_only_it_needed():
    state, staged = book.empty(), Staged()
    b = shard_book(staged)
    for device in ("phone", "laptop"):
        b.apply(state, [book.E_LINK, "bob", device, 0.0])
    for i in (1, 2):
        b.apply(state, message(i))
    b.apply(state, confirm("bob", "phone", 2))
    b.apply(state, [book.E_UNLINK, [["bob", "laptop"], ["bob", "tablet"]]])  # tablet: never linked
    assert book.pending(state, "bob") == [] and [dev.name for dev in state["devices"]["bob"]] == ["phone"]
    assert ("dev", "bob", "laptop") not in staged and staged == dict(book.records_of(state))


def test_a_slow_device_loses_the_oldest_items_another_took_when_the_store_is_full():
    state, b = book.empty(), shard_book(max_items=3)
    for device in ("phone", "laptop"):
        b.apply(state, [book.E_LINK, "bob", device, 0.0])
    for i in (1, 2, 3):
        b.apply(state, message(i, sender="carol"))
    b.apply(state, confirm("bob", "phone", 3))
    b.apply(state, message(4, sender="carol"))  # 4 items: 1 goes, the phone has it
    assert [i[0] for i in book.pending(state, "bob")] == [2, 3, 4]
    assert book.position(state, "bob", "laptop") == 1  # it jumps past the item it missed


def test_reads_are_one_receipt_and_the_readers_other_devices_learn_of_them():
    state, b = book.empty(), shard_book()
    for device in ("phone", "laptop"):
        b.apply(state, [book.E_LINK, "bob", device, 0.0])
    b.apply(state, message(1))
    b.apply(state, [book.E_READ, "bob", [1], 2.0])
    b.apply(state, [book.E_READ, "bob", [1], 3.0])  # read again, on the other device
    assert [(i[1], i[2], i[3]) for i in book.pending(state, "alice")] == [("r", 1, READ)]
    assert [(i[1], i[2], i[3]) for i in book.pending(state, "bob")] == [("m", 1, "alice"), ("v", 1, "alice")]


def test_a_senders_devices_get_a_copy_carried_with_its_receipts_to_another_shard():
    mine, theirs = book.empty(), book.empty()
    local = shard_book()  # alice's shard
    for device in ("phone", "laptop"):
        local.apply(mine, [book.E_LINK, "alice", device, 0.0])
    remote = book.ShardBook(100.0, 10, lambda user: user == "bob")  # bob's: alice lives elsewhere
    effects = remote.apply(theirs, message(1, payload=b"hi", echo=True))
    assert effects.receipts == [["alice", 1, book.SENT, "bob", b"hi"]]
    remote.apply(theirs, [book.E_CONFIRM, [["bob", 1]], 1.0])  # delivered before alice's shard acked
    assert theirs["outbox"][1] == ["alice", DELIVERED, 1.0, "bob", b"hi"]  # the copy goes along
    for receipt in (effects.receipts[0], ["alice", 1, DELIVERED, "bob", b"hi"]):
        local.apply(mine, [book.E_RECEIPTS, [receipt], 2.0])
    assert [i[1:] for i in book.pending(mine, "alice")] == [["s", 1, "bob", b"hi"], ["r", 1, DELIVERED, None]]


def test_a_copy_for_a_sender_down_to_one_device_is_dropped_where_it_is_stored():
    """Its session asked for the copy while it had a laptop too (or heard so late)."""
    state, b = book.empty(), shard_book()
    for device in ("phone", "laptop"):
        b.apply(state, [book.E_LINK, "alice", device, 0.0])
    b.apply(state, [book.E_UNLINK, [["alice", "laptop"]]])
    b.apply(state, message(1, echo=True))
    assert book.pending(state, "alice") == []


def test_device_records_bring_the_positions_back():
    state, staged = book.empty(), Staged()
    b = shard_book(staged)
    for device in ("phone", "laptop", "tablet"):
        b.apply(state, [book.E_LINK, "bob", device, 0.0])
    for i in (1, 2, 3, 4):
        b.apply(state, message(i))
    for device, upto in (("phone", 3), ("laptop", 1), ("tablet", 1)):
        b.apply(state, confirm("bob", device, upto))
    b.apply(state, [book.E_SEEN, "bob", 7.0, "laptop", False])
    again = book.from_records(dict(state["head"]), list(staged.items()))
    assert {d: book.position(again, "bob", d) for d in ("phone", "laptop", "tablet")} == \
        {"phone": 3, "laptop": 1, "tablet": 1}
    assert [(dev.user, dev.name) for dev in again["by_seen"]] == [("bob", "phone"), ("bob", "tablet"), ("bob", "laptop")]
    assert again["inbox"]["bob"] == state["inbox"]["bob"]


# -- the service -------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    return World(str(tmp_path / "chat"))


def items(world, device_pid, kind=None):
    return [(i[1], i[2]) for i in world.took(device_pid) if kind is None or i[1] == kind]


def test_every_device_gets_every_message_and_the_senders_others_a_copy(world):
    aphone, aphonedev, _ = world.connect("alice", "phone")
    _, alaptop, _ = world.connect("alice", "laptop")
    bphone, bphonedev, _ = world.connect("bob", "phone")
    _, blaptop, _ = world.connect("bob", "laptop")
    assert world.run(world.svc.attached(world.node, bphone))["devices"] == 2
    msg_id = world.run(world.svc.send(world.node, aphone, "bob", "c1", b"hi"))
    world.node.run_for(0.01)
    assert items(world, bphonedev) == items(world, blaptop) == [("m", msg_id)]
    assert items(world, alaptop) == items(world, aphonedev) == [("s", msg_id)]  # every device of hers
    assert world.took(alaptop)[0][3:] == ["bob", b"hi"]
    world.confirm_all(bphone, bphonedev)
    world.node.run_for(0.01)
    assert items(world, alaptop, "r") == [("r", msg_id)] and world.took(alaptop)[-1][3] == DELIVERED
    assert len(world.run(world.svc.pending(world.node, "bob"))) == 1  # held for bob's laptop


def test_a_read_on_one_device_is_one_receipt_and_the_other_devices_learn_it(world):
    alice, adev, _ = world.connect("alice")
    bphone, bphonedev, _ = world.connect("bob", "phone")
    blaptop, blaptopdev, _ = world.connect("bob", "laptop")
    msg_id = world.run(world.svc.send(world.node, alice, "bob", "c1", b"hi"))
    world.node.run_for(0.01)
    world.run(world.svc.read(world.node, bphone, [msg_id]))
    world.run(world.svc.read(world.node, blaptop, [msg_id]))  # read there too: no second receipt
    world.node.run_for(0.01)
    assert [(i[2], i[3]) for i in world.took(adev)] == [(msg_id, READ)]  # a read implies delivered
    assert items(world, blaptopdev, "v") == items(world, bphonedev, "v") == [("v", msg_id)]


def test_a_device_count_that_comes_late_stops_no_copies(world):
    """The count casts of one shard to a session may be reordered (a network between
    nodes): an older, lower one arriving last must not stop the copies."""
    phone, phonedev, _ = world.connect("alice", "phone")
    _, laptop, _ = world.connect("alice", "laptop")
    world.connect("bob")
    world.node.run_for(0.01)
    world.node.cast(phone, ("devices", 1))  # from before the laptop was linked
    msg_id = world.run(world.svc.send(world.node, phone, "bob", "c1", b"hi"))
    world.node.run_for(0.01)
    assert items(world, laptop, "s") == items(world, phonedev, "s") == [("s", msg_id)]


def test_a_device_that_was_offline_catches_up_on_what_it_missed(world):
    alice, _, _ = world.connect("alice")
    bphone, bphonedev, _ = world.connect("bob", "phone")
    blaptop, _, _ = world.connect("bob", "laptop")
    world.run(world.svc.disconnect(world.node, blaptop))
    ids = [world.run(world.svc.send(world.node, alice, "bob", i, b"m%d" % i)) for i in range(5)]
    world.node.run_for(0.01)
    world.confirm_all(bphone, bphonedev)  # the phone took them all: delivered
    world.restart()  # what the laptop lacks is kept across a restart
    _, laptop, _ = world.connect("bob", "laptop")
    world.node.run_for(0.01)
    assert [i[2] for i in world.took(laptop)] == ids
    assert [d[:2] for d in world.run(world.svc.devices(world.node, "bob"))] == [["phone", False], ["laptop", True]]


def test_past_the_device_limit_a_device_is_refused_until_one_is_unlinked(tmp_path):
    world = World(str(tmp_path / "chat"), max_devices=2)
    world.connect("bob", "phone")
    laptop, _, laptop_frames = world.connect("bob", "laptop")
    tablet, _, frames = world.connect("bob", "tablet")
    with pytest.raises(QuotaExceeded, match=r"'bob' has 2 devices linked \('phone', 'laptop'\).*unlink one"):
        world.run(world.svc.attached(world.node, tablet))
    world.node.run_for(0.01)
    assert not world.node.is_alive(tablet) and frames[-1][0] == "closed" and "device limit" in frames[-1][1]
    with pytest.raises(BadRequest, match="'bob' has no device 'tablet' linked"):
        world.run(world.svc.unlink(world.node, "bob", "tablet"))
    assert world.run(world.svc.unlink(world.node, "bob", "laptop")) == "ok"
    world.node.run_for(0.01)
    assert laptop_frames[-1] == ("closed", "unlinked") and not world.node.is_alive(laptop)
    tablet, _, _ = world.connect("bob", "tablet")
    assert world.run(world.svc.attached(world.node, tablet))["new"] is True
    assert [d[0] for d in world.run(world.svc.devices(world.node, "bob"))] == ["phone", "tablet"]


def test_a_device_unseen_for_the_expiry_is_unlinked_and_its_backlog_dropped(tmp_path):
    world = World(str(tmp_path / "chat"), device_expiry=60.0, resend_after=1.0)
    alice, _, _ = world.connect("alice")
    bphone, bphonedev, _ = world.connect("bob", "phone")
    blaptop, _, _ = world.connect("bob", "laptop")
    world.run(world.svc.disconnect(world.node, blaptop))
    world.node.run_for(0.01)
    world.run(world.svc.send(world.node, alice, "bob", 1, b"m"))
    world.node.run_for(0.01)
    world.confirm_all(bphone, bphonedev)
    world.node.run_for(50.0)  # the phone stays connected: seen all along
    assert len(world.run(world.svc.pending(world.node, "bob"))) == 1  # kept for the laptop
    world.node.run_for(15.0)
    assert [d[0] for d in world.run(world.svc.devices(world.node, "bob"))] == ["phone"]
    assert world.run(world.svc.pending(world.node, "bob")) == []
    blaptop, laptop, _ = world.connect("bob", "laptop")
    assert world.run(world.svc.attached(world.node, blaptop))["new"] is True  # a new device now
    world.node.run_for(0.01)
    assert world.took(laptop) == []  # it starts where the phone is


def test_a_connected_device_is_not_taken_for_gone_when_its_shard_restarts(tmp_path):
    world = World(str(tmp_path / "chat"), device_expiry=8.0, resend_after=1.0)
    bob, _, _ = world.connect("bob", "phone")
    world.node.run_for(20.0)  # connected all along: marked seen now and then
    world.node.exit(world.svc.router.locate("bob"), "kill")
    world.node.exit(bob, "kill")  # ...and its session dies unheard by the shard
    world.node.run_for(3.0)  # the restarted shard ticks: the phone is not connected
    bob, _, _ = world.connect("bob", "phone")
    assert world.run(world.svc.attached(world.node, bob))["new"] is False
