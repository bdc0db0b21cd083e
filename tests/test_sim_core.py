"""The simulation core through its API: clock and skew, the network model, node crashes,
buggify, limits. Small worlds built by hand; the counter scenario is tested elsewhere."""
from __future__ import annotations

import pytest

from actors import NOCONNECTION, CallExit, Down, GenServer, NoReply
from sim.core import Simulation, SimulationError, buggify


class Sink(GenServer):
    """Keeps what it receives."""

    def init(self, box: list) -> None:
        self.box = box

    def handle_info(self, msg):
        self.box.append(msg)

    def handle_cast(self, msg):
        self.box.append(msg)


def world(seed: int = 1, n: int = 50):
    """A sender node that sends n numbered messages to a sink on another node at t=0."""
    sim = Simulation(seed)
    box: list = []
    sink = {}
    sim.add_node("b", lambda node: sink.setdefault("pid", node.spawn(Sink, box)))

    async def sender(proc):
        for i in range(n):
            proc.send(sink["pid"], i)

    sim.add_node("a", lambda node: node.spawn(sender))
    return sim, box


def test_messages_between_two_nodes_arrive_in_order_after_the_link_latency():
    sim, box = world()
    sim.network.set_latency(0.01, 0.02)
    sim.run(0.0099)
    assert box == []
    sim.run(1.0)
    assert box == list(range(50))


def test_reorder_lets_later_messages_overtake_and_drop_loses_them():
    sim, box = world(n=200)
    sim.network.set_rates({"reorder": 1.0}, {"reorder": 0.05})
    sim.run(1.0)
    assert sorted(box) == list(range(200)) and box != list(range(200))
    assert sim.injected["reorder"] == 200

    sim, box = world(n=200)
    sim.network.set_rates({"drop": 0.5})
    sim.run(1.0)
    assert 0 < len(box) < 200 and box == sorted(box)
    assert sim.injected["drop"] == 200 - len(box)


def test_duplicates_arrive_twice_and_delay_keeps_the_order():
    sim, box = world(n=20)
    sim.network.set_rates({"duplicate": 1.0}, {"duplicate": 0.01})
    sim.run(1.0)
    assert sorted(box) == sorted(list(range(20)) * 2)

    sim, box = world(n=100)
    sim.network.set_rates({"delay": 0.3}, {"delay": 0.2})
    sim.run(1.0)
    assert box == list(range(100)) and sim.injected["delay"] > 0


class Keeper(GenServer):
    """Answers nothing: its callers wait."""

    def handle_call(self, request, caller):
        return NoReply


@pytest.mark.parametrize("fault", ["drop", "duplicate"])
def test_a_dropped_or_doubled_call_still_monitors_its_server_once(fault):
    sim = Simulation(1)
    server, out = {}, []
    sim.add_node("b", lambda node: server.setdefault("pid", node.spawn(Keeper)))

    async def client(proc):
        try:
            await proc.call(server["pid"], "x")  # no timeout: only the monitor ends it
        except CallExit as exc:
            out.append(exc.reason)

    sim.add_node("a", lambda node: node.spawn(client))
    sim.network.set_rates({fault: 1.0})
    sim.run(0.5)
    b = sim.node("b")
    assert len(b.process_info(server["pid"])["monitored_by"]) == 1  # one monitor, whatever arrived
    b.exit(server["pid"], "boom")
    sim.run(1.0)
    assert out == ["boom"]


def test_one_draw_per_message_decides_its_fault_and_each_kind_keeps_its_own_decisions():
    from sim.faults import MESSAGE_FAULTS, Draws

    draws = [i / 10_000 + 0.00003 for i in range(10_000)]  # evenly over [0, 1)
    taken: list[float] = []

    def stream() -> float:
        taken.append(draws[len(taken)])
        return taken[-1]

    def strikes(rates: dict, most: dict | None = None) -> list[tuple[str, float]]:
        taken.clear()
        faults = Draws(MESSAGE_FAULTS, rates, most or {}, stream)
        return [faults.strike(faults.random()) for _ in draws]

    alone = strikes({"drop": 0.05})
    assert len(taken) == len(draws)  # one draw per message, struck or not
    assert sum(k == "drop" for k, _ in alone) == 500  # the rate is the probability
    # another kind's rate (up to 1/4) leaves drop's decisions exactly as they were
    mixed = strikes({"drop": 0.05, "duplicate": 0.2, "delay": 0.25, "reorder": 0.1}, {"delay": 0.3})
    assert [k == "drop" for k, _ in mixed] == [k == "drop" for k, _ in alone]
    assert sum(k == "delay" for k, _ in mixed) == 2500 and sum(k == "reorder" for k, _ in mixed) == 1000
    extras = [x for k, x in mixed if k == "delay"]
    assert 0.0 <= min(extras) < 0.001 and 0.299 < max(extras) < 0.3  # uniform in [0, most)
    assert all(x == 0.0 for k, x in mixed if k != "delay")
    # a rate past 1/4 reaches into the next slots, where the earlier kind wins
    assert {k for k, _ in strikes({"reorder": 1.0})} == {"reorder"}
    wide = strikes({"drop": 0.5, "duplicate": 0.1})
    assert sum(k == "drop" for k, _ in wide) == 5000 and sum(k == "duplicate" for k, _ in wide) == 0
    with pytest.raises(AssertionError):
        Draws(MESSAGE_FAULTS, {"drop": 0.0}, {}, stream)


def test_a_partition_disconnects_the_nodes_with_noconnection_and_the_heal_reconnects():
    sim = Simulation(3)
    seen: list = []
    remote = {}

    async def victim(proc):
        await proc.receive()

    async def watcher(proc):
        proc.monitor(remote["pid"])
        while True:
            seen.append(await proc.receive())

    sim.add_node("b", lambda node: remote.setdefault("pid", node.spawn(victim)))
    sim.add_node("a", lambda node: node.spawn(watcher))
    sim.run(0.5)
    assert sim.node("a").nodes() == ["b"]
    sim.network.partition([["a"], ["b"]])
    sim.node("a").send(remote["pid"], "lost")  # from outside, across the cut: dropped
    sim.node("b").exit(remote["pid"], "boom")  # its exit cannot cross either
    sim.run(2.0)
    assert [type(m) for m in seen] == [Down] and seen[0].reason == NOCONNECTION
    assert sim.node("a").nodes() == [] and sim.node("b").nodes() == []
    sim.network.heal()
    sim.run(3.0)
    assert len(seen) == 1 and sim.node("a").nodes() == ["b"]  # nothing from before the cut


def test_a_crashed_node_is_seen_as_noconnection_and_in_flight_deliveries_are_lost():
    sim = Simulation(2)
    seen: list = []
    remote = {}

    async def watcher(proc):
        proc.trap_exit = True
        proc.link(remote["pid"])
        proc.monitor(remote["pid"])
        while True:
            seen.append(await proc.receive())

    sim.add_node("db", lambda node: remote.setdefault("pid", node.spawn(Sink, [])))
    sim.add_node("app", lambda node: node.spawn(watcher))
    sim.run(0.5)
    sim.crash_node("db")
    sim.run(1.0)
    assert sorted(type(m).__name__ for m in seen) == ["Down", "Exit"]
    assert all(m.reason == NOCONNECTION for m in seen)  # not "killed": the node just vanished


def test_a_skewed_clock_runs_ahead_and_never_goes_back():
    sim = Simulation(1)
    fired: list = []

    async def ticker(proc):
        while True:
            await proc.sleep(1.0)
            fired.append((round(sim.now, 9), round(proc.now(), 9)))

    sim.add_node("n", lambda node: node.spawn(ticker))
    sim.run(1.5)
    sim.set_skew("n", 0.25)  # the clock jumps forward: node time = global + 0.25
    sim.run(2.9)
    sim.set_skew("n", 0.0)  # the clock stands still until global time catches up
    sim.run(4.1)
    assert fired == [(1.0, 1.0), (1.75, 2.0), (2.75, 3.0), (4.0, 4.0)]


def test_a_crashed_node_restarts_with_a_new_creation_and_drops_old_deliveries():
    sim = Simulation(1)
    boots: list = []
    box: list = []
    sim.add_node("db", lambda node: boots.append(node.spawn(Sink, box)))
    sim.add_node("c", lambda node: None)
    old = boots[0]
    sim.node("c").send(old, "in flight")  # arrives after the crash: dropped
    sim.crash_node("db")
    assert sim.node("db") is None and not sim.network.partitioned
    sim.run(1.0)
    new = sim.restart_node("db")
    assert new.creation == 1 and len(boots) == 2 and boots[1] != old
    sim.node("c").send(boots[1], "hello")
    sim.run(2.0)
    assert box == ["hello"]


def test_buggify_sites_are_drawn_per_seed_and_site_and_off_unless_enabled():
    def fires(seed: int, on: bool = True) -> list[bool]:
        sim = Simulation(seed)
        sim.buggify_on = on
        with sim.active():
            return [buggify(f"site{i}") for i in range(40) for _ in range(4)]

    assert fires(5) == fires(5)
    assert any(fires(5)) and fires(5) != fires(6)
    assert not any(fires(5, on=False))
    assert buggify("outside a simulation") is False


def test_same_seed_same_trace_and_another_seed_another():
    def digest(seed: int) -> str:
        sim, _ = world(seed, n=100)
        sim.network.set_rates({"reorder": 0.3, "drop": 0.1}, {"reorder": 0.05})
        sim.run(1.0)
        return sim.trace.digest()

    assert digest(1) == digest(1)
    assert digest(1) != digest(2)


def test_a_livelock_at_one_instant_is_stopped():
    sim = Simulation(1, instant_limit=10_000)

    async def ping(proc, peer=None):
        if peer is not None:
            proc.send(peer, proc.pid)
        while True:
            peer = await proc.receive()
            proc.send(peer, proc.pid)

    sim.add_node("n", lambda node: node.spawn(ping, node.spawn(ping)))
    with pytest.raises(SimulationError, match="livelock"):
        sim.run(1.0)


def test_latency_samples_stay_bounded_and_spread_over_the_whole_series():
    sim = Simulation(1, max_samples=64)
    for i in range(10_000):
        sim.record_latency("op", i / 1000)
    samples = sim.latencies["op"]
    assert len(samples.values) < 64 and samples.seen == 10_000 and samples.max == 9.999
    assert samples.values[0] < 0.5 and samples.values[-1] > 9.0  # early and late both kept


def test_latency_samples_keep_their_virtual_time_and_exact_counts_per_time_bin():
    sim = Simulation(1, max_samples=64)
    moments = [i * 0.037 for i in range(3000)]  # 111 virtual seconds: the bins must widen
    for t in moments:
        sim.now = t
        sim.record_latency("op", t / 100)
    samples = sim.latencies["op"]
    assert len(samples.times) == len(samples.values) < 64
    assert all(abs(v - t / 100) < 1e-12 for t, v in zip(samples.times, samples.values))  # kept in pairs
    assert len(samples.counts) <= samples.BINS and samples.width * len(samples.counts) > moments[-1]
    assert samples.counts == [sum(1 for t in moments if int(t / samples.width) == b)
                              for b in range(len(samples.counts))]


def two_nodes(seed: int = 4):
    """Node "b" with an idle process, node "a" whose processes the test spawns."""
    sim = Simulation(seed)
    remote = {}

    async def idle(proc):
        await proc.receive()

    sim.add_node("b", lambda node: remote.setdefault("pid", node.spawn(idle)))
    sim.add_node("a", lambda node: None)
    sim.run(0.1)
    return sim, remote["pid"]


def watch_across(sim, target, seen: list, *, link: bool = True, monitor: bool = True) -> None:
    """A process on node "a" that traps exits, links to and monitors `target`, and keeps
    what it receives (with the virtual time it arrived) in `seen`."""
    async def watcher(proc):
        proc.trap_exit = True
        if link:
            proc.link(target)
        if monitor:
            proc.monitor(target)
        while True:
            msg = await proc.receive()
            seen.append((sim.now, type(msg).__name__, msg.reason))

    sim.node("a").spawn(watcher)


@pytest.mark.parametrize("oneway", [False, True])
def test_a_link_and_a_monitor_set_up_across_a_cut_fail_at_once_with_noconnection(oneway):
    sim, target = two_nodes()
    sim.network.partition([["b"], ["a"]] if oneway else [["a"], ["b"]], oneway=oneway)  # one-way: only b -> a cut
    now = sim.now
    seen: list = []
    watch_across(sim, target, seen)
    sim.run(0.2)
    assert sorted(seen) == [(now, "Down", NOCONNECTION), (now, "Exit", NOCONNECTION)]
    assert sim.node("b").process_info(target)["links"] == []  # nothing reached the far side
    assert sim.node("b").process_info(target)["monitored_by"] == []
    sim.node("b").exit(target, "boom")
    sim.run(1.0)
    assert len(seen) == 2


@pytest.mark.parametrize("oneway", [False, True])
def test_a_call_across_a_cut_fails_at_once_with_noconnection(oneway):
    sim, target = two_nodes()
    sim.network.partition([["b"], ["a"]], oneway=oneway)  # one-way: the request's way is open
    out: list = []

    async def client(proc):
        try:
            await proc.call(target, "x", timeout=5.0)
        except CallExit as exc:
            out.append((sim.now, exc.reason))

    now = sim.now
    sim.node("a").spawn(client)
    sim.run(1.0)
    assert out == [(now, NOCONNECTION)]  # not a timeout five seconds later


def test_a_link_and_a_monitor_set_up_after_the_heal_work_again():
    sim, target = two_nodes()
    sim.network.partition([["a"], ["b"]], oneway=True)
    sim.run(0.2)
    sim.network.heal()
    seen: list = []
    watch_across(sim, target, seen)
    sim.run(0.3)
    assert seen == [] and len(sim.node("b").process_info(target)["monitored_by"]) == 1
    sim.node("b").exit(target, "boom")
    sim.run(1.0)
    assert sorted(r[1:] for r in seen) == [("Down", "boom"), ("Exit", "boom")]


def test_a_link_and_a_monitor_set_up_towards_a_node_that_is_down_fail_with_noconnection():
    sim, target = two_nodes()
    sim.crash_node("b")
    seen: list = []
    watch_across(sim, target, seen)
    sim.run(0.2)
    assert sorted(r[1:] for r in seen) == [("Down", NOCONNECTION), ("Exit", NOCONNECTION)]
