"""Supervisor: OTP's supervisor behaviour for a fixed, ordered list of children.

    sup = node.spawn(Supervisor, [ChildSpec("db", Db), ChildSpec("web", Web)],
                     Flags(strategy="rest_for_one"))

    class Shop(Supervisor):                    # or a module-based supervisor
        def configure(self, config):           # the only callback
            return [ChildSpec("db", Db, args=(config,))], Flags(max_restarts=10)

Semantics (OTP's supervisor.erl, in order of appearance):

- Start: the supervisor traps exits, then starts its children in list order, each linked
  and waited for (an async `init` included, as OTP's start_link). If one fails (its
  `init` raises or stops), the ones already started are stopped in reverse order, each
  waited for (a child that does not trap exits dies of its shutdown signal at once and
  needs no waiting), and then the supervisor's own start fails with `StartError` whose
  reason is `StartChildError(id, reason)`: its children are gone and their names free,
  so a retry works at once. `node.start` / `start_link` wait for all of this; `spawn`
  does not wait: when the supervisor had to wait (a child's async `init`, or a started
  child that traps exits), `spawn` has returned its pid and it then exits with that
  reason. A child whose `init` raises `Ignore` is kept, not running (a temporary one is
  dropped). Starts and restarts of a child whose `init` awaits keep the supervisor
  waiting meanwhile, as in OTP.
- A child exits: permanent children are always restarted; transient ones unless the
  reason is "normal", "shutdown" or ("shutdown", x); temporary ones never, and their spec
  is dropped. Exits that are not restarted may trigger `auto_shutdown` (below).
- Strategies: one_for_one restarts the child alone. one_for_all terminates the other
  children (reverse start order), then starts all of them in start order. rest_for_one
  does the same for the child and those started after it. Temporary children taken down
  by a sibling are not restarted (their specs are dropped). A child that fails to restart
  is retried after the messages already queued (OTP's try_again_restart); every attempt
  counts toward the intensity.
- Intensity: more than `max_restarts` restarts within `max_seconds` (node time) and the
  supervisor terminates all children and exits with "shutdown", so its own supervisor
  decides what happens next.
- Shutdown: children are terminated in reverse start order, one at a time: monitored,
  sent "shutdown" and killed if still alive after `shutdown` seconds ("brutal_kill":
  killed at once; "infinity": waited for). A child that exits with another reason is
  reported as a shutdown_error.
- auto_shutdown: "any_significant" exits "shutdown" when a significant child exits on its
  own and is not restarted; "all_significant" when the last running significant child
  does. Exits the supervisor causes itself never count.
- Run-time API (see `supervision.client`): `start_child` (AlreadyStarted, AlreadyPresent),
  `terminate_child` (the spec is kept unless temporary), `restart_child` and
  `delete_child` (ChildRunning, ChildRestarting, ChildNotFound), `which_children`
  (reverse start order, as OTP), `count_children`.

Deviations from OTP, on purpose:
- A failed start cannot wait for the children it stops (`spawn` is synchronous and OTP
  would block in it): they get their signals in reverse order at once, and a small reaper
  process kills those still alive after their shutdown time.
- Restart timestamps are exact node time, not OTP's whole seconds, so `max_seconds` may
  be fractional and a restart counts for exactly `max_seconds` (the bound included).
- A child "ignores" its start by raising `Ignore` from `init`; a bad run-time request is
  answered with an error instead of crashing the supervisor.
- Beyond OTP, a child whose spec has a `Backoff` is restarted after a growing delay and
  is "restarting" meanwhile (under one_for_all and rest_for_one its siblings stop at once
  and the group starts when the delay is over).
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple, Sequence

from actors import KILL, SHUTDOWN, Pid, is_normal_exit

from ._base import Retry, SupervisorBase, report, shutdown_children
from .errors import (AlreadyPresent, AlreadyStarted, BadCombination, ChildError, ChildNotFound,
                     ChildRestarting, ChildRunning, StartChildError)
from .spec import ChildSpec, Flags

INFO, ERROR = logging.INFO, logging.ERROR


class ChildInfo(NamedTuple):
    """One entry of `which_children`: `pid` is None when the child is not running;
    `restarting` is True while a restart is pending (OTP's `restarting`)."""

    id: Any
    pid: Pid | None
    type: str
    restarting: bool


class _Child:
    """A supervisor's record of one child spec and its process."""

    __slots__ = ("spec", "pid", "retry", "timer", "starts", "attempts", "started_at")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.pid: Pid | None = None
        self.retry: Retry | None = None  # a pending restart: the child is "restarting"
        self.timer: Any = None  # its backoff timer, if any
        self.starts = 0
        self.attempts = 0  # consecutive backoff restarts
        self.started_at = 0.0


def _check_children(children: Any, auto_shutdown: str) -> list[ChildSpec]:
    if not isinstance(children, (list, tuple)):
        raise TypeError(f"a supervisor's children must be a list of ChildSpec, got {children!r:.200}")
    seen: set[Any] = set()
    for spec in children:
        _check_spec(spec, auto_shutdown)
        if spec.id in seen:
            raise ValueError(f"duplicate child id {spec.id!r}")
        seen.add(spec.id)
    return list(children)


def _check_spec(spec: Any, auto_shutdown: str) -> None:
    if not isinstance(spec, ChildSpec):
        raise TypeError(f"expected a ChildSpec, got {spec!r:.200}")
    if spec.significant and auto_shutdown == "never":
        raise BadCombination(f"child {spec.id!r} is significant but the supervisor's "
                             "auto_shutdown is 'never' (OTP bad_combination)")


class Supervisor(SupervisorBase):
    """OTP's supervisor; see the module docstring. Spawn it with `(children, flags)` or
    subclass it and define `configure`."""

    def configure(self, children: Sequence[ChildSpec], flags: Flags | None = None) -> tuple:
        """Callback: return `(children, flags)` from the spawn arguments. The default
        takes them as they are (flags default to `Flags()`)."""
        return children, flags if flags is not None else Flags()

    async def init(self, *args: Any) -> None:
        config = self.configure(*args)
        if type(config) is not tuple or len(config) != 2 or not isinstance(config[1], Flags):
            raise TypeError(f"{type(self).__name__}.configure() must return (children, Flags), "
                            f"got {config!r:.200}")
        flags: Flags = config[1]
        specs = _check_children(config[0], flags.auto_shutdown)
        self._init_common(flags.max_restarts, flags.max_seconds)
        self._flags = flags
        self._children: list[_Child] = [_Child(spec) for spec in specs]
        self._ids: dict[Any, _Child] = {c.spec.id: c for c in self._children}
        self._pids: dict[Pid, _Child] = {}
        for child in list(self._children):
            try:
                await self._start_child(child)
            except StartChildError as failure:
                await self._stop_started()
                self.stop(failure)  # the start fails with it (init's {stop, Reason})
                return

    async def _stop_started(self) -> None:
        """A child failed to start: stop the started ones in reverse start order, each
        waited for. One that is killed, or does not trap exits, can run no code once
        signalled: it is not waited for (the start fails without waiting if none traps)."""
        for child in reversed(self._children):
            pid = child.pid
            if pid is None:
                continue
            info = self.node.process_info(pid)
            brutal = child.spec.shutdown == "brutal_kill"
            if info is not None and info["trap_exit"] and not brutal:
                await self._shutdown(child)
                continue
            self.unlink(pid)
            self.exit(pid, KILL if brutal else SHUTDOWN)
            del self._pids[pid]
            child.pid = None

    # -- starting and restarting -------------------------------------------------------------

    async def _start_child(self, child: _Child) -> Pid | None:
        """Start one child; raises StartChildError (reported)."""
        assert child.pid is None and child.retry is None, f"child {child.spec.id!r} is already running or pending"
        spec = child.spec
        if spec.backoff is not None:
            child.started_at = self.now()
        try:
            pid = await self._spawn_child(spec, spec.args)
        except StartChildError as err:
            report(ERROR, "start_error", self.pid, spec.id, None, err.reason)
            raise
        if pid is None:
            if spec.restart == "temporary" and self._ids.get(spec.id) is child:
                self._remove(child)
            return None
        child.pid = pid
        self._pids[pid] = child
        child.starts += 1
        if child.starts > 1:
            report(INFO, "child_restarted", self.pid, spec.id, pid, restarts=child.starts - 1)
        else:
            report(INFO, "child_started", self.pid, spec.id, pid)
        return pid

    def _child_exit(self, pid: Pid, reason: Any) -> Any:
        child = self._pids.pop(pid, None)
        if child is None:
            return None  # not a child (any more): ignored, as OTP does
        child.pid = None
        spec = child.spec
        if spec.restart == "permanent" or (spec.restart == "transient" and not is_normal_exit(reason)):
            report(ERROR, "child_terminated", self.pid, spec.id, pid, reason)
            return self._restart(child)
        if not is_normal_exit(reason):
            report(ERROR, "child_terminated", self.pid, spec.id, pid, reason)
        if spec.restart == "temporary":
            self._remove(child)
        mode = self._flags.auto_shutdown
        if mode == "never" or not spec.significant:
            return None
        if mode == "all_significant" and any(
                c.spec.significant and (c.pid is not None or c.retry is not None) for c in self._children):
            return None
        report(INFO, "auto_shutdown", self.pid, spec.id, pid, reason)
        self.stop(SHUTDOWN)
        return None

    def _restart(self, child: _Child) -> Any:
        """A restart is due: count it, then restart now or after the child's backoff."""
        if not self._add_restart():
            report(ERROR, "max_restart_intensity", self.pid, child.spec.id, None,
                   max_restarts=self._max_restarts, max_seconds=self._max_seconds)
            self.stop(SHUTDOWN)
            return None
        delay = 0.0
        backoff = child.spec.backoff
        if backoff is not None:
            delay, child.attempts = self._backoff_delay(backoff, child.attempts, child.started_at)
        return self._do_restart(child, delay)

    def _do_restart(self, child: _Child, delay: float) -> Any:
        if self._flags.strategy != "one_for_one":
            return self._restart_group(child, delay)
        if delay > 0:
            self._retry_later(child, delay, counted=False)
            return None
        return self._restart_one(child)

    async def _restart_one(self, child: _Child) -> None:
        try:
            await self._start_child(child)
        except StartChildError:
            self._retry_later(child, 0.0, counted=True)

    async def _restart_group(self, child: _Child, delay: float) -> None:
        """one_for_all / rest_for_one: stop the group in reverse start order, then start
        it in start order (after `delay`)."""
        first = 0 if self._flags.strategy == "one_for_all" else self._children.index(child)
        group = self._children[first:]
        for sibling in reversed(group):
            self._cancel_retry(sibling)
            if sibling.pid is not None:
                await self._shutdown(sibling)
            if sibling.spec.restart == "temporary":
                self._remove(sibling)
        if delay > 0:
            self._retry_later(child, delay, counted=False)
            return
        for sibling in group:
            if sibling.spec.restart == "temporary":
                continue  # removed above
            try:
                await self._start_child(sibling)
            except StartChildError:
                self._retry_later(sibling, 0.0, counted=True)
                return

    def _retry_later(self, child: _Child, delay: float, counted: bool) -> None:
        msg = child.retry = Retry(child.spec.id, counted)
        if delay > 0:
            child.timer = self.send_after(delay, self.pid, msg)
        else:
            self.send(self.pid, msg)

    def _retry(self, msg: Retry) -> Any:
        child = self._ids.get(msg.key)
        if child is None or child.retry is not msg:
            return None  # terminated, deleted or restarted meanwhile
        child.retry = child.timer = None
        if msg.counted:
            return self._restart(child)
        return self._do_restart(child, 0.0)

    def _cancel_retry(self, child: _Child) -> None:
        if child.timer is not None:
            self.cancel_timer(child.timer)
        child.retry = child.timer = None

    def _remove(self, child: _Child) -> None:
        self._children.remove(child)
        del self._ids[child.spec.id]

    async def _shutdown(self, child: _Child) -> None:
        pid = child.pid
        assert pid is not None
        for _, reason in await shutdown_children(self, ((pid, child.spec),)):
            report(ERROR, "shutdown_error", self.pid, child.spec.id, pid, reason)
        del self._pids[pid]
        child.pid = None

    # -- terminate --------------------------------------------------------------------------------

    def terminate(self, reason: Any) -> Any:
        for child in self._children:
            self._cancel_retry(child)
        if self._pids:
            return self._terminate_children()
        return None

    async def _terminate_children(self) -> None:
        for child in reversed(list(self._children)):
            if child.pid is not None:
                await self._shutdown(child)

    # -- requests ---------------------------------------------------------------------------------

    async def _call_start_child(self, request: tuple) -> Any:
        _, spec, args = request
        if args:
            return ValueError("a Supervisor's child takes its arguments from its ChildSpec; "
                              "extra start arguments are for a DynamicSupervisor")
        try:
            _check_spec(spec, self._flags.auto_shutdown)
        except (TypeError, BadCombination) as exc:
            return exc
        old = self._ids.get(spec.id)
        if old is not None:
            return AlreadyStarted(spec.id, old.pid) if old.pid is not None else AlreadyPresent(spec.id)
        child = _Child(spec)
        try:
            pid = await self._start_child(child)
        except StartChildError as err:
            return err
        if pid is not None or spec.restart != "temporary":
            self._children.append(child)
            self._ids[spec.id] = child
        return pid

    def _call_terminate_child(self, request: tuple) -> Any:
        child_id = request[1]
        child = self._ids.get(child_id)
        if child is None:
            return ChildNotFound(child_id)
        self._cancel_retry(child)
        if child.pid is None:
            if child.spec.restart == "temporary":
                self._remove(child)
            return None
        return self._terminate_one(child)

    async def _terminate_one(self, child: _Child) -> None:
        await self._shutdown(child)
        if child.spec.restart == "temporary":
            self._remove(child)

    def _stopped(self, child_id: Any) -> _Child | ChildError:
        """The child with this id if it is stopped, else OTP's error for it."""
        child = self._ids.get(child_id)
        if child is None:
            return ChildNotFound(child_id)
        if child.retry is not None:
            return ChildRestarting(child_id)
        if child.pid is not None:
            return ChildRunning(child_id)
        return child

    async def _call_restart_child(self, request: tuple) -> Any:
        child = self._stopped(request[1])
        if not isinstance(child, _Child):
            return child
        try:
            return await self._start_child(child)
        except StartChildError as err:
            return err

    def _call_delete_child(self, request: tuple) -> Any:
        child = self._stopped(request[1])
        if not isinstance(child, _Child):
            return child
        self._remove(child)
        return None

    def _call_which_children(self, request: tuple) -> list[ChildInfo]:
        return [ChildInfo(c.spec.id, c.pid, c.spec.type, c.retry is not None)
                for c in reversed(self._children)]

    def _call_count_children(self, request: tuple) -> dict[str, int]:
        workers = sum(1 for c in self._children if c.spec.type == "worker")
        active = sum(1 for c in self._children if c.pid is not None and self.node.is_alive(c.pid))
        return {"specs": len(self._children), "active": active,
                "supervisors": len(self._children) - workers, "workers": workers}

    def _call_get_childspec(self, request: tuple) -> Any:
        child = self._ids.get(request[1])
        return child.spec if child is not None else ChildNotFound(request[1])

    _REQUESTS = {
        "start_child": (_call_start_child, 3),
        "terminate_child": (_call_terminate_child, 2),
        "restart_child": (_call_restart_child, 2),
        "delete_child": (_call_delete_child, 2),
        "which_children": (_call_which_children, 1),
        "count_children": (_call_count_children, 1),
        "get_childspec": (_call_get_childspec, 2),
    }

    # -- introspection (supervision.tree) -----------------------------------------------------------

    def tree_entries(self, limit: int) -> tuple[list[tuple[Any, Pid | None, str, int | None]], int]:
        """Up to `limit` children as (id, pid, type, restarts), in start order, and how
        many there are in all."""
        entries: list[tuple[Any, Pid | None, str, int | None]] = [
            (c.spec.id, c.pid, c.spec.type, max(0, c.starts - 1)) for c in self._children[:limit]]
        return entries, len(self._children)

    def describe(self) -> str:
        """The strategy, as trees show it."""
        return self._flags.strategy

