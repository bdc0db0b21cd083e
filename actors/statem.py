"""GenStateMachine: OTP's gen_statem as a Python class. Data lives on `self`, the state in
`self.current_state`.

    class Door(GenStateMachine):
        state_enter = True

        def init(self, code):
            self.code = code
            return "locked"                                  # the initial state

        def locked(self, event, content):                    # a method per state
            if event == "enter":
                self.tries = 0
            elif event[0] == "call" and content == self.code:  # event is ("call", caller)
                return NextState("open", Reply(event[1], "opened"), StateTimeout(10.0, "lock"))
            elif event[0] == "call":
                return KeepState(Reply(event[1], "wrong code"))

        def open(self, event, content):
            if event == "state_timeout":
                return "locked"                              # a bare state: NextState("locked")
            if event[0] == "call":
                return KeepState(Postpone())                 # retried once the door is locked

Callback modes. A class that defines `handle_event(event, content, state)` has it called
for every event in every state (a state is then any value); otherwise a state is the name
of a method, called as `method(event, content)`. `state_enter = True` adds enter calls:
after every state change (and for the initial state) the new state's callback gets
`("enter", old_state)` before any event; an enter call may not postpone, insert events or
change the state. `init(*args)` returns the initial state (or a `NextState` with actions)
and runs inside `spawn`, as a GenServer's does.

Events, as `event` and `content`: `(("call", caller), request)`, `("cast", msg)`,
`("info", msg)` (every other message: `Exit`, `Down`, sends, timers), `("timeout",
content)`, `("state_timeout", content)`, `(("timeout", name), content)` and
`("internal", content)` (inserted with `NextEvent`).

A callback returns None (keep the state), a next state, or one of `NextState(state,
*actions)`, `KeepState(*actions)`, `RepeatState(*actions)` (keep it, and repeat the enter
call), `Stop(reason="normal", *replies)`. Actions run in order: `Reply(caller, value)`
now; `Postpone()` keeps the event until the state changes, when every postponed event is
retried, oldest first; `NextEvent(event, content)` is handled next, before anything
queued; `EventTimeout`, `StateTimeout`, `GenericTimeout(name, ...)` start a timer on the
node's clock (`seconds=None` cancels it; `absolute=True` takes a time on that clock).
Exactly as gen_statem: any event cancels the event timeout, a state change cancels the
state timeout (one set in the same transition runs in the new state), generic timeouts
run until they fire or are set again; a relative timeout of 0 is handled after the events
already queued inside the machine and before the next message. Callbacks may be `async
def`; the machine handles nothing else while one is suspended. `terminate(reason)`,
`self.stop(reason)`, `self.reply(caller, value)` and the rest are GenServer's.

Deviation: gen_statem also takes `hibernate` and timeout `update` actions; these are not
implemented. A state method returning None keeps the state where Erlang would crash on an
unmatched event. The events a machine holds (postponed and queued inside it) and handles
for one message are limited by `max_events`: past it, it crashes with `SystemLimit`.
"""
from __future__ import annotations

import math
from collections import deque
from types import CoroutineType
from typing import Any, Generator, NamedTuple

from .errors import SystemLimit
from .genserver import GenServer, NoReply
from .process import NONE, From

Engine = Generator[CoroutineType, Any, None]  # see GenStateMachine._sm_engine
EVENT_TIMEOUT = "timeout"
STATE_TIMEOUT = "state_timeout"


class Reply(NamedTuple):
    """Action: answer the call of `caller` (an event `("call", caller)`) with `value`."""

    caller: From
    value: Any


class NextEvent(NamedTuple):
    """Action: handle `(event, content)` next, before any queued event ("internal" for
    the machine's own events)."""

    event: Any
    content: Any = None


class EventTimeout(NamedTuple):
    """Action: a "timeout" event after `seconds`, unless any event comes first."""

    seconds: float | None
    content: Any = None
    absolute: bool = False


class StateTimeout(NamedTuple):
    """Action: a "state_timeout" event after `seconds`, unless the state changes first."""

    seconds: float | None
    content: Any = None
    absolute: bool = False


class GenericTimeout(NamedTuple):
    """Action: a `("timeout", name)` event after `seconds`; setting it again restarts it."""

    name: Any
    seconds: float | None
    content: Any = None
    absolute: bool = False


class Postpone:
    """Action: keep this event until the state changes, then handle it again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Postpone()"


class _Result:
    __slots__ = ("state", "actions")

    def __init__(self, state: Any, actions: tuple) -> None:
        self.state = state
        self.actions = actions

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.state!r}, *{self.actions!r})"


class NextState(_Result):
    """Result: go to `state` (a state change if it differs), then run the actions."""

    def __init__(self, state: Any, *actions: Any) -> None:
        super().__init__(state, actions)


class KeepState(_Result):
    """Result: stay in the current state and run the actions."""

    def __init__(self, *actions: Any) -> None:
        super().__init__(NONE, actions)


class RepeatState(_Result):
    """Result: stay, run the actions, and make the enter call of this state again."""

    def __init__(self, *actions: Any) -> None:
        super().__init__(NONE, actions)


class Stop(_Result):
    """Result: send the replies, then stop with `reason` (terminate runs, as in GenServer)."""

    def __init__(self, reason: Any = "normal", *replies: Reply) -> None:
        super().__init__(reason, replies)


_TIMEOUTS = (EventTimeout, StateTimeout, GenericTimeout)


class _Fired(NamedTuple):
    """A timeout's message to its own machine; stale once its entry was replaced."""

    key: Any
    entry: list


class _Transition:
    """What the actions of one transition (its event's callback and enter calls) ask for."""

    __slots__ = ("postpone", "inserted", "timeouts")

    def __init__(self) -> None:
        self.postpone = False
        self.inserted: list[tuple[Any, Any]] = []
        self.timeouts: list[Any] = []


class GenStateMachine(GenServer):
    """Base class of OTP-style state machines; see the module docstring."""

    _sm_state: Any  # the state, NONE until init has returned it
    state_enter: bool = False
    """Make enter calls after every state change (and for the initial state)."""

    max_events: int = 100_000
    """Events held inside the machine (postponed and queued), and handled for one message."""

    # No __slots__: a machine mixes with other GenServer bases (storage's PersistentServer).
    _fields = ("_sm_state", "_sm_queue", "_sm_postponed", "_sm_t0q", "_sm_timeouts")
    _sm_mode = "state_functions"
    _sm_states: frozenset = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._sm_mode = ("handle_event_function" if cls.handle_event is not GenStateMachine.handle_event
                        else "state_functions")
        cls._sm_states = frozenset()  # state methods checked so far

    # -- callbacks --------------------------------------------------------------------------

    def init(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.init must return the initial state")

    def handle_event(self, event: Any, content: Any, state: Any) -> Any:
        """The one callback of every state, if a class defines it (see the module docstring)."""
        raise NotImplementedError

    @property
    def current_state(self) -> Any:
        """The machine's state (None until `init` has returned it)."""
        state = self._sm_state
        return None if state is NONE else state

    def system_get_state(self) -> Any:
        """`(state, data)`, as OTP's sys:get_state of a gen_statem: data is what the server
        beneath says its state is, the machine's own fields left out."""
        data = super().system_get_state()
        if type(data) is dict:
            data = {k: v for k, v in data.items() if not k.startswith("_sm_")}
        return (self.current_state, data)

    def system_replace_state(self, state: Any) -> None:
        """Take `(state, data)` from `replace_state` or `code_change`; a new state name
        takes effect from the next event (no enter call, as in OTP)."""
        if type(state) is not tuple or len(state) != 2:
            raise TypeError(f"{type(self).__name__}'s state is (state, data); got {state!r:.200}")
        current, data = state
        if type(data) is dict:
            data = {**data, **{k: v for k, v in self.__dict__.items() if k.startswith("_sm_")}}
        super().system_replace_state(data)
        self._sm_state = current

    # -- GenServer's callbacks feed the machine ---------------------------------------------------

    def handle_call(self, request: Any, caller: From) -> Any:
        running = self._sm_event(("call", caller), request)
        return NoReply if running is None else running

    def handle_cast(self, msg: Any) -> Any:
        return self._sm_event("cast", msg)

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is _Fired:
            timeouts = self._sm_timeouts
            if timeouts is None or timeouts.get(msg.key) is not msg.entry:
                return None  # cancelled or set again after it fired: never an event
            del timeouts[msg.key]
            return self._sm_event(msg.key, msg.entry[1])
        return self._sm_event("info", msg)

    # -- kernel side --------------------------------------------------------------------------

    def _setup(self, *a: Any) -> None:
        GenServer._setup(self, *a)
        self._sm_state = NONE
        self._sm_queue: deque | None = None  # events inserted or retried: made when needed
        self._sm_postponed: list | None = None
        self._sm_t0q: list | None = None  # keys of the timeouts of 0 s, due before any message
        self._sm_timeouts: dict | None = None  # key -> [timer or None (in the t0q), content]

    def _init_result(self, result: Any) -> None:
        if type(result) is CoroutineType:
            result = self._sm_enter_after(result)
        elif self._stop is NONE:  # init did not stop itself
            result = self._sm_drive(self._sm_engine(None, NONE, result))
        GenServer._init_result(self, result)

    async def _sm_enter_after(self, init: CoroutineType) -> None:
        running = self._sm_drive(self._sm_engine(None, NONE, await init))
        if running is not None:
            await running

    def _sm_drive(self, engine: Engine) -> Any:
        """Run the engine; None if it finished, else a coroutine to finish it (a callback
        was `async def`), for GenServer to run as an async callback."""
        try:
            pending = next(engine)
        except StopIteration:
            return None
        return self._sm_drive_async(engine, pending)

    async def _sm_drive_async(self, engine: Engine, pending: CoroutineType) -> Any:
        while True:
            result = await pending
            try:
                pending = engine.send(result)
            except StopIteration:
                return NoReply

    def _sm_event(self, event: Any, content: Any) -> Any:
        """An event from the mailbox (nothing is queued inside the machine between two).
        A callback that keeps the state with no action costs one call; anything else goes
        through the engine."""
        if self._sm_timeouts and EVENT_TIMEOUT in self._sm_timeouts:
            self._sm_disarm(EVENT_TIMEOUT)  # any event cancels the event timeout
        result = self._sm_callback(event, content)
        if result is None:
            return None
        return self._sm_drive(self._sm_engine(event, content, result))

    def _sm_engine(self, event: Any, content: Any, result: Any = NONE) -> Engine:
        """Handle `(event, content)` (or, with event None, init's result), then the events
        queued inside the machine; yields the coroutine of an async callback to have it
        awaited and sent back."""
        handled = 0
        while True:
            if result is NONE:
                if self._sm_timeouts and EVENT_TIMEOUT in self._sm_timeouts:
                    self._sm_disarm(EVENT_TIMEOUT)  # any event cancels the event timeout
                result = self._sm_callback(event, content)
            if type(result) is CoroutineType:
                result = yield result
            # gen_statem's transition: actions (replies now), enter calls, then what they asked for
            before = self._sm_state
            kind, state, actions = _parse(result, before)
            t = self._sm_act(actions, None, "init" if event is None else "a state callback") if actions else None
            if kind is Stop:
                self.stop(state)
                return
            if state is NONE:
                raise ValueError(f"{type(self).__name__}.init returned no state (None); return the initial state")
            if state is not before:
                self._sm_check_state(state)
                self._sm_state = state
            changed = event is None or state != before
            if self.state_enter and (changed or kind is RepeatState):
                t = yield from self._sm_enter(before if event is not None else state, state, t)
                if t is Stop:
                    return
            if t is not None or changed:
                self._sm_settle(None if event is None else (event, content), t, changed)
            if self._stop is not NONE:
                return
            queue, t0q = self._sm_queue, self._sm_t0q
            if queue:
                event, content = queue.popleft()
            elif t0q:
                event = t0q.pop(0)
                content = self._sm_timeouts.pop(event)[1]  # type: ignore[union-attr]
            else:
                return
            handled += 1
            if handled > self.max_events:
                raise SystemLimit(f"{self._pid!r} handled more than max_events={self.max_events} "
                                  f"events inserted for one message (a NextEvent loop?)")
            result = NONE

    def _sm_callback(self, event: Any, content: Any) -> Any:
        state = self._sm_state
        if self._sm_mode == "handle_event_function":
            return self.handle_event(event, content, state)
        return getattr(self, state)(event, content)

    def _sm_enter(self, old: Any, state: Any, t: _Transition | None) -> Generator[CoroutineType, Any, Any]:
        """The enter calls of `state` (repeated while they ask to): their actions join the
        transition's `t`; returns it, or `Stop` if one stopped the machine."""
        while True:
            result = self._sm_callback("enter", old)
            if type(result) is CoroutineType:
                result = yield result
            kind, same, actions = _parse(result, state)
            if kind is NextState and same != state:
                raise ValueError(f"{type(self).__name__}: the enter call of {state!r} returned "
                                 f"{same!r}; an enter call may not change the state")
            if actions:
                t = self._sm_act(actions, t, "an enter call")
            if kind is Stop:
                self.stop(same)
                return Stop
            if kind is not RepeatState:
                return t
            old = state

    def _sm_settle(self, event: tuple | None, t: _Transition | None, changed: bool) -> None:
        """The end of a transition: postpone, retry the postponed after a state change,
        insert events, then the timeouts (a state change first ends the state timeout, so
        one set by these actions is the new state's)."""
        if t is not None:
            self._sm_queue_events(event, t, changed)
        elif changed and self._sm_postponed:
            self._sm_queue_events(event, _Transition(), changed)
        if changed and self._sm_timeouts:
            self._sm_disarm(STATE_TIMEOUT)
        if t is not None:
            for timeout in t.timeouts:
                self._sm_arm(timeout)

    def _sm_act(self, actions: tuple, t: _Transition | None, where: str) -> _Transition | None:
        """Run the replies now; note the rest in `t` (made if needed), which it returns."""
        for action in actions:
            kind = type(action)
            if kind is Reply:
                self.reply(action.caller, action.value)
                continue
            if t is None:
                t = _Transition()
            if kind in _TIMEOUTS:
                _check_timeout(action)
                t.timeouts.append(action)
            elif kind is Postpone:
                if where != "a state callback":
                    raise ValueError(f"{type(self).__name__}: {where} cannot postpone: there is no event")
                t.postpone = True
            elif kind is NextEvent:
                if where == "an enter call":
                    raise ValueError(f"{type(self).__name__}: an enter call cannot insert {action!r:.200}")
                t.inserted.append((action.event, action.content))
            else:
                raise TypeError(f"{type(self).__name__}: {where} returned {action!r:.200}, which is not "
                                "an action (Reply, Postpone, NextEvent, EventTimeout, StateTimeout, "
                                "GenericTimeout)")
        return t

    def _sm_queue_events(self, event: tuple | None, t: _Transition, changed: bool) -> None:
        """Postpone the event, retry the postponed after a state change, insert new events."""
        postponed = self._sm_postponed
        if t.postpone:
            if postponed is None:
                postponed = self._sm_postponed = []
            postponed.append(event)
        if (changed and postponed) or t.inserted:
            queue = self._sm_queue
            if queue is None:
                queue = self._sm_queue = deque()
            if changed and postponed:
                queue.extendleft(reversed(postponed))  # oldest first, before what was queued
                postponed.clear()
            queue.extendleft(reversed(t.inserted))
            if len(queue) > self.max_events:
                raise SystemLimit(f"{self._pid!r} holds more than max_events={self.max_events} events")
        if postponed and len(postponed) > self.max_events:
            raise SystemLimit(f"{self._pid!r} postponed more than max_events={self.max_events} events")

    def _sm_check_state(self, state: Any) -> None:
        cls = type(self)
        if cls._sm_mode != "state_functions" or state in cls._sm_states:
            return
        if type(state) is not str or state[:1] == "_" or hasattr(GenStateMachine, state) \
                or not callable(getattr(cls, state, None)):
            raise ValueError(f"{cls.__name__} has no state {state!r:.100}: without handle_event, a state "
                             "is the name of one of its methods (not one of GenStateMachine's)")
        cls._sm_states = cls._sm_states | {state}

    # -- timeouts -----------------------------------------------------------------------------

    def _sm_arm(self, timeout: Any) -> None:
        kind = type(timeout)
        key = (EVENT_TIMEOUT if kind is EventTimeout else STATE_TIMEOUT if kind is StateTimeout
               else ("timeout", timeout.name))
        self._sm_disarm(key)
        if timeout.seconds is None:
            return
        if self._sm_timeouts is None:
            self._sm_timeouts = {}
        entry = [None, timeout.content]
        self._sm_timeouts[key] = entry
        delay = timeout.seconds - self._node.now() if timeout.absolute else timeout.seconds
        if delay == 0 and not timeout.absolute:
            if self._sm_t0q is None:
                self._sm_t0q = []
            self._sm_t0q.append(key)
        else:
            entry[0] = self._node._add_timer(delay, self._sm_fired, (key, entry))

    def _sm_fired(self, key: Any, entry: list) -> None:
        if self._alive:
            self._post(_Fired(key, entry))  # a message, in order with the others

    def _sm_disarm(self, key: Any) -> None:
        timeouts = self._sm_timeouts
        entry = timeouts.pop(key, None) if timeouts else None
        if entry is None:
            return
        if entry[0] is None:
            self._sm_t0q.remove(key)  # type: ignore[union-attr]
        else:
            self._node._timers.cancel(entry[0])

    def _release(self) -> None:
        GenServer._release(self)
        for entry in (self._sm_timeouts or {}).values():
            if entry[0] is not None:
                self._node._timers.cancel(entry[0])
        self._sm_timeouts = None


def _parse(result: Any, current: Any) -> tuple[type, Any, tuple]:
    """(kind, state, actions) of a callback's result; a bare value is the next state."""
    if result is None:
        return KeepState, current, ()
    kind = type(result)
    if kind is NextState or kind is Stop:
        return kind, result.state, result.actions
    if kind is KeepState or kind is RepeatState:
        return kind, current, result.actions
    if kind in _TIMEOUTS or kind in (Reply, NextEvent, Postpone):
        raise TypeError(f"a state callback returned the action {result!r:.200}; wrap actions in "
                        "NextState(state, ...) or KeepState(...)")
    return NextState, result, ()


def _check_timeout(t: Any) -> None:
    seconds = t.seconds
    if seconds is None:
        return
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or (seconds < 0 and not t.absolute):
        raise ValueError(f"{t!r:.200}: seconds must be a finite number >= 0 (or None to cancel)")
