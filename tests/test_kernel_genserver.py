"""GenServer callbacks and calls, on the deterministic driver."""
import logging

import pytest

from actors import (CallExit, CallingSelf, CallTimeout, Down, Exit, GenServer, Node, NoProc,
                    NoReply, StartError)
from actors.statem import GenStateMachine
from kernel_helpers import queued
from storage.persistent import PersistentServer


class Counter(GenServer):
    def init(self, n=0):
        self.n = n
        self.log = []

    def handle_call(self, request, caller):
        if request == "get":
            return self.n
        if request == "later":
            self.pending = caller
            return NoReply
        if request == "stop":
            self.stop("normal")
            return "bye"
        if request == "crash":
            raise RuntimeError("asked to crash")
        return ("unknown", request)

    def handle_cast(self, delta):
        self.n += delta

    def handle_info(self, msg):
        if msg == "answer":
            self.reply(self.pending, "late answer")
        else:
            self.log.append(msg)


def call(node, pid, request, timeout=5.0):
    return node.run_until_complete(node.call(pid, request, timeout))


def test_call_cast_info():
    node = Node(seed=1)
    pid = node.spawn(Counter, 10)
    node.cast(pid, 5)
    node.send(pid, "hello")
    assert call(node, pid, "get") == 15
    assert node.get_process(pid).log == ["hello"]


def test_noreply_then_reply_later():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    fut = node.call(pid, "later")
    node.run_for(1)
    assert not fut.done()
    node.send(pid, "answer")
    assert node.run_until_complete(fut) == "late answer"


def test_stop_replies_then_exits_and_runs_terminate():
    terminated = []

    class Stopper(Counter):
        def terminate(self, reason):
            terminated.append(reason)

    node = Node(seed=1)
    pid = node.spawn(Stopper)
    assert call(node, pid, "stop") == "bye"
    node.run()
    assert not node.is_alive(pid)
    assert terminated == ["normal"]


def test_init_failure_raises_start_error_and_leaves_nothing(caplog):
    class Bad(GenServer):
        def init(self):
            raise ValueError("no config")

    node = Node(seed=1)
    with pytest.raises(StartError) as info:
        node.spawn(Bad, name="bad")
    assert isinstance(info.value.reason, ValueError)
    assert node.processes() == []
    assert node.whereis("bad") is None
    node.spawn(Counter, name="bad")  # the name is free again


def test_init_arguments_are_checked():
    node = Node(seed=1)
    with pytest.raises(StartError) as info:
        node.spawn(GenServer, "unexpected")
    assert "takes no arguments" in str(info.value.reason)


def test_init_that_stops_itself_fails_the_start_and_runs_no_terminate():
    terminated = []

    class Refuses(GenServer):
        def init(self, when):
            if when == "at once":
                self.stop("no config")
            else:
                return self.later()

        async def later(self):
            await self.sleep(1.0)
            self.stop("no config")

        def terminate(self, reason):
            terminated.append(reason)

    node = Node(seed=1)
    with pytest.raises(StartError) as info:
        node.spawn(Refuses, "at once", name="refuses")
    assert info.value.reason == "no config"
    with pytest.raises(StartError) as info:
        node.run_until_complete(node.start(Refuses, "after an await", name="refuses"))
    assert info.value.reason == "no config"
    assert terminated == [] and node.processes() == []  # OTP: init's {stop, R} calls no terminate
    assert node.whereis("refuses") is None


def test_continue_runs_after_spawn_returns_and_before_messages():
    order = []

    class Slow(GenServer):
        def init(self):
            order.append("init")
            self.continue_with("warm up")

        def handle_continue(self, arg):
            order.append(("continue", arg))

        def handle_cast(self, msg):
            order.append(("cast", msg))

    node = Node(seed=1)
    pid = node.spawn(Slow)
    order.append("spawned")
    node.cast(pid, 1)
    node.run()
    assert order == ["init", "spawned", ("continue", "warm up"), ("cast", 1)]


def test_idle_timeout_fires_only_after_quiet_period():
    class Idle(GenServer):
        idle_timeout = 10.0

        def init(self):
            self.idled_at = []
            self.continue_with(None)

        def handle_continue(self, _):
            pass

        def handle_cast(self, msg):
            pass

        def handle_idle(self):
            self.idled_at.append(self.now())
            self.stop("normal")

    node = Node(seed=1)
    pid = node.spawn(Idle)
    server = node.get_process(pid)
    node.run_for(6)
    node.cast(pid, "poke")  # resets the idle timer
    node.run_for(6)
    assert node.is_alive(pid)
    node.run_for(10)
    assert server.idled_at == [16.0]
    assert not node.is_alive(pid)


def test_idle_timeout_counts_from_init_when_no_message_ever_arrives():
    class Lonely(GenServer):
        idle_timeout = 5.0

        def init(self):
            self.idled_at = []

        def handle_idle(self):
            self.idled_at.append(self.now())

    node = Node(seed=1)
    pid = node.spawn(Lonely)
    node.run_for(12)
    # Once from init (OTP's {ok, State, Timeout}); then only after the next message.
    assert node.get_process(pid).idled_at == [5.0]


@pytest.mark.parametrize("reason, logged", [
    ("bad_thing", True), (("error", 42), True),
    ("normal", False), ("shutdown", False), (("shutdown", "maintenance"), False),
])
def test_a_stop_with_an_abnormal_reason_logs_a_stop_report(caplog, reason, logged):
    class Quits(GenServer):
        def handle_cast(self, why):
            self.stop(why)

    node = Node(seed=1)
    pid = node.spawn(Quits, name="quits")
    with caplog.at_level(logging.ERROR, logger="actors"):
        node.cast(pid, reason)
        node.run()
    reports = [r for r in caplog.records if "stop report" in r.getMessage()]
    assert not node.is_alive(pid)
    if not logged:
        assert reports == []
        return
    (report,) = reports
    assert report.levelno == logging.ERROR and report.reason == reason
    assert report.pid == pid and report.registered_name == "quits" and report.last_message == reason
    assert report.exc_info is None  # a deliberate stop: no traceback


def test_crash_runs_terminate_logs_report_and_keeps_node(caplog):
    seen = []

    class Fragile(Counter):
        def terminate(self, reason):
            seen.append(reason)

    node = Node(seed=1)
    pid = node.spawn(Fragile, name="fragile")
    other = node.spawn(Counter, 7)
    with caplog.at_level(logging.ERROR, logger="actors"):
        with pytest.raises(CallExit) as info:
            call(node, pid, "crash")
    assert isinstance(info.value.reason, RuntimeError)
    assert isinstance(seen[0], RuntimeError)
    report = [r for r in caplog.records if "crash report" in r.getMessage()][0]
    assert report.pid == pid and report.registered_name == "fragile"
    assert report.last_message[1] == "crash"
    assert report.exc_info[0] is RuntimeError
    assert call(node, other, "get") == 7


def test_crash_report_text_shortens_a_huge_last_message(caplog):
    class Choke(GenServer):
        def handle_cast(self, msg):
            raise ValueError("x" * 10_000)

    node = Node(seed=1)
    pid = node.spawn(Choke, name="choke")
    with caplog.at_level(logging.ERROR, logger="actors"):
        node.cast(pid, ["y" * 10_000])
        node.run()
    text = [r for r in caplog.records if "crash report" in r.getMessage()][0].getMessage()
    assert "'choke' crashed with ValueError('xxx" in text and "last message ['yyy" in text
    assert len(text) < 1_000, len(text)  # both reprs cut to 200 characters


def test_terminate_not_called_when_killed():
    seen = []

    class Watched(Counter):
        def terminate(self, reason):
            seen.append(reason)

    node = Node(seed=1)
    pid = node.spawn(Watched, trap_exit=True)
    node.exit(pid, "kill")
    node.run()
    assert not node.is_alive(pid) and seen == []


def test_trapping_server_terminates_on_parent_exit_but_not_others(quiet_crash_reports):
    seen = []

    class Child(Counter):
        def init(self):
            super().init()
            self.trap_exit = True

        def terminate(self, reason):
            seen.append(reason)

    result = {}

    async def parent(proc):
        child = proc.spawn_link(Child)
        result["child"] = child
        await proc.receive(lambda m: m == "go")
        raise ValueError("parent fails")

    node = Node(seed=1)
    ppid = node.spawn(parent)
    node.run()
    child = result["child"]
    node.exit(child, "stranger")  # not from the parent: an ordinary message
    node.run()
    assert node.is_alive(child) and node.get_process(child).log == [Exit(None, "stranger")]
    node.send(ppid, "go")
    node.run()
    assert not node.is_alive(child)
    assert isinstance(seen[0], ValueError)


def test_async_handlers_suspend_only_their_server():
    class Proxy(GenServer):
        def init(self, backend):
            self.backend = backend
            self.handled = []

        async def handle_call(self, request, caller):
            value = await self.call(self.backend, "get")
            await self.sleep(1.0)
            return value + request

        def handle_cast(self, msg):
            self.handled.append((msg, self.now()))

    node = Node(seed=1)
    backend = node.spawn(Counter, 100)
    proxy = node.spawn(Proxy, backend)
    fut = node.call(proxy, 1)
    node.cast(proxy, "queued")
    assert node.run_until_complete(fut) == 101
    node.run()
    # The cast waited for the suspended call to finish, as in OTP.
    assert node.get_process(proxy).handled == [("queued", 1.0)]


def test_an_async_handle_call_that_crashes_runs_terminate_and_its_caller_gets_the_exit(
        quiet_crash_reports):
    events = []

    class Flaky(GenServer):
        async def handle_call(self, request, caller):
            await self.sleep(1.0)
            if request == "crash":
                raise ValueError("mid-call")
            if request == "stop":
                self.stop("done")
            return ("ok", request)

        def terminate(self, reason):
            events.append(("terminate", reason, self.now()))

    node = Node(seed=1)
    pid = node.spawn(Flaky)
    assert node.run_until_complete(node.call(pid, 1)) == ("ok", 1)
    with pytest.raises(CallExit) as crashed:
        node.run_until_complete(node.call(pid, "crash"))
    assert isinstance(crashed.value.reason, ValueError)
    assert len(events) == 1 and isinstance(events[0][1], ValueError) and events[0][2] == 2.0
    other = node.spawn(Flaky)
    assert node.run_until_complete(node.call(other, "stop")) == ("ok", "stop")  # answered, then stopped
    node.run()
    assert events[1] == ("terminate", "done", 3.0) and not node.is_alive(other)


def test_async_terminate_can_wait():
    events = []

    class Graceful(GenServer):
        async def terminate(self, reason):
            await self.sleep(2.0)
            events.append(("terminated", reason, self.now()))

        def handle_call(self, request, caller):
            self.stop("shutdown")
            return "ok"

    node = Node(seed=1)
    pid = node.spawn(Graceful)
    ref_holder = {}

    async def watcher(proc):
        ref_holder["ref"] = proc.monitor(pid)
        events.append(await proc.receive())

    node.spawn(watcher)
    node.run()
    assert call(node, pid, "x") == "ok"
    node.run()
    assert events == [("terminated", "shutdown", 2.0), Down(ref_holder["ref"], pid, "shutdown")]


def test_call_errors():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    results = {}

    async def client(proc):
        for name, dest, req, timeout in [("timeout", pid, "later", 1.0), ("unknown", "nobody", "x", 1.0)]:
            try:
                await proc.call(dest, req, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - recorded for the assertions
                results[name] = exc
        try:
            await proc.call(proc.pid, "me")
        except CallingSelf as exc:
            results["self"] = exc
        # The late reply to the timed-out call must never arrive as a stray message.
        proc.send(pid, "answer")
        await proc.sleep(1.0)
        results["stray"] = await queued(proc)

    node.spawn(client)
    node.run()
    assert isinstance(results["timeout"], CallTimeout) and results["timeout"].timeout == 1.0
    assert "later" in str(results["timeout"])
    assert isinstance(results["unknown"], NoProc)
    assert isinstance(results["self"], CallingSelf)
    assert results["stray"] == []


def test_call_timeouts_fire_at_their_deadlines_and_answered_calls_leave_no_wakeup():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    fired = []

    async def client(proc, timeout):
        try:
            await proc.call(pid, "later", timeout=timeout)
        except CallTimeout:
            fired.append((timeout, proc.now()))

    async def answered(proc):
        for _ in range(6000):  # more answered calls than the kernel keeps unarmed
            await proc.call(pid, "get", timeout=50.0)

    node.spawn(answered)
    node.run()
    assert node.now() == 0.0  # no clock jump to the deadline of a call long answered
    for timeout in (3.0, 1.0, 2.0):  # a shorter timeout asked later still fires first
        node.spawn(client, timeout)
    node.run()
    assert fired == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert node.now() == 3.0


def test_server_exit_mid_call_raises_with_its_reason():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    fut = node.call(pid, "later")
    node.run_for(1)
    node.exit(pid, "shutdown")
    with pytest.raises(CallExit) as info:
        node.run_until_complete(fut)
    assert info.value.reason == "shutdown"


def test_call_to_dead_pid_is_noproc():
    node = Node(seed=1)
    pid = node.spawn(Counter)
    node.exit(pid, "kill")
    with pytest.raises(NoProc):
        call(node, pid, "get")


def test_killed_caller_leaves_no_monitor_on_the_server():
    node = Node(seed=1)
    server = node.spawn(Counter)

    async def caller(proc):
        await proc.call(server, "later")

    cpid = node.spawn(caller)
    node.run_for(1)
    assert node.process_info(server)["monitored_by"] == [cpid]
    node.exit(cpid, "kill")
    assert node.process_info(server)["monitored_by"] == []


def test_unexpected_info_is_logged_and_dropped(caplog):
    node = Node(seed=1)
    pid = node.spawn(GenServer)
    with caplog.at_level(logging.WARNING, logger="actors"):
        node.send(pid, "surprise")
        node.run()
    assert node.is_alive(pid)
    assert any(getattr(r, "unexpected_message", None) == "surprise" for r in caplog.records)


def test_parent_exit_with_async_terminate_never_reaches_handle_info():
    class Slow(GenServer):
        def init(self):
            self.trap_exit = True
            self.infos = []

        async def handle_info(self, msg):
            self.infos.append(msg)
            await self.sleep(5)

        async def terminate(self, reason):
            await self.sleep(1)

    node = Node(seed=1)
    pid = node.spawn(Slow)
    server = node.get_process(pid)
    node.exit(pid, "shutdown")  # from outside: the parent of a top-level server
    node.run()
    assert not node.is_alive(pid) and server.infos == []


def test_spawn_with_bad_arguments_leaves_no_process():
    async def needs_one(proc, a):
        return

    node = Node(seed=1)
    with pytest.raises(TypeError):
        node.spawn(needs_one, name="x")
    assert len(node) == 0 and node.whereis("x") is None


def test_run_until_complete_stops_on_the_completing_turn():
    node = Node(seed=1)
    pid = node.spawn(Counter, 3)
    turns = []
    node.tracer = lambda event, p, detail: turns.append(event) if event == "run" else None

    async def ping(proc, peer):
        while True:
            proc.send(peer, "ball")
            await proc.receive()

    a = node.spawn(ping, pid)  # a busy pair that would run forever
    node.spawn(ping, a)
    assert node.run_until_complete(node.call(pid, "get")) == 3
    assert len(turns) < 10
    node.run_until_complete(node.stop())


def test_forward_lets_another_server_reply_to_the_caller():
    class Router(GenServer):
        def init(self, backend):
            self.backend = backend

        def handle_call(self, request, caller):
            self.node.forward(self.backend, request, caller)
            return NoReply

    node = Node(seed=1)
    backend = node.spawn(Counter, 9)
    router = node.spawn(Router, backend)
    assert call(node, router, "get") == 9


def test_a_subclass_in_another_package_cannot_replace_kernel_internals():
    with pytest.raises(TypeError, match=r"Mine._deliver would replace Process._deliver, which "
                                        r"actors.process reserves"):
        class Mine(GenServer):
            def _deliver(self, msg):  # an app's helper that happens to share a kernel name
                pass

    with pytest.raises(TypeError, match=r"Timed.init assigns self._timer, a runtime field"):
        class Timed(GenServer):
            def init(self):
                self._timer = None  # a natural name, and the kernel's: refused at once


def test_each_server_class_runs_its_own_copy_of_the_kernel_turn_code():
    # CPython caches where an attribute is per bytecode instruction, for one class: in code
    # shared by servers of many classes taking turns, most reads of the kernel's fields
    # would miss. Each class gets its own copy of the per-turn kernel methods.
    class Base(GenServer):
        def init(self, log):
            self.log = log

        def handle_cast(self, msg):
            self.log.append(msg)
            self.stop()

        def terminate(self, reason):
            self.log.append(reason)

    class Derived(Base):
        pass

    for name in GenServer._per_class:
        codes = [vars(cls)[name].__code__ for cls in (Base, Derived)] + [getattr(GenServer, name).__code__]
        assert len(set(map(id, codes))) == 3, name
        assert {code.co_code for code in codes} == {codes[0].co_code}, name
    node = Node(seed=1)
    log = []
    for cls in (Base, Derived, Base):
        node.cast(node.spawn(cls, log), cls.__name__)
    node.run()
    assert sorted(log) == ["Base", "Base", "Derived", "normal", "normal", "normal"] and len(node) == 0
    # With two process classes as bases, each method is the one Python's MRO gives, not a
    # copy that one base made of what it inherited (a persistent state machine's set-up).
    class Job(PersistentServer, GenStateMachine):
        pass

    assert Job._setup.copy_of is GenStateMachine._setup
    assert Job._run.copy_of is PersistentServer._run is GenServer._hooked_run
    with pytest.raises(TypeError, match=r"Mine._terminate would replace Process._terminate"):
        class Mine(GenServer):
            def _terminate(self, reason):
                pass


def test_a_profile_counts_each_server_classs_copy_of_a_kernel_method_apart():
    # cProfile keys a function by file, line and code name: copies of one name would
    # overwrite each other's counts, so a profile would show one class's deliveries only.
    import cProfile
    import pstats

    class Left(GenServer):
        def handle_cast(self, msg):
            pass

    class Right(Left):
        pass

    node = Node(seed=1)
    pids = [node.spawn(cls) for cls in (Left, Right)]
    node.run()
    profile = cProfile.Profile()
    profile.enable()
    for i in range(10):
        for pid in pids:
            node.cast(pid, i)
    node.run()
    profile.disable()
    delivered = sorted((name.rpartition(".")[2], calls)  # "_deliver of test_....<locals>.Left"
                       for (file, _, name), (_, calls, *_) in pstats.Stats(profile).stats.items()
                       if file.endswith("actors/process.py") and name.startswith("_deliver of "))
    assert delivered == [("Left", 10), ("Right", 10)]


def test_a_server_that_sets_node_or_pid_gets_a_clear_error_at_once():
    # A tree or a graph calls its parent "node": in a process that name is the runtime's.
    with pytest.raises(TypeError, match=r"Branch.init assigns self.node"):
        class Branch(GenServer):
            def init(self, parent):
                self.node = parent

    class Sneaky(GenServer):
        def init(self, field, value):
            setattr(self, field, value)  # out of reach of the class check: caught when run

    node = Node(seed=1)
    for field in ("node", "pid"):
        with pytest.raises(StartError) as err:
            node.spawn(Sneaky, field, "elsewhere")
        assert isinstance(err.value.reason, AttributeError)
        assert f"Sneaky.{field} is the kernel's" in str(err.value.reason)
    pid = node.spawn(Sneaky, "parent", "elsewhere")  # any other name is the server's own
    assert node.get_process(pid).node is node and node.get_process(pid).pid == pid


def test_run_turn_wraps_every_turn_of_a_server_that_defines_it():
    class Turns(GenServer):
        def init(self):
            self.turns = []

        def run_turn(self, turn):  # the extension point storage's PersistentServer uses
            suspended = turn()  # init's turn is one too: it makes self.turns
            self.turns.append(suspended)

        def handle_cast(self, msg):
            pass

    node = Node(seed=1)
    pid = node.spawn(Turns)
    node.cast(pid, 1)
    node.cast(pid, 2)
    node.run()
    assert node.get_process(pid).turns == [False, False]  # init's, then one for both messages
    assert "run_turn" not in vars(GenServer)  # servers without it pay nothing for it


class StopsOnCast(GenServer):
    def init(self, seen):
        self.seen = seen

    def handle_cast(self, msg):
        self.seen.append(msg)
        if msg == "stop":
            self.stop("normal")

    def terminate(self, reason):
        self.seen.append(("terminate", reason))


class StopsOnCastHooked(StopsOnCast):
    def run_turn(self, turn):
        try:
            turn()
        except BaseException as exc:
            self.seen.append(("turn raised", type(exc).__name__))
            raise


@pytest.mark.parametrize("server", [StopsOnCast, StopsOnCastHooked])
def test_a_stop_in_a_callback_ends_the_turn_at_once_and_everyone_hears_normal(server):
    # A normal stop ends the turn without unwinding an exception, unless the server has a
    # run_turn hook, which sees it as ExitNow: either way the same exit, the messages
    # queued behind the stop never handled, the links and monitors told "normal".
    events, seen = [], []
    node = Node(seed=1)
    node.tracer = lambda event, pid, detail: events.append((event, detail)) if event == "exit" else None

    async def watcher(proc, box):
        proc.trap_exit = True
        pid = proc.spawn_link(server, seen)
        ref = proc.monitor(pid)
        proc.cast(pid, 1)
        proc.cast(pid, "stop")
        proc.cast(pid, 2)  # queued behind the stop: never handled
        box.append(await proc.receive(lambda m: isinstance(m, Exit)))
        box.append(await proc.receive(lambda m: isinstance(m, Down) and m.ref == ref))

    box = []
    node.spawn(watcher, box)
    node.run()
    hooked = [("turn raised", "ExitNow")] if server is StopsOnCastHooked else []
    assert seen == [1, "stop", ("terminate", "normal"), *hooked]
    assert [m.reason for m in box] == ["normal", "normal"]
    assert ("exit", "normal") in events and len(node) == 0
    assert node.statistics()["exits"] == 2 and node.statistics()["crashes"] == 0


def test_calls_from_outside_leave_no_garbage_cycles():
    # A server answering thousands of outside calls per second should not feed the cycle
    # collector: a finished call's waiter must be freed by reference counting alone.
    import gc

    class Echo(GenServer):
        def handle_call(self, request, caller):
            return request

    node = Node(seed=1)
    pid = node.spawn(Echo)
    node.run_until_complete(node.call(pid, 0))
    gc.collect()
    gc.disable()
    try:
        for i in range(100):
            assert node.run_until_complete(node.call(pid, i)) == i
        node.run_for(10.0)  # past the calls' timeouts: the cancelled timers are gone too
        assert gc.collect() == 0
    finally:
        gc.enable()
