"""The store and the persistent servers, through the public API, on a real LMDB file."""
from __future__ import annotations

import asyncio
import os

import lmdb
import pytest
from conftest import arun

from actors import CallExit, CallTimeout, Future, GenServer, Node, StartError
from actors.system import get_state, replace_state
from storage import (CorruptedValue, EventSourcedServer, ForeignStore, FormatVersionError, LimitExceeded,
                     PersistentServer,
                     StaleWrite, Store, StoreFull, StorageIOError, UnencodableValue)
from storage.store import encode_value
from storage_servers import Counter, Ledger, Restarter, checked
from supervision import ChildSpec, Flags, Supervisor, which_children


def boot(path, seed=1, mode="process", **options):
    node = Node(seed=seed)
    return node, Store(path, node, mode=mode, **options)


def call(node, dest, request, timeout=5.0):
    return node.run_until_complete(node.call(dest, request, timeout))


def reopen(store, seed=2, **options):
    """Close the store and start a fresh node on the same files (a node restart)."""
    store.close()
    return boot(store.path, seed=seed, mode=store.mode, **options)


def raw_items(path, db):
    env = lmdb.open(path, max_dbs=3)
    try:
        with env.begin() as txn:
            return list(txn.cursor(db=env.open_db(db, txn=txn, create=False)))
    finally:
        env.close()


def tamper(path, db, change):
    """Rewrite every value of a sub-database with change(value) (if it returns bytes)."""
    env = lmdb.open(path, max_dbs=3)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db, txn=txn, create=False)
            for key, value in list(txn.cursor(db=handle)):
                new = change(value)
                if new is not None:
                    txn.put(key, new, db=handle)
    finally:
        env.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


class Probe(GenServer):
    """Records, for each message it gets, how many commits the store had made."""

    def init(self, store):
        self.store = store
        self.seen = []

    def handle_info(self, msg):
        self.seen.append((msg, self.store.commits))

    def handle_call(self, request, caller):
        return self.seen


# -- snapshot servers -----------------------------------------------------------------------

def test_state_survives_a_node_restart_and_initial_state_takes_the_spawn_args(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, ("counter", 1), 10)
    assert call(node, pid, ("add", 5)) == 15
    node, store = reopen(store)
    again = node.spawn(Counter, store, ("counter", 1), 99)  # stored state wins over args
    assert call(node, again, "get") == 15
    assert call(node, again, "rev") == 1
    fresh = node.spawn(Counter, store, ("counter", 2), 99)
    assert call(node, fresh, "get") == 99


def test_sync_mode_round_trip(path):
    node, store = boot(path, mode="sync")
    pid = node.spawn(Counter, store, "k")
    assert [call(node, pid, ("add", 1)) for _ in range(3)] == [1, 2, 3]
    node, store = reopen(store)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 3


def test_a_turn_that_changes_nothing_writes_nothing(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k")
    call(node, pid, ("add", 1))
    writes, commits = store.writes, store.commits
    for _ in range(5):
        assert call(node, pid, "get") == 1
    assert (store.writes, store.commits) == (writes, commits)
    assert call(node, pid, "rev") == 1


def test_all_writes_of_one_pass_share_one_commit(path):
    node, store = boot(path)
    pids = [node.spawn(Counter, store, ("c", i)) for i in range(50)]
    for pid in pids:
        node.cast(pid, 2)
        node.cast(pid, 3)  # two messages, one turn, one saved state
    node.run()
    assert store.commits == 1 and store.writes == 50
    node, store = reopen(store)
    assert [call(node, node.spawn(Counter, store, ("c", i)), "get") for i in range(50)] == [5] * 50


@pytest.mark.parametrize("mode, commits_seen", [("process", 1), ("none", 0)])
def test_replies_and_messages_leave_only_after_the_commit(path, mode, commits_seen):
    node, store = boot(path, mode=mode)
    probe = node.spawn(Probe, store)
    pid = node.spawn(Counter, store, "k")
    reply = node.call(pid, ("add_and_tell", probe, 7))
    node.run()  # one pass: the counter's turn, then the probe's (mode none: before the commit)
    assert reply.result() == 7 and store.commits == 1
    assert call(node, probe, "seen") == [(("counter", 7), commits_seen)]


def test_a_failed_commit_crashes_the_writer_and_its_reply_is_never_sent(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k")
    call(node, pid, ("add", 1))
    store.commit_fault = lambda: StorageIOError("injected EIO")
    with pytest.raises(CallExit) as info:
        call(node, pid, ("add", 10))
    assert isinstance(info.value.reason, StorageIOError) and "injected EIO" in str(info.value.reason)
    assert not node.is_alive(pid)
    store.commit_fault = None
    again = node.spawn(Counter, store, "k")
    assert call(node, again, "get") == 1
    assert call(node, again, ("add", 1)) == 2


def test_a_supervisor_restarts_a_server_whose_commit_failed_from_what_was_stored(path):
    node, store = boot(path)
    sup = node.spawn(Supervisor, [ChildSpec("counter", Counter, args=(store, "k"))], Flags())
    [(_, pid, _, _)] = node.run_until_complete(which_children(node, sup))
    call(node, pid, ("add", 1))
    store.commit_fault = lambda: StorageIOError("injected EIO")
    with pytest.raises(CallExit) as info:
        call(node, pid, ("add", 10))
    assert isinstance(info.value.reason, StorageIOError)  # the exit reason the supervisor saw
    store.commit_fault = None
    [(_, restarted, _, _)] = node.run_until_complete(which_children(node, sup))
    assert restarted is not None and restarted != pid
    assert call(node, restarted, "get") == 1


def test_full_disk_fails_commits_until_it_is_freed(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k")
    store.fill_disk(True)
    with pytest.raises(CallExit) as info:
        call(node, pid, ("add", 1))
    assert isinstance(info.value.reason, StoreFull)
    store.fill_disk(False)
    again = node.spawn(Counter, store, "k")
    assert call(node, again, ("add", 2)) == 2


def test_crash_in_a_turn_saves_nothing_of_that_turn(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k")
    call(node, pid, ("add", 1))
    node.cast(pid, 100)  # handled in the same turn as the crash: not acknowledged, not kept
    with pytest.raises(CallExit) as info:
        call(node, pid, ("add_then_crash", 5))
    assert isinstance(info.value.reason, RuntimeError)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 1


def test_a_deliberate_stop_saves_the_state_it_stops_with(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k")
    assert call(node, pid, ("add_then_stop", 5)) == 5
    assert not node.is_alive(pid)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 5


def test_a_restart_in_the_same_pass_sees_its_predecessors_pending_write(path):
    node = Node(seed=1, batch=1)  # one message per turn: the crash is a turn of its own
    store = Store(path, node, mode="process")
    sup = node.spawn(Restarter, store)
    child = call(node, sup, "child")
    node.cast(child, 5)
    node.cast(child, "not a number")  # crashes the turn after the one that wrote
    node.run()
    restarted, commits_at_restart = call(node, sup, "restarted")
    assert commits_at_restart == 0  # the write was still pending when it restarted
    assert call(node, restarted, "get") == 5
    assert call(node, restarted, ("add", 1)) == 6
    node, store = reopen(store)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 6


class Greeter(PersistentServer):
    """Says hello from init, to itself and to `watcher`."""

    def init(self, store, key, watcher):
        super().init(store, key)
        self.send(self.pid, "wake up")
        self.send(watcher, ("hello", self.pid))


def test_what_init_sends_leaves_and_a_server_killed_before_its_first_turn_is_heard_of(path):
    node, store = boot(path)
    done = Future()

    async def watcher(proc):
        pid = proc.spawn(Greeter, store, "g", proc.pid)
        ref = proc.monitor(pid)
        hello = await proc.receive(timeout=1.0)
        proc.exit(pid, "kill")  # before its first turn: its exit must not wait behind "wake up"
        down = await proc.receive(timeout=1.0)
        done.set_result((hello == ("hello", pid), down.ref == ref, down.reason))

    node.spawn(watcher)
    assert node.run_until_complete(done) == (True, True, "killed")


def test_a_stale_incarnation_cannot_overwrite_a_newer_state(path):
    node, store = boot(path)
    old = node.spawn(Counter, store, ("acct", 1))
    call(node, old, ("add", 1))
    new = node.spawn(Counter, store, ("acct", 1))
    assert call(node, new, ("add", 10)) == 11
    with pytest.raises(CallExit) as info:
        call(node, old, ("add", 100))
    reason = info.value.reason
    assert isinstance(reason, StaleWrite) and reason.based_on == 1 and reason.stored == 2
    assert "('acct', 1)" in str(reason)
    assert store.read(("acct", 1))[1] == checked(11)


def test_two_incarnations_writing_in_one_pass_keep_exactly_one(path):
    node, store = boot(path)
    a = node.spawn(Counter, store, "k")
    b = node.spawn(Counter, store, "k")
    node.cast(a, 1)
    node.cast(b, 2)
    node.run()
    alive = [p for p in (a, b) if node.is_alive(p)]
    assert len(alive) == 1
    assert store.read("k")[1]["n"] == call(node, alive[0], "get")


class IdleCounter(Counter):
    idle_timeout = 1.0

    def handle_idle(self):
        self.handle_cast(1)


def test_changes_made_in_handle_idle_are_saved(path):
    node, store = boot(path)
    node.cast(node.spawn(IdleCounter, store, "k"), 1)
    node.run_for(1.5)
    assert store.read("k")[1]["n"] == 2


class Echo(GenServer):
    def init(self, store):
        self.store = store

    def handle_call(self, request, caller):  # what the store holds when the call arrives
        return self.store.read(request)[1]["n"], self.store.writes


class AsyncCounter(Counter):
    async def handle_call(self, request, caller):
        echo, delta = request
        self.handle_cast(delta)
        first = await self.call(echo, self.key)
        self.handle_cast(delta)  # runs when the reply resumes the callback, not in a new turn
        return first, await self.call(echo, self.key)


def test_an_async_callback_saves_before_each_outgoing_call_leaves(path):
    node, store = boot(path)
    echo = node.spawn(Echo, store)
    pid = node.spawn(AsyncCounter, store, "k")
    assert call(node, pid, (echo, 3)) == ((3, 1), (6, 2))  # saved and committed first
    assert call(node, pid, (echo, 4)) == ((10, 3), (14, 4))


def run_real_time(main):
    """Run `main(node)` on a real-time node; the store it makes is closed afterwards."""
    async def runner():
        async with Node() as node:
            return await main(node)

    result, store = arun(runner())
    store.close()
    return result


def test_real_time_commits_overlap_the_next_passes_and_lose_nothing(path):
    async def main(node):
        store = Store(path, node, mode="sync")
        pids = [node.spawn(Counter, store, ("c", i)) for i in range(50)]
        acked = {}
        for round_ in range(20):  # each round: casts and calls over several passes
            for pid in pids[round_ % 7:]:
                node.cast(pid, 1)
            replies = await asyncio.gather(*(node.call(pid, ("add", 1)) for pid in pids[::3]))
            acked.update(zip(range(0, 50, 3), replies))
            await asyncio.sleep(0)
        return acked, store

    acked = run_real_time(main)
    node, store = boot(path)
    for i, n in acked.items():  # nothing acknowledged is lost; casts after it may add more
        assert call(node, node.spawn(Counter, store, ("c", i)), "get") >= n
    assert store.read(("c", 0))[0] > 1


def test_real_time_map_growth_and_commit_failure_on_the_writer(path):
    async def main(node):
        store = Store(path, node, mode="sync", map_size=64 << 10)
        pids = [node.spawn(Counter, store, ("big", i)) for i in range(20)]
        results = await asyncio.gather(*(node.call(pid, ("set", "x" * 20_000)) for pid in pids))
        store.commit_fault = lambda: StorageIOError("injected EIO")
        try:
            await node.call(pids[0], ("set", "lost"))
        except CallExit as exc:
            results.append(exc.reason)
        return results, store

    results = run_real_time(main)
    assert results[:20] == ["ok"] * 20 and isinstance(results[20], StorageIOError)
    node, store = boot(path)
    assert call(node, node.spawn(Counter, store, ("big", 0)), "state") == "x" * 20_000


def test_real_time_restart_reads_writes_still_with_the_writer(path):
    async def main(node):
        store = Store(path, node, mode="sync")
        sup = node.spawn(Restarter, store)
        child = await node.call(sup, "child")
        for _ in range(5):
            node.cast(child, 1)
            await asyncio.sleep(0)  # the write goes to the writer thread...
        node.cast(child, "not a number")  # ...and the restart may read it from there
        while await node.call(sup, "restarted") is None:
            await asyncio.sleep(0)
        restarted, _ = await node.call(sup, "restarted")
        return await node.call(restarted, "get"), store

    assert run_real_time(main) == 5


def run_workload(path, seed):
    node, store = boot(path, seed=seed)
    pids = [node.spawn(Counter, store, ("c", i)) for i in range(8)]
    ledger = node.spawn(Ledger, store, "ledger")
    for round_ in range(5):
        for i, pid in enumerate(pids):
            node.cast(pid, i + round_)
        node.run_until_complete(node.call(ledger, ("append", round_)))
    node.run()
    commits = store.commits
    store.close()
    return commits, raw_items(path, b"snapshots"), raw_items(path, b"journal")


def test_same_seed_same_bytes_on_disk(tmp_path):
    first = run_workload(str(tmp_path / "a"), seed=5)
    assert first == run_workload(str(tmp_path / "b"), seed=5)
    assert first[0] > 1


def test_replace_state_on_a_persistent_server_is_stored_before_it_is_acknowledged(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, "k", 1)
    assert node.run_until_complete(get_state(node, pid)) == checked(1)
    commits = store.commits
    assert node.run_until_complete(replace_state(node, pid, lambda state: checked(41))) == checked(41)
    assert store.commits == commits + 1  # acknowledged means stored
    node, store = reopen(store)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 41


def test_replace_state_on_an_event_sourced_server_is_stored_as_a_snapshot(path):
    node, store = boot(path)
    pid = node.spawn(Ledger, store, "l")
    call(node, pid, ("append", "a"))
    node.run_until_complete(replace_state(node, pid, lambda state: {"items": ["replaced"]}))
    call(node, pid, ("append", "b"))
    node, store = reopen(store)
    assert call(node, node.spawn(Ledger, store, "l"), "get") == ["replaced", "b"]


class Dozing(Counter):
    hibernate_after = 10.0


def test_a_hibernated_persistent_server_still_saves_only_what_changed(path):
    node, store = boot(path)
    pid = node.spawn(Dozing, store, "k", 5)
    call(node, pid, ("add", 1))
    node.run_for(11.0)  # hibernated: it keeps a digest of its saved state, not a copy
    writes = store.writes
    assert call(node, pid, "get") == 6 and store.writes == writes  # unchanged: not written
    assert call(node, pid, ("add", 1)) == 7 and store.writes == writes + 1
    node, store = reopen(store)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 7


class Explicit(Counter):
    """Saves only the turns that call `save()`; "add" does, "add_quietly" does not."""

    save_explicitly = True

    def handle_call(self, request, caller):
        if request[0] == "add_quietly":
            self.handle_cast(request[1])
            return self.state["n"]
        if request[0] == "add_quietly_then_stop":
            self.handle_cast(request[1])
            self.stop("normal")
            return self.state["n"]
        if request[0] in ("add", "add_then_crash", "add_then_stop"):
            self.save()
        return super().handle_call(request, caller)


def test_an_explicitly_saved_state_is_stored_when_saved_and_a_crash_restores_it(path):
    node, store = boot(path)
    pid = node.spawn(Explicit, store, "k")
    writes = store.writes
    assert call(node, pid, ("add", 2)) == 2 and store.writes == writes + 1  # acknowledged means stored
    assert call(node, pid, ("add_quietly", 3)) == 5 and store.writes == writes + 1  # not saved: not encoded
    with pytest.raises(CallExit):
        call(node, pid, ("add_then_crash", 100))
    again = node.spawn(Explicit, store, "k")
    assert call(node, again, "get") == 2  # the last saved state
    assert call(node, again, ("add_quietly", 1)) == 3
    assert call(node, again, ("add", 1)) == 4  # saves the unsaved change with its own
    node, store = reopen(store)
    assert call(node, node.spawn(Explicit, store, "k"), "get") == 4


def test_an_explicit_server_stops_with_its_state_saved_only_if_it_called_save(path):
    node, store = boot(path)
    assert call(node, node.spawn(Explicit, store, "a"), ("add_then_stop", 5)) == 5
    assert call(node, node.spawn(Explicit, store, "b"), ("add_quietly_then_stop", 5)) == 5
    assert call(node, node.spawn(Explicit, store, "a"), "get") == 5
    assert call(node, node.spawn(Explicit, store, "b"), "get") == 0


def test_replace_state_on_an_explicit_server_is_stored_without_a_save(path):
    node, store = boot(path)
    pid = node.spawn(Explicit, store, "k", 1)
    assert node.run_until_complete(replace_state(node, pid, lambda state: checked(41))) == checked(41)
    node, store = reopen(store)
    assert call(node, node.spawn(Explicit, store, "k"), "get") == 41


# -- event sourcing -----------------------------------------------------------------------------

def test_event_sourced_recovery_is_snapshot_plus_tail(path):
    node, store = boot(path)
    pid = node.spawn(Ledger, store, "l")
    for i in range(10):
        assert call(node, pid, ("append", i)) == i + 1
    rev, snap, tail = store.read("l")
    assert (rev, snap, tail) == (10, {"items": list(range(8))}, [8, 9])
    store.close()
    assert len(raw_items(path, b"journal")) == 2  # events 1..8 were compacted away
    node, store = boot(path, seed=3)
    again = node.spawn(Ledger, store, "l")
    assert call(node, again, "get") == list(range(10))
    assert call(node, again, "rev") == 10


def test_many_events_in_one_turn_and_an_explicit_snapshot(path):
    node, store = boot(path)
    pid = node.spawn(Ledger, store, "l")
    assert call(node, pid, ("append", "a", "b", "c")) == 3
    assert store.read("l") == (3, None, ["a", "b", "c"])
    assert call(node, pid, "snapshot") == "ok"
    assert store.read("l") == (3, {"items": ["a", "b", "c"]}, [])
    node, store = reopen(store)
    assert call(node, node.spawn(Ledger, store, "l"), "get") == ["a", "b", "c"]


class LiveJoined(EventSourcedServer):
    """Keeps its events joined in a live object (a str, standing in for a CRDT document)
    that `state` holds only in encoded form, refreshed by `snapshot_state`."""

    snapshot_every = 3

    def init(self, store, key):
        self.live = ""
        super().init(store, key)

    def initial_state(self):
        return {"joined": ""}

    def apply(self, event):
        if not self.live:
            self.live = self.state["joined"]  # a recovery starts from the snapshot's copy
        self.live += event

    def snapshot_state(self):
        return {"joined": self.live}

    def handle_call(self, request, caller):
        for part in request:
            self.persist(part)
        return self.live


def test_a_snapshot_saves_what_snapshot_state_returns_at_the_moment_of_saving(path):
    node, store = boot(path)
    pid = node.spawn(LiveJoined, store, "j")
    assert call(node, pid, ["a", "b"]) == "ab"
    assert store.read("j") == (2, None, ["a", "b"])  # no snapshot yet: state untouched
    assert call(node, pid, ["c", "d"]) == "abcd"  # the snapshot falls in this turn, after "d"
    assert store.read("j") == (4, {"joined": "abcd"}, [])
    node, store = reopen(store)
    again = node.spawn(LiveJoined, store, "j")
    assert call(node, again, ["e"]) == "abcde"


def test_a_stale_event_sourced_incarnation_is_refused(path):
    node, store = boot(path)
    old = node.spawn(Ledger, store, "l")
    call(node, old, ("append", 1))
    new = node.spawn(Ledger, store, "l")
    call(node, new, ("append", 2, 3, 4, 5))  # snapshot at 5 compacts event 2 away
    with pytest.raises(CallExit) as info:
        call(node, old, ("append", "stale"))
    assert isinstance(info.value.reason, StaleWrite)
    assert store.read("l")[1] == {"items": [1, 2, 3, 4, 5]}


def test_a_key_read_as_the_other_kind_is_reported(path):
    node, store = boot(path)
    call(node, node.spawn(Counter, store, "k"), ("add", 1))
    with pytest.raises(StartError) as info:
        node.spawn(Ledger, store, "k")
    assert isinstance(info.value.reason, CorruptedValue)
    assert "holds a PersistentServer state, expected an event-sourced snapshot" in str(info.value.reason)



def test_a_write_as_the_other_kind_is_refused_once_the_key_is_stored(path):
    # Both start on an empty key; the second kind's write meets the first's commit (the
    # store remembers revisions it committed, and must still check the kind).
    node, store = boot(path)
    counter = node.spawn(Counter, store, "k")
    ledger = node.spawn(Ledger, store, "k")
    call(node, counter, ("add", 1))
    with pytest.raises(CallExit) as info:
        call(node, ledger, ("append", 1))
    assert isinstance(info.value.reason, CorruptedValue)
    assert "expected an event-sourced snapshot" in str(info.value.reason)
    assert store.read("k")[1] == checked(1)

# -- bad input: clear errors, nothing stored lost ------------------------------------------------

def test_a_corrupted_value_names_its_key_and_the_rest_is_intact(path):
    node, store = boot(path)
    for key in ("good", "bad"):
        call(node, node.spawn(Counter, store, key), ("add", 3))
    store.close()
    tamper(path, b"snapshots", lambda v: v[:-1] + bytes([v[-1] ^ 1]) if b"bad" in v else None)
    before = raw_items(path, b"snapshots")
    node, store = boot(path)
    with pytest.raises(StartError) as info:
        node.spawn(Counter, store, "bad")
    reason = info.value.reason
    assert isinstance(reason, CorruptedValue) and "'bad'" in str(reason) and "checksum" in str(reason)
    assert call(node, node.spawn(Counter, store, "good"), "get") == 3
    store.close()
    assert raw_items(path, b"snapshots") == before


def test_a_value_of_another_format_version_is_named(path):
    node, store = boot(path)
    call(node, node.spawn(Counter, store, "k"), ("add", 1))
    store.close()
    tamper(path, b"snapshots", lambda v: v[:2] + b"\x07" + v[3:])
    node, store = boot(path)
    with pytest.raises(StartError) as info:
        node.spawn(Counter, store, "k")
    reason = info.value.reason
    assert isinstance(reason, FormatVersionError) and (reason.found, reason.expected) == (7, 1)
    assert "snapshots['k']" in str(reason)


def test_a_store_of_another_format_version_is_refused_untouched(path):
    node, store = boot(path)
    call(node, node.spawn(Counter, store, "k"), ("add", 1))
    store.close()
    marker = raw_items(path, b"meta")[0][1]
    tamper(path, b"meta", lambda v: encode_value(4, 2, v[16:]))
    before = raw_items(path, b"snapshots")
    with pytest.raises(FormatVersionError, match="format version 2"):
        boot(path)
    assert raw_items(path, b"snapshots") == before
    tamper(path, b"meta", lambda v: marker)
    node, store = boot(path)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 1


def test_a_foreign_lmdb_environment_is_refused_and_left_alone(path):
    env = lmdb.open(path)
    with env.begin(write=True) as txn:
        txn.put(b"user:1", b"someone else's data")
    env.close()
    with pytest.raises(ForeignStore, match="not created by letitcrash") as info:
        boot(path)
    assert path in str(info.value)
    env = lmdb.open(path, max_dbs=3)
    with env.begin() as txn:
        assert list(txn.cursor()) == [(b"user:1", b"someone else's data")]
    env.close()


def test_a_file_that_is_not_lmdb_is_refused(path):
    os.makedirs(path)
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(b"not a database" * 1000)
    with pytest.raises(ForeignStore, match="is not a letitcrash store"):
        boot(path)
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        assert f.read() == b"not a database" * 1000


def test_unencodable_state_crashes_the_server_naming_the_key_and_keeps_the_old_state(path):
    node, store = boot(path)
    pid = node.spawn(Counter, store, ("user", 7))
    call(node, pid, ("add", 4))
    with pytest.raises(CallExit) as info:
        call(node, pid, ("set", {"when": object()}))
    reason = info.value.reason
    assert isinstance(reason, UnencodableValue)
    assert "state of ('user', 7)" in str(reason) and "cannot encode object" in str(reason)
    assert call(node, node.spawn(Counter, store, ("user", 7)), "get") == 4


class SetCounter(Counter):
    def initial_state(self):
        return {1, 2}


def test_unencodable_initial_state_event_and_key_are_refused_at_once(path):
    node, store = boot(path)
    with pytest.raises(StartError) as info:
        node.spawn(SetCounter, store, "k")
    assert isinstance(info.value.reason, UnencodableValue) and "set" in str(info.value.reason)
    with pytest.raises(StartError) as info:
        node.spawn(Counter, store, ("k", object()))
    assert isinstance(info.value.reason, UnencodableValue) and "key" in str(info.value.reason)
    ledger = node.spawn(Ledger, store, "l")
    call(node, ledger, ("append", 1))
    with pytest.raises(CallExit) as info:
        call(node, ledger, ("append", object()))
    assert isinstance(info.value.reason, UnencodableValue) and "event of 'l'" in str(info.value.reason)
    assert call(node, node.spawn(Ledger, store, "l"), "get") == [1]


def test_limits_on_values_and_keys(path):
    node, store = boot(path, max_value_bytes=1000)
    pid = node.spawn(Counter, store, "k")
    call(node, pid, ("add", 1))
    with pytest.raises(CallExit) as info:
        call(node, pid, ("set", "x" * 2000))
    assert isinstance(info.value.reason, LimitExceeded) and "max_value_bytes is 1000" in str(info.value.reason)
    with pytest.raises(StartError) as info:
        node.spawn(Counter, store, "k" * 5000)
    assert isinstance(info.value.reason, LimitExceeded)
    assert store.read("k")[1]["n"] == 1
    with pytest.raises(ValueError, match="mode must be one of"):
        Store(path + "2", node, mode="fast")


def test_a_full_map_grows_and_the_user_never_sees_it(path):
    node, store = boot(path, map_size=64 << 10)
    pids = [node.spawn(Counter, store, ("big", i)) for i in range(30)]
    for i, pid in enumerate(pids):
        assert call(node, pid, ("set", "x" * 20_000 + str(i))) == "ok"
    assert store.env.info()["map_size"] > 64 << 10
    node, store = reopen(store, map_size=64 << 10)
    assert call(node, node.spawn(Counter, store, ("big", 29)), "state") == "x" * 20_000 + "29"


def test_the_map_stops_growing_at_max_map_size(path):
    node, store = boot(path, map_size=64 << 10, max_map_size=256 << 10)
    small = node.spawn(Counter, store, "small")
    call(node, small, ("add", 1))
    with pytest.raises(CallExit) as info:
        call(node, node.spawn(Counter, store, "huge"), ("set", "x" * (1 << 20)))
    assert isinstance(info.value.reason, StoreFull) and "max_map_size" in str(info.value.reason)
    assert call(node, small, ("add", 1)) == 2
    node, store = reopen(store, map_size=64 << 10, max_map_size=256 << 10)
    assert call(node, node.spawn(Counter, store, "small"), "get") == 2


# -- simulator hooks ---------------------------------------------------------------------------

def test_crash_before_a_commit_writes_nothing_and_sends_nothing(path):
    node, store = boot(path)
    probe = node.spawn(Probe, store)
    pid = node.spawn(Counter, store, "k")
    call(node, pid, ("add", 1))
    store.crash_before_next_commit()
    with pytest.raises(CallTimeout):
        call(node, pid, ("add_and_tell", probe, 10), timeout=1.0)
    assert call(node, probe, "seen") == []
    store.crash()
    node, store = boot(path)
    assert call(node, node.spawn(Counter, store, "k"), "get") == 1


@pytest.mark.parametrize("mode, keep, expected", [("process", 0, 2), ("process", 1, 5),
                                                   ("sync", 0, 14), ("none", 2, 9)])
def test_power_loss_drops_exactly_the_unsynced_commits(path, mode, keep, expected):
    node, store = boot(path, mode=mode, simulated=True)
    pid = node.spawn(Counter, store, "k")
    ledger = node.spawn(Ledger, store, "l")
    for delta in (1, 1):
        call(node, pid, ("add", delta))
        call(node, ledger, ("append", delta))
    store.sync()
    for delta in (3, 4, 5):  # ledger snapshots (and compacts) inside these commits
        call(node, pid, ("add", delta))
        call(node, ledger, ("append", delta, 0))
    assert store.unsynced_commits == (0 if mode == "sync" else 6)
    store.power_loss(keep=keep * 2)
    node, store = boot(path, mode=mode)
    assert call(node, node.spawn(Counter, store, "k"), "get") == expected
    items = call(node, node.spawn(Ledger, store, "l"), "get")
    assert sum(items) == expected


def test_a_simulated_store_starts_with_a_small_map_and_grows_across_restarts(path):
    node, store = boot(path, mode="sync", simulated=True)
    assert store.env.info()["map_size"] == 1 << 20
    pids = [node.spawn(Counter, store, ("big", i)) for i in range(12)]
    for i, pid in enumerate(pids):
        assert call(node, pid, ("set", "x" * 200_000 + str(i))) == "ok"
    grown = store.env.info()["map_size"]
    assert grown > 1 << 20
    node, store = reopen(store, simulated=True)  # asks for the small default again: LMDB maps the file
    assert store.env.info()["map_size"] > 1 << 20
    assert call(node, node.spawn(Counter, store, ("big", 11)), "state") == "x" * 200_000 + "11"
    assert call(node, node.spawn(Counter, store, ("big", 12)), ("set", "y" * 200_000)) == "ok"


def test_a_store_whose_parent_folder_is_missing_is_a_clear_error(tmp_path):
    node = Node(seed=1)
    with pytest.raises(StorageIOError, match="cannot open the store at .*/missing/store"):
        Store(str(tmp_path / "missing" / "store"), node)
