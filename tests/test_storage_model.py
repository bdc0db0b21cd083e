"""Random sequences of persist / restart / compact / crash / power loss against a dict model."""
from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import CallExit, Node
from storage import Store, StorageIOError
from storage_servers import Counter, Ledger

COUNTERS = st.sampled_from([("c", 0), ("c", 1), ("c", 2)])
LEDGERS = st.sampled_from(["l0", "l1"])


class StoreModel(RuleBasedStateMachine):
    """The model is what was acknowledged: every call that returned. After a power loss it
    falls back to what was acknowledged before the last sync."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lc-model-")
        self.boots = 0
        self.counters: dict = {}
        self.ledgers: dict = {}
        self.synced = ({}, {})
        self.boot()

    def boot(self) -> None:
        self.boots += 1
        self.node = Node(seed=self.boots, creation=self.boots)
        self.store = Store(self.dir, self.node, mode="process", simulated=True)
        self.pids: dict = {}

    def call(self, key, cls, request):
        pid = self.pids.get(key)
        if pid is None or not self.node.is_alive(pid):
            pid = self.pids[key] = self.node.spawn(cls, self.store, key)
        return self.node.run_until_complete(self.node.call(pid, request))

    @rule(key=COUNTERS, delta=st.integers(-5, 5))
    def add(self, key, delta):
        expected = self.counters.get(key, 0) + delta
        assert self.call(key, Counter, ("add", delta)) == expected
        self.counters[key] = expected

    @rule(key=LEDGERS, values=st.lists(st.integers(0, 9), min_size=1, max_size=6))
    def append(self, key, values):
        items = self.ledgers.setdefault(key, [])
        assert self.call(key, Ledger, ("append", *values)) == len(items) + len(values)
        items.extend(values)

    @rule(key=LEDGERS)
    def compact(self, key):
        self.call(key, Ledger, "snapshot")

    @rule(key=COUNTERS)
    def crash_mid_turn(self, key):
        with pytest.raises(CallExit):
            self.call(key, Counter, ("add_then_crash", 1))

    @rule(key=COUNTERS)
    def failed_commit(self, key):
        faults = [StorageIOError("injected")]
        self.store.commit_fault = lambda: faults.pop() if faults else None
        with pytest.raises(CallExit) as info:
            self.call(key, Counter, ("add", 1))
        assert isinstance(info.value.reason, StorageIOError)

    @rule(key=st.one_of(COUNTERS, LEDGERS))
    def kill(self, key):
        pid = self.pids.get(key)
        if pid is not None:
            self.node.exit(pid, "kill")
            self.node.run()

    @rule()
    def restart(self):
        self.store.close()  # a clean close syncs
        self.sync_model()
        self.boot()

    @rule()
    def sync(self):
        self.store.sync()
        self.sync_model()

    def sync_model(self):
        self.synced = (dict(self.counters), {k: list(v) for k, v in self.ledgers.items()})

    @rule()
    def power_loss(self):
        self.store.power_loss()
        self.counters, self.ledgers = dict(self.synced[0]), {k: list(v) for k, v in self.synced[1].items()}
        self.boot()

    @invariant()
    def stored_is_acknowledged(self):
        for key, n in self.counters.items():
            stored = self.store.read(key)
            assert (stored[1]["n"] if stored else 0) == n
        for key, items in self.ledgers.items():
            stored = self.store.read(key)
            rev, snap, tail = stored if stored else (0, None, [])
            assert rev == len(items)
            assert (snap["items"] if snap else []) + tail == items

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(stateful_step_count=30, deadline=None)
