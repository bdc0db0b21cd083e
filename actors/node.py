"""The node: one scheduler hosting many processes, like one BEAM node.

A node owns a process table, a name registry, a timer heap and a clock. Two drivers share
every line of that core; only the clock and the choice of the next runnable process differ:

- real time (`Node()`): runs inside an asyncio loop. `async with Node() as node:` attaches it;
  `await node.call(pid, req)` from asyncio code; `node.call_from_thread(...)` from others.
- deterministic (`Node(seed=7)`): a virtual clock that jumps to the next timer when nothing
  is runnable, and a seeded pick of the next runnable process. `node.run()`,
  `node.run_for(s)`, `node.run_until_complete(fut)` drive it; one seed gives one exact
  sequence of events in any interpreter.

Signals follow Erlang. A signal to a process that traps exits becomes an `Exit` message at
once, so it keeps its order with the sender's messages; a signal that kills takes effect
after the running process's current turn (never in the middle of another's code).
Limits: `max_processes`, `max_timers`, per-process `mailbox_limit`, and `batch` messages
per turn so one busy process cannot starve the others.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import random
import reprlib
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from .errors import (AlreadyRegistered, CallExit, CallingSelf, CallTimeout, MailboxOverflow,
                     NoProc, StartError)
from .future import Future
from .genserver import GenServer
from .ids import Pid, Ref
from .messages import KILL, KILLED, NOCONNECTION, NOPROC, NORMAL, SHUTDOWN, Down, Exit
from .process import CALL, NONE, CoroutineProcess, ExitNow, From, Process
from .registry import RemoteName, Via, check_key
from .tables import Table, TableError
from .timers import TimerHeap

log = logging.getLogger("actors")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 200


class _Short:
    """A log argument shown as its shortened repr, computed only if a handler formats
    the record: a crash storm's reports cost little when nobody prints them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return _short.repr(self.value)


_OPTIONS = frozenset({"name", "trap_exit", "mailbox_limit", "overflow"})
_OVERFLOW = ("crash", "drop")
CALL_WAITS_LIMIT = 4096  # unarmed call timeouts kept before they are armed anyway (memory bound)


def seed_for(seed: int, stream: str) -> int:
    """A 64-bit seed for one named random stream, the same in every interpreter (never
    `hash()`, which varies with PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SystemLimit(Exception):
    """A node limit (processes, timers) was reached."""


class _ExternalCall:
    """The caller side of `node.call` made from outside any process."""

    __slots__ = ("node", "future", "target", "timer", "dest", "request")

    def __init__(self, node: Node, dest: Any, request: Any) -> None:
        self.node = node
        self.future = Future()
        self.target = None
        self.timer = None
        self.dest = dest
        self.request = request

    def _on_reply(self, ref: From, value: Any) -> None:
        if self._finish(ref):
            self.future.set_result(value)

    def _on_down(self, ref: From, pid: Pid, reason: Any) -> None:
        if self._finish(ref):
            self.future.set_exception(self.node._call_failure(pid, reason))

    def _on_timeout(self, ref: From, timeout: float) -> None:
        self.timer = None
        if self._finish(ref):
            self.future.set_exception(CallTimeout(self.dest, self.request, timeout))

    def _finish(self, ref: From) -> bool:
        if self.future.done():
            return False  # a late reply after the timeout: dropped
        if self.timer is not None:
            self.node._timers.cancel(self.timer)
            self.timer = None  # the timer's args hold this waiter: no cycle left for the GC
        if self.target._watchers is not None:
            self.target._watchers.pop(ref, None)
        return True


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
        self.name = name
        self.seed = seed
        self.batch = batch
        self.max_processes = max_processes
        self._procs: dict[int, Process] = {}
        self._names: dict[Any, Process] = {}
        self._peers: dict[str, Node] = {}  # connected nodes by name, for RemoteName
        # A restarted node (a new `creation`) never reuses its previous incarnation's pids.
        assert 0 <= creation < 2**20, "creation must fit in 20 bits"
        self.creation = creation
        self._serial = creation << 40
        self._refs = creation << 40
        self._timers = TimerHeap(max_timers)
        self._timer_refs: dict[Ref, Any] = {}
        self._exits: deque = deque()
        self._call_waits: list[From] = []  # call timeouts not yet on the timer heap
        self._call_waits_due = math.inf  # the earliest deadline among them
        self._pass_hooks: list[Callable[[], None]] = []
        self._tables: dict[Any, Table] = {}
        self._owned_tables: dict[Process, list[Table]] = {}  # so an exit deletes its tables
        self.max_tables = max_tables
        self.tracer: Callable[[str, Any, Any], None] | None = None
        """Called as tracer(event, pid, detail) for "spawn", "run" (a turn), "crash" (the turn
        raised: detail is the exception, as its crash report is logged) and "exit"."""
        self.transport: Callable[[Node, Node, Any, Callable[..., Any], tuple], None] | None = None
        """How deliveries to processes of other nodes travel: None delivers them at once;
        a simulated network installs a function that calls `dest.arrive(...)` later."""
        self._draining = False
        self._current: Process | None = None
        self._stopping: Future | None = None
        self._stop_timer: Any = None
        self._stop_roots: dict[int, Process] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._tick_handle: Any = None
        self._timer_handle: Any = None
        self._timer_at: float | None = None
        self._runner: threading.Thread | None = None  # start_thread's
        self._quit: asyncio.Event | None = None
        if seed is None:
            self._runq: Any = deque()
            self._pop = self._runq.popleft
            self._virtual = False
            self._idle = True  # nothing scheduled on the loop: the next enqueue schedules a tick
        else:
            # `rng` lets a simulator record, replay or mutate the scheduling decisions.
            # Only Random.random() is guaranteed to repeat across Python versions.
            self._rand = rng or random.Random(seed_for(seed, "scheduler")).random
            self._runq = []
            self._pop = self._seeded_pop
            self._virtual = True
            self._vtime = 0.0
            self._idle = False  # the deterministic driver runs only when told to

    # -- clock ------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the node's clock: the loop's monotonic time, or virtual time."""
        if self._virtual:
            return self._vtime
        return self._loop.time() if self._loop is not None else time.monotonic()

    def make_ref(self) -> Ref:
        """A new unique reference."""
        self._refs += 1
        return Ref(self.name, self._refs)

    # -- spawning -----------------------------------------------------------------------------

    def spawn(self, target: Any, *args: Any, **options: Any) -> Pid:
        """Start a process and return its pid.

        `target` is a `GenServer` subclass (its `init(*args)` runs before spawn returns),
        an `async def body(proc, *args)` function, or a `ThreadWorker` subclass.
        Options: `name` (a str or a `via`), `trap_exit`, `mailbox_limit` (messages) with
        `overflow` = "crash" (the process exits with `MailboxOverflow`) or "drop" (the
        message is dropped and counted).
        """
        return self._spawn(target, args, options)

    def _spawn(self, target: Any, args: tuple, options: dict, parent: Process | None = None,
               link: bool = False) -> Pid:
        unknown = options.keys() - _OPTIONS
        if unknown:
            raise TypeError(f"spawn got unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        limit = options.get("mailbox_limit")
        overflow = options.get("overflow", "crash")
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be one of {_OVERFLOW}, got {overflow!r}")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"mailbox_limit must be a positive int, got {limit!r}")
        if len(self._procs) >= self.max_processes:
            raise SystemLimit(f"node {self.name} is at its limit of {self.max_processes} processes")
        proc, args = self._new_process(target, args)
        self._serial += 1
        pid = Pid(self.name, self._serial, proc)
        proc._setup(self, pid, parent.pid if parent is not None else None,
                    limit or sys.maxsize, overflow)
        proc._trap = bool(options.get("trap_exit", False))
        if not isinstance(proc, GenServer):
            proc._coro = target(proc, *args)  # bad arguments fail here, before anything is registered
        self._procs[self._serial] = proc
        if self.tracer is not None:
            self.tracer("spawn", pid, getattr(target, "__qualname__", repr(target)))
        name = options.get("name")
        if name is not None:
            try:
                self._register(name, proc)
            except BaseException:
                del self._procs[self._serial]
                raise
        if link:
            self._add_link(parent, proc)
        if isinstance(proc, GenServer):
            self._start_server(proc, target, args, parent)
        else:
            proc._resume = None
            proc._queued = True
            self._enqueue(proc)
        return pid

    def _new_process(self, target: Any, args: tuple) -> tuple[Process, tuple]:
        if isinstance(target, type) and issubclass(target, GenServer):
            return target.__new__(target), args
        if inspect.iscoroutinefunction(target):
            return CoroutineProcess(), args
        from .bridge import ThreadWorker, ThreadWorkerProcess
        if isinstance(target, type) and issubclass(target, ThreadWorker):
            return ThreadWorkerProcess.__new__(ThreadWorkerProcess), (target, *args)
        raise TypeError(f"spawn takes a GenServer subclass, an async def function or a "
                        f"ThreadWorker subclass, not {target!r}")

    def _start_server(self, proc: GenServer, target: Any, args: tuple, parent: Process | None) -> None:
        previous, self._current = self._current, proc
        try:
            proc._start(args)
            return
        except ExitNow as exc:
            reason = exc.reason
        except Exception as exc:  # noqa: BLE001 - init's failure is the start error
            reason = exc
        finally:
            self._current = previous
        # A failed start is reported once, to the spawner, as StartError; not also as an
        # exit signal through the link (OTP sends both; a Python caller has the exception).
        if parent is not None and parent._links is not None:
            parent._links.pop(proc, None)
            proc._links.pop(parent, None)
        self._terminate(proc, reason)
        raise StartError(target, reason) from (reason if isinstance(reason, BaseException) else None)

    # -- messages ------------------------------------------------------------------------------

    def send(self, dest: Any, msg: Any) -> None:
        """Send `msg` to a pid (dropped if it is dead), a registered name or a `via`
        (`NoProc` if nobody holds it, as Erlang's badarg)."""
        current = self._current
        if current is not None and current._held is not None:
            current._held.append((self.send, (dest, msg)))
            return
        proc = dest._proc if type(dest) is Pid else self._by_name(dest, strict=True)
        if proc is not None and proc._alive:
            self._post_to(proc, msg)

    def cast(self, dest: Any, msg: Any) -> None:
        """Send `msg` to a GenServer's `handle_cast`; returns at once even if dest is gone."""
        # Inlined rather than sharing send's helpers: this is the hottest path there is.
        current = self._current
        if current is not None and current._held is not None:
            current._held.append((self.cast, (dest, msg)))
            return
        proc = dest._proc if type(dest) is Pid else self._by_name(dest, strict=False)
        if proc is not None and proc._alive:
            if proc.node is self:
                proc._deliver(msg)
            else:
                self._cross(proc, proc._deliver, (msg,))

    def call(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Future:
        """Call a GenServer from outside any process: returns a `Future` to `await` (real
        time) or to pass to `run_until_complete` (deterministic)."""
        waiter = _ExternalCall(self, dest, request)
        target = self._lookup(dest)
        if target is None:
            waiter.future.set_exception(NoProc(dest))
            return waiter.future
        self._refs += 1
        ref = From(waiter, self._refs)
        if target._watchers is None:
            target._watchers = {}
        target._watchers[ref] = waiter
        waiter.target = target
        if timeout is not None:
            waiter.timer = self._add_timer(timeout, waiter._on_timeout, (ref, timeout))
        self._deliver_to(target, (CALL, request, ref))
        return waiter.future

    def forward(self, dest: Any, request: Any, caller: From) -> None:
        """Hand a call on to another server, which then replies to the original caller
        directly (a router's `handle_call` forwards and returns `NoReply`). The caller
        keeps watching only the process it called."""
        current = self._current
        if current is not None and current._held is not None:
            current._held.append((self.forward, (dest, request, caller)))
            return
        target = self._lookup(dest)
        if target is not None:
            self._deliver_to(target, (CALL, request, caller))

    def reply(self, caller: From, value: Any) -> None:
        """Answer a call whose handler returned `NoReply`."""
        current = self._current
        if current is not None and current._held is not None:
            current._held.append((self.reply, (caller, value)))
            return
        owner = caller.owner
        if owner.node is self:
            owner._on_reply(caller, value)
        else:
            self._cross(owner, owner._on_reply, (caller, value))

    def _start_call(self, caller: Process, dest: Any, request: Any, timeout: float | None) -> From:
        target = dest._proc if type(dest) is Pid else self._by_name(dest, strict=False)
        if target is caller:
            raise CallingSelf(f"{caller.pid!r} called itself with {request!r:.200}")
        if target is None or not target._alive:
            raise NoProc(dest)
        # The call monitors the server, and the monitor's tag doubles as the reply tag.
        self._refs += 1
        ref = From(caller, self._refs)
        watchers = target._watchers
        if watchers is None:
            watchers = target._watchers = {}
        watchers[ref] = caller
        caller._wait_target = target
        caller._wait_ref = ref
        if timeout is not None:
            # Armed lazily (see _arm_call_timeouts): most calls are answered first.
            ref.deadline = deadline = self.now() + timeout
            waits = self._call_waits
            waits.append(ref)
            if deadline < self._call_waits_due:
                self._call_waits_due = deadline
            if len(waits) > CALL_WAITS_LIMIT:
                self._arm_call_timeouts()
        if caller._held is not None:
            caller._held.append((self._deliver_to, (target, (CALL, request, ref))))
            return ref
        self._deliver_to(target, (CALL, request, ref))
        return ref

    def _post_to(self, proc: Process, msg: Any) -> None:
        if proc.node is self:
            proc._post(msg)
        else:
            self._cross(proc, proc._post, (msg,))

    def _deliver_to(self, proc: Process, msg: Any) -> None:
        if proc.node is self:
            proc._deliver(msg)
        else:
            self._cross(proc, proc._deliver, (msg,))

    def _cross(self, receiver: Any, deliver: Callable[..., Any], args: tuple) -> None:
        """A delivery to a process (or caller) of another node, through the transport."""
        if self.transport is None:
            receiver.node.arrive(receiver, deliver, args)
        else:
            self.transport(self, receiver.node, receiver, deliver, args)

    def arrive(self, receiver: Any, deliver: Callable[..., Any], args: tuple) -> None:
        """Complete a delivery from another node (called by the transport): dropped if the
        receiving process has exited meanwhile."""
        if getattr(receiver, "_alive", True):
            deliver(*args)
        if self._current is None:
            self._drain_exits()

    def _arm_call_timeouts(self) -> None:
        """Put the timeouts of calls still unanswered on the timer heap, at their original
        deadlines. Runs before the heap is read or fired past the earliest of them, so
        no timeout fires late; most calls are answered by then and never cost a timer."""
        waits, self._call_waits = self._call_waits, []
        self._call_waits_due = math.inf
        for ref in waits:
            caller = ref.owner
            if caller._wait_ref is ref:
                caller._timer = self._timers.add(ref.deadline, self._call_timeout, (caller, ref))

    def _call_timeout(self, caller: Process, ref: From) -> None:
        if caller._wait_ref is ref:
            caller._timer = None
            caller._end_call(ref)
            caller._wake(None, CallTimeout(None, None, 0))  # call() fills in dest and request

    def _call_failure(self, pid: Pid, reason: Any) -> Exception:
        return NoProc(pid) if reason == NOPROC else CallExit(pid, reason)

    def _overflowed(self, proc: Process, msg: Any) -> None:
        if proc._overflow == "drop":
            proc._dropped += 1
        else:
            self._doom(proc, MailboxOverflow(
                f"{proc.pid!r} exceeded its mailbox limit of {proc._limit} messages"))

    def hold_output(self, proc: Process) -> None:
        """Hold what `proc` sends (send, cast, call requests, replies) from now on, in order,
        until `release_output(proc)`. The storage layer uses this so a process's reply is
        not seen before the write it acknowledges has committed. Timers are not held. If
        `proc` exits with output held, its exit signals and Downs wait behind that output
        (a message sent before a death arrives before the death, as in Erlang): whoever
        holds must then `release_output` or `discard_output`, or its links never hear."""
        if proc._held is None:
            proc._held = []

    def release_output(self, proc: Process, keep_holding: bool = False) -> None:
        """Deliver everything held for `proc`, in the order it was sent, and stop holding
        (or, with `keep_holding`, hold what it sends next)."""
        held = proc._held
        proc._held = [] if keep_holding and proc._alive else None
        if not held:
            return
        previous, self._current = self._current, None
        try:
            for deliver, args in held:
                deliver(*args)
        finally:
            self._current = previous

    def held_count(self, proc: Process) -> int:
        """How many outputs of `proc` are held (a mark for `discard_output`)."""
        return len(proc._held) if proc._held is not None else 0

    def discard_output(self, proc: Process, keep: int = 0) -> None:
        """Drop what is held for `proc` after its first `keep` outputs (a failed or crashed
        turn's messages must not be seen). A held exit notification is never dropped:
        if `proc` has exited, its links and monitors hear at once when nothing is kept."""
        held = proc._held
        if not held or len(held) <= keep:
            return
        notify = [item for item in held[keep:] if item[0] == self._notify_exit]
        del held[keep:]
        held.extend(notify)
        if not keep and notify:
            self.release_output(proc)

    def add_pass_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook()` after every scheduler pass (a batch of process turns, or a round of
        timers): the point where the storage layer group-commits."""
        self._pass_hooks.append(hook)

    def remove_pass_hook(self, hook: Callable[[], None]) -> None:
        self._pass_hooks.remove(hook)

    def _end_pass(self) -> None:
        for hook in self._pass_hooks:
            hook()

    # -- tables ---------------------------------------------------------------------------------

    def new_table(self, name: Any, *, limit: int = 1_000_000) -> Table:
        """A table named `name` owned by the calling process (see `actors.tables`): it
        alone writes, every process of this node reads, and it goes when the owner exits."""
        owner = self._current
        if owner is None:
            raise TableError(f"new_table({name!r}) must be called by a process, in its turn")
        if name in self._tables:
            raise TableError(f"table {name!r} already exists, owned by {self._tables[name].owner.pid!r}")
        if len(self._tables) >= self.max_tables:
            raise TableError(f"node {self.name} is at its limit of {self.max_tables} tables")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"a table's limit must be a positive int, got {limit!r}")
        table = self._tables[name] = Table(self, name, owner, limit)
        self._owned_tables.setdefault(owner, []).append(table)
        return table

    def table(self, name: Any) -> Table | None:
        """The table called `name` on this node, or None if no live process owns one."""
        return self._tables.get(name)

    # -- names ----------------------------------------------------------------------------------

    def register(self, name: Any, pid: Pid) -> None:
        """Register a live process under `name` (one name per process; removed on exit)."""
        self._register(name, self._live(pid))

    def unregister(self, name: Any) -> None:
        """Remove a registered name, if present."""
        self._unbind_name(self._names, name)

    def whereis(self, name: Any) -> Pid | None:
        """The pid registered under `name`, or None."""
        proc = self._names.get(name)
        return proc.pid if proc is not None else None

    def _register(self, name: Any, proc: Process) -> None:
        if type(name) is RemoteName:
            raise ValueError(f"{name!r}: a name is registered on its own node, without a node part")
        if type(name) is Via:
            name.registry.node._bind_name(name.registry._table, name.key, proc, name.registry.limit)
            return
        if proc._names and any(table is self._names for table, _ in proc._names):
            raise ValueError(f"{proc.pid!r} already has a registered name")
        self._bind_name(self._names, name, proc, self.max_processes)

    def _bind_name(self, table: dict, key: Any, proc: Process, limit: int) -> None:
        check_key(key)
        holder = table.get(key)
        if holder is not None:
            raise AlreadyRegistered(key, holder.pid)
        if len(table) >= limit:
            raise SystemLimit(f"registry limit of {limit} names reached")
        table[key] = proc
        if proc._names is None:
            proc._names = []
        proc._names.append((table, key))

    def _unbind_name(self, table: dict, key: Any) -> None:
        proc = table.pop(key, None)
        if proc is not None:
            proc._names.remove((table, key))

    def _by_name(self, dest: Any, strict: bool) -> Process | None:
        if type(dest) is Via:
            proc = dest.registry._table.get(dest.key)
        elif type(dest) is RemoteName:
            node = self if dest.node == self.name else self._peers.get(dest.node)
            # Erlang's send to {Name, Node} never fails, whatever is (not) there.
            return node._names.get(dest.name) if node is not None else None
        else:
            proc = self._names.get(dest)
        if proc is None and strict:
            raise NoProc(dest)
        return proc

    def _lookup(self, dest: Any) -> Process | None:
        """The live process dest names, or None."""
        proc = dest._proc if type(dest) is Pid else self._by_name(dest, strict=False)
        return proc if proc is not None and proc._alive else None

    def _live(self, pid: Pid) -> Process:
        proc = self._lookup(pid)
        if proc is None:
            raise NoProc(pid)
        return proc

    # -- other nodes ---------------------------------------------------------------------------

    def connect(self, other: Node) -> None:
        """Connect two nodes (Erlang's `net_kernel:connect_node`): each can then address
        the other's names with `RemoteName`. A node of the same name (a restarted one)
        takes the old one's place. Deliveries between nodes go through `transport`."""
        assert other is not self, "a node is always connected to itself"
        self._peers[other.name] = other
        other._peers[self.name] = self

    def disconnect(self, name: str) -> None:
        """Lose the connection to node `name` (a crash, a partition detected, or on
        purpose): as in Erlang, every link between the two nodes breaks with an exit
        signal `noconnection` at both ends, every monitor across it fires a `Down` with
        reason `noconnection`, and calls waiting across it fail with that reason."""
        peer = self._peers.pop(name, None)
        if peer is not None and peer._peers.get(self.name) is self:
            del peer._peers[self.name]
        self._break_connection(name)
        if peer is not None:  # a process already dead here may have a signal in flight there
            peer._break_connection(self.name)
        if self._current is None:
            self._drain_exits()
        if peer is not None and peer._current is None:
            peer._drain_exits()

    def _break_connection(self, name: str) -> None:
        """Give this node's processes noconnection for every link, monitor and call they
        still have to processes of node `name` (live or dead with a signal in flight)."""
        for proc in list(self._procs.values()):
            links, watching, watchers = proc._links, proc._watching, proc._watchers
            if links:
                for other in [p for p in links if p.node.name == name]:
                    del links[other]
                    if other._links is not None:  # else dead, its own signal lost in flight
                        del other._links[proc]
                    self._signal(other.pid, proc, NOCONNECTION)
                    other.node._signal(proc.pid, other, NOCONNECTION)
            if watching:
                for ref in [r for r, t in watching.items() if t.node.name == name]:
                    target = watching.pop(ref)
                    if target._watchers is not None:
                        target._watchers.pop(ref, None)
                    proc._post(Down(ref, target.pid, NOCONNECTION))
            if proc._wait_target is not None and proc._wait_target.node.name == name:
                proc._on_down(proc._wait_ref, proc._wait_target.pid, NOCONNECTION)
            if watchers:
                for ref in [r for r, w in watchers.items() if w.node.name == name]:
                    watchers.pop(ref)._on_down(ref, proc.pid, NOCONNECTION)

    def nodes(self) -> list[str]:
        """The names of the connected nodes, sorted."""
        return sorted(self._peers)

    # -- links, monitors, exit signals -----------------------------------------------------------

    def exit(self, dest: Any, reason: Any) -> None:
        """Send an exit signal from outside any process (Erlang's `exit/2`; the `Exit`
        message a trapping process gets has pid None)."""
        self._send_exit(None, dest, reason)

    def _send_exit(self, sender: Process | None, dest: Any, reason: Any) -> None:
        target = self._lookup(dest)
        if target is None:
            return
        sender_pid = sender.pid if sender is not None else None
        if target is sender:
            if reason == KILL:
                raise ExitNow(KILLED)
            if target._trap:
                target._post(Exit(sender_pid, reason))
                return
            raise ExitNow(reason)
        if target.node is not self:
            self._cross(target, target.node._signal_from_outside, (sender_pid, target, reason))
        elif reason == KILL:
            self._doom(target, KILLED)
        else:
            self._signal(sender_pid, target, reason)

    def _linked_exit(self, dead: Process, target: Process, reason: Any) -> None:
        # As in Erlang, the link ends when the exit signal arrives: unlinked meanwhile, the
        # signal is ignored; lost with the connection, the link breaks with noconnection.
        links = target._links
        if links is not None and dead in links:
            del links[dead]
            self._signal(dead.pid, target, reason)

    def _signal_from_outside(self, sender: Pid | None, target: Process, reason: Any) -> None:
        if reason == KILL:
            self._doom(target, KILLED)
        else:
            self._signal(sender, target, reason)

    def _signal(self, sender: Pid | None, target: Process, reason: Any) -> None:
        if not target._alive:
            return
        if target._trap:
            target._post(Exit(sender, reason))
        elif reason != NORMAL:
            self._doom(target, reason)

    def _add_link(self, a: Process, b: Process) -> None:
        if a._links is None:
            a._links = {}
        if b._links is None:
            b._links = {}
        a._links[b] = None
        b._links[a] = None

    def _link(self, proc: Process, dest: Any) -> None:
        target = self._lookup(dest)
        if target is proc:
            return
        if target is None:
            if proc._trap:
                proc._post(Exit(dest, NOPROC))
                return
            raise NoProc(dest)
        self._add_link(proc, target)

    def _unlink(self, proc: Process, dest: Any) -> None:
        target = dest._proc if type(dest) is Pid else self._by_name(dest, strict=False)
        if target is None and type(dest) is Pid and proc._links:
            # dead, its exit held behind its output: unlinking still cancels that signal
            target = next((peer for peer in proc._links if peer.pid == dest), None)
        if target is not None and proc._links is not None and target in proc._links:
            del proc._links[target]
            if target._links is not None:  # else dead, its exit signal in flight to us
                del target._links[proc]

    def _monitor(self, proc: Process, dest: Any) -> Ref:
        ref = self.make_ref()
        target = self._lookup(dest)
        if target is None:
            proc._post(Down(ref, dest, NOPROC))
            return ref
        if target._watchers is None:
            target._watchers = {}
        if proc._watching is None:
            proc._watching = {}
        target._watchers[ref] = proc
        proc._watching[ref] = target
        return ref

    def _demonitor(self, proc: Process, ref: Ref, flush: bool) -> None:
        target = proc._watching.pop(ref, None) if proc._watching else None
        if target is not None and target._watchers is not None:
            target._watchers.pop(ref, None)
        if flush and proc._mbox:
            for queued in proc._mbox:
                msg = proc._unwrap(queued)
                if type(msg) is Down and msg.ref == ref:
                    proc._mbox.remove(queued)
                    break

    def _doom(self, proc: Process, reason: Any) -> None:
        """Make proc exit with reason once the running process's turn is over. It counts as
        dead from now on: it takes no messages and ignores further signals."""
        self._exits.append((proc, reason))
        proc._alive = False
        proc._halt = True
        if self._current is None:
            self._drain_exits()

    def _drain_exits(self) -> None:
        if self._draining or not self._exits:
            return
        self._draining = True
        try:
            exits = self._exits
            while exits:
                proc, reason = exits.popleft()
                self._terminate(proc, reason)
        finally:
            self._draining = False

    def _terminate(self, proc: Process, reason: Any) -> None:
        """Remove a process and send its exit to its links and monitors."""
        pid = proc.pid
        if pid._proc is None:
            return  # already gone
        proc._alive = False
        del self._procs[pid.serial]
        if self.tracer is not None:
            self.tracer("exit", pid, reason)
        pid._proc = None
        if proc._names:
            for table, key in proc._names:
                table.pop(key, None)
        if proc._coro is not None:
            coro, proc._coro = proc._coro, None
            try:
                coro.close()
            except BaseException:  # noqa: BLE001 - a dying process's finally blocks cannot veto
                log.exception("process %r raised while being closed", pid)
        if proc._wait_ref is not None:
            proc._end_call(proc._wait_ref)
        proc._clear_wait()
        proc._release()
        if self._owned_tables:
            for table in self._owned_tables.pop(proc, ()):
                del self._tables[table.name]
                table.owner = None
        if proc._watching:
            for ref, target in proc._watching.items():
                if target._watchers is not None:
                    target._watchers.pop(ref, None)
        proc._mbox = proc._watching = None
        if proc._held:
            proc._held.append((self._notify_exit, (proc, reason)))  # after what it sent
        else:
            self._notify_exit(proc, reason)
        if self._stopping is not None and self._stop_roots:
            self._stop_roots.pop(pid.serial, None)
            if not self._stop_roots:
                for orphan in reversed(list(self._procs.values())):
                    self._signal(None, orphan, SHUTDOWN)
        if self._stopping is not None and not self._procs and not self._stopping.done():
            if self._stop_timer is not None:
                self._timers.cancel(self._stop_timer)
            self._stopping.set_result(None)

    def _notify_exit(self, proc: Process, reason: Any) -> None:
        """Send a dead process's exit to its links and its Downs to its monitors."""
        pid = proc.pid
        if proc._links:
            for peer in proc._links:
                if peer.node is self:
                    del peer._links[proc]
                    self._signal(pid, peer, reason)
                else:  # the far end's half of the link goes when the signal arrives
                    self._cross(peer, peer.node._linked_exit, (proc, peer, reason))
        if proc._watchers:
            for ref, watcher in list(proc._watchers.items()):
                if watcher.node is self:
                    watcher._on_down(ref, pid, reason)
                else:
                    self._cross(watcher, watcher._on_down, (ref, pid, reason))
        proc._links = proc._watchers = None

    # -- timers --------------------------------------------------------------------------------

    def send_after(self, delay: float, dest: Any, msg: Any) -> Ref:
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
        if type(dest) is Pid and (dest._proc is None or not dest._proc._alive):
            return False
        return max(0.0, timer.deadline - self.now())

    def _timer_send(self, ref: Ref, dest: Any, msg: Any) -> None:
        del self._timer_refs[ref]
        proc = self._lookup(dest)
        if proc is not None:
            self._post_to(proc, msg)

    def _add_timer(self, delay: float, action: Callable[..., Any], args: tuple, ref: Any = None) -> Any:
        timer = self._timers.add(self.now() + max(0.0, delay), action, args, ref)
        if self._idle and self._loop is not None:
            self._arm_timer_wakeup()
        return timer

    def _fire_due(self, now: float) -> None:
        if now >= self._call_waits_due:
            self._arm_call_timeouts()
        pop = self._timers.pop_due
        timer = pop(now)
        while timer is not None:
            timer.action(*timer.args)
            timer = pop(now)
        if self._pass_hooks:
            self._end_pass()

    def _run_callback(self, proc: Process, fn: Callable[..., Any], *args: Any) -> None:
        """Run kernel-triggered process code (an idle timeout, a worker's result) as a turn."""
        if not proc._alive:
            return
        previous, self._current = self._current, proc
        try:
            fn(*args)
        except ExitNow as exc:
            self._exit_self(proc, exc.reason, None)
        except Exception as exc:  # noqa: BLE001 - let it crash: the process's own failure
            self._exit_self(proc, exc, exc)
        finally:
            self._current = previous
        if previous is None:
            self._drain_exits()

    # -- the scheduler core ---------------------------------------------------------------------

    def _enqueue(self, proc: Process) -> None:
        self._runq.append(proc)
        if self._idle:
            self._schedule_tick()

    def _seeded_pop(self) -> Process:
        q = self._runq
        if len(q) == 1:
            return q.pop()  # no choice to make: no draw
        i = int(self._rand() * len(q))
        q[i], q[-1] = q[-1], q[i]
        return q.pop()

    def _run_ready(self, budget: int) -> int:
        """Give up to `budget` turns to runnable processes; returns the turns taken."""
        runq = self._runq
        pop = self._pop
        exits = self._exits
        turns = 0
        while runq and turns < budget:
            proc = pop()
            proc._queued = False
            if not proc._alive:
                continue  # doomed while queued; its exit is already pending
            turns += 1
            if self.tracer is not None:
                self.tracer("run", proc.pid, None)
            self._current = proc
            try:
                proc._run()
            except ExitNow as exc:
                self._exit_self(proc, exc.reason, None)
            except Exception as exc:  # noqa: BLE001 - let it crash
                self._exit_self(proc, exc, exc)
            self._current = None
            if exits:
                self._drain_exits()
        if self._pass_hooks:
            self._end_pass()
        return turns

    def _exit_self(self, proc: Process, reason: Any, exc: BaseException | None) -> None:
        if exc is not None:
            if self.tracer is not None:
                self.tracer("crash", proc.pid, exc)
            self._crash_report(proc, exc)
            reason = proc._on_crash(exc)
            if reason is NONE:
                return  # an async terminate is running; its end exits the process
        self._exits.appendleft((proc, reason))
        if self._current is None or self._current is proc:
            self._drain_exits()

    def _crash_report(self, proc: Process, reason: Any) -> None:
        if not log.isEnabledFor(logging.ERROR):
            return
        names = [key for _, key in proc._names] if proc._names else []
        last = None if proc._last is NONE else proc._last
        log.error("crash report: process %r%s crashed with %s; last message %s",
                  proc.pid, f" {names[0]!r}" if names else "", _Short(reason),
                  "-" if proc._last is NONE else _Short(last),
                  exc_info=reason if isinstance(reason, BaseException) else None,
                  extra={"pid": proc.pid, "registered_name": names[0] if names else None,
                         "last_message": last, "reason": reason})

    def _log_unexpected(self, proc: Process, msg: Any) -> None:
        log.warning("%r got an unexpected message %s", proc.pid, _Short(msg),
                    extra={"pid": proc.pid, "unexpected_message": msg})

    # -- introspection ---------------------------------------------------------------------------

    def is_alive(self, pid: Pid) -> bool:
        return self._lookup(pid) is not None

    def processes(self) -> list[Pid]:
        """Live pids in spawn order."""
        return [proc.pid for proc in self._procs.values()]

    def get_process(self, pid: Pid) -> Process | None:
        """The live process object behind pid, or None (Erlang's `sys:get_state`): for
        introspection and tests. Never call its callbacks from outside its own turn."""
        return self._lookup(pid)

    def process_info(self, pid: Pid) -> dict[str, Any] | None:
        """What the node knows of a live process, or None if it is gone."""
        proc = self._lookup(pid)
        if proc is None:
            return None
        return {
            "pid": proc.pid,
            "kind": type(proc).__name__,
            "registered_name": next((k for t, k in proc._names or () if t is self._names), None),
            "mailbox_len": len(proc._mbox) if proc._mbox else 0,
            "dropped": proc._dropped,
            "links": [p.pid for p in proc._links or ()],
            "monitored_by": [w.pid for w in (proc._watchers or {}).values() if isinstance(w, Process)],
            "trap_exit": proc._trap,
            "status": ("running" if proc is self._current else "runnable" if proc._queued
                       else "waiting"),
            "parent": proc._parent,
        }

    def __len__(self) -> int:
        return len(self._procs)

    # -- deterministic driver -----------------------------------------------------------------------

    def run(self, until: float | None = None, max_turns: int | None = None) -> int:
        """Deterministic driver: run until nothing is runnable and no timer is due by
        `until` (virtual seconds; None: until no timers are left), or `max_turns` turns.
        Returns the turns taken."""
        self._require_virtual("run")
        return self._drive(lambda: False, until, max_turns)

    def run_for(self, seconds: float, max_turns: int | None = None) -> int:
        """Run `seconds` of virtual time; the clock then reads now + seconds."""
        return self.run(until=self.now() + seconds, max_turns=max_turns)

    def run_until_complete(self, fut: Future, max_turns: int | None = 10_000_000) -> Any:
        """Drive the node until `fut` (e.g. from `node.call`) is done; return its result."""
        self._require_virtual("run_until_complete")
        self._drive(fut.done, None, max_turns, chunk=1)
        if not fut.done():
            raise RuntimeError(f"node went idle before the future completed (virtual time {self._vtime})")
        return fut.result()

    def _drive(self, done: Callable[[], bool], until: float | None, max_turns: int | None,
               chunk: int = 1024) -> int:
        budget = max_turns if max_turns is not None else sys.maxsize
        turns = 0
        while not done() and turns < budget:
            if self._runq:
                turns += self._run_ready(min(chunk, budget - turns))
                continue
            deadline = self.next_deadline()
            if deadline is None or (until is not None and deadline > until):
                break
            self._vtime = max(self._vtime, deadline)
            self._fire_due(self._vtime)
        if until is not None and self._vtime < until and not self._runq and not done():
            self._vtime = until
        return turns

    # The same driver, one step at a time, for a simulation that runs several nodes on one
    # clock: it picks the node to step and moves each node's clock itself.

    def runnable(self) -> bool:
        """True when some process is ready to run."""
        return bool(self._runq)

    def next_deadline(self) -> float | None:
        """The node time at which its next timer fires, or None."""
        deadline = self._timers.next_deadline()
        if self._call_waits_due != math.inf and (deadline is None or self._call_waits_due < deadline):
            self._arm_call_timeouts()  # an unanswered call may time out first
            deadline = self._timers.next_deadline()
        return deadline

    # step and advance run once per simulated instant: the checks are inline.
    def step(self, max_turns: int = 1024) -> int:
        """Give up to `max_turns` turns to ready processes; returns the turns taken."""
        if not self._virtual:
            self._require_virtual("step")
        return self._run_ready(max_turns)

    def advance(self, now: float) -> None:
        """Move the virtual clock to `now` (never backwards) and fire the timers now due."""
        if not self._virtual:
            self._require_virtual("advance")
        assert now >= self._vtime, f"virtual time cannot go back ({now} < {self._vtime})"
        self._vtime = now
        self._fire_due(now)

    def _require_virtual(self, what: str) -> None:
        if not self._virtual:
            raise RuntimeError(f"node.{what}() drives a deterministic node (Node(seed=...)); "
                               "a real-time node runs inside its asyncio loop")

    # -- real-time driver ---------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        self.attach(asyncio.get_running_loop())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run this real-time node on `loop` (done by `async with Node()`)."""
        if self._virtual:
            raise RuntimeError("a deterministic node (seed given) is driven by node.run(), not a loop")
        self._loop = loop
        self._thread = threading.get_ident()
        self._idle = True
        if self._runq:
            self._schedule_tick()
        self._arm_timer_wakeup()

    def _schedule_tick(self) -> None:
        if self._loop is not None:
            self._idle = False
            self._tick_handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self._fire_due(self._loop.time())
            self._run_ready(4096)  # then yield to the loop so sockets and tasks get their turn
        finally:  # even a kernel bug must not leave the node never ticking again
            if self._runq:
                self._tick_handle = self._loop.call_soon(self._tick)
            else:
                self._idle = True
                self._arm_timer_wakeup()

    def _arm_timer_wakeup(self) -> None:
        deadline = self.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer_handle = self._loop.call_at(deadline, self._on_timer_wakeup)

    def _on_timer_wakeup(self) -> None:
        self._timer_handle = None
        self._timer_at = None
        if self._idle:
            self._idle = False
            self._tick()

    def stop(self, timeout: float = 5.0) -> Future:
        """Shut every process down, newest first, with reason "shutdown"; those still alive
        after `timeout` seconds are killed. Returns a future done when none is left."""
        if self._stopping is None:
            self._stopping = Future()
            # Only roots (no live parent) are signalled: a supervisor stops its own children
            # in order. Whatever outlives every root gets "shutdown" next, then "kill".
            self._stop_roots = {serial: proc for serial, proc in self._procs.items()
                                if proc._parent is None or self._lookup(proc._parent) is None}
            for proc in reversed(list(self._stop_roots.values())):
                self._send_exit(None, proc.pid, SHUTDOWN)
            if self._procs:
                self._stop_timer = self._add_timer(timeout, self._kill_all, ())
            elif not self._stopping.done():
                self._stopping.set_result(None)
        return self._stopping

    def _kill_all(self) -> None:
        for proc in reversed(list(self._procs.values())):
            self._doom(proc, KILLED)

    # -- callers on other threads ---------------------------------------------------------------------

    def start_thread(self, name: str = "letitcrash-node") -> Node:
        """Run this real-time node on a thread of its own, with its own asyncio loop, for
        programs that are not asyncio (a WSGI server, a script): returns once the node
        runs; other threads then use the `*_from_thread` calls. `stop_thread()` ends it.

            node = Node().start_thread()
            pid = node.run_from_thread(node.spawn, Counter)
            node.call_from_thread(pid, "get")
            node.stop_thread()
        """
        if self._virtual:
            raise RuntimeError("a deterministic node (seed given) is driven by node.run(), not a thread")
        if self._loop is not None:
            raise RuntimeError(f"{self!r} already runs on a loop")
        ready = threading.Event()

        async def main() -> None:
            async with self:
                self._quit = asyncio.Event()
                ready.set()
                await self._quit.wait()

        def run() -> None:
            try:
                asyncio.run(main())
            finally:
                ready.set()  # also when it failed to start: start_thread must not wait forever

        self._runner = threading.Thread(target=run, name=name, daemon=True)
        self._runner.start()
        ready.wait()
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError(f"{self!r} failed to start on its thread (see the log)")
        return self

    def stop_thread(self, timeout: float | None = 30.0) -> None:
        """Stop every process (as `node.stop()`), end the node's loop and join its thread.
        Close the node's `Store` after this."""
        runner = self._runner
        if runner is None:
            raise RuntimeError(f"{self!r} was not started with start_thread()")
        if runner.is_alive() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._quit.set)
        runner.join(timeout)
        if runner.is_alive():
            raise TimeoutError(f"{self!r} did not stop within {timeout} s")

    def run_from_thread(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 30.0) -> Any:
        """Run `fn(*args)` on the node's thread and return its result; a kernel `Future`
        it returns (from `node.call`, `start_child`, `entity_call`, ...) is awaited first.
        For code on another thread; blocks it until then (or raises `TimeoutError`)."""
        import pykka

        self._check_foreign_thread("run_from_thread")
        done = pykka.ThreadingFuture()

        def finish(fut: Future) -> None:
            if fut._exc is None:
                done.set(fut._value)
            else:
                done.set_exception((type(fut._exc), fut._exc, fut._exc.__traceback__))

        def start() -> None:
            try:
                value = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done.set_exception((type(exc), exc, exc.__traceback__))
                return
            if isinstance(value, Future):
                value.add_done_callback(finish)
            else:
                done.set(value)

        self._loop.call_soon_threadsafe(start)
        try:
            return done.get(timeout=timeout)
        except pykka.Timeout:
            raise TimeoutError(f"{getattr(fn, '__name__', fn)!r} did not finish on {self!r} "
                               f"within {timeout} s") from None

    def call_from_thread(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """Blocking `call` for code on another thread (a WSGI worker, a pykka actor)."""
        # The node enforces `timeout`; the margin only guards against a loop that stopped.
        return self.run_from_thread(self.call, dest, request, timeout,
                                    timeout=None if timeout is None else timeout + 5.0)

    def send_from_thread(self, dest: Any, msg: Any) -> None:
        """`send` for code on another thread. A name nobody holds cannot raise in the
        sender here (the send runs later, on the node's thread): it is logged and dropped."""
        self._check_foreign_thread("send_from_thread")
        self._loop.call_soon_threadsafe(self._send_or_log, dest, msg)

    def _send_or_log(self, dest: Any, msg: Any) -> None:
        try:
            self.send(dest, msg)
        except NoProc:
            log.warning("send_from_thread to %r: no such process; message dropped", dest)

    def cast_from_thread(self, dest: Any, msg: Any) -> None:
        """`cast` for code on another thread."""
        self._check_foreign_thread("cast_from_thread")
        self._loop.call_soon_threadsafe(self.cast, dest, msg)

    def _check_foreign_thread(self, what: str) -> None:
        if self._loop is None:
            raise RuntimeError(f"{what} needs a real-time node attached to a running loop")
        if self._loop.is_closed():
            raise RuntimeError(f"{what}: {self!r} has stopped (its loop is closed)")
        if threading.get_ident() == self._thread:
            raise RuntimeError(f"{what} called on the node's own thread would deadlock; "
                               "use node.call / node.send there")

    def __repr__(self) -> str:
        mode = f"seed={self.seed}" if self._virtual else "real-time"
        return f"<Node {self.name} {mode} {len(self._procs)} processes>"

