"""System messages (OTP's sys), the external stop, and hibernation, through actors.system."""
import logging
import tracemalloc

import pytest

from actors import CallExit, CallTimeout, Exit, GenServer, Node, NoProc, RemoteName
from actors.system import get_state, get_status, replace_state, resume, stop, suspend
from conftest import arun


class Counter(GenServer):
    idle_timeout = 1.0

    def init(self, n=0):
        self.n = n
        self.seen = []
        self.idled = 0

    def handle_call(self, request, caller):
        return self.n

    def handle_cast(self, msg):
        self.seen.append((msg, self.now()))
        self.n += 1

    def handle_idle(self):
        self.idled += 1

    def format_status(self, state):
        return {k: v for k, v in state.items() if k != "seen"}


def run(node, fut):
    return node.run_until_complete(fut)


def test_get_state_and_replace_state_from_outside_and_from_a_process():
    node = Node(seed=1)
    pid = node.spawn(Counter, 5)
    assert run(node, get_state(node, pid)) == {"n": 5, "seen": [], "idled": 0}
    assert run(node, replace_state(node, pid, lambda s: {**s, "n": 50}))["n"] == 50
    assert run(node, node.call(pid, "get")) == 50  # the server runs on with the new state
    got = []

    async def admin(proc):
        got.append((await get_state(proc, pid))["n"])
        got.append((await replace_state(proc, pid, lambda s: {**s, "n": s["n"] + 1}))["n"])

    node.spawn(admin)
    node.run()
    assert got == [50, 51] and run(node, node.call(pid, "get")) == 51


def test_a_failing_replace_state_keeps_the_state_and_raises_in_the_caller():
    node = Node(seed=1)
    pid = node.spawn(Counter, 5)
    with pytest.raises(ZeroDivisionError):
        run(node, replace_state(node, pid, lambda s: 1 / 0))
    with pytest.raises(TypeError, match="dict of its attributes"):
        run(node, replace_state(node, pid, lambda s: "not a dict"))
    assert run(node, node.call(pid, "get")) == 5


def test_a_suspended_server_answers_system_messages_only_and_resumes_in_order():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    node.run_for(1.5)  # idle once, at 1.0
    run(node, suspend(node, pid))
    node.cast(pid, "a")
    waiting = node.call(pid, "get", timeout=None)
    node.cast(pid, "b")
    node.run_for(10.0)
    assert not waiting.done()  # calls and casts wait, and no idle timeout fires
    status = run(node, get_status(node, pid))
    assert status["status"] == "suspended" and status["mailbox_len"] == 3
    assert status["state"] == {"n": 0, "idled": 1}  # format_status hid "seen"
    assert status["class"] == f"{__name__}.Counter" and status["pid"] == pid
    run(node, resume(node, pid))
    assert run(node, waiting) == 1  # queued in order: "a", then the call, then "b"
    assert run(node, get_state(node, pid))["seen"] == [("a", 11.5), ("b", 11.5)]
    node.run_for(5.0)
    assert run(node, get_state(node, pid))["idled"] == 2  # idle again once resumed


def test_a_suspended_server_still_terminates_on_its_parents_exit():
    events = []

    class Child(GenServer):
        def init(self):
            self.trap_exit = True

        def terminate(self, reason):
            events.append(("terminate", reason))

    async def parent(proc):
        child = proc.spawn_link(Child)
        await suspend(proc, child)
        events.append("suspended")
        await proc.receive(lambda m: m == "go")
        raise RuntimeError("parent fails")

    node = Node(seed=1)
    logging.getLogger("actors").setLevel(logging.CRITICAL)
    try:
        ppid = node.spawn(parent)
        node.run()
        node.send(ppid, "go")
        node.run()
    finally:
        logging.getLogger("actors").setLevel(logging.NOTSET)
    assert events[0] == "suspended" and isinstance(events[1][1], RuntimeError) and len(node) == 0


def test_stop_waits_for_terminate_and_the_exit():
    events = []

    class Closing(GenServer):
        async def terminate(self, reason):
            await self.sleep(2.0)
            events.append(("terminated", reason, self.now()))

    node = Node(seed=1)
    pid = node.spawn(Closing)
    assert run(node, stop(node, pid, "shutdown")) is None
    assert events == [("terminated", "shutdown", 2.0)] and not node.is_alive(pid)
    with pytest.raises(NoProc):
        run(node, stop(node, pid))
    slow = node.spawn(Closing)
    with pytest.raises(CallTimeout):
        run(node, stop(node, slow, timeout=1.0))
    assert node.is_alive(slow)  # not killed: still terminating
    node.run()
    assert not node.is_alive(slow) and events[-1] == ("terminated", "normal", 4.0)


def test_stop_from_a_process_of_a_suspended_server_and_of_a_failing_terminate(caplog):
    class Broken(GenServer):
        def terminate(self, reason):
            raise ValueError("cleanup failed")

    node = Node(seed=1)
    quiet = node.spawn(Counter)
    broken = node.spawn(Broken)
    got = []

    async def admin(proc):
        await suspend(proc, quiet)
        got.append(await stop(proc, quiet, ("shutdown", "maintenance")))
        try:
            await stop(proc, broken)
        except CallExit as exc:
            got.append(type(exc.reason))

    with caplog.at_level(logging.ERROR, logger="actors"):
        node.spawn(admin)
        node.run()
    assert got == [None, ValueError] and len(node) == 0
    assert not any("stop report" in r.getMessage() for r in caplog.records)  # a clean reason


def test_only_genservers_of_this_node_take_system_messages():
    async def plain(proc):
        await proc.receive()

    node = Node("a@host", seed=1)
    other = Node("b@host", seed=1)
    node.connect(other)
    other.spawn(Counter, name="far")
    waiting = node.spawn(plain)
    node.run()
    with pytest.raises(TypeError, match="only GenServers"):
        run(node, get_state(node, waiting))
    with pytest.raises(ValueError, match="this node"):
        run(node, get_state(node, RemoteName("far", "b@host")))
    with pytest.raises(NoProc):
        run(node, get_state(node, "nobody"))
    with pytest.raises(TypeError, match="caller"):
        get_state("not a caller", "far")


def test_a_behaviour_on_genserver_inherits_system_messages_with_its_own_state():
    class Machine(GenServer):  # a state machine keeps (state, data), not attributes
        def init(self):
            self.current, self.data = "idle", {"count": 0}

        def system_get_state(self):
            return (self.current, self.data)

        def system_replace_state(self, state):
            self.current, self.data = state

    node = Node(seed=1)
    pid = node.spawn(Machine)
    assert run(node, get_state(node, pid)) == ("idle", {"count": 0})
    run(node, replace_state(node, pid, lambda s: ("busy", s[1])))
    assert run(node, get_status(node, pid))["state"] == ("busy", {"count": 0})


def test_system_messages_on_the_real_time_driver():
    async def main():
        async with Node() as node:
            pid = node.spawn(Counter, 3)
            await suspend(node, pid)
            assert (await get_status(node, pid))["status"] == "suspended"
            await resume(node, pid)
            assert (await get_state(node, pid))["n"] == 3
            await stop(node, pid)
            assert not node.is_alive(pid)

    arun(main())


class Sleepy(GenServer):
    hibernate_after = 5.0

    def init(self, log):
        self.log = log

    def handle_cast(self, msg):
        self.log.append((msg, self.now()))
        if msg == "now":
            self.hibernate()

    def on_hibernate(self):
        self.log.append(("hibernated", self.now()))


def test_hibernate_now_and_after_a_quiet_period():
    node = Node(seed=1)
    log = []
    pid = node.spawn(Sleepy, log)
    node.run_for(6.0)  # quiet since init: hibernates at 5
    node.cast(pid, "poke")
    node.run_for(3.0)
    node.cast(pid, "poke")  # the quiet period starts over
    node.run_for(6.0)
    node.cast(pid, "now")  # hibernate() as soon as the callback is done
    node.run_for(10.0)  # once per quiet period: not again at 20
    assert log == [("hibernated", 5.0), ("poke", 6.0), ("poke", 9.0), ("hibernated", 14.0),
                   ("now", 15.0), ("hibernated", 15.0)]
    assert run(node, get_state(node, pid))["log"] is log  # woken by a message, state intact


def test_hibernation_frees_the_mailbox_of_idle_servers():
    class Idle(GenServer):
        def handle_cast(self, msg):
            if msg == "sleep":
                self.hibernate()

    node = Node(seed=1)
    pids = [node.spawn(Idle) for _ in range(300)]
    tracemalloc.start()
    try:
        for pid in pids:
            node.cast(pid, "wake")  # each allocates a mailbox that stays once empty
        node.run()
        awake = tracemalloc.get_traced_memory()[0]
        for pid in pids:
            node.cast(pid, "sleep")
        node.run()
        asleep = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert awake - asleep > 300 * 500, (awake, asleep)  # an empty mailbox is ~770 bytes
    node.cast(pids[0], "wake")  # a message wakes it
    node.run()
    assert all(node.is_alive(pid) for pid in pids)


def test_a_stop_from_outside_exit_is_an_ordinary_exit_for_links():
    got = []

    async def watcher(proc, target):
        proc.trap_exit = True
        proc.link(target)
        got.append(await proc.receive(lambda m: type(m) is Exit))

    node = Node(seed=1)
    pid = node.spawn(Counter)
    node.spawn(watcher, pid)
    node.run_for(0.5)
    run(node, stop(node, pid, "shutdown"))
    node.run()
    assert got == [Exit(pid, "shutdown")]


class Tally(GenServer):
    """Counts casts; its init awaits, it hibernates when quiet and answers calls late."""

    hibernate_after = 0.5

    async def init(self, log):
        self.log = log
        await self.sleep(0.25)
        self.n = 0

    def handle_cast(self, msg):
        self.n += 1
        self.log.append(("cast", msg, self.now()))

    async def handle_call(self, request, caller):
        await self.sleep(0.1)
        return self.n

    def on_hibernate(self):
        self.log.append(("hibernated", self.now()))


def otp_scenario(seed):
    """Clients racing an administrator that starts, suspends, edits, resumes and stops a
    server: what happens, in which order, depends on the seed alone."""
    node = Node(seed=seed)
    log = []

    async def client(proc, server, name):
        for i in range(3):
            proc.cast(server, (name, i))
            await proc.sleep(0)
        log.append((name, "got", await proc.call(server, "n"), proc.now()))

    async def admin(proc):
        server = await proc.start_link(Tally, log)
        log.append(("started", proc.now()))
        for name in "abc":
            proc.spawn(client, server, name)
        await proc.sleep(0)
        await suspend(proc, server)
        log.append(("suspended", (await get_status(proc, server))["mailbox_len"]))
        await replace_state(proc, server, lambda s: {**s, "n": s["n"] + 100})
        await resume(proc, server)
        await proc.sleep(2.0)
        await stop(proc, server)  # "normal": the link does not take the admin down
        log.append(("stopped", proc.now()))

    node.spawn(admin)
    node.run()
    assert len(node) == 0
    return log


def test_system_messages_start_and_hibernation_are_deterministic_per_seed():
    events = otp_scenario(3)
    assert events == otp_scenario(3)
    assert events[0] == ("started", 0.25) and events[-1] == ("stopped", 2.25)
    assert sum(e[0] == "cast" for e in events) == 9 and ("hibernated", pytest.approx(1.05)) in events
    assert len({tuple(otp_scenario(seed)) for seed in range(8)}) > 1


def test_system_messages_a_suspended_server_takes_are_counted_as_messages_in():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    run(node, suspend(node, pid))
    node.cast(pid, "a")  # waits behind the suspension
    run(node, get_state(node, pid))
    run(node, resume(node, pid))
    node.run_for(0.5)
    assert node.process_info(pid)["messages_in"] == 4  # suspend, get_state, resume, "a"
    assert node.statistics()["messages"] == 4  # the node's count agrees
