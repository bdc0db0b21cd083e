"""Waiting from outside: monitors and exit waits for asyncio code, tests and threads."""
import asyncio
import threading

import pytest

from actors import Down, ExitWatch, GenServer, Node
from conftest import arun


class Worker(GenServer):
    def handle_cast(self, msg):
        if msg == "crash":
            raise RuntimeError("boom")
        self.stop(msg)


def test_wait_exit_gives_the_reason_whatever_it_is(quiet_crash_reports):
    node = Node(seed=1)
    pids = [node.spawn(Worker) for _ in range(3)]
    waits = [node.wait_exit(pid) for pid in pids]
    node.cast(pids[0], ("shutdown", "done"))
    node.cast(pids[1], "crash")
    node.exit(pids[2], "kill")
    reasons = [node.run_until_complete(w) for w in waits]
    assert reasons[0] == ("shutdown", "done") and reasons[2] == "killed"
    assert isinstance(reasons[1], RuntimeError) and str(reasons[1]) == "boom"


def test_a_process_already_gone_or_a_free_name_gives_noproc_at_once():
    node = Node(seed=1)
    pid = node.spawn(Worker)
    node.cast(pid, "normal")
    node.run()
    for dest in (pid, "nobody"):
        fut = node.wait_exit(dest)
        assert fut.done() and fut.result() == "noproc"


def test_monitor_resolves_with_the_down_and_demonitor_stops_it():
    node = Node(seed=1)
    a, b = node.spawn(Worker, name="a"), node.spawn(Worker)
    watch_a, watch_b = node.monitor("a"), node.monitor(b)
    assert isinstance(watch_a, ExitWatch) and watch_a.ref != watch_b.ref
    watch_b.demonitor()
    node.cast(a, "normal")
    node.cast(b, "normal")
    node.run()
    assert watch_a.result() == Down(watch_a.ref, a, "normal")
    assert not watch_b.done()


def test_wait_exit_times_out_on_the_nodes_clock_and_forgets_its_monitor():
    node = Node(seed=1)
    pid = node.spawn(Worker)
    fut = node.wait_exit(pid, timeout=2.5)
    with pytest.raises(TimeoutError, match="had not exited after 2.5 s"):
        node.run_until_complete(fut)
    assert node.now() == 2.5
    assert not node.get_process(pid)._watchers  # nothing left behind on the watched process
    with pytest.raises(ValueError, match="timeout must be"):
        node.wait_exit(pid, timeout=-1)


def test_a_process_of_another_node_and_a_lost_connection():
    here, there = Node("here", seed=1), Node("there", seed=1)
    here.connect(there)
    a, b = there.spawn(Worker), there.spawn(Worker)
    wait_a, watch_b = here.wait_exit(a), here.monitor(b)
    there.cast(a, "shutdown")
    there.run()
    assert wait_a.result() == "shutdown"
    here.disconnect("there")
    assert watch_b.result().reason == "noconnection"


def test_asyncio_code_awaits_an_exit():
    async def main():
        async with Node() as node:
            pid = node.spawn(Worker)
            node.cast(pid, "normal")
            return await node.wait_exit(pid)
    assert arun(main(), 10.0) == "normal"


def test_a_thread_waits_for_an_exit():
    node = Node().start_thread()
    try:
        pid = node.run_from_thread(node.spawn, Worker)
        got = []
        waiter = threading.Thread(target=lambda: got.append(node.wait_exit_from_thread(pid, timeout=30.0)))
        waiter.start()
        node.cast_from_thread(pid, "normal")
        waiter.join(30.0)
        assert got == ["normal"]
        with pytest.raises(TimeoutError):
            node.wait_exit_from_thread(node.run_from_thread(node.spawn, Worker), timeout=0.05)
    finally:
        node.stop_thread()


def test_asyncio_wait_for_composes():
    async def main():
        async with Node() as node:
            pid = node.spawn(Worker)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.ensure_future(_awaited(node.wait_exit(pid))), 0.05)
            node.cast(pid, "normal")
            return await node.wait_exit(pid)
    assert arun(main(), 10.0) == "normal"


async def _awaited(fut):
    return await fut
