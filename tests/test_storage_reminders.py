"""Durable reminders: stored with the server's key, re-armed when it starts again, fired at
least once per due time."""
import asyncio

import pytest

from actors import Node
from conftest import arun
from sim.core import Simulation
from storage import EventSourcedServer, LimitExceeded, PersistentServer, Store
from supervision import ChildSpec, Supervisor, which_children

FIRED = []  # (key, name, time) of every handled reminder, across incarnations
CRASHES = []  # handler runs left to crash, across incarnations


class Invoice(PersistentServer):
    """Casts: ("remind", name, due, period), ("cancel", name), ("crash_next",)."""

    def initial_state(self):
        return {"handled": []}

    def handle_cast(self, msg):
        if msg[0] == "remind":
            self.remind(msg[1], msg[2], msg[3])
        elif msg[0] == "cancel":
            self.cancel_reminder(msg[1])
        elif msg[0] == "remind_and_cancel":  # in one turn
            self.remind(msg[1], 5.0)
            self.cancel_reminder(msg[1])
        elif msg[0] == "crash_next":
            CRASHES.append(1)

    def handle_call(self, request, caller):
        return self.reminders()

    def handle_reminder(self, name):
        FIRED.append((self.key, name, self.now()))
        self.state["handled"].append(name)
        if CRASHES:
            CRASHES.pop()
            raise RuntimeError("handler crashed")  # nothing of this turn is stored


@pytest.fixture(autouse=True)
def fired():
    FIRED.clear()
    CRASHES.clear()
    yield FIRED


def boot(tmp_path, seed=1):
    node = Node(seed=seed)
    return node, Store(tmp_path / "db", node)


def test_one_shot_and_periodic_reminders_fire_on_the_nodes_clock(tmp_path):
    node, store = boot(tmp_path)
    pid = node.spawn(Invoice, store, "inv")
    node.cast(pid, ("remind", "once", 5.0, None))
    node.cast(pid, ("remind", "tick", 2.0, 3.0))
    node.run_for(12.0)
    assert [(n, t) for _, n, t in FIRED] == [("tick", 2.0), ("once", 5.0), ("tick", 5.0), ("tick", 8.0),
                                             ("tick", 11.0)]
    assert node.run_until_complete(node.call(pid, "list")) == {"tick": (14.0, 3.0)}
    assert list(store.read_records("inv")) == [("$reminder", "tick")]  # "once" is gone from the store


def test_a_reminder_set_again_replaces_it_and_cancel_removes_it(tmp_path):
    node, store = boot(tmp_path)
    pid = node.spawn(Invoice, store, "inv")
    node.cast(pid, ("remind", "a", 5.0, None))
    node.cast(pid, ("remind", "b", 5.0, None))
    node.run_for(1.0)
    node.cast(pid, ("remind", "a", 10.0, None))  # 11.0 now, never 5.0
    node.cast(pid, ("cancel", "b"))
    node.run_for(20.0)
    assert [(n, t) for _, n, t in FIRED] == [("a", 11.0)]
    assert store.read_records("inv") == {}


def test_a_reminder_set_and_cancelled_in_one_turn_writes_nothing(tmp_path):
    node, store = boot(tmp_path)
    pid = node.spawn(Invoice, store, "inv")
    node.cast(pid, ("remind", "kept", 5.0, None))
    node.run_for(1.0)
    writes = store.writes
    node.cast(pid, ("remind_and_cancel", "brief"))
    node.run_for(1.0)
    assert store.writes == writes  # neither the record nor its deletion reached the store
    node.cast(pid, ("remind_and_cancel", "kept"))  # a stored one: its deletion is written
    node.run_for(10.0)
    assert store.writes > writes and FIRED == [] and store.read_records("inv") == {}


def test_a_server_that_crashes_fires_its_reminder_again_after_the_restart(tmp_path, quiet_crash_reports):
    node, store = boot(tmp_path)
    sup = node.spawn(Supervisor, [ChildSpec("inv", Invoice, args=(store, "inv"))])
    (child,) = node.run_until_complete(which_children(node, sup))
    node.cast(child.pid, ("remind", "due", 5.0, None))
    node.cast(child.pid, ("crash_next",))
    node.run_for(1.0)
    node.exit(child.pid, "kill")  # killed before it is due: the restarted one re-arms it
    node.run_for(10.0)
    # the first firing crashed, nothing of its turn stored, so the next incarnation fired it again
    assert [(n, t) for _, n, t in FIRED] == [("due", 5.0), ("due", 5.0)]
    (child,) = node.run_until_complete(which_children(node, sup))
    assert node.get_process(child.pid).state["handled"] == ["due"] and store.read_records("inv") == {}


def test_a_reminder_fires_after_a_node_restart_on_a_real_store(tmp_path):
    """Real time, a real LMDB file: the first node stores a reminder and stops before it is
    due; a new node on the same directory fires it (late, at once)."""
    async def first():
        async with Node() as node:
            store = Store(tmp_path / "db", node)
            pid = node.spawn(Invoice, store, "inv")
            node.cast(pid, ("remind", "wake", 0.05, None))
            await node.call(pid, "list")  # stored: its reply waited for the commit
        store.close()

    async def second():
        async with Node() as node:
            store = Store(tmp_path / "db", node)
            node.spawn(Invoice, store, "inv")
            while not FIRED:
                await asyncio.sleep(0.01)
        store.close()

    arun(first(), 30.0)
    assert FIRED == []
    arun(asyncio.sleep(0.1), 5.0)
    arun(second(), 30.0)
    assert [n for _, n, _ in FIRED] == ["wake"]


def test_under_the_simulator_across_node_crashes_the_same_seed_gives_the_same_firings(tmp_path):
    def run(seed, where):
        FIRED.clear()
        sim = Simulation(seed)
        stores = {}

        def start(node):
            if "s" in stores:
                stores["s"].close()
            store = stores["s"] = Store(where, node, simulated=True)
            sup = node.spawn(Supervisor, [ChildSpec("inv", Invoice, args=(store, "inv"), options={"name": "inv"})])
            if sim.now == 0:
                node.cast("inv", ("remind", "tick", 1.0, 2.5))
            return sup

        sim.add_node("n", start)
        sim.run(4.0)
        sim.crash_node("n")
        sim.run(9.0)  # down through two due times
        sim.restart_node("n")
        sim.run(12.0)
        sim.close()
        stores["s"].close()
        return [t for _, _, t in FIRED]
    first = run(3, tmp_path / "a")
    assert first == run(3, tmp_path / "b")
    assert first == [1.0, 3.5, 9.0, 11.0]  # missed ones fire once at the restart, then on period


def test_event_sourced_servers_store_reminders_with_the_turn(tmp_path):
    class Ledger(EventSourcedServer):
        snapshot_every = 1000

        def initial_state(self):
            return {"n": 0}

        def apply(self, event):
            self.state["n"] += 1

        def handle_cast(self, msg):
            self.persist("x")
            self.remind("close", 7.0)

        def handle_reminder(self, name):
            FIRED.append((self.key, name, self.now()))

    node, store = boot(tmp_path)
    pid = node.spawn(Ledger, store, "ledger")
    node.cast(pid, "go")
    node.run_for(1.0)
    assert store.read_records("ledger") == {("$reminder", "close"): [7.0, None]}
    node.exit(pid, "kill")
    node.run()
    node.spawn(Ledger, store, "ledger")
    node.run()
    assert [(n, t) for _, n, t in FIRED] == [("close", 7.0)]


def test_bad_input_is_refused_and_nothing_stored_is_lost(tmp_path, quiet_crash_reports):
    class Small(Invoice):
        max_reminders = 1

    node, store = boot(tmp_path)
    pid = node.spawn(Small, store, "inv")
    node.cast(pid, ("remind", "kept", 5.0, None))
    node.run_for(0.5)
    proc = node.get_process(pid)
    for args, error in [(("", 1.0), "non-empty str"), ((("t", 1), 1.0), "non-empty str"),
                        (("x", -1.0), "due must be"), (("x", float("nan")), "due must be"),
                        (("x", 1.0, 0), "period must be"), (("other", 1.0), "max_reminders=1")]:
        with pytest.raises((TypeError, ValueError, LimitExceeded), match=error):
            proc.remind(*args)
    assert proc.reminders() == {"kept": (5.0, None)}
    with pytest.raises(TypeError, match="has no handle_reminder"):
        node.get_process(node.spawn(Plain, store, "plain")).remind("x", 1.0)
    node.run_for(10.0)
    assert [n for _, n, _ in FIRED] == ["kept"]


class Plain(PersistentServer):
    pass


def test_an_idle_entity_is_passivated_and_activated_again_for_its_reminder(tmp_path):
    from storage import Entities, entities_info, entity_cast
    node, store = boot(tmp_path)
    invoices = node.spawn(Entities, store, Invoice, 1.0)
    entity_cast(node, invoices, ("inv", 1), ("remind", "overdue", 30.0, None))
    entity_cast(node, invoices, ("inv", 2), ("remind", "soon", 0.5, None))
    node.run_for(5.0)
    info = node.run_until_complete(entities_info(node, invoices))
    assert info["active"] == 0 and info["passivations"] == 2  # both stopped while idle
    node.run_for(30.0)
    assert [(k, n, t) for k, n, t in FIRED] == [(("inv", 2), "soon", 0.5), (("inv", 1), "overdue", 30.0)]
    assert store.read_records(("inv", 1)) == {}
    node.run_for(100.0)  # nothing left to wake
    assert node.run_until_complete(entities_info(node, invoices))["activations"] == 3


def test_an_entity_that_crashes_whenever_its_reminder_fires_is_retried_at_a_pace_not_in_a_loop(
        tmp_path, quiet_crash_reports):
    from storage import Entities, entities_info, entity_cast
    from storage.entities import REWAKE_AFTER
    node, store = boot(tmp_path)
    invoices = node.spawn(Entities, store, Invoice, 60.0)
    entity_cast(node, invoices, ("inv", 1), ("remind", "overdue", 0.5, None))
    node.run_for(0.1)
    CRASHES.extend([1] * 1000)  # its handler crashes every time (a full disk, say)
    node.run_for(5.0, max_turns=100_000)  # bounded: a wake loop at one instant never gets there
    assert node.now() == 5.1
    fired = [t for _, _, t in FIRED]
    assert fired[0] == 0.5 and len(fired) == 1 + int((5.1 - 0.5) / REWAKE_AFTER)
    assert all(later - earlier >= REWAKE_AFTER for earlier, later in zip(fired, fired[1:]))
    CRASHES.clear()  # the disk has room again: the next wake fires it for good
    node.run_for(2.0)
    assert store.read_records(("inv", 1)) == {}
    assert node.run_until_complete(entities_info(node, invoices))["activations"] == len(FIRED)
