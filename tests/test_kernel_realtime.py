"""The real-time driver in asyncio, callers on other threads, the pykka bridge, the codec."""
import asyncio
import logging
import threading

import pytest
from conftest import BOUND, arun

from actors import (CallExit, CallTimeout, Exit, GenServer, Node, NoReply, Pid, Ref,
                    ThreadWorker, packb, unpackb)


class Counter(GenServer):
    def init(self, n=0):
        self.n = n

    def handle_call(self, request, caller):
        return NoReply if request == "never" else self.n

    def handle_cast(self, delta):
        self.n += delta

    def handle_info(self, msg):
        self.n += 100


class Square(ThreadWorker):
    sim_seconds = 0.25

    def on_receive(self, x):
        if x < 0:
            raise ValueError("negative input")
        return x * x, threading.current_thread().name


def test_realtime_calls_timers_and_timeouts():
    async def main():
        async with Node("rt") as node:
            pid = node.spawn(Counter, 1)
            node.cast(pid, 2)
            assert await node.call(pid, "get") == 3
            node.send_after(0.02, pid, "tick")
            await asyncio.sleep(0.1)
            assert await node.call(pid, "get") == 103
            with pytest.raises(CallTimeout):
                await node.call(pid, "never", timeout=0.02)
        return node

    node = arun(main())
    assert len(node) == 0  # leaving the block stopped every process


def test_calls_from_other_threads():
    async def main():
        async with Node() as node:
            pid = node.spawn(Counter, 5)

            def worker():
                node.cast_from_thread(pid, 1)
                return node.call_from_thread(pid, "get")

            assert await asyncio.to_thread(worker) == 6
            with pytest.raises(RuntimeError, match="deadlock"):
                node.call_from_thread(pid, "get")
            with pytest.raises(CallTimeout):
                await asyncio.to_thread(node.call_from_thread, pid, "never", 0.05)

    arun(main())


def test_deterministic_node_refuses_thread_entry_points():
    node = Node(seed=1)
    with pytest.raises(RuntimeError, match="real-time"):
        node.call_from_thread(None, "x")


def test_stop_shuts_trapping_processes_down_and_kills_stragglers():
    async def main():
        async with Node() as node:
            stubborn_seen = []

            async def stubborn(proc):
                proc.trap_exit = True
                while True:
                    stubborn_seen.append(await proc.receive())

            node.spawn(stubborn)
            node.spawn(Counter)
            await asyncio.sleep(0)
            await node.stop(timeout=0.05)
            return node, stubborn_seen

    node, seen = arun(main())
    assert len(node) == 0 and seen == [Exit(None, "shutdown")]


def test_thread_worker_runs_on_its_own_thread_and_its_failure_is_an_exit_signal(caplog):
    async def main():
        async with Node() as node:
            out = []

            async def user(proc):
                worker = proc.spawn_link(Square)
                out.append(await proc.call(worker, 7))
                out.append(node.get_process(worker).ref)
                proc.trap_exit = True
                try:
                    await proc.call(worker, -1)
                except CallExit as exc:
                    out.append(exc.reason)
                out.append(await proc.receive())

            node.spawn(user)
            for _ in range(200):
                if len(out) == 4:
                    break
                await asyncio.sleep(0.01)
            return out

    with caplog.at_level(logging.CRITICAL, logger="actors"):
        (value, thread), ref, reason, exit_msg = arun(main())
    assert value == 49 and thread != threading.current_thread().name
    assert isinstance(reason, ValueError) and exit_msg.reason is reason
    assert ref.actor_stopped.wait(BOUND)
    assert not ref.is_alive()  # the pykka actor stops with its process


def test_thread_worker_under_the_simulator_runs_at_virtual_time_without_threads():
    node = Node(seed=1)
    out = []

    async def user(proc):
        worker = proc.spawn_link(Square)
        out.append(await proc.call(worker, 3))
        out.append(proc.now())

    threads_before = threading.active_count()
    node.spawn(user)
    node.run()
    assert out == [(9, threading.current_thread().name), 0.25]
    assert threading.active_count() == threads_before


def test_codec_round_trips_pids_and_refs_and_names_bad_values():
    node = Node("n1", seed=1)
    pid = node.spawn(Counter)
    ref = node.make_ref()
    data = packb({"owner": pid, "ref": ref, "items": [1, b"x", "y", None]})
    back = unpackb(data, node=node)
    assert back["owner"] is pid  # the live pid object itself
    assert back["ref"] == ref and back["items"] == [1, b"x", "y", None]
    foreign = unpackb(packb(Pid("other", 9)))
    assert foreign == Pid("other", 9) and node.get_process(foreign) is None
    assert unpackb(packb(Ref("n1", 3))) == Ref("n1", 3)
    with pytest.raises(TypeError, match="set"):
        packb({"bad": {1, 2}})


def test_stop_signals_roots_and_lets_parents_stop_their_children():
    async def main():
        async with Node() as node:
            seen = []

            async def child(proc):
                proc.trap_exit = True
                seen.append(await proc.receive())

            async def root(proc):
                proc.trap_exit = True
                kid = proc.spawn_link(child)
                msg = await proc.receive()
                seen.append(msg)
                proc.exit(kid, "shutdown")
                await proc.sleep(0.01)

            rpid = node.spawn(root)
            await asyncio.sleep(0.01)
        return seen, rpid

    seen, rpid = arun(main())
    assert seen == [Exit(None, "shutdown"), Exit(rpid, "shutdown")]  # the child heard its parent


def test_a_node_on_its_own_thread_serves_other_threads_until_stopped(caplog):
    node = Node("threaded").start_thread()
    pid = node.run_from_thread(node.spawn, Counter, 5)
    results = []

    def worker():
        node.cast_from_thread(pid, 1)
        results.append(node.call_from_thread(pid, "get"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert sorted(results)[-1] == 13 and len(results) == 8
    assert node.run_from_thread(node.call, pid, "get") == 13  # a returned Future is awaited
    with pytest.raises(ZeroDivisionError):
        node.run_from_thread(lambda: 1 / 0)  # raised in the caller's thread
    with caplog.at_level(logging.WARNING, logger="actors"):
        node.send_from_thread("nobody", "hello")
        node.call_from_thread(pid, "get")  # the send ran before this call
    assert "send_from_thread to 'nobody': no such process" in caplog.text
    node.stop_thread()
    assert not node.is_alive(pid)
    with pytest.raises(RuntimeError, match="has stopped"):
        node.call_from_thread(pid, "get")
