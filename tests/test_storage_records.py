"""Records: a persistent server that owns many values saves each on its own, only when it
changed, in the same group commit as its state; a restart recovers them all."""
from __future__ import annotations

import lmdb
import pytest

from actors import CallExit, Node
from storage import EventSourcedServer, LimitExceeded, PersistentServer, StaleWrite, Store
from storage.store import FORMAT, MARKER, _MARKER_PAYLOAD, encode_value
from storage_servers import Restarter


class Boxes(PersistentServer):
    """user -> list of texts, a record each; the state counts the messages."""

    def initial_state(self):
        return {"messages": 0}

    def recover_records(self, records):
        self.boxes = dict(records)

    def handle_call(self, request, caller):
        op, *args = request
        if op == "add":
            user, text = args
            self.boxes.setdefault(user, []).append(text)
            self.put_record(user, self.boxes[user])
            self.state["messages"] += 1
        elif op == "drop":
            self.boxes.pop(args[0], None)
            self.delete_record(args[0])
        elif op == "flash":  # made and gone within one turn: the store never sees it
            self.put_record(args[0], ["brief"], new=True)
            self.delete_record(args[0])
        elif op == "again":  # deleted, then made anew (it may be stored: not new), then deleted
            self.delete_record(args[0])
            self.put_record(args[0], ["back"], new=True)
            self.delete_record(args[0])
        elif op == "big":
            self.put_record(args[0], "x" * args[1])
        elif op == "crash":
            self.put_record("ghost", [1])
            raise RuntimeError("crashed after staging a record")
        return {"state": self.state, "boxes": self.boxes}

    def handle_cast(self, request):
        self.handle_call(request, None)


class Log(EventSourcedServer):
    """An event-sourced counter per name, each name a record staged in apply."""

    snapshot_every = 3

    def initial_state(self):
        return {"events": 0}

    def recover_records(self, records):
        self.counts = dict(records)

    def apply(self, event):
        self.state["events"] += 1
        self.counts[event] = self.counts.get(event, 0) + 1
        self.put_record(event, self.counts[event])

    def handle_call(self, request, caller):
        if request != "get":
            self.persist(request)
        return self.counts


class Tally(PersistentServer):
    """Counts per name; `split` keeps them as records (else in its state, as it once did)."""

    split = True

    def initial_state(self):
        return {"counts": {}} if not self.split else {}

    def recover_records(self, records):
        self.counts = self.take_table("counts", records)

    def handle_call(self, name, caller):
        if not self.split:  # the layout before records
            self.state["counts"][name] = self.state["counts"].get(name, 0) + 1
            return self.state["counts"]
        self.counts[name] = self.counts.get(name, 0) + 1
        self.put_record(("counts", name), self.counts[name])
        return self.counts


class OldTally(Tally):
    split = False

    def recover_records(self, records):
        pass


class NoRecover(PersistentServer):
    def handle_call(self, request, caller):
        self.put_record("k", 1)
        return "ok"


def boot(path, seed=1, **options):
    node = Node(seed=seed)
    return node, Store(path, node, mode="process", **options)


def call(node, pid, request):
    return node.run_until_complete(node.call(pid, request, 5.0))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


def test_records_survive_a_restart_and_a_save_writes_only_what_changed(path):
    node, store = boot(path)
    pid = node.spawn(Boxes, store, "boxes")
    for i in range(50):
        call(node, pid, ("add", f"u{i}", f"hello {i}"))
    writes = store.writes
    call(node, pid, ("add", "u7", "again"))
    assert store.writes - writes == 2  # the small state and u7's record, not 50 records
    call(node, pid, ("drop", "u3"))
    store.close()
    node, store = boot(path, seed=2)
    got = call(node, node.spawn(Boxes, store, "boxes"), ("add", "u8", "x"))
    assert got["state"] == {"messages": 52}
    assert len(got["boxes"]) == 49 and "u3" not in got["boxes"]
    assert got["boxes"]["u7"] == ["hello 7", "again"] and got["boxes"]["u8"] == ["hello 8", "x"]
    assert store.read_records("boxes")["u8"] == ["hello 8", "x"]


def test_a_new_record_deleted_before_its_save_costs_nothing_and_a_stored_one_is_deleted(path):
    node, store = boot(path)
    pid = node.spawn(Boxes, store, "boxes")
    call(node, pid, ("add", "kept", "x"))
    writes = store.writes
    call(node, pid, ("flash", "tmp"))
    assert store.writes == writes  # nothing at all: the record never reaches the store
    call(node, pid, ("again", "kept"))
    assert "kept" not in store.read_records("boxes")  # a stored record marked new stays deletable


def test_a_crashed_turn_stages_nothing_and_tuple_keys_come_back_as_tuples(path):
    node, store = boot(path)
    pid = node.spawn(Boxes, store, "boxes")
    call(node, pid, ("add", ("room", 1), "hi"))
    with pytest.raises(CallExit):
        call(node, pid, ("crash",))
    again = node.spawn(Boxes, store, "boxes")
    assert call(node, again, ("add", "u", "x"))["boxes"] == {("room", 1): ["hi"], "u": ["x"]}
    assert "ghost" not in store.read_records("boxes")


def test_a_restart_in_the_same_pass_sees_its_predecessors_pending_records(path):
    node = Node(seed=1, batch=1)  # one message per turn: the crash is a turn of its own
    store = Store(path, node, mode="process")
    sup = node.spawn(Restarter, store, Boxes, "boxes")
    child = call(node, sup, "child")
    node.cast(child, ("add", "a", "1"))
    node.cast(child, ("crash",))  # crashes the turn after the one that wrote
    node.run()
    restarted, commits_at_restart = call(node, sup, "restarted")
    assert commits_at_restart == 0  # the record was still pending when it restarted
    assert call(node, restarted, ("add", "b", "2"))["boxes"] == {"a": ["1"], "b": ["2"]}


def test_event_sourced_records_are_written_at_snapshots_and_the_tail_replays(path):
    node, store = boot(path)
    pid = node.spawn(Log, store, "log")
    for name in "aabab":  # 5 events: a snapshot after the 3rd, two in the journal
        call(node, pid, name)
    assert store.read_records("log") == {"a": 2, "b": 1}  # as of the snapshot
    assert store.read("log")[2] == ["a", "b"]  # the tail
    store.close()
    node, store = boot(path, seed=2)
    pid = node.spawn(Log, store, "log")
    assert call(node, pid, "get") == {"a": 3, "b": 2}
    call(node, pid, "c")  # the 6th event: a snapshot of what changed since the 3rd
    assert store.read_records("log") == {"a": 3, "b": 2, "c": 1} and store.read("log")[2] == []


def test_a_stale_incarnation_writes_no_records(path):
    node, store = boot(path)
    old = node.spawn(Boxes, store, "boxes")
    new = node.spawn(Boxes, store, "boxes")
    call(node, new, ("add", "a", "new"))
    with pytest.raises(CallExit) as info:
        call(node, old, ("add", "b", "old"))
    assert isinstance(info.value.reason, StaleWrite)
    assert store.read_records("boxes") == {"a": ["new"]}


def test_power_loss_takes_back_unsynced_records_with_their_state(tmp_path):
    node = Node(seed=1)
    store = Store(str(tmp_path / "s"), node, simulated=True, mode="process")
    pid = node.spawn(Boxes, store, "boxes")
    call(node, pid, ("add", "a", "1"))
    store.sync()
    call(node, pid, ("add", "a", "2"))
    call(node, pid, ("drop", "a"))
    assert store.power_loss() == 2
    node = Node(seed=2)
    store = Store(str(tmp_path / "s"), node, simulated=True, mode="process")
    assert call(node, node.spawn(Boxes, store, "boxes"), ("add", "b", "x"))["boxes"] == {"a": ["1"], "b": ["x"]}


def test_record_limits_and_a_class_that_cannot_recover_its_records(path):
    node, store = boot(path, max_value_bytes=1000)
    pid = node.spawn(Boxes, store, "boxes")
    with pytest.raises(CallExit) as info:
        call(node, pid, ("big", "k", 2000))
    assert isinstance(info.value.reason, LimitExceeded) and "max_value_bytes is 1000" in str(info.value.reason)
    pid = node.spawn(Boxes, store, "boxes")
    with pytest.raises(CallExit) as info:
        call(node, pid, ("big", "k" * 600, 1))
    assert isinstance(info.value.reason, LimitExceeded) and "record key" in str(info.value.reason)
    with pytest.raises(CallExit) as info:
        call(node, node.spawn(NoRecover, store, "other"), "go")
    assert isinstance(info.value.reason, TypeError) and "recover_records" in str(info.value.reason)


def test_take_table_moves_a_dict_stored_in_the_state_to_records(path):
    node, store = boot(path)
    old = node.spawn(OldTally, store, "tally")
    for name in "aab":
        call(node, old, name)
    node.exit(old, "kill")
    node.run()
    assert store.read("tally")[1] == {"counts": {"a": 2, "b": 1}}
    new = node.spawn(Tally, store, "tally")  # converted at start: its init is saved like a turn
    node.run()
    assert store.read("tally")[1] == {} and store.read_records("tally") == {("counts", "a"): 2, ("counts", "b"): 1}
    assert call(node, new, "b") == {"a": 2, "b": 2}


def test_a_store_written_before_records_existed_opens_and_keeps_its_data(path):
    env = lmdb.open(path, max_dbs=3)  # the layout of a store made before the records database
    with env.begin(write=True) as txn:
        for name in (b"meta", b"snapshots", b"journal"):
            env.open_db(name, txn=txn)
        txn.put(b"format", encode_value(MARKER, FORMAT, _MARKER_PAYLOAD), db=env.open_db(b"meta", txn=txn))
    env.close()
    node, store = boot(path)
    assert call(node, node.spawn(Boxes, store, "boxes"), ("add", "a", "1"))["boxes"] == {"a": ["1"]}
