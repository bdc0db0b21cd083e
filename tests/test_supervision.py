"""Supervisor semantics in the spirit of OTP's supervisor_SUITE, on the deterministic
driver (virtual time: every timeout case runs instantly and the same way every time).

The helpers at the top are shared with the other test_supervision_* files.
"""
import logging

import pytest

from actors import Down, GenServer, Node, StartError
from supervision import (AlreadyPresent, AlreadyStarted, Application, Backoff, BadCombination,
                         ChildInfo, ChildNotFound, ChildRestarting, ChildRunning, ChildSpec,
                         DynamicFlags, DynamicSupervisor, Flags, Ignore, MaxChildren,
                         StartChildError, Supervisor, add_report_listener,
                         count_children, delete_child, get_childspec, remove_report_listener,
                         render_tree,
                         restart_child, start_child, supervision_tree, terminate_child,
                         which_children)

# -- shared helpers ------------------------------------------------------------------------


class Worker(GenServer):
    """A child that logs ("start", name) and ("stop", name, reason) to `events`.
    cast ("raise", text) crashes it; cast ("stop", reason) stops it with reason."""

    def init(self, name, events, trap=False):
        self.name, self.events = name, events
        self.trap_exit = trap
        events.append(("start", name))

    def handle_cast(self, msg):
        kind, arg = msg
        if kind == "raise":
            raise RuntimeError(arg)
        self.stop(arg)

    def handle_call(self, request, caller):
        return self.name

    def terminate(self, reason):
        self.events.append(("stop", self.name, reason))


async def stubborn(proc, events, name="stubborn"):
    """Traps exits (spawn option) and never stops: only a kill ends it."""
    events.append(("start", name))
    while True:
        await proc.receive()


class Broken(GenServer):
    """Fails every start."""

    def init(self):
        raise ValueError("no config")


class Fragile(GenServer):
    """Starts only while health["up"], logging each attempt; any cast crashes it."""

    def init(self, health):
        health["attempts"].append(health["up"])
        if not health["up"]:
            raise ConnectionError("down")

    def handle_cast(self, msg):
        raise RuntimeError(msg)


def worker(name, events, trap=False, **kw):
    return ChildSpec(name, Worker, args=(name, events, trap), **kw)


def run(node, fut):
    return node.run_until_complete(fut)


def pids(node, sup):
    return {c.id: c.pid for c in run(node, which_children(node, sup))}


class Watcher(GenServer):
    """Monitors `pid` from the moment it is spawned; logs (reason, time) when it exits."""

    def init(self, pid, seen):
        self.seen = seen
        self.ref = self.monitor(pid)

    def handle_info(self, msg):
        if type(msg) is Down and msg.ref == self.ref:
            self.seen.append((msg.reason, self.now()))
            self.stop()


def watch(node, pid):
    """A list that receives (reason, time) when `pid` exits."""
    seen = []
    node.spawn(Watcher, pid, seen)
    return seen


def reports(caplog, kind):
    return [r for r in caplog.records if r.name == "supervision" and getattr(r, "report", None) == kind]


def crash(node, pid, text="boom"):
    node.cast(pid, ("raise", text))
    node.run()


# -- starting and stopping ---------------------------------------------------------------------


def test_children_start_in_order_and_stop_in_reverse_order():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker(n, events, trap=True) for n in "abc"])
    assert events == [("start", "a"), ("start", "b"), ("start", "c")]
    assert [c.id for c in run(node, which_children(node, sup))] == ["c", "b", "a"]  # OTP: newest first
    done = watch(node, sup)
    node.exit(sup, "shutdown")
    node.run()
    assert events[3:] == [("stop", "c", "shutdown"), ("stop", "b", "shutdown"), ("stop", "a", "shutdown")]
    assert done == [("shutdown", 0.0)]
    assert len(node) == 0


def test_failed_start_stops_the_started_children_first_so_a_retry_works_at_once():
    events = []
    node = Node(seed=1)
    children = [worker("a", events, trap=True, options={"name": "a"}),
                worker("b", events, trap=True, options={"name": "b"}),
                ChildSpec("bad", Broken), worker("never", events)]
    with pytest.raises(StartError) as info:
        run(node, node.start(Supervisor, children, name="top"))
    failure = info.value.reason
    assert isinstance(failure, StartChildError) and failure.child == "bad"
    assert isinstance(failure.reason, ValueError)
    # OTP: the started children are terminated in reverse order, each waited for, before
    # the start returns its error: nothing is left, every name is free.
    assert events == [("start", "a"), ("start", "b"), ("stop", "b", "shutdown"), ("stop", "a", "shutdown")]
    assert len(node) == 0 and node.whereis("a") is None and node.whereis("b") is None
    top = run(node, node.start(Supervisor, children[:2], name="top"))  # a retry works at once
    assert list(pids(node, top)) == ["b", "a"] and node.whereis("a") == pids(node, top)["a"]


def test_failed_start_from_a_process_returns_once_the_children_are_gone():
    events = []
    got = []
    children = [worker("a", events, options={"name": "a"}),
                worker("b", events, trap=True, options={"name": "b"}), ChildSpec("bad", Broken)]

    async def starter(proc):
        for _ in range(2):
            try:
                await proc.start_link(Supervisor, children)
            except StartError as exc:
                got.append((exc.reason.child, proc.node.whereis("a"), proc.node.whereis("b")))

    node = Node(seed=1)
    node.spawn(starter)
    node.run()
    assert got == [("bad", None, None), ("bad", None, None)]  # the second attempt got as far
    assert events.count(("start", "a")) == 2 and len(node) == 0


def test_a_failed_start_that_waits_is_an_exit_when_spawned():
    events = []
    node = Node(seed=1)
    children = [worker("a", events, trap=True), ChildSpec("bad", Broken)]
    sup = node.spawn(Supervisor, children)  # spawn does not wait for the trapping child
    gone = watch(node, sup)
    node.run()
    assert events == [("start", "a"), ("stop", "a", "shutdown")]
    assert [type(reason) for reason, _ in gone] == [StartChildError] and len(node) == 0


def test_failed_start_without_trapping_children_fails_spawn_at_once():
    events = []
    node = Node(seed=1)
    children = [worker("a", events, options={"name": "a"}), ChildSpec("bad", Broken)]
    with pytest.raises(StartError):
        node.spawn(Supervisor, children)  # "a" dies of its shutdown signal: nothing to wait for
    assert len(node) == 0 and node.whereis("a") is None


def test_failed_start_kills_a_stubborn_child_after_its_shutdown_time():
    events = []
    node = Node(seed=1)
    children = [ChildSpec("s", stubborn, args=(events,), shutdown=3.0, options={"trap_exit": True}),
                ChildSpec("bad", Broken)]
    with pytest.raises(StartError):
        run(node, node.start(Supervisor, children))
    assert node.now() == 3.0 and len(node) == 0  # the start failed once "s" was killed


def test_children_whose_init_awaits_are_started_one_after_the_other():
    class Slow(GenServer):
        async def init(self, name, events, fail=False):
            events.append(("init", name, self.now()))
            await self.sleep(1.0)
            if fail:
                raise ConnectionError(name)
            events.append(("ready", name, self.now()))

    events = []
    node = Node(seed=1)
    sup = run(node, node.start(Supervisor, [ChildSpec("x", Slow, args=("x", events)),
                                            ChildSpec("y", Slow, args=("y", events))]))
    assert events == [("init", "x", 0.0), ("ready", "x", 1.0), ("init", "y", 1.0), ("ready", "y", 2.0)]
    with pytest.raises(StartChildError) as info:
        run(node, start_child(node, sup, ChildSpec("z", Slow, args=("z", events, True))))
    assert isinstance(info.value.reason, ConnectionError) and node.now() == 3.0
    assert [c.id for c in run(node, which_children(node, sup))] == ["y", "x"]
    dyn = node.spawn(DynamicSupervisor)
    assert node.is_alive(run(node, start_child(node, dyn, ChildSpec("w", Slow, args=("w", events)))))
    assert events[-1] == ("ready", "w", 4.0)


def test_ignore_keeps_the_spec_unless_temporary():
    class Optional(GenServer):
        def init(self):
            raise Ignore()

    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("opt", Optional), ChildSpec("tmp", Optional, restart="temporary")])
    assert run(node, which_children(node, sup)) == [ChildInfo("opt", None, "worker", False)]
    assert run(node, restart_child(node, sup, "opt")) is None
    assert run(node, start_child(node, sup, ChildSpec("tmp2", Optional, restart="temporary"))) is None
    assert list(pids(node, sup)) == ["opt"]


# -- strategies --------------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_crashed_child(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker(n, events) for n in "abc"])
    before = pids(node, sup)
    crash(node, before["b"])
    after = pids(node, sup)
    assert after["a"] == before["a"] and after["c"] == before["c"] and after["b"] != before["b"]
    assert [e[:2] for e in events[3:]] == [("stop", "b"), ("start", "b")]
    assert isinstance(events[3][2], RuntimeError)
    (terminated,) = reports(caplog, "child_terminated")
    assert terminated.child_id == "b" and terminated.child_pid == before["b"]
    assert isinstance(terminated.reason, RuntimeError) and terminated.levelno == logging.ERROR
    (restarted,) = reports(caplog, "child_restarted")
    assert (restarted.child_id, restarted.child_pid, restarted.restarts) == ("b", after["b"], 1)
    assert [r.child_id for r in reports(caplog, "child_started")] == ["a", "b", "c"]


def test_report_listeners_hear_every_report_whatever_the_log_level(caplog):
    caplog.set_level(logging.CRITICAL, "supervision")  # no record is made
    heard = []

    def listener(kind, supervisor, child_id, child_pid, reason):
        heard.append((kind, supervisor, child_id, child_pid, type(reason).__name__))

    add_report_listener(listener)
    try:
        node = Node(seed=1)
        sup = node.spawn(Supervisor, [worker(n, []) for n in "ab"])
        before = pids(node, sup)
        crash(node, before["b"])
        after = pids(node, sup)
    finally:
        remove_report_listener(listener)
    crash(node, after["a"])  # removed: not heard
    assert heard == [("child_started", sup, "a", before["a"], "NoneType"),
                     ("child_started", sup, "b", before["b"], "NoneType"),
                     ("child_terminated", sup, "b", before["b"], "RuntimeError"),
                     ("child_restarted", sup, "b", after["b"], "NoneType")]
    assert not reports(caplog, "child_restarted")
    added = []
    try:
        with pytest.raises(ValueError, match="at most 64 report listeners"):
            for _ in range(65):
                add_report_listener(listener)
                added.append(listener)
    finally:
        for one in added:
            remove_report_listener(one)


def test_one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker(n, events, trap=True) for n in "abcd"], Flags(strategy="one_for_all"))
    before = pids(node, sup)
    del events[:]
    crash(node, before["b"])
    assert [e[:2] for e in events] == [("stop", "b"), ("stop", "d"), ("stop", "c"), ("stop", "a"),
                                        ("start", "a"), ("start", "b"), ("start", "c"), ("start", "d")]
    assert [e[2] for e in events[1:4]] == ["shutdown"] * 3
    after = pids(node, sup)
    assert all(after[n] != before[n] for n in "abcd")


def test_rest_for_one_restarts_the_child_and_those_started_after_it():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker(n, events, trap=True) for n in "abcd"], Flags(strategy="rest_for_one"))
    before = pids(node, sup)
    del events[:]
    crash(node, before["b"])
    assert [e[:2] for e in events] == [("stop", "b"), ("stop", "d"), ("stop", "c"),
                                        ("start", "b"), ("start", "c"), ("start", "d")]
    after = pids(node, sup)
    assert after["a"] == before["a"] and all(after[n] != before[n] for n in "bcd")


def test_temporary_sibling_taken_down_by_a_group_restart_is_dropped():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events), worker("tmp", events, restart="temporary"),
                                  worker("c", events)], Flags(strategy="one_for_all"))
    crash(node, pids(node, sup)["a"])
    assert set(pids(node, sup)) == {"a", "c"}
    assert events.count(("start", "tmp")) == 1


def test_group_restart_also_starts_a_stopped_child_as_otp_does():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events), worker("t", events, restart="transient")],
                     Flags(strategy="one_for_all"))
    node.cast(pids(node, sup)["t"], ("stop", "normal"))
    node.run()
    assert pids(node, sup)["t"] is None
    crash(node, pids(node, sup)["a"])
    assert all(pid is not None for pid in pids(node, sup).values())
    assert events.count(("start", "t")) == 2


# -- restart types -----------------------------------------------------------------------------


@pytest.mark.parametrize("restart, reason, restarted", [
    ("permanent", "normal", True), ("permanent", "shutdown", True), ("permanent", "error", True),
    ("transient", "normal", False), ("transient", "shutdown", False),
    ("transient", ("shutdown", "done"), False), ("transient", "error", True),
    ("transient", "killed", True),
    ("temporary", "normal", False), ("temporary", "error", False), ("temporary", "killed", False),
])
def test_restart_types(restart, reason, restarted, caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("w", events, restart=restart)])
    pid = pids(node, sup)["w"]
    if reason == "error":
        crash(node, pid)
    elif reason == "killed":
        node.exit(pid, "kill")
        node.run()
    else:
        node.cast(pid, ("stop", reason))
        node.run()
    children = pids(node, sup)
    assert events.count(("start", "w")) == (2 if restarted else 1)
    if restarted:
        assert children["w"] not in (None, pid)
    elif restart == "temporary":
        assert children == {}  # never restarted, and the spec is gone
    else:
        assert children == {"w": None}
    abnormal = reason in ("error", "killed")
    assert len(reports(caplog, "child_terminated")) == (1 if abnormal or restart == "permanent" else 0)


# -- restart intensity -------------------------------------------------------------------------


def test_intensity_within_the_limit_keeps_the_supervisor(caplog):
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("w", events)])  # 3 restarts in 5 s by default
    for _ in range(3):
        crash(node, pids(node, sup)["w"])
        node.run_for(1.0)
    assert node.is_alive(sup) and events.count(("start", "w")) == 4
    node.run_for(3.0)  # the first restarts leave the window
    crash(node, pids(node, sup)["w"])
    assert node.is_alive(sup)


def test_intensity_beyond_the_limit_shuts_everything_down_with_shutdown(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("w", events), worker("other", events, trap=True)])
    gone = watch(node, sup)
    for _ in range(4):
        crash(node, pids(node, sup)["w"])
        node.run_for(1.0)
    assert gone == [("shutdown", 3.0)]
    assert ("stop", "other", "shutdown") in events
    (exceeded,) = reports(caplog, "max_restart_intensity")
    assert exceeded.child_id == "w" and exceeded.max_restarts == 3 and exceeded.max_seconds == 5.0
    assert len(node) == 0


@pytest.mark.parametrize("gap, survives", [(5.0, False), (5.001, True)])
def test_intensity_window_includes_its_bound(gap, survives):
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("w", events)], Flags(max_restarts=1, max_seconds=5))
    crash(node, pids(node, sup)["w"])
    node.run_for(gap)
    crash(node, pids(node, sup)["w"])
    assert node.is_alive(sup) is survives


def test_a_failure_that_keeps_repeating_climbs_the_tree(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    inner = ChildSpec("inner", Supervisor, args=([worker("w", events)], Flags(max_restarts=0)))
    outer = node.spawn(Supervisor, [worker("x", events), inner], Flags(max_restarts=1, max_seconds=60))
    assert inner.type == "supervisor" and inner.shutdown == "infinity"
    gone = watch(node, outer)

    def crash_w():
        (w,) = [c.pid for c in run(node, which_children(node, pids(node, outer)["inner"]))]
        crash(node, w)

    crash_w()  # inner gives up at once; outer restarts inner (1 restart of 1)
    assert node.is_alive(outer) and events.count(("start", "w")) == 2
    crash_w()  # inner gives up again; outer exceeds its own limit
    assert gone == [("shutdown", 0.0)]
    assert [r.supervisor for r in reports(caplog, "max_restart_intensity")][-1] == outer
    assert len(reports(caplog, "max_restart_intensity")) == 3
    assert len(node) == 0


def test_a_failed_restart_is_retried_and_every_attempt_counts(caplog):
    caplog.set_level(logging.INFO, "supervision")
    health = {"up": True, "attempts": []}
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("f", Fragile, args=(health,))], Flags(max_restarts=3))
    health["up"] = False
    gone = watch(node, sup)
    node.cast(pids(node, sup)["f"], "boom")
    node.run()
    assert health["attempts"] == [True, False, False, False]  # the crash and 2 retries, then a 4th restart is one too many
    assert gone == [("shutdown", 0.0)]
    assert len(reports(caplog, "start_error")) == 3


def test_a_retry_yields_to_queued_requests():
    health = {"up": True, "attempts": []}
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("f", Fragile, args=(health,))], Flags(max_restarts=10_000, max_seconds=1))
    health["up"] = False
    node.cast(pids(node, sup)["f"], "boom")
    node.run(max_turns=3)  # the supervisor is retrying the restart in a loop
    restarting = restart_child(node, sup, "f")
    stopped = terminate_child(node, sup, "f")  # cancels the pending restart
    node.run(max_turns=4)
    assert isinstance(restarting.exception(), ChildRestarting) and stopped.result() is None
    health["up"] = True
    node.run()
    assert pids(node, sup) == {"f": None}
    assert run(node, restart_child(node, sup, "f")) is not None


# -- shutdown ----------------------------------------------------------------------------------


def test_a_child_that_ignores_shutdown_is_killed_after_its_timeout(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events, trap=True),
                                  ChildSpec("s", stubborn, args=(events,), shutdown=2.5,
                                            options={"trap_exit": True})])
    stuck = pids(node, sup)["s"]
    node.run_for(10.0)
    gone = watch(node, stuck)
    run(node, terminate_child(node, sup, "s"))
    node.run(until=node.now())  # let the watcher take its Down
    assert node.now() == 12.5 and gone == [("killed", 12.5)]
    (error,) = reports(caplog, "shutdown_error")
    assert (error.child_id, error.child_pid, error.reason) == ("s", stuck, "killed")
    assert pids(node, sup)["s"] is None  # the spec is kept


def test_brutal_kill_does_not_wait(caplog):
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("s", stubborn, args=(events,), shutdown="brutal_kill",
                                            options={"trap_exit": True})])
    run(node, terminate_child(node, sup, "s"))
    assert node.now() == 0.0 and not reports(caplog, "shutdown_error")


def test_infinity_waits_for_a_slow_child():
    done = []

    class Slow(GenServer):
        def init(self):
            self.trap_exit = True

        async def terminate(self, reason):
            await self.sleep(600.0)
            done.append((reason, self.now()))

    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("slow", Slow, shutdown="infinity")])
    run(node, terminate_child(node, sup, "slow"))
    assert done == [("shutdown", 600.0)] and node.now() == 600.0


def test_a_child_exiting_with_another_reason_during_shutdown_is_reported(caplog):
    class Odd(GenServer):
        def init(self):
            self.trap_exit = True

        def handle_info(self, msg):
            self.stop(("odd", msg.reason))

    node = Node(seed=1)
    events = []
    sup = node.spawn(Supervisor, [worker("a", events, trap=True), ChildSpec("odd", Odd, restart="temporary")])
    odd = pids(node, sup)["odd"]
    node.send(odd, Down(None, None, "wake"))  # any message makes it exit on its own, with ("odd", ...)
    node.exit(sup, "shutdown")
    node.run()
    (error,) = reports(caplog, "shutdown_error")
    assert error.child_id == "odd" and error.reason == ("odd", "wake")
    assert ("stop", "a", "shutdown") in events and len(node) == 0


def test_terminate_child_of_an_already_dead_child_takes_its_real_reason(caplog):
    class Slow(GenServer):
        def init(self):
            self.trap_exit = True

        async def terminate(self, reason):
            await self.sleep(1.0)

    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("slow", Slow), worker("w", events, restart="transient")])
    w = pids(node, sup)["w"]
    stopping_slow = terminate_child(node, sup, "slow")
    node.run_for(0.5)  # the supervisor waits for slow to go down
    stopping_w = terminate_child(node, sup, "w")
    node.cast(w, ("raise", "late"))  # w dies; its Exit queues behind the terminate_child call
    run(node, stopping_slow)
    run(node, stopping_w)
    node.run()
    assert pids(node, sup) == {"slow": None, "w": None}  # w was not restarted
    (error,) = reports(caplog, "shutdown_error")
    assert error.child_id == "w" and isinstance(error.reason, RuntimeError)


# -- the run-time API --------------------------------------------------------------------------


def test_start_child_and_its_errors():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events)])
    pid = run(node, start_child(node, sup, worker("b", events)))
    assert pids(node, sup) == {"a": pids(node, sup)["a"], "b": pid}
    with pytest.raises(AlreadyStarted) as info:
        run(node, start_child(node, sup, worker("b", events)))
    assert info.value.pid == pid and info.value.child == "b"
    run(node, terminate_child(node, sup, "b"))
    with pytest.raises(AlreadyPresent):
        run(node, start_child(node, sup, worker("b", events)))
    with pytest.raises(TypeError, match="expected a ChildSpec"):
        run(node, start_child(node, sup, "b"))
    with pytest.raises(ValueError, match="DynamicSupervisor"):
        run(node, start_child(node, sup, worker("c", events), "extra"))

    with pytest.raises(StartChildError) as info:
        run(node, start_child(node, sup, ChildSpec("broken", Broken)))
    assert isinstance(info.value.reason, ValueError)
    assert "broken" not in pids(node, sup)


def test_terminate_restart_delete_child_and_their_errors():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events), worker("t", events, restart="temporary")])
    with pytest.raises(ChildRunning):
        run(node, restart_child(node, sup, "a"))
    with pytest.raises(ChildRunning):
        run(node, delete_child(node, sup, "a"))
    assert run(node, terminate_child(node, sup, "a")) is None
    assert run(node, terminate_child(node, sup, "a")) is None  # may be repeated
    assert pids(node, sup)["a"] is None
    new = run(node, restart_child(node, sup, "a"))
    assert pids(node, sup)["a"] == new
    run(node, terminate_child(node, sup, "t"))  # a temporary child's spec goes with it
    assert "t" not in pids(node, sup)
    run(node, terminate_child(node, sup, "a"))
    assert run(node, delete_child(node, sup, "a")) is None
    for call in (terminate_child, restart_child, delete_child):
        with pytest.raises(ChildNotFound):
            run(node, call(node, sup, "a"))
    assert run(node, count_children(node, sup)) == {"specs": 0, "active": 0, "supervisors": 0, "workers": 0}


def test_count_children():
    events = []
    node = Node(seed=1)
    inner = ChildSpec("inner", Supervisor, args=([],))
    sup = node.spawn(Supervisor, [worker("a", events), worker("b", events), inner])
    run(node, terminate_child(node, sup, "b"))
    assert run(node, count_children(node, sup)) == {"specs": 3, "active": 2, "supervisors": 1, "workers": 2}


def test_get_childspec_by_id_and_for_a_dynamic_child_by_pid():
    events = []
    node = Node(seed=1)
    spec = worker("a", events, restart="transient")
    sup = node.spawn(Supervisor, [spec])
    assert run(node, get_childspec(node, sup, "a")) == spec
    run(node, terminate_child(node, sup, "a"))
    assert run(node, get_childspec(node, sup, "a")) == spec  # kept while not running
    with pytest.raises(ChildNotFound):
        run(node, get_childspec(node, sup, "nobody"))
    dyn = node.spawn(DynamicSupervisor, DynamicFlags(extra_arguments=("d",)))
    template = ChildSpec("session", Worker, args=(events,))
    child = run(node, start_child(node, dyn, template, True))
    assert run(node, get_childspec(node, dyn, child)).args == ("d", events, True)  # as started
    with pytest.raises(ChildNotFound):
        run(node, get_childspec(node, dyn, sup))


def test_calls_from_a_process_raise_the_same_errors():
    events, seen = [], []

    async def manager(proc, sup):
        seen.append(await start_child(proc, sup, worker("b", events)))
        try:
            await start_child(proc, sup, worker("b", events))
        except AlreadyStarted as exc:
            seen.append(exc.pid)
        seen.append(await count_children(proc, sup))

    node = Node(seed=1)
    sup = node.spawn(Supervisor, [])
    node.spawn(manager, sup)
    node.run()
    assert seen[0] == seen[1] and seen[2]["active"] == 1


def test_a_bad_request_gets_an_error_and_the_supervisor_lives_on():
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [])
    assert isinstance(run(node, node.call(sup, "hello")), ValueError)
    assert isinstance(run(node, node.call(sup, ("start_child",))), ValueError)
    with pytest.raises(TypeError, match="calling process or a Node"):
        which_children("me", sup)
    assert node.is_alive(sup)


# -- auto_shutdown -----------------------------------------------------------------------------


def test_any_significant_shuts_down_when_a_significant_child_exits_on_its_own(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("main", events, restart="transient", significant=True),
                                  worker("helper", events, trap=True)], Flags(auto_shutdown="any_significant"))
    gone = watch(node, sup)
    crash(node, pids(node, sup)["main"])  # abnormal: a transient child is restarted instead
    assert node.is_alive(sup)
    node.cast(pids(node, sup)["main"], ("stop", "normal"))
    node.run()
    assert gone == [("shutdown", 0.0)] and ("stop", "helper", "shutdown") in events
    assert reports(caplog, "auto_shutdown")[0].child_id == "main"


def test_all_significant_waits_for_the_last_one_and_ignores_terminate_child():
    events = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker(n, events, restart="temporary", significant=True) for n in "ab"]
                     + [worker("c", events, restart="temporary", significant=True)],
                     Flags(auto_shutdown="all_significant"))
    run(node, terminate_child(node, sup, "c"))  # the supervisor's own doing: does not count
    node.cast(pids(node, sup)["a"], ("stop", "normal"))
    node.run()
    assert node.is_alive(sup)
    crash(node, pids(node, sup)["b"])  # temporary: any exit counts
    assert not node.is_alive(sup)


def test_bad_combinations_are_rejected():
    events = []
    with pytest.raises(BadCombination, match="permanent"):
        worker("w", events, significant=True)
    node = Node(seed=1)
    with pytest.raises(StartError) as info:
        node.spawn(Supervisor, [worker("w", events, restart="transient", significant=True)])
    assert isinstance(info.value.reason, BadCombination)
    sup = node.spawn(Supervisor, [])
    with pytest.raises(BadCombination, match="never"):
        run(node, start_child(node, sup, worker("w", events, restart="temporary", significant=True)))


# -- backoff -----------------------------------------------------------------------------------


class Timed(GenServer):
    def init(self, starts):
        starts.append(self.now())

    def handle_cast(self, msg):
        raise RuntimeError(msg)


def crash_each_start(node, sup, starts, n):
    for _ in range(n):
        count = len(starts)
        node.cast(pids(node, sup)["t"], "boom")
        while len(starts) == count:
            node.run(until=node.next_deadline())


def test_backoff_delays_grow_exponentially_and_reset_after_a_quiet_period():
    starts = []
    node = Node(seed=1)
    backoff = Backoff(min_delay=1.0, max_delay=8.0, jitter=0.0, reset_after=100.0)
    sup = node.spawn(Supervisor, [ChildSpec("t", Timed, args=(starts,), backoff=backoff)],
                     Flags(max_restarts=100, max_seconds=1))
    crash_each_start(node, sup, starts, 5)
    assert [b - a for a, b in zip(starts, starts[1:])] == [1.0, 2.0, 4.0, 8.0, 8.0]
    node.run_for(100.0)
    crash_each_start(node, sup, starts, 1)
    assert starts[-1] - starts[-2] == 101.0  # 100 s quiet, then min_delay again


def test_backoff_jitter_is_seeded_and_bounded():
    def delays(seed):
        starts = []
        node = Node(seed=seed)
        sup = node.spawn(Supervisor, [ChildSpec("t", Timed, args=(starts,),
                                                backoff=Backoff(min_delay=1.0, max_delay=4.0, jitter=0.5))],
                         Flags(max_restarts=100, max_seconds=1))
        crash_each_start(node, sup, starts, 4)
        return [b - a for a, b in zip(starts, starts[1:])]

    first = delays(7)
    assert first == delays(7) and first != delays(8)
    for got, base in zip(first, [1.0, 2.0, 4.0, 4.0]):
        assert base <= got < base * 1.5


def test_a_child_waiting_out_its_backoff_is_restarting():
    starts = []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("t", Timed, args=(starts,), backoff=Backoff(min_delay=5.0, jitter=0.0))])
    node.cast(pids(node, sup)["t"], "boom")
    node.run_for(1.0)
    assert run(node, which_children(node, sup)) == [ChildInfo("t", None, "worker", True)]
    with pytest.raises(ChildRestarting):
        run(node, delete_child(node, sup, "t"))
    run(node, terminate_child(node, sup, "t"))
    node.run()
    assert len(starts) == 1 and pids(node, sup) == {"t": None}


def test_backoff_under_one_for_all_stops_the_group_at_once_and_starts_it_later():
    events, starts = [], []
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [worker("a", events, trap=True),
                                  ChildSpec("t", Timed, args=(starts,), backoff=Backoff(min_delay=3.0, jitter=0.0))],
                     Flags(strategy="one_for_all"))
    node.cast(pids(node, sup)["t"], "boom")
    node.run_for(1.0)
    assert pids(node, sup) == {"t": None, "a": None} and ("stop", "a", "shutdown") in events
    node.run()
    assert starts == [0.0, 3.0] and events.count(("start", "a")) == 2


# -- introspection, applications -------------------------------------------------------------


def test_render_tree_shows_ids_pids_restarts_and_mailboxes():
    events = []
    node = Node(seed=1)
    sessions = ChildSpec("sessions", DynamicSupervisor)
    inner = ChildSpec("inner", Supervisor, args=([worker("w", events)], Flags(strategy="rest_for_one")))
    top = node.spawn(Supervisor, [worker("db", events), inner, sessions], name="shop")
    crash(node, pids(node, top)["db"])
    dyn = pids(node, top)["sessions"]
    for i in range(5):
        run(node, start_child(node, dyn, worker("s", events)))
    node.send(pids(node, top)["db"], "unread")
    text = render_tree(node, "shop", max_children=3)
    lines = text.splitlines()
    assert lines[0] == f"shop {top!r} supervisor one_for_one mailbox=0"
    assert lines[1] == f"├─ db {pids(node, top)['db']!r} worker restarts=1 mailbox=1"
    assert lines[2].startswith("├─ inner ") and "rest_for_one restarts=0" in lines[2]
    assert lines[3].startswith("│  └─ w ")
    assert lines[4].startswith("└─ sessions ") and lines[4].endswith("children=5")
    assert lines[5].startswith("   ├─ - <") and lines[8] == "   └─ ... 2 more"
    tree = supervision_tree(node, top, max_depth=1)
    assert [c.id for c in tree.children] == ["db", "inner", "sessions"]
    assert tree.children[2].omitted == 5 and tree.children[2].children == ()
    with pytest.raises(ValueError, match="not a live supervisor"):
        render_tree(node, pids(node, top)["db"])


def test_application_start_stop_and_failure(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    app = Application(Supervisor, [worker("a", events, trap=True), worker("b", events, trap=True)], name="app")
    top = app.start(node)
    assert node.whereis("app") == top == app.supervisor
    with pytest.raises(RuntimeError, match="already running"):
        app.start(node)
    run(node, app.stop())
    assert events[2:] == [("stop", "b", "shutdown"), ("stop", "a", "shutdown")]
    assert len(node) == 0 and app.supervisor is None
    assert run(node, app.stop()) is None  # stopping again is a no-op

    with pytest.raises(StartError) as info:
        Application(Supervisor, [ChildSpec("x", Broken)]).start(node)
    assert isinstance(info.value.reason, StartChildError) and len(node) == 0


def test_an_application_whose_tree_had_to_wait_fails_after_start_returns(caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    app = Application(Supervisor, [worker("a", events, trap=True), ChildSpec("x", Broken)])
    top = app.start(node)  # "a" traps exits: stopping it is waited for, and start does not wait
    node.run()
    assert events == [("start", "a"), ("stop", "a", "shutdown")] and len(node) == 0
    assert app.supervisor is None and not node.is_alive(top)
    (stopped,) = reports(caplog, "application_stopped")
    assert isinstance(stopped.reason, StartChildError)


@pytest.mark.parametrize("restart, node_stops", [("permanent", True), ("transient", False), ("temporary", False)])
def test_application_restart_type_decides_when_its_tree_gives_up(restart, node_stops, caplog):
    caplog.set_level(logging.INFO, "supervision")
    events = []
    node = Node(seed=1)
    bystander = node.spawn(Worker, "bystander", events)
    app = Application(Supervisor, [worker("w", events)], Flags(max_restarts=0), restart=restart)
    top = app.start(node)
    crash(node, pids(node, top)["w"])  # the top supervisor exits "shutdown"
    assert app.supervisor is None
    assert node.is_alive(bystander) is not node_stops
    (stopped,) = reports(caplog, "application_stopped")
    assert stopped.reason == "shutdown"


def test_application_stop_after_its_tree_went_down_on_its_own():
    events = []
    node = Node(seed=1)
    app = Application(Supervisor, [worker("w", events)], Flags(max_restarts=0))
    top = app.start(node)
    node.cast(pids(node, top)["w"], ("raise", "boom"))
    while node.is_alive(top):
        node.step(1)
    assert app.supervisor is None and len(node) == 1  # the master has yet to see it
    assert run(node, app.stop()) is None and len(node) == 0


def test_module_based_supervisors_configure_from_their_spawn_arguments():
    events = []

    class Shop(Supervisor):
        def configure(self, names):
            return [worker(n, events) for n in names], Flags(strategy="one_for_all")

    class Sessions(DynamicSupervisor):
        def configure(self, limit):
            return DynamicFlags(max_children=limit, extra_arguments=("session",))

    node = Node(seed=1)
    shop = node.spawn(Shop, "xy")
    assert sorted(pids(node, shop)) == ["x", "y"]
    assert supervision_tree(node, shop).kind == "one_for_all"
    sessions = node.spawn(Sessions, 1)
    run(node, start_child(node, sessions, ChildSpec("s", Worker, args=(events,))))
    assert events[-1] == ("start", "session")
    with pytest.raises(MaxChildren):
        run(node, start_child(node, sessions, ChildSpec("s", Worker, args=(events,))))


def test_supervisor_callbacks_are_sealed_and_configure_is_checked():
    with pytest.raises(TypeError, match="configure"):
        class Bad(Supervisor):
            def init(self):
                pass

    class Listy(Supervisor):
        def configure(self):
            return []

    with pytest.raises(StartError) as info:
        Node(seed=1).spawn(Listy)
    assert "(children, Flags)" in str(info.value.reason)


# -- child specs and flags ------------------------------------------------------------------------


def test_child_spec_defaults_follow_otp():
    events = []
    w = worker("w", events)
    assert (w.restart, w.shutdown, w.type, w.significant) == ("permanent", 5.0, "worker", False)
    sup = ChildSpec("sup", Supervisor, args=([],))
    assert (sup.type, sup.shutdown) == ("supervisor", "infinity")
    assert ChildSpec("dyn", DynamicSupervisor, type="worker").shutdown == 5.0
    assert Flags() == Flags("one_for_one", 3, 5.0, "never")  # Elixir's 3 restarts in 5 s


@pytest.mark.parametrize("kwargs, error, words", [
    ({"start": len}, TypeError, "ChildSpec.start"),
    ({"start": Worker, "restart": "sometimes"}, ValueError, "ChildSpec.restart"),
    ({"start": Worker, "shutdown": -1}, ValueError, "ChildSpec.shutdown"),
    ({"start": Worker, "shutdown": "later"}, ValueError, "ChildSpec.shutdown"),
    ({"start": Worker, "type": "manager"}, ValueError, "ChildSpec.type"),
    ({"start": Worker, "significant": 1}, TypeError, "ChildSpec.significant"),
    ({"start": Worker, "options": {"link": True}}, ValueError, "link"),
    ({"start": Worker, "args": "abc"}, TypeError, "ChildSpec.args"),
    ({"start": Worker, "backoff": 3}, TypeError, "ChildSpec.backoff"),
    ({"id": ["unhashable"], "start": Worker}, TypeError, "ChildSpec.id"),
])
def test_bad_child_specs_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        ChildSpec(**{"id": "x", **kwargs})


@pytest.mark.parametrize("make, words", [
    (lambda: Flags(strategy="simple_one_for_one"), "Flags.strategy"),
    (lambda: Flags(max_restarts=-1), "Flags.max_restarts"),
    (lambda: Flags(max_seconds=0), "Flags.max_seconds"),
    (lambda: Flags(auto_shutdown="sometimes"), "Flags.auto_shutdown"),
    (lambda: Backoff(min_delay=0), "Backoff.min_delay"),
    (lambda: Backoff(min_delay=2, max_delay=1), "Backoff.max_delay"),
    (lambda: Backoff(multiplier=0.5), "Backoff.multiplier"),
    (lambda: Backoff(jitter=2), "Backoff.jitter"),
])
def test_bad_flags_are_named(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_duplicate_child_ids_fail_the_start():
    events = []
    with pytest.raises(StartError) as info:
        Node(seed=1).spawn(Supervisor, [worker("a", events), worker("a", events)])
    assert "duplicate child id 'a'" in str(info.value.reason)
