"""Exceptions raised by the kernel. All derive from `ActorError`."""
from __future__ import annotations

from typing import Any


class ActorError(Exception):
    """Base class of every kernel error."""


# NoProc and CallExit keep their fields as `args` and format the message only when it is
# shown: a system under faults raises thousands that are caught and never printed.

class NoProc(ActorError):
    """The destination process does not exist (never did, or has exited)."""

    def __init__(self, dest: Any) -> None:
        super().__init__(dest)
        self.dest = dest

    def __str__(self) -> str:
        return f"no process {self.dest!r}"


class CallTimeout(ActorError, TimeoutError):
    """A call got no reply within its timeout. A late reply is dropped, never delivered."""

    def __init__(self, dest: Any, request: Any, timeout: float) -> None:
        # Formatted at once: a TimeoutError (an OSError) would take fields as errno and strerror.
        super().__init__(f"call to {dest!r} timed out after {timeout} s (request {request!r:.200})")
        self.dest, self.request, self.timeout = dest, request, timeout


class CallExit(ActorError):
    """The server exited before replying; `reason` is its exit reason."""

    def __init__(self, dest: Any, reason: Any) -> None:
        super().__init__(dest, reason)
        self.dest, self.reason = dest, reason

    def __str__(self) -> str:
        return f"{self.dest!r} exited during the call with reason {self.reason!r:.300}"


class CallingSelf(ActorError):
    """A process called itself: it could never answer, so this fails at once."""


class ReceiveTimeout(ActorError, TimeoutError):
    """`receive(timeout=...)` found no matching message in time."""


class MailboxOverflow(ActorError):
    """A process with `mailbox_limit` and `overflow="crash"` received one message too many."""


class SystemLimit(Exception):
    """A node limit (processes, timers, names, tables) was reached."""


class AlreadyRegistered(ActorError):
    """The name (or registry key) is taken; `pid` is its current owner."""

    def __init__(self, name: Any, pid: Any) -> None:
        super().__init__(f"{name!r} is already registered to {pid!r}")
        self.name, self.pid = name, pid


class RemoteError(ActorError):
    """An exception from another node of a type this node does not have (see
    `actors.codec`): `type_name` is its type's qualified name, `args` its args."""

    def __init__(self, type_name: str, *args: Any) -> None:
        super().__init__(type_name, *args)
        self.type_name = type_name


class StartError(ActorError):
    """A GenServer's `init` failed; `reason` is why. No process was left running."""

    def __init__(self, target: Any, reason: Any) -> None:
        super().__init__(f"{getattr(target, '__name__', target)} failed to start: {reason!r:.300}")
        self.target, self.reason = target, reason
