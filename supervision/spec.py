"""Child specifications and supervisor flags, validated when they are built.

    ChildSpec("db", Database, args=("/var/db",))                  # a GenServer
    ChildSpec("poller", poll_loop, args=(5.0,), restart="transient")  # async def poll_loop(proc, every)
    ChildSpec("web", WebSupervisor, shutdown="infinity")          # type="supervisor" inferred

Fields follow OTP's child_spec map: `restart` is "permanent" (always restarted),
"transient" (restarted unless it exits "normal", "shutdown" or ("shutdown", x)) or
"temporary" (never restarted; its spec is dropped when it exits). `shutdown` is seconds
to wait after the "shutdown" exit signal before killing, "brutal_kill" (killed at once)
or "infinity"; the default is 5 s for workers and "infinity" for supervisors. `type`
defaults to "supervisor" when `start` is a supervisor class (as Elixir's `use Supervisor`
does) and "worker" otherwise. `significant` children drive the supervisor's
`auto_shutdown`. `options` are spawn options (`name`, `trap_exit`, `mailbox_limit`,
`overflow`). `backoff` (beyond OTP) delays this child's restarts exponentially.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Hashable, Mapping

from actors import GenServer, ThreadWorker

from .errors import BadCombination

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
SPAWN_OPTIONS = frozenset({"name", "trap_exit", "mailbox_limit", "overflow"})

DEFAULT_WORKER_SHUTDOWN = 5.0
MAX_RESTARTS_LIMIT = 1_000_000  # the restart log is a deque of this many timestamps at most


def _positive_finite(value: Any) -> bool:
    return type(value) in (int, float) and value > 0 and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential restart delays with jitter, like Akka's `restartWithBackoff`.

    The n-th consecutive restart of a child (n = 0, 1, ...) waits
    `min(max_delay, min_delay * multiplier**n) * (1 + jitter * u)`, u uniform in [0, 1)
    from a seeded stream (the same run gives the same delays). The count starts over once
    the child has run `reset_after` seconds (default `(min_delay + max_delay) / 2`).
    """

    min_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if not _positive_finite(self.min_delay):
            raise ValueError(f"Backoff.min_delay must be a positive number of seconds, got {self.min_delay!r}")
        if not _positive_finite(self.max_delay) or self.max_delay < self.min_delay:
            raise ValueError(f"Backoff.max_delay must be a number >= min_delay ({self.min_delay}), "
                             f"got {self.max_delay!r}")
        if not _positive_finite(self.multiplier) or self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier!r}")
        if type(self.jitter) not in (int, float) or not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be between 0 and 1, got {self.jitter!r}")
        if self.reset_after is None:
            object.__setattr__(self, "reset_after", (self.min_delay + self.max_delay) / 2)
        elif not _positive_finite(self.reset_after):
            raise ValueError(f"Backoff.reset_after must be a positive number of seconds, got {self.reset_after!r}")

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        """Seconds before restart number `attempt` (0-based); `rand()` is in [0, 1)."""
        assert attempt >= 0
        base = self.max_delay
        if attempt < 64:  # beyond this the power overflows any sane max_delay anyway
            base = min(self.max_delay, self.min_delay * self.multiplier ** attempt)
        return base * (1.0 + self.jitter * rand())


def _check_start(start: Any) -> None:
    if isinstance(start, type) and issubclass(start, (GenServer, ThreadWorker)):
        return
    if inspect.iscoroutinefunction(start):
        return
    raise TypeError(f"ChildSpec.start must be a GenServer subclass, an `async def body(proc, ...)` "
                    f"function or a ThreadWorker subclass, not {start!r}")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a supervisor starts and how it treats the child; see the module docstring."""

    id: Hashable
    start: Any
    args: tuple = ()
    restart: str = "permanent"
    shutdown: float | str = None  # type: ignore[assignment]  # None: the type's default, set at init
    type: str = None  # type: ignore[assignment]  # None: derived from `start` at init
    significant: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError:
            raise TypeError(f"ChildSpec.id must be hashable, got {self.id!r}") from None
        _check_start(self.start)
        if not isinstance(self.args, (tuple, list)):
            raise TypeError(f"ChildSpec.args must be a tuple of start arguments, got {self.args!r}")
        object.__setattr__(self, "args", tuple(self.args))
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"ChildSpec.restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        kind = self.type
        if kind is None:
            kind = "supervisor" if getattr(self.start, "is_supervisor", False) else "worker"
            object.__setattr__(self, "type", kind)
        elif kind not in CHILD_TYPES:
            raise ValueError(f"ChildSpec.type must be one of {CHILD_TYPES}, got {kind!r}")
        shutdown = self.shutdown
        if shutdown is None:
            object.__setattr__(self, "shutdown",
                               "infinity" if kind == "supervisor" else DEFAULT_WORKER_SHUTDOWN)
        elif shutdown not in ("brutal_kill", "infinity") and not (
                (type(shutdown) is int or type(shutdown) is float) and shutdown >= 0 and math.isfinite(shutdown)):
            raise ValueError(f"ChildSpec.shutdown must be seconds >= 0, 'brutal_kill' or 'infinity', "
                             f"got {shutdown!r}")
        if type(self.significant) is not bool:
            raise TypeError(f"ChildSpec.significant must be True or False, got {self.significant!r}")
        if self.significant and self.restart == "permanent":
            raise BadCombination(f"child {self.id!r}: a permanent child cannot be significant "
                                 "(OTP bad_combination)")
        unknown = set(self.options) - SPAWN_OPTIONS
        if unknown:
            raise ValueError(f"ChildSpec.options has unknown spawn option(s) {sorted(unknown)}; "
                             f"known: {sorted(SPAWN_OPTIONS)}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise TypeError(f"ChildSpec.backoff must be a Backoff or None, got {self.backoff!r}")


def _check_intensity(owner: str, max_restarts: Any, max_seconds: Any) -> None:
    if type(max_restarts) is not int or not 0 <= max_restarts <= MAX_RESTARTS_LIMIT:
        raise ValueError(f"{owner}.max_restarts must be an int in 0..{MAX_RESTARTS_LIMIT}, got {max_restarts!r}")
    if not _positive_finite(max_seconds):
        raise ValueError(f"{owner}.max_seconds must be a positive number of seconds, got {max_seconds!r}")


@dataclass(frozen=True, slots=True)
class Flags:
    """A `Supervisor`'s flags. At most `max_restarts` restarts within `max_seconds`
    (Elixir's default, 3 in 5 s; OTP's is 1 in 5 s); one more and the supervisor
    terminates its children and exits with "shutdown"."""

    strategy: str = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    auto_shutdown: str = "never"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Flags.strategy must be one of {STRATEGIES}, got {self.strategy!r} "
                             "(use DynamicSupervisor for children added at run time)")
        _check_intensity("Flags", self.max_restarts, self.max_seconds)
        if self.auto_shutdown not in AUTO_SHUTDOWN:
            raise ValueError(f"Flags.auto_shutdown must be one of {AUTO_SHUTDOWN}, got {self.auto_shutdown!r}")


@dataclass(frozen=True, slots=True)
class DynamicFlags:
    """A `DynamicSupervisor`'s flags: intensity as for `Flags`; `max_children` (None: no
    limit); `extra_arguments` go before each child's own start arguments; `child`, the
    spec a `start_child` without one uses (OTP's simple_one_for_one), so a process of
    another node can start children with plain arguments only."""

    max_restarts: int = 3
    max_seconds: float = 5.0
    max_children: int | None = None
    extra_arguments: tuple = ()
    child: ChildSpec | None = None

    def __post_init__(self) -> None:
        _check_intensity("DynamicFlags", self.max_restarts, self.max_seconds)
        if self.max_children is not None and (type(self.max_children) is not int or self.max_children < 0):
            raise ValueError(f"DynamicFlags.max_children must be an int >= 0 or None, got {self.max_children!r}")
        if not isinstance(self.extra_arguments, (tuple, list)):
            raise TypeError(f"DynamicFlags.extra_arguments must be a tuple, got {self.extra_arguments!r}")
        object.__setattr__(self, "extra_arguments", tuple(self.extra_arguments))
        if self.child is not None and not isinstance(self.child, ChildSpec):
            raise TypeError(f"DynamicFlags.child must be a ChildSpec or None, got {self.child!r:.200}")
