"""Tasks (Elixir's Task) on kernel processes, on the deterministic driver."""
import pytest

from actors import (Down, GenServer, Node, TaskExit, TaskTimeout, async_stream, async_task, await_many,
                    await_task, shutdown_task, yield_task)
from supervision import TaskSupervisor, async_nolink


def run(body, *args, trap_exit=False, seed=1):
    """Run `async def body(proc, *args)` as a process to its end: (its result or the
    exception it raised, its exit reason, the node)."""
    node = Node(seed=seed)
    out = {}

    async def main(proc):
        proc.trap_exit = trap_exit
        try:
            out["value"] = await body(proc, *args)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["value"] = exc

    pid = node.spawn(main)
    exited = node.wait_exit(pid)
    node.run()
    return out.get("value", "never finished"), exited.result(), node


async def nap(proc, seconds, value=None):
    await proc.sleep(seconds)
    return seconds if value is None else value


def boom(*_):
    raise RuntimeError("task failed")


class Echo(GenServer):
    def handle_call(self, request, caller):
        return ("echo", request)


def test_async_then_await_plain_and_async_functions():
    async def body(proc):
        echo = proc.spawn(Echo)

        async def ask(task_proc, x):  # an async fn gets the task's own process
            return await task_proc.call(echo, x)

        a, b = async_task(proc, sum, [1, 2, 3]), async_task(proc, ask, "hi")
        return [await await_task(proc, b), await await_task(proc, a), proc.now()]
    value, reason, _ = run(body)
    assert value == [("echo", "hi"), 6, 0.0] and reason == "normal"


def test_await_times_out_kills_the_task_and_no_late_reply_is_left():
    async def body(proc):
        task = async_task(proc, nap, 10.0)
        watch = proc.monitor(task.pid)
        with pytest.raises(TaskTimeout, match="did not reply within 1.5 s"):
            await await_task(proc, task, 1.5)
        down = await proc.receive(lambda m: type(m) is Down and m.ref == watch)
        await proc.sleep(20.0)
        left = []
        while True:
            try:
                left.append(await proc.receive(timeout=0))
            except Exception:  # noqa: BLE001 - ReceiveTimeout: the mailbox is empty
                return down.reason, proc.now(), left
    value, _, _ = run(body)
    assert value == ("killed", 21.5, [])


def test_a_task_that_crashes_takes_its_owner_down_unless_it_traps_exits(quiet_crash_reports):
    async def body(proc):
        return await await_task(proc, async_task(proc, boom))
    value, reason, _ = run(body)
    assert value == "never finished" and isinstance(reason, RuntimeError)
    value, reason, _ = run(body, trap_exit=True)
    assert isinstance(value, TaskExit) and isinstance(value.reason, RuntimeError) and reason == "normal"


def test_await_many_in_order_and_a_timeout_kills_the_rest():
    async def body(proc):
        results = await await_many(proc, [async_task(proc, nap, s) for s in (3.0, 1.0, 2.0)])
        slow = [async_task(proc, nap, s) for s in (1.0, 9.0)]
        watches = [proc.monitor(t.pid) for t in slow]
        with pytest.raises(TaskTimeout):
            await await_many(proc, slow, 5.0)
        downs = [(await proc.receive(lambda m, r=r: type(m) is Down and m.ref == r)).reason for r in watches]
        return results, downs, proc.now()
    value, _, _ = run(body)
    assert value == ([3.0, 1.0, 2.0], ["normal", "killed"], 8.0)


def test_yield_leaves_the_task_running_and_shutdown_stops_it():
    async def body(proc):
        task = async_task(proc, nap, 3.0, "done")
        first = await yield_task(proc, task, 1.0)
        second = await yield_task(proc, task, 5.0)
        slow = async_task(proc, nap, 60.0)
        stopped = await shutdown_task(proc, slow)
        quick = async_task(proc, nap, 0.5, "quick")
        await proc.sleep(1.0)  # it has replied and exited
        late = await shutdown_task(proc, quick)
        return first, second, stopped, late, proc.now()
    value, _, node = run(body)
    assert value == (None, ("ok", "done"), None, ("ok", "quick"), 4.0)


def test_only_the_owner_may_wait_and_bad_input_is_refused():
    async def body(proc):
        task = async_task(proc, nap, 1.0)
        other = {}

        async def thief(p):
            try:
                await await_task(p, task)
            except ValueError as exc:
                other["error"] = str(exc)
        proc.spawn(thief)
        await proc.sleep(0.1)
        with pytest.raises(ValueError, match="timeout must be"):
            await await_task(proc, task, -1)
        with pytest.raises(TypeError, match="runs a function"):
            async_task(proc, "not callable")
        with pytest.raises(ValueError, match="on_timeout must be"):
            async for _ in async_stream(proc, [1], nap, on_timeout="ignore"):
                pass
        return other["error"], await await_task(proc, task)
    value, _, _ = run(body)
    assert "only its owner may wait for it" in value[0] and value[1] == 1.0


def test_async_nolink_tasks_crash_alone_and_go_with_their_supervisor(quiet_crash_reports):
    async def body(proc):
        sup = proc.spawn(TaskSupervisor)
        crashed = await async_nolink(proc, sup, boom)
        outcome = await yield_task(proc, crashed)
        long = await async_nolink(proc, sup, nap, 100.0)
        proc.exit(sup, "shutdown")
        return outcome, await yield_task(proc, long, 10.0), proc.now()
    (outcome, gone, now), reason, _ = run(body)
    assert outcome[0] == "exit" and isinstance(outcome[1], RuntimeError) and reason == "normal"
    assert gone == ("exit", "shutdown") and now == 0.0


def test_async_stream_bounds_concurrency_and_keeps_input_order():
    running, peak = [0], [0]

    async def work(proc, seconds):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await proc.sleep(seconds)
        running[0] -= 1
        return seconds

    async def body(proc, ordered):
        return [(o, proc.now()) async for o in async_stream(proc, [4.0, 1.0, 2.0, 1.5, 0.25], work,
                                                             max_concurrency=2, ordered=ordered)]
    value, _, _ = run(body, True)
    assert [o for o, _ in value] == [("ok", s) for s in (4.0, 1.0, 2.0, 1.5, 0.25)] and peak[0] == 2
    assert [t for _, t in value] == [4.0, 4.0, 4.0, 4.5, 4.5]
    value, _, _ = run(body, False)
    assert value == [(("ok", 1.0), 1.0), (("ok", 2.0), 3.0), (("ok", 4.0), 4.0), (("ok", 0.25), 4.25),
                     (("ok", 1.5), 4.5)]


def test_async_stream_timeouts_kill_the_task_or_fail_the_stream():
    async def body(proc, on_timeout):
        out = []
        try:
            async for outcome in async_stream(proc, [1.0, 9.0, 2.0], nap, timeout=5.0, on_timeout=on_timeout):
                out.append(outcome)
        except TaskTimeout as exc:
            out.append(("raised", str(exc)))
        return out, proc.now()
    value, _, _ = run(body, "kill_task")
    assert value == ([("ok", 1.0), ("exit", "timeout"), ("ok", 2.0)], 5.0)
    value, _, node = run(body, "exit")
    assert value[0][:1] == [("ok", 1.0)] and value[0][1][0] == "raised" and value[1] == 5.0
    assert len(node) == 0  # no task outlived the stream


def test_leaving_a_stream_early_kills_the_tasks_still_running():
    async def body(proc):
        async for outcome in async_stream(proc, [1.0, 50.0, 60.0], nap, timeout=None):
            break
        await proc.sleep(0)
        return outcome, proc.now()
    value, _, node = run(body)
    assert value == (("ok", 1.0), 1.0) and node.now() == 1.0  # nothing left sleeping


def test_same_seed_same_run():
    async def body(proc):
        return [o async for o in async_stream(proc, [i % 4 for i in range(20)], nap, max_concurrency=3,
                                                    ordered=False)]
    first = run(body, seed=5)[0]
    assert first == run(body, seed=5)[0] and sorted(v for _, v in first) == sorted(i % 4 for i in range(20))
