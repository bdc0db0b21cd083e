"""Errors of the supervision layer. Run-time API errors are `ChildError`s, one class per
OTP error result, raised by the client functions (`start_child`, `terminate_child`, ...).
"""
from __future__ import annotations

from typing import Any


class SupervisionError(Exception):
    """Base class of every supervision error."""


class ChildError(SupervisionError):
    """A run-time request about one child failed; `child` is its id (or pid)."""

    def __init__(self, child: Any, message: str) -> None:
        super().__init__(message)
        self.child = child


class AlreadyStarted(ChildError):
    """OTP `{error, {already_started, Pid}}`: a child with this id is running as `pid`."""

    def __init__(self, child: Any, pid: Any) -> None:
        super().__init__(child, f"child {child!r} is already started as {pid!r}")
        self.pid = pid


class AlreadyPresent(ChildError):
    """OTP `{error, already_present}`: the id is taken by a child that is not running
    (restart it with `restart_child`, or `delete_child` it first)."""

    def __init__(self, child: Any) -> None:
        super().__init__(child, f"child {child!r} is already present (not running)")


class ChildRunning(ChildError):
    """OTP `{error, running}`: `restart_child`/`delete_child` on a running child."""

    def __init__(self, child: Any) -> None:
        super().__init__(child, f"child {child!r} is running")


class ChildRestarting(ChildError):
    """OTP `{error, restarting}`: the child is waiting for a restart (retry or backoff)."""

    def __init__(self, child: Any) -> None:
        super().__init__(child, f"child {child!r} is restarting")


class ChildNotFound(ChildError):
    """OTP `{error, not_found}`: no child with this id (or pid) under the supervisor."""

    def __init__(self, child: Any) -> None:
        super().__init__(child, f"no child {child!r}")


class MaxChildren(ChildError):
    """Elixir `{:error, :max_children}`: the DynamicSupervisor is full."""

    def __init__(self, limit: int) -> None:
        super().__init__(None, f"the dynamic supervisor already has its maximum of {limit} children")
        self.limit = limit


class StartChildError(ChildError):
    """A child failed to start; `reason` is why (its `init`'s exception, a name clash...).
    A supervisor whose initial children fail to start raises this from its own start,
    OTP's `{shutdown, {failed_to_start_child, Id, Reason}}`."""

    def __init__(self, child: Any, reason: Any) -> None:
        super().__init__(child, f"child {child!r} failed to start: {reason!r:.300}")
        self.reason = reason


class BadCombination(SupervisionError, ValueError):
    """OTP `bad_combination`: `significant=True` with a permanent child, or with a
    supervisor whose `auto_shutdown` is "never"."""


class CircuitOpen(SupervisionError):
    """A `CircuitBreaker` refused the call: it is open (or half-open with its trial
    call in flight); `retry_at` is the node time of the next allowed attempt."""

    def __init__(self, name: Any, retry_at: float) -> None:
        super().__init__(f"circuit {name!r} is open until {retry_at:.3f}")
        self.name = name
        self.retry_at = retry_at


class Ignore(Exception):
    """Raise from a child's `init` to start nothing (OTP's `ignore`): `start_child`
    returns None, a static supervisor keeps the spec (not running), a temporary child or
    a dynamic one is forgotten."""
