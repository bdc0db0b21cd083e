"""Spotify-style collaborative playlists through the public API: the CRDT document as
pure functions, then the service on a real LMDB store (edits, devices offline and back,
epochs, the play queue, bad input), then several server nodes in a simulated network
(multi-master edits, a partition healed, a node restarted)."""
from __future__ import annotations

import pytest

from actors import CallTimeout, Node, StartError, packb
from apps.playlists import (BadRequest, Device, PlaylistConfig, PlaylistService, UnknownPlaylist,
                            Unavailable)
from apps.playlists import doc as pdoc
from apps.playlists.doc import PlaylistDoc
from apps.playlists.replica import stored_document
from sim.core import Simulation
from storage import Store

# -- the document ------------------------------------------------------------------------------


def merged(*docs):
    """Every doc given every other's whole state; their views."""
    updates = [d.encode() for d in docs]
    for d in docs:
        for u in updates:
            d.apply(u)
    return [d.view() for d in docs]


def test_concurrent_edits_merge_to_one_order_byte_for_byte_in_any_order():
    a, b, c = (PlaylistDoc(cid) for cid in (11, 22, 33))
    for i, d in enumerate((a, b, c)):
        for k in range(5):
            d.insert([f"{i}.{k}", f"track{k}", f"u{i}"], k // 2)
        d.set_meta("name", f"from {i}")
    views = merged(a, b, c)
    assert views[0] == views[1] == views[2] and len(views[0]) == 15
    assert a.encode() == b.encode() == c.encode()
    assert a.meta() == c.meta() and a.meta()["name"] in ("from 0", "from 1", "from 2")
    assert PlaylistDoc(44, a.encode()).view() == views[0]  # a document opened from its bytes


def test_two_concurrent_moves_show_the_entry_once_and_a_remove_wins_over_a_move():
    a, b = PlaylistDoc(1), PlaylistDoc(2)
    for k in range(4):
        a.insert([f"e{k}", f"t{k}", "u"])
    merged(a, b)
    assert a.move("e0", 3) and b.move("e0", 1)
    view_a, view_b = merged(a, b)
    assert view_a == view_b and [e[0] for e in view_a].count("e0") == 1
    assert len(a.raw) == 5  # two copies, one shown
    assert a.move("e1", 0) and b.remove("e1", epoch=0)
    view_a, view_b = merged(a, b)
    assert view_a == view_b and "e1" not in [e[0] for e in view_a]
    assert not a.remove("e1", epoch=0) and not a.move("e1", 0)  # gone for good


def test_entries_are_lists_of_three_ids():
    doc = PlaylistDoc(5)
    with pytest.raises(pdoc.BadUpdate, match="entry id, track, user"):
        doc.insert({"id": "e", "track": "t", "by": "u"})  # (a dict would not encode the same twice)
    with pytest.raises(pdoc.BadUpdate, match="1..64 characters"):
        doc.insert(["e", "t" * 65, "u"])


def test_carrying_edits_to_a_new_epoch_keeps_them_and_twice_is_harmless():
    old = PlaylistDoc(1)
    for k in range(6):
        old.insert([f"e{k}", f"t{k}", "u"])
    base, base_bytes = old.snapshot(), old.encode()
    old.remove("e1", 0)  # edits the new epoch's first document does not have
    old.move("e5", 0)
    old.insert(["n1", "t9", "v"], 2)
    old.set_meta("name", "renamed")
    fresh = PlaylistDoc(2, pdoc.compacted(PlaylistDoc(0, base_bytes), 7))
    intents = pdoc.diff(base, old.snapshot())
    assert sorted(op[0] for op in intents) == ["add", "meta", "mv", "rm"]
    pdoc.replay(fresh, intents, 1)
    once = list(fresh.view())
    assert once == old.view() and fresh.meta()["name"] == "renamed"
    pdoc.replay(fresh, intents, 1)
    assert fresh.view() == once


def test_compaction_keeps_the_view_and_the_newest_removals_and_drops_tombstones(monkeypatch):
    doc = PlaylistDoc(1)
    for k in range(300):
        doc.insert([f"e{k}", "spotify:track:x", "u"])
    for k in range(0, 300, 2):
        doc.remove(f"e{k}", epoch=k // 100)
    fresh = PlaylistDoc(9, pdoc.compacted(doc, 8))
    assert fresh.view() == doc.view() and len(fresh.raw) == 150
    assert fresh.removed == doc.removed  # epochs later too: a device may be several behind
    assert len(fresh.encode()) < len(doc.encode())
    monkeypatch.setattr(pdoc, "MAX_REMOVED", 60)
    later = PlaylistDoc(9, pdoc.compacted(fresh, 8))
    assert later.removed == {f"e{k}": 2 for k in range(200, 300, 2)} | {f"e{k}": 1 for k in range(180, 200, 2)}
    assert later.view() == doc.view()


def test_an_acknowledged_remove_stays_removed_when_a_device_rebases_across_two_epochs():
    """A device's add reaches the server but the answer is lost; another device removes
    the entry (acknowledged); the playlist then changes epochs twice before the first
    device rebases, carrying its add (unacknowledged, for all it knows) over as an intent.
    The removal must still be known to the newest epoch, or the entry comes back."""
    server, dev = PlaylistDoc(1), PlaylistDoc(2)
    dev.insert(["a", "t", "u"])
    server.apply(dev.encode())
    dev_base = PlaylistDoc(3, server.encode()).snapshot()  # the device's last answered sync
    dev.insert(["lost", "t", "u"])  # its sync reaches the server; the answer does not
    server.apply(dev.encode())
    assert server.remove("lost", epoch=0)  # another device's remove, acknowledged
    epoch = 0
    for _ in range(2):  # compacted twice while the device is away
        epoch += 1
        server = PlaylistDoc(10 + epoch, pdoc.compacted(server, 20 + epoch))
    fresh = PlaylistDoc(2, server.encode())
    pdoc.replay(fresh, pdoc.diff(dev_base, dev.snapshot()), epoch)
    assert [e[0] for e in fresh.view()] == ["a"]


def test_a_merged_update_that_is_not_a_playlist_edit_is_refused_by_name():
    junk = PlaylistDoc(2)
    junk._items.append(["only", "two"])
    with pytest.raises(pdoc.BadUpdate, match="entry id, track, user"):
        PlaylistDoc(1).merge(junk.encode(), 1 << 20)
    with pytest.raises(pdoc.BadUpdate, match="does not decode"):
        PlaylistDoc(3).merge(b"\x01\x02garbage", 1 << 20)
    with pytest.raises(pdoc.BadUpdate, match="at most 10 bytes"):
        PlaylistDoc(3).merge(bytes(11), 10)
    with pytest.raises(pdoc.BadUpdate, match="state vector"):
        pdoc.clocks(b"\x05\x01")


# -- the service on one node --------------------------------------------------------------------


def one_node(tmp_path, seed=1, **config):
    node = Node(seed=seed)
    store = Store(tmp_path / "store", node, mode="process")
    service = PlaylistService(node, store, PlaylistConfig(**config))
    service.start()
    return node, store, service


def test_edits_through_the_service_and_the_view(tmp_path):
    node, _, service = one_node(tmp_path)
    run = node.run_until_complete
    assert run(service.create(node, "mix", "Mix")) == 0
    assert run(service.create(node, "mix", "Mix")) == 0  # a retried create
    first = run(service.add(node, "mix", "spotify:track:1", "ann"))
    second = run(service.add(node, "mix", "spotify:track:2", "bob", 0))
    assert [e[1] for e in run(service.view(node, "mix"))["entries"]] == ["spotify:track:2", "spotify:track:1"]
    assert run(service.move(node, "mix", second, 1)) is True
    assert run(service.remove(node, "mix", first)) is True and run(service.remove(node, "mix", first)) is False
    run(service.rename(node, "mix", "Friday")), run(service.describe(node, "mix", "for the drive"))
    view = run(service.view(node, "mix"))
    assert view["entries"] == [(second, "spotify:track:2", "bob")]
    assert (view["name"], view["description"], view["epoch"]) == ("Friday", "for the drive", 0)


def test_bad_input_gets_a_clear_error_and_changes_nothing(tmp_path):
    node, _, service = one_node(tmp_path, max_tracks=2)
    run = node.run_until_complete
    run(service.create(node, "mix", "Mix"))
    run(service.add(node, "mix", "t1", "ann"))
    with pytest.raises(UnknownPlaylist, match="no playlist 'nope'"):
        run(service.add(node, "nope", "t", "ann"))
    with pytest.raises(BadRequest, match="track id must be a str"):
        service.add(node, "mix", "", "ann")
    with pytest.raises(BadRequest, match="position is an int"):
        service.add(node, "mix", "t2", "ann", -1)
    with pytest.raises(BadRequest, match="name is a str of at most 100"):
        run(service.rename(node, "mix", "x" * 101))
    run(service.add(node, "mix", "t2", "ann"))
    with pytest.raises(BadRequest, match="holds 2 tracks"):
        run(service.add(node, "mix", "t3", "ann"))
    with pytest.raises(BadRequest, match="does not decode"):
        run(service.sync(node, "mix", 0, b"\x00", b"\x07not an update", b"\x00"))
    junk = PlaylistDoc(77)
    junk._items.append([1, 2, 3])
    with pytest.raises(BadRequest, match="entry id, track, user"):
        run(service.sync(node, "mix", 0, b"\x00", junk.encode(), b"\x00"))
    with pytest.raises(BadRequest, match="state vector"):
        run(service.sync(node, "mix", 0, b"\xff", b"\x00\x00", b"\x00"))
    view = run(service.view(node, "mix"))  # the replica threw the bad update away
    assert [e[1] for e in view["entries"]] == ["t1", "t2"] and view["name"] == "Mix"


def test_devices_edit_offline_and_merge_when_they_sync(tmp_path):
    node, _, service = one_node(tmp_path)
    run = node.run_until_complete
    run(service.create(node, "trip", "Trip"))
    phone, laptop = Device.spawn(node, service, 101), Device.spawn(node, service, 202)
    run(phone.open(node, "trip")), run(laptop.open(node, "trip"))
    a = run(phone.add(node, "trip", "spotify:track:a", "ann"))  # both offline: nothing synced
    b = run(laptop.add(node, "trip", "spotify:track:b", "bob"))
    run(laptop.rename(node, "trip", "Road trip"))
    assert run(service.view(node, "trip"))["entries"] == []
    assert run(phone.sync(node, "trip")) == {"acked": 1, "epoch": 0, "pending": 0}
    assert run(laptop.sync(node, "trip"))["acked"] == 2
    run(phone.sync(node, "trip"))
    server, on_phone, on_laptop = (run(service.view(node, "trip")), run(phone.view(node, "trip")),
                                   run(laptop.view(node, "trip")))
    assert {e[0] for e in server["entries"]} == {a, b} and server["name"] == "Road trip"
    assert on_phone["entries"] == server["entries"] == on_laptop["entries"]


def test_an_acknowledged_edit_survives_a_node_restart(tmp_path):
    node, store, service = one_node(tmp_path, snapshot_every=7)  # recovery: a snapshot and a tail
    run = node.run_until_complete
    run(service.create(node, "keep", "Keep"))
    device = Device.spawn(node, service, 7)
    run(device.open(node, "keep"))
    entries = []
    for i in range(30):
        entries.append(run(device.add(node, "keep", f"t{i}", "ann")))
        run(device.sync(node, "keep"))  # one stored update each
    assert store.read(("playlist", "keep"))[0] == 31 and len(store.read(("playlist", "keep"))[2]) == 2
    store.close()  # the node goes away; a new one opens the same files
    node2 = Node(seed=2)
    again = PlaylistService(node2, Store(tmp_path / "store", node2), PlaylistConfig(snapshot_every=7))
    again.start()
    assert [e[0] for e in node2.run_until_complete(again.view(node2, "keep"))["entries"]] == entries


def test_a_compaction_starts_an_epoch_and_an_offline_device_rebases_onto_it(tmp_path):
    node, store, service = one_node(tmp_path, compact_bytes=300, snapshot_every=10)
    run = node.run_until_complete
    run(service.create(node, "big", "Big"))
    away = Device.spawn(node, service, 9)
    run(away.open(node, "big"))
    kept = run(service.add(node, "big", "keep", "ann"))
    mine = run(away.add(node, "big", "offline-add", "dev"))  # made offline, in epoch 0
    churned = []
    for i in range(40):  # churn: tombstones pile up until the home compacts
        churned.append(run(service.add(node, "big", f"t{i}", "ann")))
        run(service.remove(node, "big", churned[-1]))
    view = run(service.view(node, "big"))
    assert view["epoch"] >= 1 and [e[0] for e in view["entries"]] == [kept]
    answer = run(away.sync(node, "big"))
    assert answer == {"acked": 1, "epoch": view["epoch"], "pending": 0}
    assert [e[0] for e in run(service.view(node, "big"))["entries"]] == [mine, kept]  # where the device put it
    found = stored_document(store.read(("playlist", "big")))
    assert found[0] == view["epoch"] and set(found[1].removed) == set(churned)
    assert len(found[1].encode()) < 1000 + 40 * 30  # the view and a removal record (id, epoch) each


def test_the_queue_follows_the_playlist_and_the_next_track_is_prefetched(tmp_path):
    node, _, service = one_node(tmp_path, origin_latency=0.2, head_seconds=1.0)
    run = node.run_until_complete
    run(service.create(node, "q", "Q"))
    for track in ("t1", "t2", "t3"):
        run(service.add(node, "q", track, "ann"))
    now = run(service.play(node, "ann", "q", 320))
    assert (now["track"], now["cached"], now["next"], now["bytes"]) == ("t1", False, "t2", 40_000)
    node.run_for(1.0)  # t1 plays; t2's head arrives meanwhile
    now = run(service.next_track(node, "ann"))
    assert (now["track"], now["cached"]) == ("t2", True)
    run(service.add(node, "q", "t4", "bob"))  # the queue plays what the playlist holds now
    node.run_for(1.0)
    assert [run(service.next_track(node, "ann"))["track"] for _ in range(3)] == ["t3", "t4", None]
    with pytest.raises(BadRequest, match="not playing anything"):
        run(service.next_track(node, "ann"))
    with pytest.raises(BadRequest, match="bitrate is one of"):
        service.play(node, "ann", "q", 128)
    assert run(service.edge_stats(node))["prefetched"] >= 3


def test_a_remove_stays_removed_when_a_device_whose_answer_was_lost_comes_back_epochs_later(tmp_path):
    node, _, service = one_node(tmp_path, compact_bytes=300, snapshot_every=10)
    run = node.run_until_complete
    run(service.create(node, "mix", "Mix"))

    class AnswerLost:
        """The node, except that one sync reaches it and its answer does not come back."""
        lose = False

        async def sync(self, caller, *args):
            answer = await service.sync(caller, *args)
            if self.lose:
                self.lose = False
                raise CallTimeout("the node", ("sync",), 1.0)
            return answer

    lossy = AnswerLost()
    phone, laptop = Device.spawn(node, lambda: lossy, 31), Device.spawn(node, service, 32)
    run(phone.open(node, "mix")); run(laptop.open(node, "mix"))
    gone = run(phone.add(node, "mix", "spotify:track:7", "ann"))
    lossy.lose = True
    with pytest.raises(Unavailable):
        run(phone.sync(node, "mix"))  # stored on the node; the phone does not know it
    run(laptop.sync(node, "mix"))
    assert run(laptop.remove(node, "mix", gone))
    assert run(laptop.sync(node, "mix"))["pending"] == 0  # the remove is acknowledged
    for i in range(80):  # churn until the playlist is two epochs on
        run(service.remove(node, "mix", run(service.add(node, "mix", f"t{i}", "bob"))))
        if run(service.view(node, "mix"))["epoch"] >= 2:
            break
    assert run(service.view(node, "mix"))["epoch"] >= 2
    assert run(phone.sync(node, "mix"))["pending"] == 0  # rebased from epoch 0, its add carried over
    for device in (phone, laptop):
        run(device.sync(node, "mix"))
        assert gone not in [e[0] for e in run(device.view(node, "mix"))["entries"]]
    assert gone not in [e[0] for e in run(service.view(node, "mix"))["entries"]]


def test_device_bad_input_and_offline_open(tmp_path):
    node, _, service = one_node(tmp_path)
    run = node.run_until_complete
    run(service.create(node, "p", "P"))
    device = Device.spawn(node, service, 3)
    with pytest.raises(BadRequest, match="not open on this device"):
        run(device.add(node, "p", "t", "u"))
    with pytest.raises(UnknownPlaylist):
        run(device.open(node, "missing"))
    run(device.open(node, "p"))
    with pytest.raises(BadRequest, match="cannot take the edit"):
        run(device.move(node, "p", "x", None))
    with pytest.raises(StartError, match="client id is an int"):
        Device.spawn(node, service, 0)
    run(service.stop())
    node.run()
    run(device.add(node, "p", "t", "u"))  # offline: the edit is made on the device
    with pytest.raises(Unavailable):
        run(device.sync(node, "p"))
    assert (run(device.view(node, "p"))["edits"], run(device.view(node, "p"))["acked"]) == (1, 0)


# -- several nodes ---------------------------------------------------------------------------------


class Cluster:
    """Server nodes running the playlist service on real stores, in one simulation, and a
    "clients" node whose coroutines `do` runs to completion."""

    def __init__(self, tmp_path, names=("pl1", "pl2", "pl3"), seed=1, **config):
        self.sim = Simulation(seed)
        self.config = PlaylistConfig(nodes=tuple(names), seed=seed, sync_every=0.2, **config)
        self.services: dict[str, PlaylistService] = {}
        self.stores: dict[str, Store] = {}
        self.tmp = tmp_path
        for name in names:
            self.sim.add_node(name, self._boot)
        self.sim.add_node("clients", lambda node: None, targets=False)

    def _boot(self, node):
        if node.name in self.stores:
            self.stores[node.name].close()
        store = self.stores[node.name] = Store(self.tmp / node.name, node, simulated=True)
        service = self.services[node.name] = PlaylistService(node, store, self.config, resolve=self.resolve)
        service.start()

    def resolve(self, node_name, name):
        node = self.sim.node(node_name)
        return node.whereis(name) if node is not None else None

    def do(self, fn, within=10.0):
        box = {}

        async def body(proc):
            try:
                box["ok"] = await fn(proc)
            except Exception as exc:  # noqa: BLE001 - handed to the test
                box["error"] = exc

        self.sim.node("clients").spawn(body)
        end = self.sim.now + within
        while not box and self.sim.now < end:
            self.sim.run(self.sim.now + 0.05)
        if "error" in box:
            raise box["error"]
        assert box, f"no answer within {within} s"
        return box["ok"]

    def stored(self, name, playlist):
        found = stored_document(self.stores[name].read(("playlist", playlist)))
        return None if found is None else (found[0], found[1].view(), found[1].meta())


def test_every_node_takes_edits_and_all_replicas_converge(tmp_path):
    world = Cluster(tmp_path)
    svc = world.services
    world.do(lambda p: svc["pl1"].create(p, "shared", "Shared"))
    for i, name in enumerate(("pl1", "pl2", "pl3", "pl2")):
        world.do(lambda p, name=name, i=i: svc[name].add(p, "shared", f"t{i}", name))
    world.sim.run(world.sim.now + 2.0)
    first = world.stored("pl1", "shared")
    assert len(first[1]) == 4 and world.stored("pl2", "shared") == first == world.stored("pl3", "shared")


def test_a_partitioned_node_keeps_taking_edits_and_merges_when_healed(tmp_path):
    world = Cluster(tmp_path)
    svc = world.services
    world.do(lambda p: svc["pl1"].create(p, "shared", "Shared"))
    world.sim.run(world.sim.now + 1.0)
    world.sim.network.partition([["pl3"], ["pl1", "pl2", "clients"]])
    world.do(lambda p: svc["pl1"].add(p, "shared", "from-majority", "ann"))
    world.sim.network.heal()
    world.sim.network.partition([["pl3", "clients"], ["pl1", "pl2"]])
    world.do(lambda p: svc["pl3"].add(p, "shared", "from-minority", "bob"))
    assert world.stored("pl1", "shared") != world.stored("pl3", "shared")
    world.sim.network.heal()
    for a in ("pl1", "pl2", "pl3"):
        for b in ("pl1", "pl2", "pl3", "clients"):
            if a != b:
                world.sim.reconnect(a, b)
    world.sim.run(world.sim.now + 3.0)  # the outboxes push what the peers missed
    views = [world.stored(name, "shared") for name in ("pl1", "pl2", "pl3")]
    assert views[0] == views[1] == views[2]
    assert sorted(e[1] for e in views[0][1]) == ["from-majority", "from-minority"]


def test_a_device_moving_to_a_node_that_has_less_sends_it_what_it_lacks(tmp_path):
    world = Cluster(tmp_path)
    svc = world.services
    world.do(lambda p: svc["pl1"].create(p, "moves", "Moves"))
    world.sim.run(world.sim.now + 1.0)
    through = ["pl1"]
    device = Device.spawn(world.sim.node("clients"), lambda: svc[through[0]], 55)
    world.do(lambda p: device.open(p, "moves"))
    world.sim.network.partition([["pl3"], ["pl1", "pl2"]])  # pl3 misses what pl1 takes now
    for name in ("clients",):
        world.sim.reconnect(name, "pl3"), world.sim.reconnect(name, "pl1")
    first = world.do(lambda p: device.add(p, "moves", "t1", "ann"))
    world.do(lambda p: device.sync(p, "moves"))
    through[0] = "pl3"  # the device's next sync goes to pl3, which lacks its first add
    second = world.do(lambda p: device.add(p, "moves", "t2", "ann"))
    assert world.do(lambda p: device.sync(p, "moves"))["acked"] == 2
    assert [e[0] for e in world.stored("pl3", "moves")[1]] == [first, second]  # both stored there


def test_a_replica_that_never_saw_a_playlist_fetches_it_from_its_home(tmp_path):
    world = Cluster(tmp_path)
    svc = world.services
    home = svc["pl1"].ctx.home("solo")
    other = next(n for n in ("pl1", "pl2", "pl3") if n != home)
    world.sim.network.partition([[other], [n for n in ("pl1", "pl2", "pl3", "clients") if n != other]])
    world.do(lambda p: svc[home].create(p, "solo", "Solo"))
    world.sim.network.heal()
    world.sim.reconnect(other, home), world.sim.reconnect(other, "clients")
    assert world.do(lambda p: svc[other].view(p, "solo"))["name"] == "Solo"
    with pytest.raises(UnknownPlaylist):
        world.do(lambda p: svc[other].view(p, "never-created"))
    assert world.do(lambda p: svc[other].create(p, "solo", "Solo")) == 0  # any node's API reaches the home


def test_messages_between_nodes_are_plain_msgpack_values(tmp_path):
    node, _, service = one_node(tmp_path)
    run = node.run_until_complete
    run(service.create(node, "m", "M"))
    answer = run(service.sync(node, "m", 0, b"\x00", b"\x00\x00", b"\x00"))
    assert answer[0] == "ok" and isinstance(answer[3], bytes)
    assert packb(answer)  # what crosses nodes encodes (bytes as msgpack bin)
