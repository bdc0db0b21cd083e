"""Starting a GenServer whose `init` awaits: `spawn` returns at once, `start` /
`start_link` / `node.start` wait for the whole `init` (OTP's synchronous start)."""
import logging

import pytest

from actors import Down, Exit, GenServer, Node, StartError
from conftest import arun


class Warming(GenServer):
    """A server whose init waits a second of node time, then succeeds, raises or stops."""

    async def init(self, outcome="ok", log=None):
        self.log = log if log is not None else []
        self.log.append(("init", self.now()))
        await self.sleep(1.0)
        if outcome == "raise":
            raise ValueError("no backend")
        if outcome == "stop":
            self.stop("refused")
        self.log.append(("ready", self.now()))

    def handle_call(self, request, caller):
        return ("answered", self.now())

    def handle_cast(self, msg):
        self.log.append(("cast", msg, self.now()))

    def terminate(self, reason):
        self.log.append(("terminate", reason))


def test_node_start_returns_once_an_async_init_has_finished():
    node = Node(seed=1)
    log = []
    started = node.start(Warming, "ok", log, name="warm")
    assert not started.done()  # init is asleep: the start waits
    pid = node.run_until_complete(started)
    assert node.now() == 1.0 and log == [("init", 0.0), ("ready", 1.0)]
    assert node.whereis("warm") == pid
    assert node.run_until_complete(node.call(pid, "ping")) == ("answered", 1.0)


def test_a_start_of_a_server_whose_init_does_not_await_is_done_at_once():
    class Plain(GenServer):
        def init(self, n):
            self.n = n

    node = Node(seed=1)
    started = node.start(Plain, 1)
    assert started.done() and node.is_alive(started.result())


@pytest.mark.parametrize("outcome, reason", [("raise", ValueError), ("stop", "refused")])
def test_node_start_of_a_failing_async_init_raises_start_error_and_leaves_nothing(
        quiet_crash_reports, outcome, reason):
    node = Node(seed=1)
    log = []
    with pytest.raises(StartError) as info:
        node.run_until_complete(node.start(Warming, outcome, log, name="warm"))
    assert (isinstance(info.value.reason, reason) if isinstance(reason, type)
            else info.value.reason == reason)
    assert node.processes() == [] and node.whereis("warm") is None
    assert ("terminate", info.value.reason) not in log  # a failed init runs no terminate
    node.run_until_complete(node.start(Warming, "ok", name="warm"))  # the name is free again


def test_messages_sent_during_an_async_init_wait_for_it():
    node = Node(seed=1)
    log = []
    pid = node.spawn(Warming, "ok", log)  # spawn does not wait
    node.cast(pid, "early")
    node.run()
    assert log == [("init", 0.0), ("ready", 1.0), ("cast", "early", 1.0)]


def test_spawn_does_not_wait_and_a_late_init_failure_is_an_exit(caplog):
    got = []

    async def parent(proc):
        proc.trap_exit = True
        pid = proc.spawn_link(Warming, "raise")
        ref = proc.monitor(pid)
        got.append(("spawned", proc.now()))
        got.append(await proc.receive(lambda m: type(m) is Exit))
        got.append(await proc.receive(lambda m: type(m) is Down and m.ref == ref))

    node = Node(seed=1)
    with caplog.at_level(logging.ERROR, logger="actors"):
        node.spawn(parent)
        node.run()
    assert got[0] == ("spawned", 0.0)
    assert isinstance(got[1].reason, ValueError) and got[2].reason is got[1].reason
    assert any("crash report" in r.getMessage() for r in caplog.records)  # nobody else hears it


def test_start_link_from_a_process_waits_and_a_failure_sends_no_exit_signal(quiet_crash_reports):
    got = []

    async def parent(proc):  # does not trap exits: an exit signal would kill it
        first = await proc.start_link(Warming)
        got.append(("started", proc.now(), proc.node.is_alive(first)))
        try:
            await proc.start_link(Warming, "raise")
        except StartError as exc:
            got.append(("failed", proc.now(), type(exc.reason)))
        got.append(("links", proc.node.process_info(proc.pid)["links"] == [first]))
        try:
            await proc.start(Warming, "stop")
        except StartError as exc:
            got.append(("failed", proc.now(), exc.reason))

    node = Node(seed=1)
    parent_pid = node.spawn(parent)
    node.run()
    assert got == [("started", 1.0, True), ("failed", 2.0, ValueError), ("links", True),
                   ("failed", 3.0, "refused")]
    assert not node.is_alive(parent_pid)  # it returned normally, never killed


def test_a_start_that_times_out_kills_the_server_and_spares_the_starter():
    got = []

    async def parent(proc):
        try:
            await proc.start_link(Warming, timeout=0.5)
        except StartError as exc:
            node = proc.node
            got.append((exc.reason, proc.now(), [p for p in node.processes() if node.is_alive(p)]))

    node = Node(seed=1)
    parent_pid = node.spawn(parent)
    node.run()
    assert got == [("timeout", 0.5, [parent_pid])]  # the server is killed, the parent spared
    with pytest.raises(StartError) as info:
        node.run_until_complete(node.start(Warming, timeout=0.25))
    assert info.value.reason == "timeout" and len(node) == 0


def test_continue_after_an_async_init_runs_before_any_message():
    class Ordered(GenServer):
        async def init(self, log):
            self.log = log
            await self.sleep(1.0)
            self.continue_with("warm")

        def handle_continue(self, arg):
            self.log.append(arg)

        def handle_cast(self, msg):
            self.log.append(msg)

    node = Node(seed=1)
    log = []
    pid = node.spawn(Ordered, log)
    node.cast(pid, "first message")
    node.run()
    assert log == ["warm", "first message"]


def test_node_start_waits_on_the_real_time_driver_too():
    async def main():
        async with Node() as node:
            log = []
            pid = await node.start(Warming, "ok", log)
            assert log[-1][0] == "ready" and node.is_alive(pid)
            with pytest.raises(StartError):
                await node.start(Warming, "stop")

    arun(main())
