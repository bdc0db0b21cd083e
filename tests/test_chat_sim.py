"""Chat under the simulator: the service holds every invariant under chaos, with users on
several devices (some unlinked by expiry and linked again), and the checks catch a service
that stores a retried message twice, delivers to one device only, or keeps a sender's or
reader's other devices unaware.

That the same seed gives the same run (trace and stats) is checked with the other case
studies' sweeps (tests/test_apps_chaos.py), on chat.toml in both fault modes.

CI runs a few seeds; set LETITCRASH_SIM_SEEDS=N to run seeds 1..N instead."""
from __future__ import annotations

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from apps.chat.shard import Shard
from apps.chat.store import ShardBook
from sim.cli import apply_faults
from sim.runner import run
from sim.scenario import Scenario, load

SCENARIO = SCENARIOS / "chat.toml"
SEEDS = range(1, SIM_SEEDS + 1)
SYSTEM = "chat"
BUG_CHAOS = 6.0  # seconds of chaos for the planted bugs (the scenario's 20): each is caught by then


def short() -> Scenario:
    """chat.toml with a chaos phase BUG_CHAOS long, its scripted node restart halfway
    through; the heal and quiesce phases (where the delivery checks run) as they are."""
    scenario = load(SCENARIO)
    raw = scenario.raw()
    (chaos,) = [phase for phase in raw["phases"] if phase["name"] == "chaos"]
    chaos["duration"] = BUG_CHAOS
    for step in raw["faults"]["script"]:
        step["at"] = min(step["at"], BUG_CHAOS / 2)
    return scenario.rebuild(raw)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_acknowledged_message_is_delivered_once_in_order_under_chaos(seed):
    result = run(load(SCENARIO), seed)
    assert result.passed, f"seed {seed}: {result.failure}"
    stats = result.stats[SYSTEM]
    assert stats["acked"] == stats["sent"] == stats["delivered"] > 50
    assert stats["taken"] > stats["delivered"]  # on every device of the recipients
    assert stats["receipts"] > stats["acked"] and stats["reads"] > 0
    assert stats["copies"] > 0 and stats["read_syncs"] > 0 and stats["links"] > stats["devices"]
    assert sum(result.faults.values()) > 20 and result.faults.get("kill_node", 0) >= 1


def test_a_receipt_is_never_shown_twice_when_a_shard_keeps_dying_before_storing_acks():
    """A recipient's shard killed again and again before storing the acknowledgement of
    a read receipt resent it after the sender's shard had forgotten it, so the sender's
    phone saw `read` twice (seed 9507 of this fault mix did)."""
    heavy = apply_faults(load(SCENARIO), "chaos,kill_node=0.3,power_loss=0.2,kill_process=3,kill_tree=0.5")
    result = run(heavy, 9507)
    assert result.passed, result.failure
    assert result.stats[SYSTEM]["receipts"] > 100


def test_a_shard_that_stores_retries_again_is_caught(monkeypatch):
    def forgetful(self, sender, to, cid, *rest):
        self.data["dedup"].pop(sender, None)  # the bug: retries are not recognised
        return original(self, sender, to, cid, *rest)

    original = Shard._store
    monkeypatch.setattr(Shard, "_store", forgetful)
    failures = (run(short(), seed).failure for seed in (1, 2, 3))
    caught = next((f for f in failures if f is not None), None)  # the first seed that catches it will do
    assert caught, "three short seeds of chaos and no check noticed duplicated messages"
    assert "twice" in caught.message or "never acknowledged" in caught.message, caught



def test_a_shard_that_delivers_to_one_device_only_is_caught(monkeypatch):
    def first_only(self, user):
        devs = [dev for dev in self.data["devices"].get(user, ()) if dev.session is not None]
        if devs:
            self._push_to(devs[0], self.data["inbox"][user])  # the bug: the other devices wait

    monkeypatch.setattr(Shard, "_push", first_only)
    failures = [run(short(), seed).failure for seed in (1, 2)]
    assert all(f is not None and "never took message" in f.message for f in failures), failures


def test_a_service_that_copies_no_sent_message_to_the_senders_devices_is_caught(monkeypatch):
    def no_copy(self, sender, to, cid, payload, preview, echo=False):
        return original(self, sender, to, cid, payload, preview)  # the bug: echo ignored

    original = Shard._store
    monkeypatch.setattr(Shard, "_store", no_copy)
    failure = run(short(), 1).failure
    assert failure is not None and "never got a copy of message" in failure.message, failure


def test_a_service_that_tells_no_other_device_of_a_read_is_caught(monkeypatch):
    def no_read_sync(self, state, user, item, out):
        if item[0] != "v":  # the bug: a read on one device stays unknown to the others
            original(self, state, user, item, out)

    original = ShardBook._append
    monkeypatch.setattr(ShardBook, "_append", no_read_sync)
    failure = run(short(), 1).failure
    assert failure is not None and "was read on another device" in failure.message, failure
