"""Coroutine processes, selective receive, links, monitors, exit signals, names, timers."""

import pytest

from actors import (AlreadyRegistered, Down, Exit, GenServer, Node, NoProc, ReceiveTimeout,
                    Registry)
from kernel_helpers import queued


pytestmark = pytest.mark.usefixtures("quiet_crash_reports")  # processes crash on purpose here


def recorder(node, trap=False):
    """A process that records every message it receives."""
    seen = []

    async def body(proc):
        while True:
            seen.append(await proc.receive())

    return node.spawn(body, trap_exit=trap), seen


def test_selective_receive_keeps_the_others_in_order():
    node = Node(seed=1)
    out = []

    async def body(proc):
        out.append(await proc.receive(lambda m: m[0] == "b"))
        out.append(await proc.receive())
        out.append(await proc.receive())
        out.append(await proc.receive())

    pid = node.spawn(body)
    for msg in [("a", 1), ("c", 2), ("a", 3), ("b", 4)]:
        node.send(pid, msg)
    node.run()
    assert out == [("b", 4), ("a", 1), ("c", 2), ("a", 3)]


def test_selective_receive_waits_past_non_matching_messages():
    node = Node(seed=1)
    out = []

    async def body(proc):
        out.append(await proc.receive(lambda m: m == "wanted"))
        out.append(await queued(proc))

    pid = node.spawn(body)
    node.run()
    node.send(pid, "noise1")
    node.run()
    node.send(pid, "noise2")
    node.send(pid, "wanted")
    node.run()
    assert out == ["wanted", ["noise1", "noise2"]]


def test_receive_timeout_and_sleep_use_node_time():
    node = Node(seed=1)
    out = []

    async def body(proc):
        try:
            await proc.receive(timeout=2.5)
        except ReceiveTimeout:
            out.append(("timeout", proc.now()))
        with pytest.raises(ReceiveTimeout):
            await proc.receive(timeout=0)
        await proc.sleep(1.5)
        out.append(("slept", proc.now()))

    node.spawn(body)
    node.run()
    assert out == [("timeout", 2.5), ("slept", 4.0)]


def test_coroutine_process_exits_normally_on_return_and_crashes_on_raise():
    node = Node(seed=1)
    downs = []

    async def ok(proc):
        return

    async def bad(proc):
        raise KeyError("x")

    async def watcher(proc):
        for target in (proc.spawn(ok), proc.spawn(bad)):
            proc.monitor(target)
        downs.append(await proc.receive())
        downs.append(await proc.receive())

    node.spawn(watcher)
    node.run()
    reasons = sorted(repr(d.reason) for d in downs)
    assert reasons == ["'normal'", "KeyError('x')"]


def test_links_propagate_abnormal_exits_and_trap_turns_them_into_messages():
    node = Node(seed=1)
    trapper, seen = recorder(node, trap=True)
    plain, _ = recorder(node)

    async def doomed(proc):
        await proc.receive(lambda m: m == "die")
        raise ValueError("boom")

    victim = node.spawn(doomed)
    node.run()
    node.get_process(victim).link(trapper)
    node.get_process(victim).link(plain)
    node.send(victim, "die")
    node.run()
    assert not node.is_alive(plain)
    assert node.is_alive(trapper)
    assert seen[0].pid == victim and isinstance(seen[0].reason, ValueError)


def test_normal_exit_does_not_kill_linked_peers():
    node = Node(seed=1)
    peer, _ = recorder(node)

    async def short(proc):
        proc.link(peer)

    node.spawn(short)
    node.run()
    assert node.is_alive(peer)


def test_exit_signals_follow_erlang():
    node = Node(seed=1)
    plain, _ = recorder(node)
    trapper, seen = recorder(node, trap=True)
    node.exit(plain, "normal")
    node.exit(trapper, "normal")
    node.exit(trapper, "shutdown")
    node.run()
    assert node.is_alive(plain)
    assert seen == [Exit(None, "normal"), Exit(None, "shutdown")]
    node.exit(trapper, "kill")  # untrappable
    node.exit(plain, ("shutdown", "reason"))
    node.run()
    assert not node.is_alive(trapper) and not node.is_alive(plain)


def test_kill_arrives_as_killed_and_a_kill_through_a_link_is_trappable():
    node = Node(seed=1)
    trapper, seen = recorder(node, trap=True)

    async def middle(proc):
        proc.link(trapper)
        await proc.receive()

    mid = node.spawn(middle)
    node.run()
    node.exit(mid, "kill")
    node.run()
    assert seen == [Exit(mid, "killed")]

    # A process that exits with reason "kill" sends "kill" through its links: trappable.
    async def exits_with_kill(proc):
        proc.link(trapper)
        proc.exit(proc.pid, "kill")

    node.spawn(exits_with_kill)
    node.run()
    assert node.is_alive(trapper)
    assert seen[1].reason == "killed"


def test_monitors_fire_once_and_noproc_for_dead_targets():
    node = Node(seed=1)
    target, _ = recorder(node)
    out = []

    async def watcher(proc):
        r1 = proc.monitor(target)
        r2 = proc.monitor(target)
        out.append((r1, r2))
        while True:
            out.append(await proc.receive())

    w = node.spawn(watcher)
    node.run()
    node.exit(target, "shutdown")
    node.run()
    r1, r2 = out[0]
    assert out[1:] == [Down(r1, target, "shutdown"), Down(r2, target, "shutdown")]
    assert node.get_process(w).monitor(target) != r1
    node.run()
    assert out[-1].reason == "noproc"


def test_demonitor_and_flush():
    node = Node(seed=1)
    a, _ = recorder(node)
    b, _ = recorder(node)
    out = []

    async def watcher(proc):
        ra = proc.monitor(a)
        rb = proc.monitor(b)
        proc.demonitor(ra)
        await proc.receive(lambda m: m == "go")
        proc.demonitor(rb, flush=True)  # its Down is already queued: flush drops it
        proc.send(proc.pid, "end")
        out.append(await proc.receive())

    w = node.spawn(watcher)
    node.run()
    node.exit(a, "kill")
    node.exit(b, "kill")
    node.send(w, "go")
    node.run()
    assert out == ["end"]


def test_spawn_monitor_and_link_to_dead_process():
    node = Node(seed=1)
    out = []

    async def quick(proc):
        return

    async def parent(proc):
        pid, ref = proc.spawn_monitor(quick)
        out.append(await proc.receive())
        out.append((pid, ref))
        with pytest.raises(NoProc):
            proc.link(pid)
        proc.trap_exit = True
        proc.link(pid)
        out.append(await proc.receive())

    node.spawn(parent)
    node.run()
    pid, ref = out[1]
    assert out[0] == Down(ref, pid, "normal")
    assert out[2] == Exit(pid, "noproc")


def test_unlink_stops_propagation():
    node = Node(seed=1)
    peer, _ = recorder(node)

    async def body(proc):
        proc.link(peer)
        proc.unlink(peer)
        raise RuntimeError("alone")

    node.spawn(body)
    node.run()
    assert node.is_alive(peer)


def test_messages_from_one_sender_arrive_in_order_with_its_exit_last():
    node = Node(seed=7)
    trapper, seen = recorder(node, trap=True)

    async def sender(proc):
        proc.link(trapper)
        for i in range(100):
            proc.send(trapper, i)
        raise RuntimeError("done")

    pid = node.spawn(sender)
    node.run()
    assert seen[:100] == list(range(100))
    assert seen[100].pid == pid


def test_register_whereis_and_names_removed_on_exit():
    node = Node(seed=1)
    a, seen = recorder(node)
    b, _ = recorder(node)
    node.register("svc", a)
    assert node.whereis("svc") == a
    with pytest.raises(AlreadyRegistered):
        node.register("svc", b)
    with pytest.raises(ValueError):
        node.register("other", a)  # one name per process
    with pytest.raises(ValueError):
        node.register(None, b)
    node.send("svc", "hi")
    node.run()
    assert seen == ["hi"]
    with pytest.raises(NoProc):
        node.send("nobody", "hi")
    node.cast("nobody", "fine")  # cast never fails
    node.exit(a, "kill")
    assert node.whereis("svc") is None
    node.register("svc", b)
    node.unregister("svc")
    assert node.whereis("svc") is None


def test_keyed_registry_and_via():
    class Echo(GenServer):
        def init(self, tag):
            self.tag = tag

        def handle_call(self, request, caller):
            return (self.tag, request)

    node = Node(seed=1)
    users = Registry(node, "users")
    alice = node.spawn(Echo, "a", name=users.via(("user", "alice")))
    assert users.lookup(("user", "alice")) == alice
    assert users.keys(alice) == [("user", "alice")]
    with pytest.raises(AlreadyRegistered):
        node.spawn(Echo, "dup", name=users.via(("user", "alice")))
    assert node.run_until_complete(node.call(users.via(("user", "alice")), 1)) == ("a", 1)
    users.register(("device", 1), alice)
    assert len(users) == 2
    node.exit(alice, "kill")
    assert len(users) == 0 and users.lookup(("user", "alice")) is None
    with pytest.raises(NoProc):
        node.send(users.via(("user", "alice")), "x")


def test_send_after_is_never_synchronous_and_cancel_reports_time_left():
    node = Node(seed=1)
    pid, seen = recorder(node)
    node.send_after(0, pid, "zero")
    assert seen == []
    ref = node.send_after(10, pid, "ten")
    node.run_for(4)
    assert seen == ["zero"]
    assert node.cancel_timer(ref) == pytest.approx(6.0)
    assert node.cancel_timer(ref) is False
    fired = node.send_after(1, pid, "one")
    node.run_for(2)
    assert seen == ["zero", "one"]
    assert node.cancel_timer(fired) is False


def test_timers_to_a_pid_die_with_it_and_names_resolve_at_fire_time():
    node = Node(seed=1)
    old, old_seen = recorder(node)
    node.register("slot", old)
    to_pid = node.send_after(5, old, "to pid")
    node.send_after(5, "slot", "to name")
    node.exit(old, "kill")
    assert node.cancel_timer(to_pid) is False  # auto-cancelled with its process
    new, new_seen = recorder(node)
    node.register("slot", new)
    node.run()
    assert old_seen == [] and new_seen == ["to name"]


def test_nodes_are_isolated():
    a, b = Node("a", seed=1), Node("b", seed=1)
    pa, _ = recorder(a)
    pb, _ = recorder(b)
    assert pa.serial == pb.serial and pa != pb
    a.register("x", pa)
    assert b.whereis("x") is None
    a.send(pa, "only a")
    a.run()
    b.run()
    assert b.process_info(pb)["mailbox_len"] == 0


def test_run_in_process_gives_an_async_function_a_face_for_processes_and_one_for_outside():
    from actors.requests import run_in_process

    node = Node(seed=1)
    pids = []

    async def double(proc, x):
        pids.append(proc.pid)
        return 2 * x

    async def fail(proc):
        raise ValueError("no")

    async def wait_forever(proc):
        pids.append(proc.pid)
        await proc.receive()

    assert node.run_until_complete(run_in_process(node, double, 21)) == 42  # in a new process

    async def inside(proc):
        return await run_in_process(proc, double, 4), proc.pid
    got, caller = node.run_until_complete(run_in_process(node, inside))
    assert got == 8 and pids[-1] == caller  # in the calling process itself
    with pytest.raises(ValueError, match="no"):
        node.run_until_complete(run_in_process(node, fail))
    stopped = run_in_process(node, wait_forever)
    node.run()  # it started and waits
    node.exit(pids[-1], "kill")
    with pytest.raises(RuntimeError, match="wait_forever was stopped"):
        node.run_until_complete(stopped)
    with pytest.raises(TypeError, match="caller must be"):
        run_in_process("node", double, 1)
