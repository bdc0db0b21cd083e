"""Activated entities: started on demand from the store, stopped when idle, state kept."""
from __future__ import annotations

import pytest

from actors import CallTimeout, Node, StartError
from storage import (ActivationError, CorruptedValue, Entities, LimitExceeded, Store,
                     UnencodableValue, entities_info, entity_call, entity_cast)
from storage_servers import Counter
from test_storage import tamper


def boot(path, seed=1, idle=10.0, max_active=100_000):
    node = Node(seed=seed)
    store = Store(path, node, mode="process")
    return node, store, node.spawn(Entities, store, Counter, idle, max_active)


def call(node, ents, key, request):
    return node.run_until_complete(entity_call(node, ents, key, request))


def info(node, ents):
    return node.run_until_complete(entities_info(node, ents))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


def test_an_entity_starts_on_its_first_message_and_stops_when_idle_with_its_state(path):
    node, store, ents = boot(path, idle=10.0)
    base = len(node)
    entity_cast(node, ents, ("timeline", 1), 5)
    assert call(node, ents, ("timeline", 1), ("add", 1)) == 6
    assert len(node) == base + 1
    node.run_for(9.0)
    assert len(node) == base + 1  # not idle long enough yet
    node.run_for(5.0)
    assert len(node) == base
    assert info(node, ents)["passivations"] == 1
    assert call(node, ents, ("timeline", 1), "get") == 6  # back, from the store
    assert info(node, ents)["activations"] == 2


def test_many_stored_keys_few_active_processes(path):
    node, store, ents = boot(path, idle=1.0)
    base = len(node)
    for user in range(2000):
        entity_cast(node, ents, ("timeline", user), user)
    node.run()  # everything idles out: nothing is left running
    assert len(node) == base and info(node, ents)["active"] == 0
    for user in range(0, 2000, 100):
        assert call(node, ents, ("timeline", user), "get") == user
    assert len(node) == base + 20
    assert info(node, ents)["active"] == 20


def test_max_active_stops_the_least_recently_used(path):
    node, store, ents = boot(path, max_active=5)
    base = len(node)
    for user in range(12):
        assert call(node, ents, ("t", user), ("add", user)) == user
        assert info(node, ents)["active"] <= 5
    node.run_for(0.0)
    assert len(node) <= base + 5
    assert call(node, ents, ("t", 0), "get") == 0  # stopped for room, state kept
    assert call(node, ents, ("t", 11), "get") == 11


def test_messages_sent_while_an_entity_stops_reach_its_next_incarnation(path):
    node, store, ents = boot(path, max_active=1)
    assert call(node, ents, "a", ("add", 1)) == 1
    entity_cast(node, ents, "b", 1)  # starting b stops a to make room...
    entity_cast(node, ents, "a", 1)  # ...and this one waits for a to be down
    assert call(node, ents, "a", "get") == 2
    assert info(node, ents)["passivations"] >= 1


def test_a_crashed_entity_comes_back_with_its_last_saved_state(path, caplog):
    node, store, ents = boot(path)
    assert call(node, ents, "k", ("add", 3)) == 3
    with pytest.raises(CallTimeout):  # a forwarded call: the caller watches the router only
        node.run_until_complete(entity_call(node, ents, "k", ("add_then_crash", 1), timeout=1.0))
    assert call(node, ents, "k", "get") == 3
    assert info(node, ents)["activations"] == 2
    [crash] = [r for r in caplog.records if getattr(r, "report", None) == "child_terminated"]
    assert crash.supervisor == ents and isinstance(crash.reason, RuntimeError)


class Stubborn(Counter):
    async def terminate(self, reason):
        await self.sleep(3600)  # never stops by itself


def test_stopping_the_router_stops_every_entity_first_with_its_state_saved(path):
    node, store, ents = boot(path)
    base = len(node)
    for user in range(5):
        entity_cast(node, ents, ("t", user), user + 1)
    node.run_for(0.0)
    assert len(node) == base + 5
    seen = []

    async def watcher(proc):
        proc.monitor(ents)
        down = await proc.receive()
        seen.append((down.reason, len(node)))

    node.spawn(watcher)
    node.exit(ents, "shutdown")
    node.run()
    assert seen == [("shutdown", base)]  # the router went down last: only the watcher is left
    store.close()
    node, store, ents = boot(path, seed=2)
    assert [call(node, ents, ("t", user), "get") for user in range(5)] == [1, 2, 3, 4, 5]


def test_an_entity_that_does_not_stop_is_killed_after_the_shutdown_time(path, caplog):
    node = Node(seed=1)
    store = Store(path, node, mode="process")
    ents = node.spawn(Entities, store, Stubborn, 10.0, 1)  # one active at a time
    assert call(node, ents, "a", ("add", 1)) == 1
    assert call(node, ents, "b", ("add", 2)) == 2  # "a" is told to stop, and does not
    started = node.now()
    waited = entity_call(node, ents, "a", "get", timeout=10.0)
    assert node.run_until_complete(waited) == 1  # once "a" was killed; its state was kept
    assert node.now() - started >= 5.0  # a worker's shutdown time, as in OTP
    [report] = [r for r in caplog.records if getattr(r, "report", None) == "shutdown_error"]
    assert report.supervisor == ents and report.reason == "killed"


def test_entities_come_back_after_a_node_restart(path):
    node, store, ents = boot(path)
    for user in range(10):
        call(node, ents, ("t", user), ("add", user * 2))
    store.close()
    node, store, ents = boot(path, seed=9)
    assert [call(node, ents, ("t", user), "get") for user in range(10)] == [u * 2 for u in range(10)]


def test_a_failed_activation_is_raised_by_its_callers_and_other_keys_carry_on(path):
    node, store, ents = boot(path)
    call(node, ents, "bad", ("add", 1))
    call(node, ents, "good", ("add", 2))
    store.close()
    tamper(path, b"snapshots", lambda v: v[:-1] + b"\x00" if b"bad" in v else None)
    node, store, ents = boot(path, seed=3)
    with pytest.raises(ActivationError) as info_:
        call(node, ents, "bad", "get")
    assert isinstance(info_.value.reason, CorruptedValue) and "'bad'" in str(info_.value)
    assert call(node, ents, "good", "get") == 2


def test_within_one_sender_messages_keep_their_order_across_activation(path):
    node, store, ents = boot(path, idle=1.0)
    for _ in range(50):  # queued while the entity starts, then released in order
        entity_cast(node, ents, "k", 1)
    assert call(node, ents, "k", "get") == 50
    node.run_for(3.0)  # idled out
    assert info(node, ents)["active"] == 0
    entity_cast(node, ents, "k", 1)
    assert call(node, ents, "k", ("add", 0)) == 51


def test_bad_arguments_and_the_waiting_limit(path):
    node = Node(seed=1)
    store = Store(path, node, mode="process")
    with pytest.raises(StartError, match="PersistentServer subclasses"):
        node.spawn(Entities, store, dict)
    with pytest.raises(StartError, match="idle_timeout"):
        node.spawn(Entities, store, Counter, 0)
    ents = node.spawn(Entities, store, Counter, 10.0, 1, 3)  # one active; 3 wait per key
    assert call(node, ents, "k", ("add", 1)) == 1
    entity_cast(node, ents, "other", 1)  # stops "k" to make room: "k"'s messages now wait
    futures = [entity_call(node, ents, "k", ("add", 1)) for _ in range(5)]
    node.run_until_complete(futures[0])
    node.run()
    assert [f.result() for f in futures[:3]] == [2, 3, 4]
    for refused in futures[3:]:
        with pytest.raises(LimitExceeded, match="max_waiting"):
            refused.result()
    assert call(node, ents, "k", "get") == 4
    with pytest.raises(UnencodableValue, match="not hashable"):
        call(node, ents, ["a", "list"], "get")
    with pytest.raises(ActivationError, match="cannot be stored"):
        call(node, ents, ("k", object()), "get")
    assert call(node, ents, "k", "get") == 4  # the router survived both
