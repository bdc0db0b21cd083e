"""Scheduling: fairness, mailbox limits, determinism, node limits, output hold, pass hooks."""
import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import BOUND, ROOT

from actors import CallExit, GenServer, MailboxOverflow, Node, SystemLimit


class Sink(GenServer):
    def init(self):
        self.seen = []

    def handle_cast(self, msg):
        self.seen.append(msg)

    def handle_call(self, request, caller):
        return len(self.seen)


def test_a_flooded_process_does_not_starve_the_others():
    order = []

    class Tracker(GenServer):
        def init(self, name):
            self.name = name

        def handle_cast(self, msg):
            order.append(self.name)

        def handle_call(self, request, caller):
            return len(order)

    async def main():
        async with Node(batch=16) as node:  # real time: the FIFO run queue
            hot = node.spawn(Tracker, "hot")
            cold = node.spawn(Tracker, "cold")
            for _ in range(100):
                node.cast(hot, 1)
            node.cast(cold, 1)
            await node.call(cold, "done")  # queued behind cold's cast

    asyncio.run(asyncio.wait_for(main(), 10))
    assert order.index("cold") == 16  # one batch of the hot process, then the cold one


def test_mailbox_limit_crash_and_drop(quiet_crash_reports):
    node = Node(seed=1)
    crashy = node.spawn(Sink, mailbox_limit=3)
    droppy = node.spawn(Sink, mailbox_limit=3, overflow="drop")
    downs = []

    async def watcher(proc):
        proc.monitor(crashy)
        downs.append(await proc.receive())

    node.spawn(watcher)
    node.run()
    for i in range(5):
        node.cast(crashy, i)
        node.cast(droppy, i)
    node.run()
    assert isinstance(downs[0].reason, MailboxOverflow)
    assert node.get_process(droppy).seen == [0, 1, 2]
    assert node.process_info(droppy)["dropped"] == 2
    with pytest.raises(ValueError):
        node.spawn(Sink, mailbox_limit=0)
    with pytest.raises(ValueError):
        node.spawn(Sink, overflow="explode")
    with pytest.raises(TypeError, match="unknown option"):
        node.spawn(Sink, nmae="typo")


def test_spawn_rejects_what_it_cannot_run():
    node = Node(seed=1)
    with pytest.raises(TypeError, match="GenServer subclass"):
        node.spawn(lambda: None)


def test_process_limit():
    node = Node(seed=1, max_processes=3)
    for _ in range(3):
        node.spawn(Sink)
    with pytest.raises(SystemLimit):
        node.spawn(Sink)


def scenario(seed):
    """Many processes racing to append to one list: the interleaving depends on the seed."""
    node = Node(seed=seed)
    log = []

    async def worker(proc, name):
        for i in range(5):
            log.append((name, i, proc.now()))
            await proc.sleep(0)

    for name in "abcdef":
        node.spawn(worker, name)
    node.run()
    return log


def test_same_seed_same_events_different_seeds_differ():
    assert scenario(3) == scenario(3)
    assert len({tuple(scenario(seed)) for seed in range(6)}) > 1


def test_determinism_does_not_depend_on_hash_seed():
    code = textwrap.dedent("""
        import sys; sys.path[:0] = [%r, %r]
        from test_kernel_scheduler import scenario
        print(repr(scenario(11)))
    """) % (str(ROOT), str(ROOT / "tests"))
    outputs = {repr(scenario(11)) + "\n"}  # this process's hash seed, and two others
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                   text=True, check=True, timeout=BOUND).stdout)
    assert len(outputs) == 1


def test_hold_output_until_release_and_pass_hooks():
    node = Node(seed=1)
    sink = node.spawn(Sink)
    passes = []
    node.add_pass_hook(lambda: passes.append(node.now()))

    class Writer(GenServer):
        def handle_call(self, request, caller):
            self.node.hold_output(self)
            self.cast(sink, ("wrote", request))
            return "ack"

    writer = node.spawn(Writer)
    fut = node.call(writer, 1)
    node.run(until=1)
    assert not fut.done() and node.get_process(sink).seen == []  # nothing acknowledged before release
    node.release_output(node.get_process(writer))
    assert node.run_until_complete(fut) == "ack"
    node.run()
    assert node.get_process(sink).seen == [("wrote", 1)]
    assert passes  # hooks ran after scheduler passes


class HeldWriter(GenServer):
    """Holds its output once told to, like a persistent server waiting for a commit."""

    def handle_cast(self, msg):
        self.node.hold_output(self)

    def handle_call(self, request, caller):
        return ("ack", request)


def _killed_while_holding_a_reply(node):
    writer = node.spawn(HeldWriter)
    seen = []

    async def linked(proc):
        proc.trap_exit = True
        proc.link(writer)
        seen.append(await proc.receive())

    async def watcher(proc):
        proc.monitor(writer)
        seen.append(await proc.receive())

    node.spawn(linked)
    node.spawn(watcher)
    node.cast(writer, "hold")
    node.run()
    proc = node.get_process(writer)
    fut = node.call(writer, 1)
    node.run_for(0.5)  # less than the call's timeout
    node.exit(writer, "kill")  # killed after replying, before the reply was released
    node.run_for(0.5)
    assert not node.is_alive(writer) and seen == [] and not fut.done()
    return proc, fut, seen


def test_an_exit_waits_behind_the_output_its_process_held():
    node = Node(seed=1)
    proc, fut, seen = _killed_while_holding_a_reply(node)
    node.release_output(proc)
    node.run()
    assert fut.result() == ("ack", 1)  # the reply came first: the caller saw no CallExit
    assert sorted(type(msg).__name__ for msg in seen) == ["Down", "Exit"]
    assert all(msg.reason == "killed" for msg in seen)


def test_discarded_output_is_never_seen_but_the_exit_still_goes_out():
    node = Node(seed=1)
    proc, fut, seen = _killed_while_holding_a_reply(node)
    node.discard_output(proc)
    node.run()
    assert sorted(type(msg).__name__ for msg in seen) == ["Down", "Exit"]
    with pytest.raises(CallExit):
        fut.result()  # its reply was dropped; the caller learns of the death instead


def test_unlinking_a_dead_process_whose_exit_is_held_cancels_the_signal():
    node = Node(seed=1)
    writer = node.spawn(HeldWriter)
    proc = node.get_process(writer)
    node.cast(writer, "hold")
    survived = []

    async def linked(proc_):
        proc_.link(writer)
        await proc_.receive()  # the go-ahead, after the writer died with output held
        proc_.unlink(writer)
        await proc_.receive()
        survived.append(True)

    me = node.spawn(linked)
    node.run()
    node.call(writer, 1)
    node.run()
    node.exit(writer, "kill")
    node.run()
    node.send(me, "go")
    node.run()
    node.release_output(proc)
    node.send(me, "still here")
    node.run()
    assert survived == [True]


def test_tracer_sees_spawns_turns_and_exits():
    node = Node(seed=1)
    events = []
    node.tracer = lambda event, pid, detail: events.append((event, pid.serial, detail))

    async def short(proc):
        return

    node.spawn(short)
    node.run()
    assert events == [("spawn", 1, "test_tracer_sees_spawns_turns_and_exits.<locals>.short"),
                      ("run", 1, None), ("exit", 1, "normal")]


def test_tracer_sees_a_crash_before_its_exit(caplog):
    node = Node(seed=1)
    events = []
    node.tracer = lambda event, pid, detail: events.append((event, pid.serial, detail))

    async def fragile(proc):
        raise KeyError("boom")

    node.spawn(fragile)
    node.run()
    assert [event for event, _, _ in events] == ["spawn", "run", "crash", "exit"]
    exc, reason = events[2][2], events[3][2]
    assert isinstance(exc, KeyError) and reason is exc
    assert "crash report" in caplog.text  # the log still gets its report


def test_injected_rng_decides_the_schedule():
    def order(rng):
        node = Node(seed=0, rng=rng)
        log = []

        async def worker(proc, name):
            log.append(name)

        for name in "abcd":
            node.spawn(worker, name)
        node.run()
        return "".join(log)

    assert order(lambda: 0.0) == "adcb"  # the first runnable; the last takes its place
    assert order(lambda: 0.999) == "dcba"  # always the last runnable: newest first
