"""The kernel's introspection hooks, with real processes on deterministic nodes: message
and turn counters, per-process tracing, the node's statistics (run queue in O(1)),
monitors, current function, memory estimate and last message in process_info, and a pid
from its serial."""

import pytest

from actors import GenServer, Node, NoProc

pytestmark = pytest.mark.usefixtures("quiet_crash_reports")  # a process crashes on purpose here


class Counter(GenServer):
    def init(self, peer=None):
        self.n = 0
        self.peer = peer

    def handle_cast(self, msg):
        if msg == "boom":
            raise RuntimeError("boom")
        self.n += 1
        if self.peer is not None:
            self.cast(self.peer, msg)

    def handle_call(self, request, caller):
        return self.n


def test_counters_count_messages_in_and_out_and_turns():
    node = Node(seed=1, batch=4)
    sink = node.spawn(Counter)
    relay = node.spawn(Counter, sink)
    node.run()
    for i in range(10):  # from outside any process: counted by nobody as sent
        node.cast(relay, i)
    node.run()
    relay_info, sink_info = node.process_info(relay), node.process_info(sink)
    assert relay_info["messages_in"] == 10 and relay_info["messages_out"] == 10
    assert sink_info["messages_in"] == 10 and sink_info["messages_out"] == 0
    assert relay_info["last_message"] == 9
    assert 3 <= relay_info["turns"] <= 10  # 10 messages at a batch of 4: at least 3 turns
    stats = node.statistics()
    assert stats["messages"] == 20 and stats["turns"] >= relay_info["turns"] + sink_info["turns"] - 2


def test_a_call_counts_on_both_sides_and_its_reply_as_a_message():
    node = Node(seed=1)
    server = node.spawn(Counter)
    answers = []

    async def client(proc):
        for _ in range(3):
            answers.append(await proc.call(server, "n?"))
        proc.send(server, "stray")  # a plain send, taken by handle_info

    pid = node.spawn(client)
    node.run()
    assert answers == [0, 0, 0]
    assert node.process_info(server)["messages_in"] == 4 and node.process_info(server)["messages_out"] == 3
    assert not node.is_alive(pid)  # its counters went with it; a live one shows them:

    async def asker(proc):
        await proc.call(server, "n?")
        await proc.receive()

    pid = node.spawn(asker)
    node.run()
    info = node.process_info(pid)
    assert info["messages_out"] == 1 and info["messages_in"] == 1 and info["last_message"] is None


def test_selective_receive_counts_what_it_takes():
    node = Node(seed=1)

    async def picky(proc):
        await proc.receive(lambda m: m == "b")
        await proc.receive()
        await proc.receive(lambda m: m == "never")

    pid = node.spawn(picky)
    node.send(pid, "a")
    node.send(pid, "b")
    node.send(pid, "c")
    node.run()
    info = node.process_info(pid)
    assert info["messages_in"] == 2 and info["last_message"] == "a" and info["mailbox_len"] == 1


def test_trace_reports_sends_receives_crash_and_exit_then_ends():
    node = Node(seed=1)
    sink = node.spawn(Counter)
    relay = node.spawn(Counter, sink)
    node.run()
    events = []
    assert node.trace(relay, lambda *e: events.append(e)) is None
    assert node.process_info(relay)["traced"] is True
    node.cast(relay, 7)
    node.run()
    node.cast(relay, "boom")
    node.run()
    kinds = [(event, pid) for event, pid, _ in events]
    assert kinds == [("receive", relay), ("send", relay), ("receive", relay), ("crash", relay), ("exit", relay)]
    assert events[0][2] == 7 and events[1][2] == (sink, 7) and isinstance(events[3][2], RuntimeError)
    assert node.process_info(sink)["messages_in"] == 1  # tracing changed nothing of the delivery


def test_trace_off_restores_the_fast_path_and_chains_the_previous_tracer():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    node.run()
    first, second = [], []
    node.trace(pid, lambda *e: first.append(e[0]))
    previous = node.trace(pid, lambda *e: second.append(e[0]))
    node.cast(pid, 1)
    node.run()
    assert first == [] and second == ["receive"] and callable(previous)
    assert node.trace(pid, None) is not None
    node.cast(pid, 2)
    node.run()
    assert second == ["receive"] and node.process_info(pid)["traced"] is False
    assert node.process_info(pid)["messages_in"] == 2


def test_trace_refuses_a_dead_process_and_a_bad_tracer():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    with pytest.raises(TypeError, match="tracer must be a callable"):
        node.trace(pid, "print")
    node.exit(pid, "kill")
    node.run()
    with pytest.raises(NoProc):
        node.trace(pid, print)


def test_trace_sees_a_held_send_when_it_is_made():
    node = Node(seed=1)
    sink = node.spawn(Counter)
    node.run()
    events = []

    async def sender(proc):
        proc.node.hold_output(proc)
        proc.cast(sink, "x")
        await proc.receive()

    pid = node.spawn(sender)
    node.trace(pid, lambda *e: events.append(e[0]))
    node.run()
    assert events == ["send"] and node.process_info(sink)["messages_in"] == 0  # held, not delivered
    node.release_output(node.get_process(pid))
    node.run()
    assert node.process_info(sink)["messages_in"] == 1 and events == ["send"]  # released, not sent again


def test_statistics_count_the_run_queue_spawns_exits_and_crashes():
    node = Node(seed=1)

    async def waiter(proc):
        if await proc.receive() == "boom":
            raise RuntimeError("boom")
        await proc.receive()

    pids = [node.spawn(waiter) for _ in range(5)]
    before = node.statistics()
    assert before["run_queue"] == 5 and before["spawns"] == 5 and before["processes"] == 5
    node.run()
    assert node.statistics()["run_queue"] == 0
    node.send(pids[0], "boom")
    node.send(pids[1], 1)
    assert node.statistics()["run_queue"] == 2
    node.run()
    after = node.statistics()
    assert after["crashes"] == 1 and after["exits"] == 1 and after["processes"] == 4
    assert after["messages"] == 2 and after["turns"] == before["turns"] + 7


def test_process_info_lists_the_monitors_a_process_holds():
    node = Node(seed=1)
    a, b = node.spawn(Counter), node.spawn(Counter)

    async def watcher(proc):
        proc.monitor(a)
        proc.monitor(b)
        await proc.receive()

    pid = node.spawn(watcher)
    node.run()
    assert set(node.process_info(pid)["monitors"]) == {a, b}
    assert node.process_info(a)["monitored_by"] == [pid]
    node.exit(a, "kill")
    node.run()  # the Down ends the watcher's receive
    assert not node.is_alive(pid)


async def deep_wait(proc):
    await proc.receive(lambda m: m == "go")


def test_current_function_is_where_a_suspended_coroutine_waits():
    node = Node(seed=1)

    async def body(proc):
        await deep_wait(proc)

    pid = node.spawn(body)
    node.run()
    where = node.process_info(pid)["current_function"]
    assert where.startswith(f"{__name__}.deep_wait:")
    assert int(where.rsplit(":", 1)[1]) == deep_wait.__code__.co_firstlineno + 1
    server = node.spawn(Counter)
    node.run()
    assert node.process_info(server)["current_function"] is None  # waiting for a message


def test_current_function_of_the_running_process_is_its_own_code():
    node = Node(seed=1)
    seen = []

    class Looker(GenServer):
        def handle_cast(self, msg):
            seen.append(self.node.process_info(self.pid)["current_function"])

    pid = node.spawn(Looker)
    node.cast(pid, "look")
    node.run()
    assert seen[0].startswith(f"{__name__}.test_current_function_of_the_running_process_is_its_own_code."
                              "<locals>.Looker.handle_cast:")


def test_memory_estimate_grows_with_state_and_mailbox_and_is_bounded_work():
    node = Node(seed=1)

    async def holder(proc):
        await proc.receive(lambda m: m == "never")

    pid = node.spawn(holder)
    node.run()
    empty = node.process_info(pid)["memory"]
    for i in range(1000):
        node.send(pid, ("payload", "x" * 100, i))
    node.run()
    full = node.process_info(pid)["memory"]
    assert empty > 0 and full > empty + 1000 * 100  # the queued strings count


def test_pid_of_finds_a_live_process_by_serial():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    assert node.pid_of(pid.serial) is pid
    assert node.pid_of(pid.serial + 1000) is None
    node.exit(pid, "kill")
    node.run()
    assert node.pid_of(pid.serial) is None


def test_initial_call_names_what_the_process_was_spawned_with():
    node = Node(seed=1)

    async def body(proc):
        await proc.receive()

    pids = [node.spawn(body), node.spawn(Counter)]
    node.run()
    assert [node.process_info(pid)["initial_call"] for pid in pids] == [
        "test_initial_call_names_what_the_process_was_spawned_with.<locals>.body", "Counter"]
