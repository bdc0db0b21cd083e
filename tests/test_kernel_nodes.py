"""Several nodes in one interpreter: deliveries between them go through the transport."""
import pytest

from actors import (NOCONNECTION, CallExit, CallTimeout, Down, Exit, GenServer, Node, NoProc, NoReply, ReceiveTimeout,
                    RemoteName, packb, unpackb)
from actors.boundary import SETUP, kind_of


class Echo(GenServer):
    def handle_call(self, request, caller):
        return ("echo", request)


class QueueTransport:
    """Holds every cross-node delivery until `flush` (links and monitors being set up
    arrive at once, as in the simulator); `drop` loses them instead."""

    def __init__(self, *nodes):
        self.nodes = {node.name: node for node in nodes}
        self.queue = []
        self.drop = False
        self.kinds = []  # every delivery's kind, in the order they were handed over

    def __call__(self, src, dst, delivery):
        self.kinds.append(kind_of(delivery))
        if kind_of(delivery) in SETUP:
            self.nodes[dst].arrive(delivery)
        elif not self.drop:
            self.queue.append((dst, delivery))

    def flush(self):
        while self.queue:
            dst, delivery = self.queue.pop(0)
            self.nodes[dst].arrive(delivery)


def two_nodes():
    a, b = Node("a", seed=1), Node("b", seed=2)
    net = QueueTransport(a, b)
    a.transport = b.transport = net
    return a, b, net


def run_all(net, *nodes):
    """Run what is ready on every node, without moving their clocks, until quiet."""
    for _ in range(100):
        for node in nodes:
            node.run(until=node.now())
        if not net.queue:
            return
        net.flush()


def monitored_by(node, pid):
    return node.process_info(pid)["monitored_by"]


def test_a_call_across_nodes_is_two_deliveries_through_the_transport_and_leaves_no_monitor():
    a, b, net = two_nodes()
    server = b.spawn(Echo)
    out = []

    async def client(proc):
        out.append(await proc.call(server, "hi"))
        out.append(await proc.call(server, "again"))

    a.spawn(client)
    a.run(until=0)
    b.run(until=0)
    assert out == [] and len(net.queue) == 1  # the request is in flight...
    assert monitored_by(b, server) == []  # ...and the call's monitor with it
    net.flush()
    assert len(monitored_by(b, server)) == 1  # set up on arrival
    run_all(net, a, b)
    assert out == [("echo", "hi"), ("echo", "again")]
    assert net.kinds == ["call", "reply"] * 2  # the reply ends the monitor: no demonitor
    assert monitored_by(b, server) == []


class Silent(GenServer):
    def handle_call(self, request, caller):
        return NoReply  # never answers


def test_a_call_that_times_out_sends_a_demonitor_and_its_late_reply_is_dropped():
    a, b, net = two_nodes()

    class Late(GenServer):
        def handle_call(self, request, caller):
            self.send_after(1.0, self.pid, caller)  # replies after the caller gave up
            return NoReply

        def handle_info(self, caller):
            self.reply(caller, "late")

    server = b.spawn(Late)
    out = []

    async def client(proc):
        try:
            await proc.call(server, "x", timeout=0.5)
        except CallTimeout:
            out.append("timeout")
        try:
            out.append(await proc.receive(timeout=2.0))
        except ReceiveTimeout:
            out.append("nothing")

    a.spawn(client)
    for t in (0.0, 0.5, 1.0, 3.0):
        for node in (a, b):
            node.run(until=t)
        run_all(net, a, b)
    assert out == ["timeout", "nothing"]
    assert net.kinds == ["call", "demonitor", "reply"]
    assert monitored_by(b, server) == []


def test_a_call_to_a_process_dead_on_arrival_fails_with_noproc_and_a_killed_server_with_its_reason():
    a, b, net = two_nodes()
    gone, doomed = b.spawn(Echo), b.spawn(Silent)
    b.exit(gone, "kill")
    out = []

    async def client(proc, server):
        try:
            await proc.call(server, "x")
        except (NoProc, CallExit) as exc:
            out.append(type(exc).__name__)

    a.spawn(client, gone)
    a.spawn(client, doomed)
    run_all(net, a, b)
    assert out == ["NoProc"] and len(monitored_by(b, doomed)) == 1
    b.exit(doomed, "kill")
    run_all(net, a, b)
    assert out == ["NoProc", "CallExit"]


def test_a_forwarded_call_answered_from_a_third_node_ends_the_first_monitor_with_a_demonitor():
    a, b, c = Node("a", seed=1), Node("b", seed=2), Node("c", seed=3)
    net = QueueTransport(a, b, c)
    a.transport = b.transport = c.transport = net
    final = c.spawn(Echo)

    class Forwarder(GenServer):
        def handle_call(self, request, caller):
            self.node.forward(final, request, caller)
            return NoReply

    front = b.spawn(Forwarder)
    out = []

    async def client(proc):
        out.append(await proc.call(front, "hi"))

    a.spawn(client)
    run_all(net, a, b, c)
    assert out == [("echo", "hi")]
    assert net.kinds == ["call", "call", "reply", "demonitor"]
    assert monitored_by(b, front) == [] and monitored_by(c, final) == []


def test_exits_and_downs_cross_nodes_and_dropped_messages_are_lost():
    a, b, net = two_nodes()
    seen = []

    async def watcher(proc):
        proc.trap_exit = True
        while True:
            seen.append(await proc.receive())

    async def remote(proc):
        await proc.receive(lambda m: m == "die")
        raise RuntimeError("remote failure")

    w = a.spawn(watcher)
    r = b.spawn(remote)
    a.get_process(w).link(r)
    ref = a.get_process(w).monitor(r)
    net.drop = True
    a.send(r, "lost")
    net.drop = False
    a.send(r, "die")
    run_all(net, a, b)
    assert [type(m) for m in seen] == [Exit, Down]
    assert seen[1] == Down(ref, r, seen[0].reason)
    assert isinstance(seen[0].reason, RuntimeError)


def test_a_restarted_node_never_reuses_old_pids():
    old = Node("db", seed=1)
    stale = old.spawn(Echo)
    new = Node("db", seed=1, creation=1)
    fresh = new.spawn(Echo)
    assert fresh != stale and new.make_ref() != old.make_ref()


def test_a_remote_name_reaches_the_process_registered_on_the_connected_node():
    a, b, net = two_nodes()
    a.connect(b)
    b.register("echo", b.spawn(Echo))
    out = []

    async def client(proc):
        out.append(await proc.call(RemoteName("echo", "b"), "hi"))
        out.append(await proc.call(RemoteName("nobody", "b"), "hi", 1.0))

    a.spawn(client)
    run_all(net, a, b)
    a.run()
    assert out[0] == ("echo", "hi") and a.nodes() == ["b"] and b.nodes() == ["a"]
    assert len(out) == 1  # the second call raised NoProc, which ended the client
    a.send(RemoteName("echo", "c"), "to a node never connected: goes nowhere")
    with pytest.raises(ValueError, match="registered on its own node"):
        b.register(RemoteName("x", "b"), b.spawn(Echo))


def test_disconnecting_breaks_links_monitors_and_calls_with_noconnection():
    a, b, net = two_nodes()
    a.connect(b)
    server = b.spawn(Echo)
    seen = {"a": [], "b": []}

    async def watcher(proc, side, peer_pid):
        proc.trap_exit = True
        if peer_pid is not None:
            proc.link(peer_pid)
        proc.monitor(server)
        seen[side].append(await proc.receive())
        seen[side].append(await proc.receive())

    async def caller(proc):
        try:
            await proc.call(server, "slow", 60.0)
        except CallExit as exc:
            seen["a"].append(("call", exc.reason))

    b_side = b.spawn(watcher, "b", None)
    a.spawn(watcher, "a", b_side)
    net.drop = True  # the call's request never arrives: it waits across the link
    a.spawn(caller)
    run_all(net, a, b)
    net.drop = False
    a.disconnect("b")
    run_all(net, a, b)
    assert a.nodes() == [] and b.nodes() == []
    got = {(type(m).__name__, m[-1]): m for m in seen["a"]}
    assert set(got) == {("Exit", NOCONNECTION), ("Down", NOCONNECTION), ("tuple", NOCONNECTION)}
    assert got["Exit", NOCONNECTION].pid == b_side and got["Down", NOCONNECTION].pid == server
    assert [type(m).__name__ for m in seen["b"]] == ["Exit"]  # its monitor is on its own node
    assert seen["b"][0].reason == NOCONNECTION


def crash_in_flight(net, a, b, watcher):
    """Spawn `watcher(target)` on b, watching a process on a that then crashes: returns
    (target, watcher pid) with the crash's exit signal and Down in flight to b."""
    async def doomed(proc):
        await proc.receive()
        raise RuntimeError("boom")

    target = a.spawn(doomed)
    pid = b.spawn(watcher, target)
    run_all(net, a, b)
    a.send(target, "go")
    a.run(until=a.now())
    assert len(net.queue) == 2  # the exit signal and the Down
    return target, pid


@pytest.mark.parametrize("side", ["dead", "live"])
def test_an_exit_and_a_down_lost_in_flight_become_noconnection(side):
    # Erlang removes a link when the exit signal arrives: if the connection is lost with
    # the signal (or the Down) in flight, the far end still hears, as noconnection. The
    # disconnect may come from either node.
    a, b, net = two_nodes()
    a.connect(b)
    seen = []

    async def watcher(proc, target):
        proc.trap_exit = True
        proc.link(target)
        proc.monitor(target)
        seen.append(await proc.receive())
        seen.append(await proc.receive())

    target, _ = crash_in_flight(net, a, b, watcher)
    assert not seen
    net.queue.clear()  # lost with the connection
    (a if side == "dead" else b).disconnect(b.name if side == "dead" else a.name)
    run_all(net, a, b)
    assert sorted((type(m).__name__, m.pid, m.reason) for m in seen) == [
        ("Down", target, NOCONNECTION), ("Exit", target, NOCONNECTION)]


def test_an_exit_in_flight_to_a_process_that_unlinked_is_ignored_and_a_demonitored_down_dropped():
    a, b, net = two_nodes()
    a.connect(b)
    seen = []

    async def watcher(proc, target):
        proc.link(target)  # not trapping: an exit signal that arrived would kill it
        ref = proc.monitor(target)
        await proc.receive(lambda m: m == "forget")
        proc.unlink(target)
        proc.demonitor(ref)
        seen.append(await proc.receive(timeout=1.0))

    target, w = crash_in_flight(net, a, b, watcher)
    b.send(w, "forget")
    b.run(until=b.now())  # unlinked and demonitored while they were in flight
    net.flush()
    b.send(w, "still here")
    run_all(net, a, b)
    assert seen == ["still here"]  # not killed by the signal, and no Down came first


def test_a_pid_decoded_on_its_own_node_reaches_the_live_process():
    node = Node("n1", seed=1)
    seen = []

    async def sink(proc):
        seen.append(await proc.receive())

    pid = node.spawn(sink)
    decoded = unpackb(packb(pid))  # decoded without the node: a plain value, no process object
    assert decoded == pid and decoded is not pid
    assert node.is_alive(decoded) and node.get_process(decoded) is node.get_process(pid)
    node.send(decoded, "found by its serial")
    node.run()
    assert seen == ["found by its serial"] and not node.is_alive(decoded)


def test_loopback_connection_carries_calls_and_links_and_closes_both_ways():
    a, b = Node("a", seed=1), Node("b", seed=2)  # no transport: the loopback delivers at once
    a.connect(b)
    server = b.spawn(Echo)
    out = []

    async def client(proc):
        proc.trap_exit = True
        proc.link(server)
        out.append(await proc.call(server, "over the loopback"))
        out.append(await proc.receive())

    a.spawn(client)
    for _ in range(3):  # what is ready, on each node in turn, without moving the clocks
        a.run(until=0)
        b.run(until=0)
    assert out == [("echo", "over the loopback")]
    b.disconnect("a")  # b's side; the closed connection tells a
    a.run(until=0)
    assert a.nodes() == [] and b.nodes() == [] and out[1] == Exit(server, NOCONNECTION)


def test_without_a_route_to_a_node_a_monitor_fires_noconnection_at_once():
    a = Node("a", seed=1)
    elsewhere = Node("b", seed=1).spawn(Echo)  # never connected, no transport
    seen = []

    async def watcher(proc):
        ref = proc.monitor(elsewhere)
        seen.append((ref, await proc.receive()))

    a.spawn(watcher)
    a.run()
    ref, down = seen[0]
    assert down == Down(ref, elsewhere, NOCONNECTION)


def test_linking_to_a_dead_process_of_another_node_gives_noproc_as_a_signal():
    a, b, net = two_nodes()
    gone = b.spawn(Echo)
    b.exit(gone, "kill")
    seen = []

    async def linker(proc):
        proc.trap_exit = True
        proc.link(gone)  # no error here: the far node answers, as Erlang's does
        seen.append(await proc.receive())

    a.spawn(linker)
    run_all(net, a, b)
    assert seen == [Exit(gone, "noproc")]
