"""GenStateMachine: gen_statem's semantics through the public API, on the deterministic driver."""
import logging

import pytest

from actors import (CallExit, EventTimeout, Exit, GenericTimeout, GenServer, GenStateMachine, KeepState,
                    NextEvent, NextState, Node, Postpone, RepeatState, Reply, StartError, StateTimeout, Stop,
                    SystemLimit)


def kind(event):
    """An event's type as a string ("call" for `("call", caller)`, "timeout:NAME" for a generic one)."""
    if type(event) is tuple:
        return "call" if event[0] == "call" else f"timeout:{event[1]}"
    return event


class Script(GenStateMachine):
    """A machine in handle_event mode that logs every event and answers from a plan:
    `plan[(state, content)]` is the result, or a function of the event giving it."""

    def init(self, plan, first="a", enter=False, actions=()):
        self.plan = plan
        self.log = []
        self.stopped = None
        self.state_enter = enter
        return NextState(first, *actions)

    def handle_event(self, event, content, state):
        self.log.append((state, kind(event), content, self.now()))
        if event == "enter":
            result = self.plan.get((state, "enter"))
        elif event == "info" and type(content) is Exit:
            return None
        else:
            result = self.plan.get((state, content))
        return result(event) if callable(result) else result

    def terminate(self, reason):
        self.stopped = reason


def start(plan, first="a", enter=False, actions=()):
    node = Node(seed=1)
    pid = node.spawn(Script, plan, first, enter, actions)
    return node, pid, node.get_process(pid)


def seen(proc, what=None):
    """(state, event type, content) of the logged events (those of type `what` only)."""
    return [(s, k, c) for s, k, c, _ in proc.log if what is None or k == what]


def call(node, pid, request, timeout=5.0):
    return node.run_until_complete(node.call(pid, request, timeout))


# -- callback modes and enter calls -------------------------------------------------------------

class Door(GenStateMachine):
    state_enter = True

    def init(self, code):
        self.code = code
        self.entered = []
        return "locked"

    def locked(self, event, content):
        match event, content:
            case "enter", old:
                self.entered.append(("locked", old))
            case ("call", caller), code if code == self.code:
                return NextState("open", Reply(caller, "opened"), StateTimeout(10.0, "lock"))
            case ("call", caller), _:
                return KeepState(Reply(caller, "locked"))

    def open(self, event, content):
        match event, content:
            case "enter", old:
                self.entered.append(("open", old))
            case "state_timeout", "lock":
                return "locked"
            case ("call", caller), "is it open?":
                self.reply(caller, "yes")
            case ("call", _), _:
                return KeepState(Postpone())


def test_state_functions_a_method_per_state_with_enter_calls():
    node = Node(seed=1)
    pid = node.spawn(Door, 1234)
    door = node.get_process(pid)
    assert door.current_state == "locked" and door.entered == [("locked", "locked")]  # initial enter
    assert call(node, pid, 1) == "locked"
    assert call(node, pid, 1234) == "opened"
    assert door.current_state == "open" and door.entered[-1] == ("open", "locked")
    assert call(node, pid, "is it open?") == "yes"
    late = node.call(pid, 42, timeout=None)  # postponed while open
    node.run_for(9.0)
    assert not late.done()
    assert node.run_until_complete(late) == "locked"  # retried once the state timeout locked it
    assert node.now() == pytest.approx(10.0)
    assert door.entered == [("locked", "locked"), ("open", "locked"), ("locked", "open")]


def test_handle_event_mode_takes_any_state_value():
    plan = {(("n", 0), "up"): NextState(("n", 1)), (("n", 1), "up"): NextState(("n", 2))}
    node, pid, proc = start(plan, first=("n", 0))
    node.cast(pid, "up")
    node.cast(pid, "up")
    node.run()
    assert proc.current_state == ("n", 2)


def test_enter_calls_only_on_a_state_change_or_a_repeat():
    plan = {("a", "stay"): KeepState(), ("a", "same"): NextState("a"), ("a", "again"): RepeatState(),
            ("a", "go"): NextState("b")}
    node, pid, proc = start(plan, enter=True)
    for msg in ("stay", "same", "again", "go"):
        node.cast(pid, msg)
    node.run()
    assert seen(proc, "enter") == [("a", "enter", "a"), ("a", "enter", "a"), ("b", "enter", "a")]


def test_an_enter_call_may_not_change_the_state(quiet_crash_reports):
    node, pid, proc = start({("a", "go"): NextState("b"), ("b", "enter"): NextState("a")}, enter=True)
    node.cast(pid, "go")
    node.run()
    assert not node.is_alive(pid)
    assert "may not change the state" in str(proc.stopped)


# -- postpone and inserted events -----------------------------------------------------------------

def test_postponed_events_are_retried_in_order_after_a_state_change_only():
    plan = {("a", 1): KeepState(Postpone()), ("a", 2): KeepState(Postpone()), ("a", "keep"): NextState("a"),
            ("a", 3): NextState("b", Postpone())}
    node, pid, proc = start(plan)
    for msg in (1, 2, "keep", 3, "after"):
        node.cast(pid, msg)
    node.run()
    # The same state is no state change: nothing retried until 3 changed it; 3 itself was
    # postponed by that transition and comes last of the retried; "after" was still queued.
    assert [(s, c) for s, _, c in seen(proc)] == [("a", 1), ("a", 2), ("a", "keep"), ("a", 3),
                                                 ("b", 1), ("b", 2), ("b", 3), ("b", "after")]


def test_retried_events_go_before_the_events_still_queued_inside_the_machine():
    plan = {("a", "p"): KeepState(Postpone()),
            ("a", "go"): KeepState(NextEvent("internal", "x"), NextEvent("internal", "y")),
            ("a", "x"): NextState("b")}
    node, pid, proc = start(plan)
    node.cast(pid, "p")
    node.cast(pid, "go")
    node.run()
    assert [(s, c) for s, _, c in seen(proc)] == [("a", "p"), ("a", "go"), ("a", "x"), ("b", "p"), ("b", "y")]


def test_a_postponed_call_is_answered_from_a_later_state():
    plan = {("a", "ask"): KeepState(Postpone()), ("a", "go"): NextState("b"),
            ("b", "ask"): lambda event: KeepState(Reply(event[1], "from b"))}
    node, pid, proc = start(plan)
    fut = node.call(pid, "ask", None)
    node.run()
    assert not fut.done()
    node.cast(pid, "go")
    assert node.run_until_complete(fut) == "from b"


def test_inserted_events_come_first_in_order_then_the_retried_then_the_mailbox():
    plan = {("a", "p"): KeepState(Postpone()),
            ("a", "go"): NextState("b", NextEvent("internal", "i1"), NextEvent("cast", "i2"))}
    node, pid, proc = start(plan)
    for msg in ("p", "go", "mail"):
        node.cast(pid, msg)
    node.run()
    assert [(s, k, c) for s, k, c in seen(proc)][2:] == [
        ("b", "internal", "i1"), ("b", "cast", "i2"), ("b", "cast", "p"), ("b", "cast", "mail")]


def test_init_may_insert_events_but_not_postpone():
    node, pid, proc = start({}, actions=[NextEvent("internal", "boot")])
    assert seen(proc) == [("a", "internal", "boot")]  # handled before spawn returned
    with pytest.raises(StartError, match="init cannot postpone"):
        Node(seed=1).spawn(Script, {}, "a", False, [Postpone()])


# -- timeouts ------------------------------------------------------------------------------------------

def test_event_timeout_fires_when_nothing_arrives_and_any_event_cancels_it():
    plan = {("a", "arm"): KeepState(EventTimeout(2.0, "idle")), ("a", "poke"): None}
    node, pid, proc = start(plan)
    node.cast(pid, "arm")
    node.run_for(1.0)
    node.cast(pid, "poke")  # an event: the timeout is cancelled
    node.run_for(5.0)
    assert seen(proc, "timeout") == []
    node.cast(pid, "arm")
    node.run()
    assert [(c, t) for _, k, c, t in proc.log if k == "timeout"] == [("idle", pytest.approx(8.0))]


def test_an_inserted_event_cancels_the_event_timeout():
    plan = {("a", "arm"): KeepState(EventTimeout(1.0, "idle"), NextEvent("internal", "x"))}
    node, pid, proc = start(plan)
    node.cast(pid, "arm")
    node.run()
    assert seen(proc, "timeout") == [] and seen(proc, "internal") == [("a", "internal", "x")]


def test_state_timeout_survives_events_and_a_state_change_cancels_it():
    plan = {("a", "arm"): KeepState(StateTimeout(3.0, "late")), ("a", "poke"): None,
            ("a", "go"): NextState("b"), ("a", "same"): RepeatState()}
    node, pid, proc = start(plan)
    node.cast(pid, "arm")
    node.run_for(1.0)
    node.cast(pid, "poke")
    node.cast(pid, "same")  # a repeat is not a change
    node.run()
    assert [(s, c, t) for s, k, c, t in proc.log if k == "state_timeout"] == [("a", "late", pytest.approx(3.0))]
    node.cast(pid, "arm")
    node.run_for(1.0)
    node.cast(pid, "go")
    node.run()
    assert len(seen(proc, "state_timeout")) == 1


def test_a_state_timeout_set_by_a_state_change_runs_in_the_new_state():
    node, pid, proc = start({("a", "go"): NextState("b", StateTimeout(1.0, "in b")),
                             ("b", "in b"): NextState("c")})
    node.cast(pid, "go")
    node.run()
    assert seen(proc, "state_timeout") == [("b", "state_timeout", "in b")] and proc.current_state == "c"


def test_generic_timeouts_are_named_survive_state_changes_and_restart_when_set_again():
    plan = {("a", "arm"): KeepState(GenericTimeout("x", 2.0, 1), GenericTimeout("y", 3.0, 2)),
            ("a", "go"): NextState("b"),
            ("b", "rearm"): KeepState(GenericTimeout("x", 5.0, 3), GenericTimeout("y", None))}
    node, pid, proc = start(plan)
    node.cast(pid, "arm")
    node.run_for(1.0)
    node.cast(pid, "go")
    node.cast(pid, "rearm")  # x restarts at t=1 (so at 6), y is cancelled
    node.run()
    assert [(s, k, c, t) for s, k, c, t in proc.log if k.startswith("timeout:")] == [
        ("b", "timeout:x", 3, pytest.approx(6.0))]


def test_absolute_timeouts_take_a_time_on_the_nodes_clock():
    node, pid, proc = start({("a", "arm"): KeepState(StateTimeout(7.5, "at", absolute=True))})
    node.run_for(2.0)
    node.cast(pid, "arm")
    node.run()
    assert [t for _, k, _, t in proc.log if k == "state_timeout"] == [pytest.approx(7.5)]


def test_zero_timeouts_come_after_the_inserted_events_and_before_the_mailbox():
    plan = {("a", "go"): KeepState(StateTimeout(0, "s0"), GenericTimeout("g", 0, "g0"),
                                   NextEvent("internal", "i"))}
    node, pid, proc = start(plan)
    node.cast(pid, "go")
    node.cast(pid, "mail")
    node.run()
    assert [c for _, _, c in seen(proc)] == ["go", "i", "s0", "g0", "mail"]
    assert node.now() == 0.0


def test_a_state_change_cancels_a_zero_state_timeout_still_queued():
    plan = {("a", "go"): KeepState(StateTimeout(0, "s0"), NextEvent("internal", "leave")),
            ("a", "leave"): NextState("b")}
    node, pid, proc = start(plan)
    node.cast(pid, "go")
    node.run()
    assert seen(proc, "state_timeout") == [] and proc.current_state == "b"


def test_an_event_timeout_asked_while_events_are_queued_never_fires():
    plan = {("a", "go"): KeepState(NextEvent("internal", "i"), EventTimeout(0, "e0"))}
    node, pid, proc = start(plan)
    node.cast(pid, "go")
    node.run()
    assert seen(proc, "timeout") == []


def test_timeouts_die_with_the_machine():
    node, pid, proc = start({("a", "arm"): KeepState(GenericTimeout("x", 5.0, 1), StateTimeout(5.0, 2))})
    node.cast(pid, "arm")
    node.run_for(1.0)
    node.exit(pid, "kill")
    node.run()
    assert node.now() == pytest.approx(1.0)  # no timer was left to move the clock on


# -- stop, replies, errors ------------------------------------------------------------------------

def test_stop_sends_its_replies_then_terminates_with_the_reason():
    node, pid, proc = start({("a", "bye"): lambda event: Stop("finished", Reply(event[1], "ok"))})
    watcher = node.spawn(Script, {}, trap_exit=True)
    ref = node.get_process(watcher).monitor(pid)
    assert call(node, pid, "bye") == "ok"
    node.run()
    assert proc.stopped == "finished" and not node.is_alive(pid)
    assert node.get_process(watcher).log[-1][2] == (ref, pid, "finished")


def test_a_call_to_a_machine_that_stops_without_replying_gets_its_reason():
    node, pid, _ = start({("a", "bye"): Stop("gone")})
    with pytest.raises(CallExit, match="gone"):
        call(node, pid, "bye")


@pytest.mark.parametrize("result, message", [
    (NextState("b", "not an action"), "not an action"),
    (KeepState(StateTimeout(-1.0, "x")), "finite number >= 0"),
    (KeepState(EventTimeout(float("inf"))), "finite number >= 0"),
    (StateTimeout(1.0), "wrap actions"),
])
def test_bad_results_crash_the_machine_naming_what_is_wrong(quiet_crash_reports, result, message):
    node, pid, proc = start({("a", "bad"): result})
    node.cast(pid, "bad")
    node.run()
    assert not node.is_alive(pid) and message in str(proc.stopped)


def test_a_state_must_name_a_state_method(quiet_crash_reports):
    class Typo(GenStateMachine):
        def init(self):
            return "idle"

        def idle(self, event, content):
            return content

    node = Node(seed=1)
    for bad in ("ilde", "stop", "_setup", 3):
        pid = node.spawn(Typo)
        node.cast(pid, bad)
        node.run()
        assert not node.is_alive(pid)
    with pytest.raises(StartError, match="has no state 'nope'"):
        node.spawn(type("Bad", (Typo,), {"init": lambda self: "nope"}))
    with pytest.raises(StartError, match="returned no state"):
        node.spawn(type("Empty", (Typo,), {"init": lambda self: None}))


def test_an_endless_event_loop_hits_max_events(quiet_crash_reports):
    class Loop(GenStateMachine):
        max_events = 50

        def init(self):
            return "spin"

        def spin(self, event, content):
            return KeepState(NextEvent("internal", "again"))

    node = Node(seed=1)
    pid = node.spawn(Loop)
    ref_holder = node.spawn(Script, {})
    ref = node.get_process(ref_holder).monitor(pid)
    node.cast(pid, "go")
    node.run()
    (down,) = [c for _, k, c, _ in node.get_process(ref_holder).log if k == "info" and c[0] == ref]
    assert isinstance(down.reason, SystemLimit) and "max_events=50" in str(down.reason)


# -- async callbacks, supervision, determinism ---------------------------------------------------

class Echo(GenServer):
    def handle_call(self, request, caller):
        return ("echo", request)


class Asker(GenStateMachine):
    def init(self, echo):
        self.echo = echo
        self.seen = []
        return "idle"

    async def idle(self, event, content):
        self.seen.append(content)
        if event[0] == "call":
            answer = await self.call(self.echo, content)  # the machine waits, messages queue up
            return NextState("asked", Reply(event[1], answer))

    def asked(self, event, content):
        self.seen.append(("asked", content))


def test_async_state_callbacks_await_and_then_transition():
    node = Node(seed=1)
    pid = node.spawn(Asker, node.spawn(Echo))
    fut = node.call(pid, "hi")
    node.cast(pid, "meanwhile")
    assert node.run_until_complete(fut) == ("echo", "hi")
    node.run()
    assert node.get_process(pid).seen == ["hi", ("asked", "meanwhile")]


def test_a_supervisors_shutdown_runs_terminate_when_trapping_exits():
    from supervision import ChildSpec, Supervisor, which_children
    node = Node(seed=1)
    sup = node.spawn(Supervisor, [ChildSpec("m", Script, args=({},), options={"trap_exit": True})])
    (child,) = node.run_until_complete(which_children(node, sup))
    proc = node.get_process(child.pid)
    node.exit(sup, "shutdown")
    node.run()
    assert proc.stopped == "shutdown"


def test_same_seed_same_run():
    def run(seed):
        plan = {("a", "go"): NextState("b", StateTimeout(1.5, "s"), GenericTimeout("g", 0.5, "g")),
                ("b", "s"): NextState("a", EventTimeout(0.25, "e"))}
        node = Node(seed=seed)
        pids = [node.spawn(Script, plan) for _ in range(5)]
        for i, pid in enumerate(pids):
            node.send_after(i * 0.1, pid, "go")  # as info events
            node.cast(pid, "go")
        node.run()
        return [node.get_process(pid).log for pid in pids]
    assert run(7) == run(7)
    assert any(k == "timeout" for log in run(7) for _, k, _, _ in log)


def test_quiet_by_default(caplog):
    caplog.set_level(logging.WARNING, logger="actors")
    node, pid, _ = start({})
    node.send(pid, "anything")  # info events go to the machine, never logged as unexpected
    node.run()
    assert caplog.records == []


def test_system_messages_see_a_machine_as_its_state_and_data_as_otp_does():
    from actors.system import get_state, replace_state, resume, suspend
    node = Node(seed=1)
    pid = node.spawn(Script, {("a", "go"): "b", ("b", "go"): "a"})
    node.cast(pid, "go")
    node.run()
    state, data = node.run_until_complete(get_state(node, pid))
    assert state == "b" and data["log"][0][:3] == ("a", "cast", "go")
    assert not any(key.startswith("_") for key in data)  # the machinery stays out of it
    node.run_until_complete(suspend(node, pid))
    node.run_until_complete(replace_state(node, pid, lambda s: ("a", {**s[1], "log": []})))
    node.run_until_complete(resume(node, pid))
    node.cast(pid, "go")
    node.run()
    state, data = node.run_until_complete(get_state(node, pid))
    assert state == "b" and [entry[:3] for entry in data["log"]] == [("a", "cast", "go")]
    with pytest.raises(TypeError, match=r"state is \(state, data\)"):
        node.run_until_complete(replace_state(node, pid, lambda s: s[1]))
    assert node.run_until_complete(get_state(node, pid))[0] == "b"  # a refused state changes nothing
