"""The node: one scheduler hosting many processes, like one BEAM node.

`Node` is the façade: spawning, messages (send, cast, call, reply, forward), names,
timers, introspection and the drivers. Each concern behind it lives in a part of its own
(the kernel map is in `actors/__init__.py`). Two drivers share every line of the core;
only the clock and the choice of the next runnable process differ:

- real time (`Node()`): runs inside an asyncio loop. `async with Node() as node:` attaches
  it; `await node.call(pid, req)` from asyncio code; `node.call_from_thread(...)` from
  other threads.
- deterministic (`Node(seed=7)`): a virtual clock that jumps to the next timer when
  nothing is runnable, and a seeded pick of the next runnable process. `node.run()`,
  `node.run_for(s)`, `node.run_until_complete(fut)` drive it; one seed gives one exact
  sequence of events in any interpreter.

Limits: `max_processes`, `max_timers`, `max_tables`, per-process `mailbox_limit`, and
`batch` messages per turn so one busy process cannot starve the others.

Introspection (what an observer reads; all of it kept by the kernel or computed on
request): `process_info(pid)`, `statistics()` (counters and the run queue, in O(1)),
`pid_of(serial)` (O(1)), `trace(pid, fn)` (one process's sends, receives, crash and
exit) and `tracer` (every process's spawns, turns, crashes and exits). Counting costs an
int increment on paths a turn or a send already takes; an untraced process pays one
flag test per send and nothing per message it receives.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import random
from typing import Any, Callable

from .boundary import Boundary, Cast, Delivery, Send
from .calls import Calls
from .clock import LoopClock, VirtualClock
from .errors import MailboxOverflow, NoProc, SystemLimit
from .future import Future
from .ids import Pid, Ref
from .names import Names
from .output import OutputGate, defer
from .registry import Dest, Name
from .process import NONE, From, Process, current_function, memory_estimate, visible
from .runq import FifoQueue, SeededQueue
from .scheduler import Scheduler
from .spawn import spawn, start_from, start_outside
from .signals import Signals
from .tables import Table, Tables
from .threads import ThreadBridge
from .timers import Timer, TimerHeap
from . import watch
from .watch import ExitWatch

__all__ = ["Node", "SystemLimit", "seed_for"]


def seed_for(seed: int, stream: str) -> int:
    """A 64-bit seed for one named random stream, the same in every interpreter (never
    `hash()`, which varies with PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _never_idle() -> None:
    raise AssertionError("a deterministic node is never idle on a loop")


class Node:
    """One scheduler and its processes. See the module docstring for the two drivers.

        node = Node(seed=1)
        pid = node.spawn(Counter, 0)                             # a GenServer counting casts
        node.cast(pid, 5)
        assert node.run_until_complete(node.call(pid, "get")) == 5
    """

    def __init__(self, name: str = "nonode@nohost", *, seed: int | None = None, batch: int = 64,
                 max_processes: int = 10_000_000, max_timers: int = 10_000_000, max_tables: int = 1_000_000,
                 rng: Callable[[], float] | None = None, creation: int = 0) -> None:
        assert batch >= 1, "batch must be at least one message per turn"
        # A restarted node (a new `creation`) never reuses its previous incarnation's pids.
        assert 0 <= creation < 2**20, "creation must fit in 20 bits"
        self.name = name
        self.seed = seed
        self.batch = batch
        self.max_processes = max_processes
        self.creation = creation
        self.tracer: Callable[[str, Any, Any], None] | None = None
        """Called as tracer(event, pid, detail) for "spawn" (once its name, if any, is
        registered), "run" (a turn), "crash" (the turn raised: detail is the exception, as
        its crash report is logged) and "exit". One process's sends and receives: `trace`."""
        self.transport: Callable[[Node, str, Delivery], None] | None = None
        """How deliveries to other nodes leave: `transport(node, dst_name, delivery)`. None:
        through the loopback connection (`connect`), at once. A simulated network or a
        wire installs one; it hands each delivery to the far node's `arrive`."""
        self._procs: dict[int, Process] = {}
        self._serial = creation << 40
        self._refs = creation << 40
        self._current: Process | None = None  # the process whose turn is running
        self._timers = TimerHeap(max_timers)
        self._timer_refs: dict[Ref, Timer] = {}
        # The parts (see the kernel map in actors/__init__.py).
        self._clock: VirtualClock | LoopClock
        self._runq: FifoQueue | SeededQueue
        if seed is None:
            self._clock = LoopClock(self)
            self._runq = FifoQueue()
            self._idle = True  # nothing scheduled on the loop: the next runnable process ticks
            self._wake = self._clock.schedule_tick
        else:
            self._clock = VirtualClock(self)
            self._runq = SeededQueue(rng or random.Random(seed_for(seed, "scheduler")).random)
            self._idle = False  # the deterministic driver runs only when told to
            self._wake = _never_idle
        self.now = self._clock.now  # type: ignore[method-assign]  # one call less than a method
        self._scheduler = Scheduler(self)
        self._signals = Signals(self)
        self._exits = self._signals.exits
        self._calls = Calls(self)
        self._names = Names(self)
        self._output = OutputGate(self)
        self._pass_hooks = self._output.hooks
        self._tables = Tables(self, max_tables)
        self._boundary = Boundary(self)
        self._threads = ThreadBridge(self)
        self.arrive = self._boundary.arrive  # type: ignore[method-assign]  # one call less

    def now(self) -> float:  # replaced in __init__ by the clock's own method
        """Seconds on the node's clock: the loop's monotonic time, or virtual time."""
        return self._clock.now()

    def make_ref(self) -> Ref:
        """A new unique reference."""
        self._refs += 1
        return Ref(self.name, self._refs)

    # -- spawning -----------------------------------------------------------------------------

    def spawn(self, target: Any, *args: Any, **options: Any) -> Pid:
        """Start a process and return its pid.

        `target` is a `GenServer` subclass (its `init(*args)` runs before spawn returns;
        an async `init` that awaits finishes later: `start` waits for it), an
        `async def body(proc, *args)` function, or a `ThreadWorker` subclass.
        Options: `name` (a str or a `via`), `trap_exit`, `mailbox_limit` (messages) with
        `overflow` = "crash" (the process exits with `MailboxOverflow`) or "drop" (the
        message is dropped and counted).
        """
        return spawn(self, target, args, options)

    def start(self, target: Any, *args: Any, timeout: float | None = None, **options: Any) -> Future:
        """Start a process from outside any process, as `spawn`, and wait until its `init`
        has finished, an async `init` included (OTP's synchronous start): a `Future` of its
        pid, or of `StartError` if `init` fails (or `timeout` seconds pass: it is then
        killed). `await node.start(...)` in asyncio code; `node.run_until_complete(...)`
        under the deterministic driver."""
        return start_outside(self, target, args, options, timeout)

    def _spawn(self, target: Any, args: tuple, options: dict, parent: Process | None = None,
               link: bool = False) -> Pid:
        return spawn(self, target, args, options, parent, link)

    _start_from = staticmethod(start_from)  # a process's start and start_link

    # -- messages ------------------------------------------------------------------------------

    def send(self, dest: Dest, msg: Any) -> None:
        """Send `msg` to a pid (dropped if it is dead), a registered name or a `via`
        (`NoProc` if nobody holds it, as Erlang's badarg)."""
        current = self._current  # inlined copy of actors.output.defer's test
        if current is not None:
            current._sent += 1
            if (current._held is not None or current._tracer is not None) and defer(
                    current, self.send, (dest, msg), dest, msg):
                return
        if type(dest) is Pid:
            proc = dest._proc
            if proc is not None and proc._node is self:  # the local fast path; else the boundary's
                if proc._alive:
                    proc._post(msg)
                return
        self._boundary.route(dest, msg, Send, True)

    def cast(self, dest: Dest, msg: Any) -> None:
        """Send `msg` to a GenServer's `handle_cast`; returns at once even if dest is gone."""
        current = self._current  # inlined copy of actors.output.defer's test: the hottest path
        if current is not None:
            current._sent += 1
            if (current._held is not None or current._tracer is not None) and defer(
                    current, self.cast, (dest, msg), dest, msg):
                return
        if type(dest) is Pid:
            proc = dest._proc
            if proc is not None and proc._node is self:  # the local fast path; else the boundary's
                if proc._alive:
                    proc._deliver(msg)
                return
        self._boundary.route(dest, msg, Cast, False)

    def call(self, dest: Dest, request: Any, timeout: float | None = 5.0) -> Future:
        """Call a GenServer from outside any process: returns a `Future` to `await` (real
        time) or to pass to `run_until_complete` (deterministic)."""
        return self._calls.call(dest, request, timeout)

    def forward(self, dest: Dest, request: Any, caller: From) -> None:
        """Hand a call on to another server, which then replies to the original caller
        directly (a router's `handle_call` forwards and returns `NoReply`). The caller
        keeps watching only the process it called."""
        self._calls.forward(dest, request, caller)

    def reply(self, caller: From, value: Any) -> None:
        """Answer a call whose handler returned `NoReply`."""
        self._calls.reply(caller, value)

    def exit(self, dest: Dest, reason: Any) -> None:
        """Send an exit signal from outside any process (Erlang's `exit/2`; the `Exit`
        message a trapping process gets has pid None)."""
        self._signals.send_exit(None, dest, reason)

    def _overflowed(self, proc: Process, msg: Any) -> None:
        if proc._overflow == "drop":
            proc._dropped += 1
        else:
            self._signals.doom(proc, MailboxOverflow(
                f"{proc._pid!r} exceeded its mailbox limit of {proc._limit} messages"))

    # -- output holding and pass hooks (see actors.output) --------------------------------------

    def hold_output(self, proc: Process) -> None:
        """Hold what `proc` sends (send, cast, call requests, replies) from now on, in order,
        until `release_output(proc)`: so a reply is never seen before the write it
        acknowledges has committed. Timers are not held. See `actors.output`."""
        self._output.hold(proc)

    def release_output(self, proc: Process, keep_holding: bool = False) -> None:
        """Deliver everything held for `proc`, in the order it was sent, and stop holding
        (or, with `keep_holding`, hold what it sends next)."""
        self._output.release(proc, keep_holding)

    def held_count(self, proc: Process) -> int:
        """How many outputs of `proc` are held (a mark for `discard_output`)."""
        return self._output.held_count(proc)

    def discard_output(self, proc: Process, keep: int = 0) -> None:
        """Drop what is held for `proc` after its first `keep` outputs (a failed or crashed
        turn's messages must not be seen). A held exit notification is never dropped:
        if `proc` has exited, its links and monitors hear at once when nothing is kept."""
        self._output.discard(proc, keep)

    def add_pass_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook()` after every scheduler pass (a batch of process turns, or a round of
        timers): the point where the storage layer group-commits."""
        self._output.add_pass_hook(hook)

    def remove_pass_hook(self, hook: Callable[[], None]) -> None:
        self._output.hooks.remove(hook)

    # -- tables (see actors.tables) ---------------------------------------------------------------

    def new_table(self, name: Any, *, limit: int = 1_000_000) -> Table:
        """A table named `name` owned by the calling process (see `actors.tables`): it
        alone writes, every process of this node reads, and it goes when the owner exits."""
        return self._tables.new(name, limit)

    def table(self, name: Any) -> Table | None:
        """The table called `name` on this node, or None if no live process owns one."""
        return self._tables.by_name.get(name)

    # -- names (see actors.names) -------------------------------------------------------------------

    def register(self, name: Name, pid: Pid) -> None:
        """Register a live process under `name` (one name per process; removed on exit)."""
        self._names.register(name, self._names.live(pid))

    def unregister(self, name: Any) -> None:
        """Remove a registered name, if present."""
        self._names.unbind(self._names.table, name)

    def whereis(self, name: Any) -> Pid | None:
        """The pid registered under `name`, or None."""
        proc = self._names.table.get(name)
        return proc._pid if proc is not None else None

    # -- other nodes (see actors.boundary) ----------------------------------------------------------

    def connect(self, other: Node) -> None:
        """Connect two nodes of this interpreter (Erlang's `net_kernel:connect_node`) with
        a loopback connection: each can then address the other's names with `RemoteName`.
        A node of the same name (a restarted one) takes the old one's place. Deliveries
        between nodes go through `transport` if one is installed."""
        self._boundary.connect(other)

    def disconnect(self, name: str) -> None:
        """Lose the connection to node `name` (a crash, a partition detected, or on
        purpose). As in Erlang, this node's links to that node break with an exit signal
        `noconnection`, its monitors across fire a `Down` with reason `noconnection`, and
        its calls waiting across fail with that reason; watchers of nodes get `NodeDown`.
        It acts on this node's tables only; closing the connection tells the far node,
        which does the same on its side. Idempotent."""
        self._boundary.disconnect(name)

    def arrive(self, delivery: Delivery) -> None:
        """Take a delivery from another node (see `actors.boundary`): the one entry point
        of the boundary, for a transport or a wire. A delivery for a process that has
        exited meanwhile is dropped."""
        self._boundary.arrive(delivery)

    def nodes(self) -> list[str]:
        """The names of the connected nodes, sorted."""
        return sorted(self._boundary.peers)

    def monitor_nodes(self, pid: Pid, flag: bool = True) -> None:
        """The live process `pid` gets `NodeUp(name)` whenever a connection to a node is up
        and `NodeDown(name, reason)` when one goes (Erlang's `net_kernel:monitor_nodes`);
        `flag=False` stops that. See `actors.boundary`."""
        self._boundary.watch_nodes(self._names.live(pid), flag)

    def monitor_node(self, pid: Pid, name: str, flag: bool = True) -> None:
        """The live process `pid` gets one `NodeDown(name, reason)` when the connection to
        node `name` goes, at once if there is none (Erlang's `monitor_node`); `flag=False`
        removes its watches of that node."""
        self._boundary.watch_node(self._names.live(pid), name, flag)

    # -- waiting from outside (see actors.watch) ---------------------------------------------

    def monitor(self, dest: Dest) -> ExitWatch:
        """Watch dest from outside any process: a `Future` of its `Down(ref, pid, reason)`
        (at once, with "noproc", if it is gone); `watch.demonitor()` stops watching."""
        return watch.monitor(self, dest)

    def wait_exit(self, dest: Dest, timeout: float | None = None) -> Future:
        """A `Future` of dest's exit reason ("noproc" if it is gone): `await` it, or pass
        it to `run_until_complete`. After `timeout` seconds it raises `TimeoutError`."""
        return watch.wait_exit(self, dest, timeout)

    def wait_exit_from_thread(self, dest: Dest, timeout: float | None = None) -> Any:
        """`wait_exit` for code on another thread: blocks until dest exits, returns the reason."""
        return self._threads.run(self.wait_exit, (dest, timeout), None if timeout is None else timeout + 5.0)

    # -- timers --------------------------------------------------------------------------------

    def send_after(self, delay: float, dest: Dest, msg: Any) -> Ref:
        """Deliver `msg` to dest after `delay` seconds; never synchronously, even at 0.
        A timer to a pid is cancelled when that process exits; a name is looked up when
        the timer fires."""
        ref = self.make_ref()
        self._timer_refs[ref] = self._add_timer(delay, self._timer_send, (ref, dest, msg), ref)
        return ref

    def cancel_timer(self, ref: Ref) -> float | bool:
        """Cancel a `send_after` timer: the seconds it had left, or False if it had fired,
        was cancelled, or its destination process had exited."""
        timer = self._timer_refs.pop(ref, None)
        if timer is None or timer.cancelled:
            return False
        self._timers.cancel(timer)
        dest = timer.args[1]
        if type(dest) is Pid and dest.node_name == self.name and self._names.lookup(dest) is None:
            return False  # its process exited (of another node's, nothing is known here)
        return max(0.0, timer.deadline - self.now())

    def _timer_send(self, ref: Ref, dest: Dest, msg: Any) -> None:
        del self._timer_refs[ref]
        self._boundary.route(dest, msg, Send, False)

    def _add_timer(self, delay: float, action: Callable[..., Any], args: tuple, ref: Any = None) -> Timer:
        timer = self._timers.add(self.now() + max(0.0, delay), action, args, ref)
        if self._idle:
            self._clock.timer_added()
        return timer

    # -- introspection ---------------------------------------------------------------------------

    def is_alive(self, pid: Pid) -> bool:
        return self._names.lookup(pid) is not None

    def is_suspended(self, pid: Pid) -> bool:
        """True while the live process waits inside an `await` (a receive, a call, a sleep,
        or a GenServer's async callback)."""
        proc = self._names.lookup(pid)
        return proc is not None and proc._coro is not None

    def processes(self) -> list[Pid]:
        """Live pids in spawn order."""
        return [proc._pid for proc in self._procs.values()]

    def get_process(self, pid: Pid) -> Process | None:
        """The live process object behind pid, or None (Erlang's `sys:get_state`): for
        introspection and tests. Never call its callbacks from outside its own turn."""
        return self._names.lookup(pid)

    def process_info(self, pid: Pid) -> dict[str, Any] | None:
        """What the node knows of a live process, or None if it is gone:

        `kind` (its class), `initial_call` (the function or class it was spawned with),
        `registered_name`, `status` ("running", "runnable" or "waiting"), `mailbox_len`,
        `dropped` (by its mailbox limit), `links`, `monitors` (the pids, or `RemoteName`s,
        it monitors), `monitored_by`, `trap_exit`, `parent`, `turns` (turns the scheduler
        gave it: its "reductions"), `messages_in` (messages it took from its mailbox, and
        replies to its calls), `messages_out` (sends, casts, call requests and replies it
        made), `last_message` (the last of those, or None), `current_function` (see
        `actors.process.current_function`), `memory` (bytes, an estimate: see
        `actors.process.memory_estimate`) and `traced` (see `trace`). The work is
        bounded, whatever the process holds.
        """
        proc = self._names.lookup(pid)
        if proc is None:
            return None
        return {
            "pid": proc._pid,
            "kind": type(proc).__name__,
            "initial_call": proc._initial_call(),
            "registered_name": self._names.name_of(proc),
            "mailbox_len": len(proc._mbox) if proc._mbox else 0,
            "dropped": proc._dropped,
            "links": [p if type(p) is Pid else p._pid for p in proc._links or ()],
            "monitors": [w._pid if isinstance(w, Process) else w for w in (proc._watching or {}).values()],
            "monitored_by": [w._pid if isinstance(w, Process) else w.pid
                             for w in (proc._watchers or {}).values() if getattr(w, "pid", None) is not None],
            "trap_exit": proc._trap,
            "status": ("running" if proc is self._current else "runnable" if proc._queued
                       else "waiting"),
            "parent": proc._parent,
            "turns": proc._turns,
            "messages_in": proc._messages_in(),
            "messages_out": proc._sent,
            "last_message": None if proc._last is NONE else visible(proc._last),
            "current_function": current_function(proc),
            "memory": memory_estimate(proc),
            "traced": proc._tracer is not None,
        }

    def statistics(self) -> dict[str, int]:
        """The node's counters since it started, in O(1) (Erlang's `statistics/1`):
        `processes` (alive), `spawns`, `exits`, `crashes` (turns that raised), `turns`,
        `messages` (taken from mailboxes by their processes) and `run_queue` (processes
        queued for a turn). Rates are differences of two readings."""
        spawns = self._serial - (self.creation << 40)
        counted = self._scheduler
        return {"processes": len(self._procs), "spawns": spawns, "exits": spawns - len(self._procs),
                "crashes": counted.crashes, "turns": counted.turns, "messages": counted.messages,
                "run_queue": len(self._runq)}

    def pid_of(self, serial: int) -> Pid | None:
        """The live process of this node with that serial (a pid's `serial`), in O(1),
        or None."""
        proc = self._procs.get(serial)
        return proc._pid if proc is not None and proc._alive else None

    def trace(self, dest: Dest, tracer: Callable[[str, Pid, Any], None] | None) -> Any:
        """Trace one live process of this node (Erlang's `erlang:trace/3` with `send`,
        `'receive'` and `procs`): from now on `tracer(event, pid, detail)` is called, in
        the process's turn (or the sender's), for each of its

            "send"     detail (dest, msg): a send or cast as sent; a call's request as
                       `Call(request, caller)` to the server; a reply as (caller, value)
                       to the caller's `From`
            "receive"  detail msg: a message queued for it (as its code sees it, a call as
                       `Call`), or a reply to its call as (caller, value)
            "crash"    detail the exception (before its crash report)
            "exit"     detail the reason; the trace ends with it

        `tracer=None` stops tracing. Returns the process's previous tracer (or None), so
        tracers can be chained. `NoProc` if dest is not a live process of this node.
        Cost: an untraced process pays one flag test per send and per reply it makes, and
        nothing per message it receives (its mailbox's fast path stays as it was).
        """
        if tracer is not None and not callable(tracer):
            raise TypeError(f"tracer must be a callable(event, pid, detail) or None, not {tracer!r:.80}")
        proc = self._names.lookup(dest)
        if proc is None:
            raise NoProc(dest)
        previous, proc._tracer = proc._tracer, tracer
        proc._fast_below = proc._limit if tracer is None else 0  # 0: every delivery takes the slow path
        return previous

    def __len__(self) -> int:
        return len(self._procs)

    # -- drivers (see actors.clock) ---------------------------------------------------------------

    def run(self, until: float | None = None, max_turns: int | None = None) -> int:
        """Deterministic driver: run until nothing is runnable and no timer is due by
        `until` (virtual seconds; None: until no timers are left), or `max_turns` turns.
        Returns the turns taken."""
        return self._virtual_clock("run").run(until, max_turns)

    def run_for(self, seconds: float, max_turns: int | None = None) -> int:
        """Run `seconds` of virtual time; the clock then reads now + seconds."""
        return self.run(until=self.now() + seconds, max_turns=max_turns)

    def run_until_complete(self, fut: Future, max_turns: int | None = 10_000_000) -> Any:
        """Drive the node until `fut` (e.g. from `node.call`) is done; return its result."""
        return self._virtual_clock("run_until_complete").run_until_complete(fut, max_turns)

    # The same driver, one step at a time, for a simulation that runs several nodes on one
    # clock: it picks the node to step and moves each node's clock itself.

    def runnable(self) -> bool:
        """True when some process is ready to run."""
        return bool(self._runq)

    def next_deadline(self) -> float | None:
        """The node time at which its next timer fires, or None."""
        deadline = self._timers.next_deadline()
        calls = self._calls
        if calls.waits_due != math.inf and (deadline is None or calls.waits_due < deadline):
            calls.arm_timeouts()  # an unanswered call may time out first
            deadline = self._timers.next_deadline()
        return deadline

    def step(self, max_turns: int = 1024) -> int:
        """Give up to `max_turns` turns to ready processes; returns the turns taken."""
        if not self._clock.virtual:
            self._virtual_clock("step")
        return self._scheduler.run_ready(max_turns)

    def advance(self, now: float) -> None:
        """Move the virtual clock to `now` (never backwards) and fire the timers now due."""
        clock = self._clock
        if not clock.virtual:
            self._virtual_clock("advance")
        clock.advance(now)  # type: ignore[union-attr]  # a virtual clock, checked above

    def _virtual_clock(self, what: str) -> VirtualClock:
        clock = self._clock
        if not clock.virtual:
            raise RuntimeError(f"node.{what}() drives a deterministic node (Node(seed=...)); "
                               "a real-time node runs inside its asyncio loop")
        return clock  # type: ignore[return-value]

    async def __aenter__(self) -> Node:
        self.attach(asyncio.get_running_loop())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run this real-time node on `loop` (done by `async with Node()`)."""
        clock = self._clock
        if clock.virtual:
            raise RuntimeError("a deterministic node (seed given) is driven by node.run(), not a loop")
        clock.attach(loop)  # type: ignore[union-attr]

    def stop(self, timeout: float = 5.0) -> Future:
        """Shut every process down, newest first, with reason "shutdown"; those still alive
        after `timeout` seconds are killed. Returns a future done when none is left."""
        return self._signals.shutdown(timeout)

    # -- callers on other threads (see actors.threads) ----------------------------------------------

    def start_thread(self, name: str = "letitcrash-node") -> Node:
        """Run this real-time node on a thread of its own, with its own asyncio loop, for
        programs that are not asyncio (a WSGI server, a script): returns once the node
        runs; other threads then use the `*_from_thread` calls. `stop_thread()` ends it.

            node = Node().start_thread()
            pid = node.run_from_thread(node.spawn, Counter)
            node.call_from_thread(pid, "get")
            node.stop_thread()
        """
        return self._threads.start(name)

    def stop_thread(self, timeout: float | None = 30.0) -> None:
        """Stop every process (as `node.stop()`), end the node's loop and join its thread.
        Close the node's `Store` after this."""
        self._threads.stop(timeout)

    def run_from_thread(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 30.0) -> Any:
        """Run `fn(*args)` on the node's thread and return its result; a kernel `Future`
        it returns (from `node.call`, `start_child`, `entity_call`, ...) is awaited first.
        For code on another thread; blocks it until then (or raises `TimeoutError`)."""
        return self._threads.run(fn, args, timeout)

    def call_from_thread(self, dest: Dest, request: Any, timeout: float | None = 5.0) -> Any:
        """Blocking `call` for code on another thread (a WSGI worker, a pykka actor)."""
        # The node enforces `timeout`; the margin only guards against a loop that stopped.
        return self._threads.run(self.call, (dest, request, timeout),
                                 None if timeout is None else timeout + 5.0)

    def send_from_thread(self, dest: Dest, msg: Any) -> None:
        """`send` for code on another thread. A name nobody holds cannot raise in the
        sender here (the send runs later, on the node's thread): it is logged and dropped."""
        self._threads.send(dest, msg)

    def cast_from_thread(self, dest: Dest, msg: Any) -> None:
        """`cast` for code on another thread."""
        self._threads.cast(dest, msg)

    def __repr__(self) -> str:
        mode = f"seed={self.seed}" if self._clock.virtual else "real-time"
        return f"<Node {self.name} {mode} {len(self._procs)} processes>"
