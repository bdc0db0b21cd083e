"""Activated entities (Orleans-style virtual actors) on top of the store.

A key such as `("timeline", 7)` is always addressable. Its process starts on the first
message, with its state loaded from the store; it stops after `idle_timeout` seconds
without messages, its state saved. Memory follows the active set: nothing is kept per
stored key that is not active.

    timelines = node.spawn(Entities, store, Timeline, 60.0)          # or a ChildSpec
    entity_cast(node, timelines, ("timeline", 7), post)               # from anywhere
    n = await entity_call(self, timelines, ("timeline", 7), "count")  # in a process
    n = node.run_until_complete(entity_call(node, timelines, key, "count"))  # outside

`Timeline` is a `PersistentServer` (or `EventSourcedServer`) subclass; it is started as
`init(store, key)`, trapping exits, so a stop lets it finish the messages it already has.

How it works. The `Entities` process routes every message: to the pid of an active key,
or, while the key's previous incarnation stops, into a per-key queue released in order
to the next one. Calls are forwarded as gen_server forwards a call: the entity replies to
the caller itself (once its writes have committed). As with OTP forwarding, the caller
watches only the `Entities` process: if the entity crashes while handling a call, the
caller gets `CallTimeout`. Every `idle_timeout / 4` seconds the entities unused for
`idle_timeout` are stopped; at `max_active` the least recently used one is stopped to
make room. An activation that fails (say, a corrupted stored value) makes every call
waiting for it raise `ActivationError`; its casts are logged and dropped; the other keys
carry on.

Supervision. `Entities` is itself the supervisor of its entities, with OTP's semantics
for `temporary` children: each is spawned linked (in the router's turn: activation
costs no extra message), never restarted (a crashed entity is simply inactive, and the
next message starts it again from its stored state; with no restarts there is no restart
intensity to count), and a crash is reported as `child_terminated` on the "supervision"
logger. Stopping one follows OTP's shutdown protocol, a "shutdown" exit signal, then
"kill" if it is still alive 5 s later (a worker's default shutdown; a kill is reported as
`shutdown_error`), with one deviation: an OTP supervisor waits in `terminate_child`
until the child is down, while the router carries on routing (messages for that key
wait for its next incarnation). When `Entities` terminates, it shuts every entity down
in parallel and exits once all are gone (their states saved); if it is killed, the
entities get the exit through their links and stop, saving their states; its next
incarnation (restarted by its supervisor) adopts those still stopping, found among the
node's processes when it starts (same entity class, same store, router gone), and their
keys wait for their exits: a key never has two live incarnations on a node.

Reminders. An entity's durable reminders (`storage.reminders`) fire while it is active;
when it stops (passivated, crashed or stopped by itself) the router reads its next due
time from the store and activates it again then, as Orleans' reminders activate a grain.
A reminder already due when its entity exits wakes it `REWAKE_AFTER` seconds later, not
at once: an entity that exits whenever its reminder fires (a crash on a full disk, say)
is retried at that pace instead of spinning the node at one instant.
What the router so remembers is lost with it: after the router (or the node) restarts,
an entity's reminders fire at its next activation.

Many entities and Python's garbage collector. Each live entity is a handful of objects
that CPython's cyclic collector walks again on every full collection, so activating
100k entities at once (a recovery) spends about a quarter of its time there with the
default thresholds (`bench/storage.py` reports it as `gc_s`). A node that holds that many
can raise the first threshold at start-up, e.g. `gc.set_threshold(50_000, 20, 20)`, and
call `gc.freeze()` once a recovery is done, so later collections skip what it loaded.
This is the application's choice: the library never changes the collector.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from actors import (KILL, SHUTDOWN, Down, Exit, GenServer, NoReply, Node, Pid, Process, StartError,
                    SystemLimit, is_normal_exit)
from supervision import ChildSpec, report, shutdown_children
from supervision.client import request as _request

from .errors import ActivationError, LimitExceeded, UnencodableValue
from .persistent import PersistentServer
from .reminders import durable_now, next_due

log = logging.getLogger("storage")

_CAST, _CALL, _INFO = "$entity_cast", "$entity_call", "$entity_info"
_SWEEP, _KILL, _WAKE = "$sweep", "$kill", "$wake"
REWAKE_AFTER = 1.0  # seconds before an entity that exited with a reminder due is woken again


def entity_cast(caller: Node | Process, entities: Any, key: Any, msg: Any) -> None:
    """Send `msg` to the `handle_cast` of entity `key`, starting it if needed."""
    caller.cast(entities, (_CAST, key, msg))


def entity_call(caller: Node | Process, entities: Any, key: Any, request: Any,
                timeout: float | None = 5.0) -> Any:
    """Call entity `key`, starting it if needed: a coroutine to await in a process, a
    `Future` from outside. Raises `ActivationError` if the entity cannot start; like a
    supervisor's answers, a reply that is an exception object is raised."""
    return _request(caller, entities, (_CALL, key, request), timeout)


def entities_info(caller: Node | Process, entities: Any) -> Any:
    """`{"active", "starting", "stopping", "activations", "passivations"}` counts."""
    return _request(caller, entities, (_INFO,), None)


class Entities(GenServer):
    """The router and supervisor of one kind of entity; see the module docstring.

    Spawn arguments: `store`, `server` (a PersistentServer subclass), `idle_timeout`
    (seconds, default 60), `max_active` (default 100k), `max_waiting` (messages queued
    per key while its previous incarnation stops, default 1000; more are refused)."""

    def init(self, store: Any, server: type, idle_timeout: float = 60.0,
             max_active: int = 100_000, max_waiting: int = 1_000) -> None:
        if not (isinstance(server, type) and issubclass(server, PersistentServer)):
            raise TypeError(f"Entities serves PersistentServer subclasses, not {server!r}")
        if type(idle_timeout) not in (int, float) or not 0 < idle_timeout < math.inf:
            raise ValueError(f"idle_timeout must be positive seconds, got {idle_timeout!r}")
        for name, value in (("max_active", max_active), ("max_waiting", max_waiting)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._idle_after = float(idle_timeout)  # (GenServer.idle_timeout would idle the router)
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.trap_exit = True
        self._store = store
        self._server = server
        # How the entities are supervised: read by the shutdown protocol.
        self._spec = ChildSpec(server.__name__, server, args=(store,), restart="temporary",
                               options={"trap_exit": True})
        shutdown = self._spec.shutdown
        assert isinstance(shutdown, (int, float)), "entities stop within a number of seconds"
        self._shutdown = float(shutdown)  # from "shutdown" to "kill"
        self._active: dict[Any, Pid] = {}  # key -> pid
        self._used: dict[Any, float] = {}  # key -> last used, of the active: least recent first
        self._keys: dict[Pid, Any] = {}  # pid -> key, for active and stopping entities
        self._waiting: dict[Any, list] = {}  # key -> [(msg, caller)] while it stops
        self._stopping: dict[Any, tuple[Pid, float]] = {}  # key -> (pid, since), oldest first
        self._sweep_armed = False
        self._kill_timer: Any = None
        self._wakes: dict[Any, float] = {}  # inactive key -> when its next reminder is due
        self._wake_timer: Any = None
        self.activations = 0
        self.passivations = 0
        self._orphans: dict[Pid, None] = {}  # adopted from a previous router
        self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        """Entities of this kind on this store whose router is gone (a previous incarnation
        of this one) and that are still finishing what they had: their keys wait for their
        exits, as for a passivation, so a key never has two live incarnations."""
        node = self.node
        for pid in node.processes():
            proc = node.get_process(pid)
            if type(proc) is not self._server or getattr(proc, "store", None) is not self._store:
                continue
            info = node.process_info(pid)
            if info is None or node.is_alive(info["parent"]):
                continue
            key = proc.key
            self.monitor(pid)
            self._orphans[pid] = None
            self._keys[pid] = key
            self._stopping[key] = (pid, self.now())
            self._waiting[key] = []
        if self._stopping:
            self._kill_timer = self.send_after(self._shutdown, self.pid, _KILL)

    def handle_cast(self, msg: Any) -> None:
        tag, key, payload = msg
        assert tag == _CAST, msg
        self._route(key, payload, None)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request[0] == _CALL:
            self._route(request[1], request[2], caller)
            return NoReply
        if request[0] == _INFO:
            # An activation completes within the router's turn: none is ever "starting".
            return {"active": len(self._active), "stopping": len(self._stopping), "starting": 0,
                    "activations": self.activations, "passivations": self.passivations}
        raise ValueError(f"Entities got an unknown request {request!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Exit or type(msg) is Down:  # Down: an adopted orphan
            self._exited(msg.pid, msg.reason)
        elif msg == _SWEEP:
            self._sweep()
        elif msg == _KILL:
            self._kill_stragglers()
        elif msg == _WAKE:
            self._wake_due()
        else:
            super().handle_info(msg)

    async def terminate(self, reason: Any) -> None:
        # As a supervisor's: every entity is shut down (states saved) before the exit.
        children = [(pid, self._spec) for pid in self._keys]
        self._active, self._used, self._keys, self._stopping = {}, {}, {}, {}
        for pid, why in await shutdown_children(self, children):
            report(logging.ERROR, "shutdown_error", self.pid, self._spec.id, pid, why)

    # -- routing ---------------------------------------------------------------------------

    def _route(self, key: Any, payload: Any, caller: Any) -> None:
        try:
            pid = self._active.get(key)
        except TypeError:  # a bad key must not take the router (and every entity) down
            self._refuse(key, payload, caller,
                         UnencodableValue(f"entity key {key!r:.100} is not hashable"))
            return
        if pid is not None:
            used = self._used
            del used[key]  # most recently used goes last
            used[key] = self.node.now()
        else:
            waiting = self._waiting.get(key)
            if waiting is not None:  # its previous incarnation is stopping
                if len(waiting) >= self.max_waiting:
                    self._refuse(key, payload, caller, LimitExceeded(
                        f"{len(waiting)} messages already wait for entity {key!r:.100} (max_waiting)"))
                else:
                    waiting.append((payload, caller))
                return
            started = self._activate(key)
            if not isinstance(started, Pid):
                self._refuse(key, payload, caller, started)
                return
            pid = started
        self._forward(pid, payload, caller)

    def _forward(self, pid: Pid, payload: Any, caller: Any) -> None:
        if caller is None:
            self.cast(pid, payload)
        else:
            self.node.forward(pid, payload, caller)  # the entity replies to the caller itself

    def _refuse(self, key: Any, payload: Any, caller: Any, error: Exception) -> None:
        if caller is not None:
            self.reply(caller, error)
        else:
            log.error("cast to entity %r dropped: %s", key, error)

    # -- activation and passivation ---------------------------------------------------------

    def _activate(self, key: Any) -> Pid | ActivationError:
        """Start entity `key`, linked, from its stored state: its pid, or why it cannot."""
        if len(self._active) >= self.max_active:
            self._passivate(next(iter(self._used)))  # the least recently used
        if len(self._active) + len(self._stopping) >= 2 * self.max_active:  # room for both
            return ActivationError(key, LimitExceeded(
                f"{len(self._stopping)} entities are still stopping (2 * max_active in all)"))
        try:
            pid = self.spawn_link(self._server, self._store, key, trap_exit=True)
        except StartError as exc:
            return ActivationError(key, exc.reason)
        except SystemLimit as exc:  # this key fails, the others carry on
            return ActivationError(key, exc)
        self.activations += 1
        self._wakes.pop(key, None)  # active: its own timers fire its reminders
        self._active[key] = pid
        self._used[key] = self.node.now()
        self._keys[pid] = key
        self._arm_sweep()
        return pid

    def _passivate(self, key: Any) -> None:
        """Stop an active entity, OTP's shutdown protocol: "shutdown", later "kill"."""
        pid = self._active.pop(key)
        del self._used[key]
        self._stopping[key] = (pid, self.now())
        self._waiting[key] = []  # messages meanwhile wait for the next incarnation
        self.passivations += 1
        self.exit(pid, SHUTDOWN)
        if self._kill_timer is None:
            self._kill_timer = self.send_after(self._shutdown, self.pid, _KILL)

    def _exited(self, pid: Pid, reason: Any) -> None:
        key = self._keys.pop(pid, None)
        if key is None:
            return  # not an entity: ignored, as a supervisor ignores strangers
        stopping = self._stopping.get(key)
        if stopping is not None and stopping[0] == pid:
            del self._stopping[key]
            orphan = pid in self._orphans  # its exit reason is its old router's: not reported
            if orphan:
                del self._orphans[pid]
            if not is_normal_exit(reason) and not orphan:  # e.g. killed after the shutdown time
                report(logging.ERROR, "shutdown_error", self.pid, self._spec.id, pid, reason)
            if not self._stopping and self._kill_timer is not None:
                self.cancel_timer(self._kill_timer)
                self._kill_timer = None
            waiting = self._waiting.pop(key)
            if waiting:  # the next incarnation takes what came meanwhile, in order
                started = self._activate(key)
                for payload, caller in waiting:
                    if isinstance(started, Pid):
                        self._forward(started, payload, caller)
                    else:
                        self._refuse(key, payload, caller, started)
            else:
                self._note_reminders(key)
            return
        # Crashed or stopped by itself: the next message starts it again.
        del self._active[key], self._used[key]
        if not is_normal_exit(reason):
            report(logging.ERROR, "child_terminated", self.pid, self._spec.id, pid, reason)
        self._note_reminders(key)

    # -- reminders of inactive entities ----------------------------------------------------------

    def _note_reminders(self, key: Any) -> None:
        """An entity stopped: if it has a reminder stored, activate it again when it is due
        (one already due: after REWAKE_AFTER)."""
        if not self._server._remindable():
            return
        at = next_due(self._store, key)
        if at is not None:
            now = durable_now(self.node)
            self._wakes[key] = at if at > now else now + REWAKE_AFTER
            self._arm_wake()

    def _arm_wake(self) -> None:
        if self._wake_timer is not None:
            self.cancel_timer(self._wake_timer)
            self._wake_timer = None
        if self._wakes:
            soonest = min(self._wakes.values())
            self._wake_timer = self.send_after(max(0.0, soonest - durable_now(self.node)), self.pid, _WAKE)

    def _wake_due(self) -> None:
        """Activate the entities whose reminders are due (their `init` re-arms them)."""
        self._wake_timer = None
        now = durable_now(self.node)
        for key in [k for k, at in self._wakes.items() if at <= now]:
            del self._wakes[key]
            if key not in self._active and key not in self._stopping:
                started = self._activate(key)
                if not isinstance(started, Pid):
                    log.error("entity %r not activated for its reminder: %s", key, started)
        self._arm_wake()

    def _kill_stragglers(self) -> None:
        """Kill the entities that have not stopped within the shutdown time."""
        self._kill_timer = None
        shutdown = self._shutdown
        oldest = self.now() - shutdown
        for pid, since in self._stopping.values():
            if since > oldest:
                self._kill_timer = self.send_after(since - oldest, self.pid, _KILL)
                break
            self.exit(pid, KILL)

    def _arm_sweep(self) -> None:
        # Armed only while entities are active, so an idle node has no timer left.
        if not self._sweep_armed and self._active:
            self._sweep_armed = True
            self.send_after(self._idle_after / 4, self.pid, _SWEEP)

    def _sweep(self) -> None:
        self._sweep_armed = False
        oldest = self.now() - self._idle_after
        idle = []
        for key, used in self._used.items():
            if used > oldest:
                break
            idle.append(key)
        for key in idle:
            self._passivate(key)
        self._arm_sweep()
