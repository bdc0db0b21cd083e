"""Cluster-wide names (`actors.global_names`) and process groups (`actors.pg`) under the
simulator: built on kernel messages, they meet through its network as they meet over
sockets. Node crashes, restarts and partitions come from the simulator."""
from __future__ import annotations

import pytest

from actors import GenServer, NodeDown, NodeUp, global_names, pg
from sim.core import Simulation

NODES = ("a", "b", "c")


class Idle(GenServer):
    """A process that only lives."""


def cluster(seed: int = 1, names: tuple[str, ...] = NODES) -> Simulation:
    """Nodes running a name server and a pg scope each, connected."""
    sim = Simulation(seed)
    for name in names:
        sim.add_node(name, lambda node: (global_names.start(node), pg.start(node)))
    sim.run(0.5)
    return sim


def run(sim: Simulation, future, until: float = 5.0):
    """Drive the simulation until `future` (a kernel Future) is done; its result."""
    deadline = sim.now + until
    while not future.done() and sim.now < deadline:
        sim.run(sim.now + 0.05)
    assert future.done(), "no answer in time"
    return future.result()


def test_one_name_one_pid_across_nodes_and_readable_everywhere():
    sim = cluster()
    a, b, c = (sim.node(n) for n in NODES)
    first, second = a.spawn(Idle), b.spawn(Idle)
    assert run(sim, global_names.register_name(a, "leader", first)) is True
    assert run(sim, global_names.register_name(b, "leader", second)) is False
    sim.run(sim.now + 0.5)
    assert [global_names.whereis_name(n, "leader") for n in (a, b, c)] == [first, first, first]
    assert global_names.registered_names(c) == ["leader"]


def test_two_nodes_registering_one_name_at_once_get_one_yes():
    sim = cluster(seed=3)
    a, b = sim.node("a"), sim.node("b")
    one, two = a.spawn(Idle), b.spawn(Idle)
    asks = [global_names.register_name(a, "x", one), global_names.register_name(b, "x", two)]
    answers = [run(sim, ask) for ask in asks]
    assert sorted(answers) == [False, True]
    sim.run(sim.now + 0.5)
    winner = one if answers[0] else two
    assert {global_names.whereis_name(sim.node(n), "x") for n in NODES} == {winner}


def test_a_name_goes_when_its_process_exits_or_its_node_crashes():
    sim = cluster()
    a, b, c = (sim.node(n) for n in NODES)
    on_a, on_b = a.spawn(Idle), b.spawn(Idle)
    run(sim, global_names.register_name(a, "x", on_a))
    run(sim, global_names.register_name(b, "y", on_b))
    a.exit(on_a, "kill")
    sim.crash_node("b")
    sim.run(sim.now + 0.5)
    assert global_names.registered_names(c) == [] and global_names.registered_names(a) == []


def test_a_via_and_send_reach_the_registered_process_from_any_node():
    seen: list = []

    class Sink(GenServer):
        def handle_cast(self, msg):
            seen.append(("cast", msg))

        def handle_info(self, msg):
            seen.append(("send", msg))

        def handle_call(self, request, caller):
            return ("answer", request)

    sim = cluster()
    a, c = sim.node("a"), sim.node("c")
    sink = a.spawn(Sink)
    run(sim, global_names.register_name(a, "sink", sink))
    sim.run(sim.now + 0.5)
    c.cast(global_names.via(c, "sink"), 1)
    global_names.send(c, "sink", 2)
    assert run(sim, c.call(global_names.via(c, "sink"), "q")) == ("answer", "q")
    assert seen == [("cast", 1), ("send", 2)]
    with pytest.raises(Exception, match="no process"):
        global_names.send(c, "nobody", 3)


def test_a_name_taken_on_both_sides_of_a_partition_is_kept_by_the_first_node_name_when_it_heals():
    sim = cluster()
    a, c = sim.node("a"), sim.node("c")
    sim.network.partition([["a", "b"], ["c"]])
    sim.run(sim.now + 0.5)
    on_a, on_c = a.spawn(Idle), c.spawn(Idle)
    assert run(sim, global_names.register_name(a, "boss", on_a)) is True
    assert run(sim, global_names.register_name(c, "boss", on_c)) is True  # alone on its side
    sim.network.heal()
    sim.run(sim.now + 1.0)
    assert {global_names.whereis_name(sim.node(n), "boss") for n in NODES} == {on_a}
    assert a.is_alive(on_a) and not c.is_alive(on_c)  # global's resolver: killed, by its own node


def test_group_members_are_seen_on_every_node_and_leave_on_exit_and_on_node_crash():
    sim = cluster()
    a, b, c = (sim.node(n) for n in NODES)
    on_a, on_a2, on_b = a.spawn(Idle), a.spawn(Idle), b.spawn(Idle)
    assert run(sim, pg.join(a, "room", [on_a, on_a2])) == "ok"
    assert run(sim, pg.join(b, "room", on_b)) == "ok"
    assert run(sim, pg.join(b, "other", on_b)) == "ok"
    sim.run(sim.now + 0.5)
    assert sorted(pg.members(c, "room"), key=repr) == sorted([on_a, on_a2, on_b], key=repr)
    assert pg.local_members(a, "room") == (on_a, on_a2) and pg.local_members(c, "room") == ()
    assert sorted(pg.which_groups(c)) == ["other", "room"]
    a.exit(on_a2, "kill")
    sim.crash_node("b")
    sim.run(sim.now + 0.5)
    assert pg.members(c, "room") == (on_a,) and pg.which_groups(c) == ["room"]


def test_joining_twice_needs_leaving_twice_and_only_local_processes_join():
    sim = cluster()
    a, b = sim.node("a"), sim.node("b")
    pid = a.spawn(Idle)
    run(sim, pg.join(a, "g", pid))
    run(sim, pg.join(a, "g", pid))
    sim.run(sim.now + 0.5)
    assert pg.members(b, "g") == (pid, pid)
    assert run(sim, pg.leave(a, "g", pid)) == "ok"
    sim.run(sim.now + 0.5)
    assert pg.members(b, "g") == (pid,)
    assert run(sim, pg.leave(a, "g", pid)) == "ok"
    assert run(sim, pg.leave(a, "g", pid)) == "not_joined"
    with pytest.raises(ValueError, match="not a process of node b"):
        run(sim, pg.join(b, "g", pid))


def test_a_restarted_node_meets_the_groups_again():
    sim = cluster()
    a = sim.node("a")
    pid = a.spawn(Idle)
    run(sim, pg.join(a, "g", pid))
    sim.crash_node("c")
    sim.run(sim.now + 0.5)
    sim.restart_node("c")
    sim.run(sim.now + 0.5)
    assert pg.members(sim.node("c"), "g") == (pid,)


def test_watchers_of_nodes_hear_them_come_and_go():
    seen: list = []

    class Watcher(GenServer):
        def init(self):
            self.monitor_nodes()
            self.monitor_node("b")

        def handle_info(self, msg):
            seen.append(msg)

    sim = Simulation(1)
    sim.add_node("b", lambda node: None)
    sim.add_node("a", lambda node: node.spawn(Watcher))
    sim.add_node("c", lambda node: None)
    sim.run(0.1)
    sim.crash_node("b")
    sim.run(0.2)
    sim.restart_node("b")
    sim.run(0.3)
    # the watch of b fires once; the watcher of every node hears each change
    assert seen == [NodeUp("c"), NodeDown("b", "connection_closed"), NodeDown("b", "connection_closed"),
                    NodeUp("b")]
    seen.clear()
    sim.add_node("d", lambda node: node.spawn(Watcher))  # b is there: no NodeDown at once
    sim.run(0.4)
    assert seen == [NodeUp("d")]
