"""DynamicSupervisor: Elixir's DynamicSupervisor, for many children added at run time.

    sessions = node.spawn(DynamicSupervisor, DynamicFlags(max_children=1_000_000))
    spec = ChildSpec("session", Session, restart="transient")    # one spec, shared
    pid = await start_child(self, sessions, spec, user_id)       # args appended per child

Semantics (Elixir's dynamic_supervisor.ex):

- Children start only through `start_child`; each is started with
  `extra_arguments + spec.args + args` and linked. The supervisor keeps, per child, only
  its pid, the spec object (shared between children, never copied) and the per-call args:
  starting and stopping a child are O(1) dict operations, with no list scanned.
- A child whose `init` raises `Ignore` is not kept and `start_child` returns None.
  `max_children` (counting children waiting to restart) gives `MaxChildren`.
- Restarts are one_for_one with the same restart types and intensity (3 in 5 s by
  default) as `Supervisor`; a restart that fails to start is retried after the queued
  messages and counts again. A child that is not restarted is forgotten. `Backoff`
  specs delay restarts as in `Supervisor`.
- `terminate_child(pid)` stops one child (OTP shutdown protocol); `which_children` and
  `count_children` are O(children); `get_childspec(pid)` gives the spec with the
  arguments that child was started with. `restart_child` and `delete_child` do not exist here
  (OTP's simple_one_for_one rejects them too); `significant` children are rejected
  (no auto_shutdown).
- Shutdown is parallel: every child is monitored, unlinked and sent its shutdown signal at
  once; one timer per distinct shutdown time kills the stragglers. Order is undefined.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from itertools import islice
from typing import Any

from actors import SHUTDOWN, Pid, is_normal_exit

from ._base import Retry, SupervisorBase, report, shutdown_children
from .errors import BadCombination, ChildNotFound, MaxChildren, StartChildError
from .spec import ChildSpec, DynamicFlags
from .supervisor import ChildInfo

INFO, ERROR = logging.INFO, logging.ERROR


class DynamicSupervisor(SupervisorBase):
    """Elixir's DynamicSupervisor; see the module docstring. Spawn it with an optional
    `DynamicFlags`, or subclass it and define `configure`."""

    def configure(self, flags: DynamicFlags | None = None) -> DynamicFlags:
        """Callback: return the `DynamicFlags` from the spawn arguments."""
        return flags if flags is not None else DynamicFlags()

    def init(self, *args: Any) -> None:
        flags = self.configure(*args)
        if not isinstance(flags, DynamicFlags):
            raise TypeError(f"{type(self).__name__}.configure() must return DynamicFlags, got {flags!r:.200}")
        self._init_common(flags.max_restarts, flags.max_seconds)
        self._flags = flags
        self._extra = flags.extra_arguments
        self._max_children = flags.max_children
        self._children: dict[Pid, tuple[ChildSpec, tuple]] = {}
        self._restarting: dict[Pid, tuple[ChildSpec, tuple]] = {}  # keyed by the exited pid
        self._backoff: dict[Pid, tuple[int, float]] = {}  # pid -> (attempts, started_at)

    async def _start_entry(self, entry: tuple[ChildSpec, tuple], kind: str = "child_started") -> Pid | None:
        spec, args = entry
        if self._extra or args:
            args = (*self._extra, *spec.args, *args)
        else:
            args = spec.args
        pid = await self._spawn_child(spec, args)
        if pid is not None:
            assert pid not in self._children
            self._children[pid] = entry
            if spec.backoff is not None:
                self._backoff[pid] = (0, self.now())
            report(INFO, kind, self.pid, None, pid)
        return pid

    # -- exits and restarts ---------------------------------------------------------------------

    def _child_exit(self, pid: Pid, reason: Any) -> Any:
        entry = self._children.pop(pid, None)
        if entry is None:
            return None  # not a child (any more): ignored
        restart = entry[0].restart
        if restart == "permanent" or (restart == "transient" and not is_normal_exit(reason)):
            report(ERROR, "child_terminated", self.pid, None, pid, reason)
            return self._restart(pid, entry)
        if not is_normal_exit(reason):
            report(ERROR, "child_terminated", self.pid, None, pid, reason)
        if entry[0].backoff is not None:
            del self._backoff[pid]
        return None

    def _restart(self, old: Pid, entry: tuple[ChildSpec, tuple]) -> Any:
        if not self._add_restart():
            report(ERROR, "max_restart_intensity", self.pid, None, old,
                   max_restarts=self._max_restarts, max_seconds=self._max_seconds)
            self.stop(SHUTDOWN)
            return None
        backoff = entry[0].backoff
        if backoff is None:
            return self._do_restart(old, entry)
        delay, attempts = self._backoff_delay(backoff, *self._backoff.pop(old))
        self._backoff[old] = (attempts, self.now())
        self._restarting[old] = entry
        self.send_after(delay, self.pid, Retry(old, False))
        return None

    async def _do_restart(self, old: Pid, entry: tuple[ChildSpec, tuple]) -> None:
        try:
            pid = await self._start_entry(entry, "child_restarted")
        except StartChildError as err:
            report(ERROR, "start_error", self.pid, None, old, err.reason)
            self._restarting[old] = entry
            self.send(self.pid, Retry(old, True))
            return
        if entry[0].backoff is not None:
            attempts, _ = self._backoff.pop(old)
            if pid is not None:
                self._backoff[pid] = (attempts, self.now())

    def _retry(self, msg: Retry) -> Any:
        entry = self._restarting.pop(msg.key, None)
        if entry is None:
            return None  # terminated meanwhile
        if msg.counted:
            return self._restart(msg.key, entry)
        return self._do_restart(msg.key, entry)

    # -- terminate --------------------------------------------------------------------------------

    def terminate(self, reason: Any) -> Any:
        self._restarting.clear()
        if self._children:
            return self._terminate_children()
        return None

    async def _terminate_children(self) -> None:
        children, self._children = self._children, {}
        failures = await shutdown_children(self, ((pid, entry[0]) for pid, entry in children.items()))
        for pid, reason in failures:
            report(ERROR, "shutdown_error", self.pid, None, pid, reason)

    # -- requests ---------------------------------------------------------------------------------

    async def _call_start_child(self, request: tuple) -> Any:
        _, spec, args = request
        if spec is None:
            spec = self._flags.child
        if not isinstance(spec, ChildSpec):
            return TypeError(f"expected a ChildSpec, got {spec!r:.200}")
        if spec.significant:
            return BadCombination(f"child {spec.id!r} is significant but a DynamicSupervisor has "
                                  "no auto_shutdown")
        if self._max_children is not None and len(self._children) + len(self._restarting) >= self._max_children:
            return MaxChildren(self._max_children)
        try:
            return await self._start_entry((spec, args))
        except StartChildError as err:
            report(ERROR, "start_error", self.pid, None, None, err.reason)
            return err

    def _call_terminate_child(self, request: tuple) -> Any:
        pid = request[1]
        entry = self._children.pop(pid, None)
        if entry is None:
            if self._restarting.pop(pid, None) is None:
                return ChildNotFound(pid)
            self._backoff.pop(pid, None)
            return None
        self._backoff.pop(pid, None)
        return self._terminate_one(pid, entry[0])

    async def _terminate_one(self, pid: Pid, spec: ChildSpec) -> None:
        for _, reason in await shutdown_children(self, ((pid, spec),)):
            report(ERROR, "shutdown_error", self.pid, None, pid, reason)

    def _call_which_children(self, request: tuple) -> list[ChildInfo]:
        infos = [ChildInfo(None, pid, entry[0].type, False) for pid, entry in self._children.items()]
        infos += [ChildInfo(None, None, entry[0].type, True) for entry in self._restarting.values()]
        return infos

    def _call_count_children(self, request: tuple) -> dict[str, int]:
        every = (*self._children.values(), *self._restarting.values())
        supervisors = sum(1 for entry in every if entry[0].type == "supervisor")
        return {"specs": len(every), "active": len(self._children),
                "supervisors": supervisors, "workers": len(every) - supervisors}

    def _call_get_childspec(self, request: tuple) -> Any:
        pid = request[1]
        entry = self._children.get(pid) or self._restarting.get(pid)
        if entry is None:
            return ChildNotFound(pid)
        spec, args = entry
        return replace(spec, args=(*self._extra, *spec.args, *args))

    _REQUESTS = {
        "start_child": (_call_start_child, 3),
        "terminate_child": (_call_terminate_child, 2),
        "which_children": (_call_which_children, 1),
        "count_children": (_call_count_children, 1),
        "get_childspec": (_call_get_childspec, 2),
    }

    # -- introspection (supervision.tree) -----------------------------------------------------------

    def tree_entries(self, limit: int) -> tuple[list[tuple[Any, Pid | None, str, int | None]], int]:
        """Up to `limit` children as (None, pid, type, None), and how many there are."""
        entries: list[tuple[Any, Pid | None, str, int | None]] = [
            (None, pid, entry[0].type, None) for pid, entry in islice(self._children.items(), limit)]
        return entries, len(self._children) + len(self._restarting)

    def describe(self) -> str:
        """The kind ("dynamic"), as trees show it."""
        return "dynamic"
