"""What `Supervisor` and `DynamicSupervisor` share: reports, the shutdown protocol, the
restart intensity, backoff delays, starting a child and the request protocol.

Requests are `(tag, *args)` tuples (built by `supervision.client`); a supervisor answers
with the result, or with an exception instance that the client raises. A supervisor never
crashes on a bad request: it answers with the error.
"""
from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

from actors import (KILL, KILLED, SHUTDOWN, ActorError, Down, Exit, GenServer, Pid,
                    ReceiveTimeout, StartError, SystemLimit, is_normal_exit, seed_for)

from .errors import Ignore, StartChildError
from .spec import Backoff, ChildSpec

log = logging.getLogger("supervision")

_TEXT = {
    "child_started": "started",
    "child_restarted": "restarted",
    "child_terminated": "terminated",
    "start_error": "failed to start",
    "shutdown_error": "did not shut down cleanly",
    "max_restart_intensity": "exceeded the restart intensity; the supervisor shuts down",
    "auto_shutdown": "was significant; the supervisor shuts down (auto_shutdown)",
    "application_stopped": "(the application's top supervisor) is down",
}


ReportListener = Callable[[str, Pid, Any, Any, Any], None]
_listeners: list[ReportListener] = []
MAX_LISTENERS = 64


def add_report_listener(listener: ReportListener) -> None:
    """Call `listener(kind, supervisor, child_id, child_pid, reason)` with every supervisor
    report from now on, in this process, whatever the logging configuration. For tools
    that only count reports (the simulator counts restarts): a log record costs several
    microseconds, a call does not. A listener runs inside the supervisor: it must not
    raise.

        restarts = []
        add_report_listener(lambda kind, sup, cid, pid, reason:
                            kind == "child_restarted" and restarts.append(cid))
    """
    if len(_listeners) >= MAX_LISTENERS:
        raise ValueError(f"at most {MAX_LISTENERS} report listeners")
    _listeners.append(listener)


def remove_report_listener(listener: ReportListener) -> None:
    """Stop calling `listener` (added with `add_report_listener`)."""
    _listeners.remove(listener)


def report(level: int, kind: str, supervisor: Pid, child_id: Any, child_pid: Any,
           reason: Any = None, **more: Any) -> None:
    """Tell the report listeners, and log the report on logger "supervision"; `extra`
    carries `report` (the kind), `supervisor`, `child_id`, `child_pid`, `reason` and any
    `more`."""
    for listener in _listeners:
        listener(kind, supervisor, child_id, child_pid, reason)
    if log.isEnabledFor(level):
        text = f"supervisor %r: child %r %r {_TEXT[kind]}"
        args: tuple = (supervisor, child_id, child_pid)
        if reason is not None:
            text += " with reason %.300r"
            args += (reason,)
        log.log(level, text, *args, extra={"report": kind, "supervisor": supervisor,
                                           "child_id": child_id, "child_pid": child_pid,
                                           "reason": reason, **more})


class _Kill(NamedTuple):
    """A shutdown timer's message: kill the children still alive in this group."""

    token: Any


def _kill_for(token: Any) -> Callable[[Any], bool]:
    """Matches the shutdown timer's message of group `token`."""
    return lambda m: type(m) is _Kill and m.token == token


def _clean_exit(spec: ChildSpec, reason: Any) -> bool:
    """OTP's verdict on a reason seen while shutting a child down (supervisor:shutdown/1)."""
    if reason == (KILLED if spec.shutdown == "brutal_kill" else SHUTDOWN):
        return True
    return spec.restart != "permanent" and is_normal_exit(reason)


async def shutdown_children(proc: GenServer, children: Iterable[tuple[Pid, ChildSpec]]) -> list[tuple[Pid, Any]]:
    """Stop `children`, (pid, spec) pairs of processes linked to `proc` (which traps
    exits), with OTP's shutdown protocol, all at once; return when every one is gone.

    Each is monitored and unlinked, then sent "kill" (`brutal_kill`) or "shutdown"; one
    timer per distinct shutdown time kills those still alive when it fires. A child whose
    `Exit` is already queued died before and is not signalled. Returns `(pid, reason)` for
    each child that exited with an unexpected reason (to be reported as shutdown_error).
    """
    failures: list[tuple[Pid, Any]] = []
    live = dict(children)
    while live:  # already dead: take the reason from the queued Exit, as OTP's unlink_flush
        try:
            gone = await proc.receive(lambda m: type(m) is Exit and m.pid in live, 0)
        except ReceiveTimeout:
            break
        if not _clean_exit(live.pop(gone.pid), gone.reason):
            failures.append((gone.pid, gone.reason))
    refs: dict[Any, Pid] = {}
    groups: dict[float, list[Pid]] = {}
    for pid, spec in live.items():
        refs[proc.monitor(pid)] = pid
        proc.unlink(pid)
        if spec.shutdown == "brutal_kill":
            proc.exit(pid, KILL)
            continue
        proc.exit(pid, SHUTDOWN)
        if not isinstance(spec.shutdown, str):  # seconds, not "infinity"
            groups.setdefault(spec.shutdown, []).append(pid)
    timers: dict[Any, tuple[Any, list[Pid]]] = {}
    for seconds, pids in groups.items():
        msg = _Kill(proc.node.make_ref())
        timers[msg.token] = (proc.send_after(seconds, proc.pid, msg), pids)

    def ours(m: Any) -> bool:
        return (type(m) is Down and m.ref in refs) or (type(m) is _Kill and m.token in timers)

    while refs:
        msg = await proc.receive(ours)
        if type(msg) is _Kill:
            for pid in timers.pop(msg.token)[1]:
                if pid in live:
                    proc.exit(pid, KILL)
            continue
        pid = refs.pop(msg.ref)
        if not _clean_exit(live.pop(pid), msg.reason):
            failures.append((pid, msg.reason))
    for token, (timer, _) in timers.items():
        if proc.cancel_timer(timer) is False:  # it fired: its message is queued
            await proc.receive(_kill_for(token), 0)
    assert not live, f"children left alive after shutdown: {list(live)[:5]}"
    return failures


class Retry(NamedTuple):
    """A supervisor's note to itself to try a restart again: after a failed start
    (`counted`: the attempt counts toward intensity, OTP's try_again_restart) or when a
    backoff delay is over."""

    key: Any
    counted: bool


class SupervisorBase(GenServer):
    """The GenServer both supervisor kinds are. Subclasses define `configure`."""

    is_supervisor = True
    """Read by ChildSpec: a child of this class defaults to type "supervisor"."""

    _REQUESTS: dict[str, tuple[Callable[..., Any], int]] = {}
    """Request tag -> (handler taking the request tuple, the tuple's length)."""
    _SEALED = ("init", "handle_call", "handle_cast", "handle_info", "terminate")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("supervision."):
            return
        for name in cls._SEALED:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} overrides {name}(); a supervisor's only callback "
                                f"is configure(*args)")

    # -- shared state ------------------------------------------------------------------------

    def tree_entries(self, limit: int) -> tuple[list[tuple[Any, Pid | None, str, int | None]], int]:
        """Up to `limit` children as (id, pid, type, restarts), and how many there are in
        all (for `supervision.tree`)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The strategy line `supervision.tree` shows."""
        raise NotImplementedError

    def _init_common(self, max_restarts: int, max_seconds: float) -> None:
        self.trap_exit = True
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._restarts: deque[float] = deque()
        self._rand: Callable[[], float] | None = None

    def _add_restart(self) -> bool:
        """Count a restart now; False when that exceeds the intensity (OTP add_restart:
        restarts within the last max_seconds are kept, the bound included)."""
        now = self.now()
        restarts = self._restarts
        restarts.append(now)
        threshold = now - self._max_seconds
        while restarts[0] < threshold:
            restarts.popleft()
        assert len(restarts) <= self._max_restarts + 1, "a supervisor outlived its intensity"
        return len(restarts) <= self._max_restarts

    def _backoff_delay(self, backoff: Backoff, attempts: int, started_at: float) -> tuple[float, int]:
        """The delay before this restart, and the attempt count to keep."""
        if backoff.reset_after is not None and self.now() - started_at >= backoff.reset_after:
            attempts = 0  # the child ran quietly long enough: start the ladder over
        if self._rand is None:
            node = self.node
            seed = seed_for(node.seed if node.seed is not None else 0,
                            f"supervision/backoff/{node.name}/{self.pid.serial}")
            self._rand = random.Random(seed).random
        return backoff.delay(attempts, self._rand), attempts + 1

    async def _spawn_child(self, spec: ChildSpec, args: tuple) -> Pid | None:
        """Start and link a child, waiting for its `init` to finish, an async one included
        (OTP's start_link); None if its init raised `Ignore`. Raises `StartChildError` on
        any failure, leaving no process behind."""
        start = spec.start
        try:
            if spec.options:
                return await self.start_link(start, *args, **spec.options)
            return await self.start_link(start, *args)
        except StartError as exc:
            if isinstance(exc.reason, Ignore):
                return None
            raise StartChildError(spec.id, exc.reason) from exc
        except (ActorError, SystemLimit, OverflowError, TypeError) as exc:  # a name clash, a node
            # limit, or a coroutine function given the wrong arguments
            raise StartChildError(spec.id, exc) from exc

    # -- GenServer callbacks ------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        entry = self._REQUESTS.get(request[0]) if type(request) is tuple and request else None
        if entry is None or len(request) != entry[1]:
            return ValueError(f"{type(self).__name__} does not understand {request!r:.200}; "
                              f"it takes {sorted(self._REQUESTS)} (use supervision.client)")
        return entry[0](self, request)

    def handle_info(self, msg: Any) -> Any:
        kind = type(msg)
        if kind is Exit:  # from a child, or from anyone else (then ignored, as in OTP)
            return self._child_exit(msg.pid, msg.reason)
        if kind is Retry:
            return self._retry(msg)
        return GenServer.handle_info(self, msg)  # OTP logs unexpected messages

    def handle_cast(self, msg: Any) -> None:
        GenServer.handle_info(self, msg)

    def _child_exit(self, pid: Pid, reason: Any) -> Any:
        """A linked process exited: restart it, forget it, or ignore a stranger."""
        raise NotImplementedError

    def _retry(self, msg: Retry) -> Any:
        """A pending restart is due (see `Retry`)."""
        raise NotImplementedError
