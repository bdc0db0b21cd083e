"""DynamicSupervisor: children added at run time, at scale, on the deterministic driver."""
import gc
import logging
import tracemalloc

import pytest

from actors import GenServer, Node
from supervision import (Backoff, BadCombination, ChildInfo, ChildNotFound, ChildSpec, DynamicFlags,
                         DynamicSupervisor, Ignore, MaxChildren, StartChildError, count_children,
                         restart_child, start_child, terminate_child, which_children)
from test_supervision import Fragile, reports, run, stubborn, watch


class Session(GenServer):
    """Remembers its start arguments; cast "crash" crashes it, ("stop", r) stops it."""

    def init(self, *args):
        self.args = args

    def handle_call(self, request, caller):
        return self.args

    def handle_cast(self, msg):
        if msg == "crash":
            raise RuntimeError("session lost")
        self.stop(msg[1])


async def start_many(proc, sup, spec, n, out):
    for i in range(n):
        out.append(await start_child(proc, sup, spec, i))


def start_sessions(node, sup, spec, n):
    pids = []
    node.spawn(start_many, sup, spec, n, pids)
    node.run()
    assert len(pids) == n
    return pids


def test_twenty_thousand_children_start_restart_and_shut_down_in_parallel():
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor, DynamicFlags(max_restarts=10))
    pids = start_sessions(node, sup, ChildSpec("session", Session), 20_000)
    assert run(node, count_children(node, sup)) == {"specs": 20_000, "active": 20_000,
                                                     "supervisors": 0, "workers": 20_000}
    for i in (0, 777, 19_999):
        node.cast(pids[i], "crash")
    node.run()
    now = {c.pid for c in run(node, which_children(node, sup))}
    assert len(now) == 20_000 and not now & {pids[0], pids[777], pids[19_999]}
    restarted = sorted(run(node, node.call(p, "args")) for p in now - set(pids))
    assert restarted == [(0,), (777,), (19_999,)]  # the same start arguments
    gone = watch(node, sup)
    node.exit(sup, "shutdown")
    node.run()
    assert gone == [("shutdown", 0.0)] and len(node) == 0


def test_shutdown_is_parallel_and_kills_stragglers_per_shutdown_time(caplog):
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    events = []
    quick = ChildSpec("q", stubborn, args=(events,), shutdown=1.0, options={"trap_exit": True})
    slow = ChildSpec("s", stubborn, args=(events,), shutdown=3.0, options={"trap_exit": True})
    quick_pids = [run(node, start_child(node, sup, quick)) for _ in range(300)]
    slow_pids = [run(node, start_child(node, sup, slow)) for _ in range(300)]
    seen_quick, seen_slow, seen_sup = watch(node, quick_pids[0]), watch(node, slow_pids[-1]), watch(node, sup)
    node.exit(sup, "shutdown")
    node.run()
    assert seen_quick == [("killed", 1.0)] and seen_slow == [("killed", 3.0)]
    assert seen_sup == [("shutdown", 3.0)]  # not 600 shutdown times one after another
    assert len(reports(caplog, "shutdown_error")) == 600
    assert len(node) == 0


def test_max_children_counts_children_and_rejects_more():
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor, DynamicFlags(max_children=2))
    spec = ChildSpec("s", Session)
    first = run(node, start_child(node, sup, spec))
    run(node, start_child(node, sup, spec))
    with pytest.raises(MaxChildren) as info:
        run(node, start_child(node, sup, spec))
    assert info.value.limit == 2
    run(node, terminate_child(node, sup, first))
    assert run(node, start_child(node, sup, spec)) is not None


def test_extra_arguments_then_spec_arguments_then_call_arguments():
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor, DynamicFlags(extra_arguments=("tenant",)))
    pid = run(node, start_child(node, sup, ChildSpec("s", Session, args=("spec",)), "call", 7))
    assert run(node, node.call(pid, "args")) == ("tenant", "spec", "call", 7)


def test_terminate_child_by_pid():
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    pid = run(node, start_child(node, sup, ChildSpec("s", Session)))
    stranger = node.spawn(Session)
    assert run(node, terminate_child(node, sup, pid)) is None
    assert not node.is_alive(pid) and run(node, which_children(node, sup)) == []
    for who in (pid, stranger, "s"):
        with pytest.raises(ChildNotFound):
            run(node, terminate_child(node, sup, who))


@pytest.mark.parametrize("restart, how, restarted", [
    ("permanent", ("stop", "normal"), True), ("permanent", "crash", True),
    ("transient", ("stop", "normal"), False), ("transient", ("stop", ("shutdown", 1)), False),
    ("transient", "crash", True), ("temporary", "crash", False), ("temporary", ("stop", "normal"), False),
])
def test_restart_types(restart, how, restarted, caplog):
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    pid = run(node, start_child(node, sup, ChildSpec("s", Session, restart=restart), "x"))
    node.cast(pid, how)
    node.run()
    children = run(node, which_children(node, sup))
    if restarted:
        assert len(children) == 1 and children[0].pid != pid
    else:
        assert children == []  # forgotten
    assert len(reports(caplog, "child_terminated")) == (1 if how == "crash" or restart == "permanent" else 0)


def test_ignore_starts_nothing():
    class Maybe(GenServer):
        def init(self):
            raise Ignore()

    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    assert run(node, start_child(node, sup, ChildSpec("m", Maybe))) is None
    assert run(node, count_children(node, sup))["specs"] == 0


def test_intensity_and_failed_restarts_climb_the_tree(caplog):
    health = {"up": True, "attempts": []}
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor, DynamicFlags(max_restarts=2, max_seconds=10))
    pids = [run(node, start_child(node, sup, ChildSpec("f", Fragile, args=(health,)))) for _ in range(3)]
    gone = watch(node, sup)
    node.cast(pids[0], "boom")
    node.run()
    assert node.is_alive(sup)
    health["up"] = False
    node.cast(pids[1], "boom")  # restart 2 fails, the retry is restart 3: one too many
    node.run()
    assert gone == [("shutdown", 0.0)]
    assert len(reports(caplog, "start_error")) == 1 and len(reports(caplog, "max_restart_intensity")) == 1
    assert len(node) == 0


def test_backoff_delays_a_dynamic_restart_and_terminate_child_forgets_it():
    starts = []

    class Timed(GenServer):
        def init(self):
            starts.append(self.now())

        def handle_cast(self, msg):
            raise RuntimeError(msg)

    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    spec = ChildSpec("t", Timed, backoff=Backoff(min_delay=2.0, jitter=0.0))
    first = run(node, start_child(node, sup, spec))
    node.cast(first, "boom")
    node.run()
    assert starts == [0.0, 2.0]
    (second,) = [c.pid for c in run(node, which_children(node, sup))]
    node.cast(second, "boom")
    node.run_for(1.0)
    assert run(node, which_children(node, sup)) == [ChildInfo(None, None, "worker", True)]
    assert run(node, count_children(node, sup)) == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}
    run(node, terminate_child(node, sup, second))  # the pid it had, as Elixir keys it
    node.run()
    assert starts == [0.0, 2.0] and run(node, which_children(node, sup)) == []


def test_bad_requests_are_refused():
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    with pytest.raises(ValueError, match="restart_child"):
        run(node, restart_child(node, sup, "x"))
    with pytest.raises(TypeError, match="ChildSpec"):
        run(node, start_child(node, sup, Session))
    with pytest.raises(BadCombination, match="auto_shutdown"):
        run(node, start_child(node, sup, ChildSpec("s", Session, restart="temporary", significant=True)))

    async def needs_two(proc, a, b):
        pass

    with pytest.raises(StartChildError, match="needs_two"):
        run(node, start_child(node, sup, ChildSpec("n", needs_two), 1))
    assert len(node) == 1  # no half-made child left behind


def test_a_dynamic_child_costs_little_memory_beyond_its_process():
    def traced(make):
        gc.collect()
        tracemalloc.start()
        try:
            make()
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    n = 5_000
    bare_node, sup_node = Node(seed=1), Node(seed=1)
    sup = sup_node.spawn(DynamicSupervisor)
    spec = ChildSpec("s", Session)
    bare = traced(lambda: [bare_node.spawn(Session, i) for i in range(n)])
    supervised = traced(lambda: start_sessions(sup_node, sup, spec, n))
    assert (supervised - bare) / n < 600  # link, dict entry, (spec, args): the spec is shared


def test_child_started_reports_are_logged_only_when_enabled(caplog):
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    run(node, start_child(node, sup, ChildSpec("s", Session)))
    assert reports(caplog, "child_started") == []
    caplog.set_level(logging.INFO, "supervision")
    pid = run(node, start_child(node, sup, ChildSpec("s", Session)))
    (started,) = reports(caplog, "child_started")
    assert started.child_pid == pid and started.supervisor == sup


def test_refusals_raised_in_a_process_leave_no_garbage_cycles():
    # A refusal is raised in the calling process; if its traceback tied it to the frame
    # that raised it, every refused request would feed the cycle collector.
    node = Node(seed=1)
    sup = node.spawn(DynamicSupervisor)
    refused = []

    class Caller(GenServer):
        async def handle_info(self, msg):
            try:
                await terminate_child(self, sup, self.pid)  # not its child
            except ChildNotFound:
                refused.append(msg)

    caller = node.spawn(Caller)
    node.send(caller, "warm-up")
    node.run_for(1.0)
    gc.collect()
    gc.disable()
    try:
        for i in range(100):
            node.send(caller, i)
        node.run_for(1.0)
        assert len(refused) == 101
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_default_child_spec_lets_plain_arguments_start_children():
    # OTP's simple_one_for_one: the spec lives in the supervisor, so a caller of another
    # node sends only plain terms (what a wire can carry).
    node = Node(seed=1)
    spec = ChildSpec("session", Session, args=("from spec",), restart="temporary")
    sup = node.spawn(DynamicSupervisor, DynamicFlags(extra_arguments=("extra",), child=spec))
    pid = run(node, start_child(node, sup, None, "alice"))
    assert run(node, node.call(pid, "args")) == ("extra", "from spec", "alice")
    bare = node.spawn(DynamicSupervisor, DynamicFlags())
    with pytest.raises(TypeError, match="expected a ChildSpec, got None"):
        run(node, start_child(node, bare, None, "bob"))
    with pytest.raises(TypeError, match="DynamicFlags.child must be a ChildSpec"):
        DynamicFlags(child=Session)
