"""Activated entities (Orleans-style virtual actors) on top of the store.

A key such as `("timeline", 7)` is always addressable. Its process starts on the first
message, under a DynamicSupervisor, with its state loaded from the store; it stops after
`idle_timeout` seconds without messages, its state saved. Memory follows the active set:
nothing is kept per stored key that is not active.

    timelines = node.spawn(Entities, store, Timeline, 60.0)          # or a ChildSpec
    entity_cast(node, timelines, ("timeline", 7), post)               # from anywhere
    n = await entity_call(self, timelines, ("timeline", 7), "count")  # in a process
    n = node.run_until_complete(entity_call(node, timelines, key, "count"))  # outside

`Timeline` is a `PersistentServer` (or `EventSourcedServer`) subclass; it is started as
`init(store, key)`, as a temporary child that traps exits, so a stop lets it finish the
messages it already has.

How it works. The `Entities` process routes every message: to the pid of an active key,
or into a per-key queue while the entity starts (or while its previous incarnation
stops), released in order once it is up. Calls are forwarded as gen_server forwards a
call: the entity replies to the caller itself (once its writes have committed). As with
OTP forwarding, the caller watches only the `Entities` process: if the entity crashes
while handling a call, the caller gets `CallTimeout`. A crashed entity is simply
inactive; the next message starts it again from its stored state. Every
`idle_timeout / 4` seconds the entities unused for `idle_timeout` are stopped through the
supervisor (OTP shutdown); at `max_active` the least recently used one is stopped to
make room. An activation that fails (say, a corrupted stored value) makes every call
waiting for it raise `ActivationError`; its casts are logged and dropped; the other keys
carry on.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from actors import Down, Exit, GenServer, NoReply, Node, Pid, Process
from supervision import ChildSpec, DynamicFlags, DynamicSupervisor, start_child, terminate_child
from supervision.client import request as _request

from .errors import ActivationError, LimitExceeded, UnencodableValue
from .persistent import PersistentServer

log = logging.getLogger("storage")

_CAST, _CALL, _INFO = "$entity_cast", "$entity_call", "$entity_info"
_STARTED, _SWEEP = "$started", "$sweep"


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
    """The router of one kind of entity; see the module docstring.

    Spawn arguments: `store`, `server` (a PersistentServer subclass), `idle_timeout`
    (seconds, default 60), `max_active` (default 100k), `max_waiting` (messages queued
    per key while it starts or stops, default 1000; more are refused)."""

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
        # Stopping entities are still children until they are down: room for both.
        self._sup = self.spawn_link(DynamicSupervisor, DynamicFlags(max_children=2 * max_active))
        self._spec = ChildSpec(server.__name__, server, args=(store,), restart="temporary",
                               options={"trap_exit": True})
        self._active: dict[Any, list] = {}  # key -> [pid, last used]; least recently used first
        self._keys: dict[Pid, Any] = {}  # pid -> key, for active and stopping entities
        self._waiting: dict[Any, list] = {}  # key -> [(msg, caller)] while it starts or stops
        self._stopping: dict[Any, Pid] = {}
        self._sweep_armed = False
        self.activations = 0
        self.passivations = 0

    def handle_cast(self, msg: Any) -> None:
        tag, key, payload = msg
        assert tag == _CAST, msg
        self._route(key, payload, None)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request[0] == _CALL:
            self._route(request[1], request[2], caller)
            return NoReply
        if request[0] == _INFO:
            return {"active": len(self._active), "stopping": len(self._stopping),
                    "starting": len(self._waiting) - len(self._stopping),
                    "activations": self.activations, "passivations": self.passivations}
        raise ValueError(f"Entities got an unknown request {request!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Down:
            self._down(msg.pid)
        elif type(msg) is tuple and msg[0] == _STARTED:
            self._started(msg[1], msg[2])
        elif msg == _SWEEP:
            self._sweep()
        elif type(msg) is Exit and msg.pid == self._sup:
            self.stop(msg.reason)  # without its supervisor the router cannot start anything
        else:
            super().handle_info(msg)

    # -- routing ---------------------------------------------------------------------------

    def _route(self, key: Any, payload: Any, caller: Any) -> None:
        try:
            entry = self._active.get(key)
        except TypeError:  # a bad key must not take the router (and every entity) down
            self._refuse(key, payload, caller,
                         UnencodableValue(f"entity key {key!r:.100} is not hashable"))
            return
        if entry is not None:
            del self._active[key]  # most recently used goes last
            self._active[key] = entry
            entry[1] = self.now()
            self._forward(entry[0], payload, caller)
            return
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = []
            self._activate(key)
        if len(waiting) >= self.max_waiting:
            self._refuse(key, payload, caller, LimitExceeded(
                f"{len(waiting)} messages already wait for entity {key!r:.100} (max_waiting)"))
            return
        waiting.append((payload, caller))

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

    def _activate(self, key: Any) -> None:
        starting = len(self._waiting) - len(self._stopping)
        if len(self._active) + starting > self.max_active and self._active:
            self._passivate(next(iter(self._active)))  # the least recently used
        me, node = self.pid, self.node

        def started(fut: Any) -> None:
            node.send(me, (_STARTED, key, fut.exception() or fut.result()))

        start_child(node, self._sup, self._spec, key).add_done_callback(started)

    def _started(self, key: Any, result: Any) -> None:
        waiting = self._waiting.pop(key)
        if type(result) is not Pid:
            error = ActivationError(key, getattr(result, "reason", result))
            for payload, caller in waiting:
                self._refuse(key, payload, caller, error)
            return
        self.activations += 1
        self._active[key] = [result, self.now()]
        self._keys[result] = key
        self.monitor(result)
        for payload, caller in waiting:
            self._forward(result, payload, caller)
        self._arm_sweep()

    def _passivate(self, key: Any) -> None:
        pid = self._active.pop(key)[0]
        self._stopping[key] = pid
        self._waiting[key] = []  # messages meanwhile wait for the next incarnation
        self.passivations += 1
        terminate_child(self.node, self._sup, pid)

    def _down(self, pid: Pid) -> None:
        key = self._keys.pop(pid, None)
        if key is None:
            return
        if self._stopping.get(key) == pid:
            del self._stopping[key]
            if self._waiting[key]:
                self._activate(key)
            else:
                del self._waiting[key]
        else:  # crashed or stopped by itself: the next message starts it again
            del self._active[key]

    def _arm_sweep(self) -> None:
        # Armed only while entities are active, so an idle node has no timer left.
        if not self._sweep_armed and self._active:
            self._sweep_armed = True
            self.send_after(self._idle_after / 4, self.pid, _SWEEP)

    def _sweep(self) -> None:
        self._sweep_armed = False
        oldest = self.now() - self._idle_after
        idle = []
        for key, (_, used) in self._active.items():
            if used > oldest:
                break
            idle.append(key)
        for key in idle:
            self._passivate(key)
        self._arm_sweep()
