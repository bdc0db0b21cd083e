"""What a failed call looks like to an HTTP client: one mapping, shared by every adapter.

    errors = HttpErrors({BadRequest: 400})        # the application's own exceptions, if any
    failure = errors.answer(exc)                  # Failure(status, message, retry_after)

| raised in the handler | status | why |
|---|---|---|
| `NoProc` for a registry key (`Registry.via(key)`) | 404 | a key names an entity (a user, a room) the request asked for: nobody holds it |
| `NoProc` for a registered name or a pid | 503 | a service of the app's own tree: it is between a crash and its restart, or its supervisor gave up |
| `CallTimeout` | 504 | no reply in time; the server may still be working on it |
| `CallExit` whose reason is `MailboxOverflow`; `SystemLimit`, `MaxChildren`, `CircuitOpen` | 503 | overloaded: a mailbox, node or supervisor limit, or a circuit that fails fast |
| `CallExit` (any other reason), any other kernel error | 500 | the server crashed on the request; its supervisor restarts it |

Every 503 and 429 carries `Retry-After: 1`. The kernel has no `Overloaded` exception of its
own: overload shows as the limits above; an application's own (the chat case study's
`Overloaded`, `RateLimited`) is mapped by passing it in `statuses`, most often to 503 or
429 (429 when the client itself went over its share). A client never sees a traceback nor
a crash reason (it may hold anyone's data): kernel errors get a fixed message; an
application exception listed in `statuses` is shown with its own message, cut to 200
characters, so raise those with messages meant for clients. Answers of 500 and above are
logged (logger "apps.embed"); the crash report itself is on logger "actors".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from actors import (
    ActorError,
    CallExit,
    CallTimeout,
    MailboxOverflow,
    NoProc,
    SystemLimit,
    Via,
)
from supervision import CircuitOpen, MaxChildren

log = logging.getLogger("apps.embed")

OVERLOAD = (SystemLimit, MaxChildren, CircuitOpen)
"""Limits that refuse work for now (with `CallExit` of a `MailboxOverflow`)."""
KERNEL = (ActorError, *OVERLOAD)
"""Every class the mapping answers for without being told."""
RETRY_AFTER = 1  # seconds, on every 429 and 503
MAX_MESSAGE = 200  # characters of an application exception's message shown to the client


@dataclass(frozen=True, slots=True)
class Failure:
    """An HTTP answer for a failed call."""

    status: int
    message: str
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    @property
    def body(self) -> dict[str, str]:
        return {"error": self.message}


class HttpErrors:
    """The mapping in the module docstring, plus `statuses`: the application's own
    exception classes and their statuses (4xx or 5xx), matched first, by class hierarchy."""

    def __init__(self, statuses: Mapping[type[BaseException], int] | None = None) -> None:
        statuses = dict(statuses or {})
        for cls, status in statuses.items():
            check_status(cls, status)
        self.statuses = statuses
        self.types: tuple[type[BaseException], ...] = (*KERNEL, *statuses)
        """Every class `answer` takes: what an adapter registers its handlers for."""

    def answer(self, exc: BaseException) -> Failure:
        """The HTTP answer for `exc`, one of `types`."""
        failure = self._answer(exc)
        if failure.status >= 500:
            log.warning("answered %d to a request that raised %s: %s", failure.status,
                        type(exc).__name__, exc)
        return failure

    def _answer(self, exc: BaseException) -> Failure:
        for cls in type(exc).__mro__:
            if cls in self.statuses:
                status = self.statuses[cls]
                return Failure(status, str(exc)[:MAX_MESSAGE] or cls.__name__,
                               RETRY_AFTER if status in (429, 503) else None)
        if not isinstance(exc, KERNEL):
            raise TypeError(f"HttpErrors answers for {[c.__name__ for c in self.types]}, "
                            f"not {type(exc).__name__}")
        if isinstance(exc, NoProc):
            if isinstance(exc.dest, Via):
                return Failure(404, "not found")
            return Failure(503, "a server is restarting or stopped; retry", RETRY_AFTER)
        if isinstance(exc, CallTimeout):
            return Failure(504, "no answer in time")
        if isinstance(exc, OVERLOAD) or isinstance(exc, CallExit) and isinstance(exc.reason, MailboxOverflow):
            return Failure(503, "overloaded; retry later", RETRY_AFTER)
        return Failure(500, "internal error")


def check_status(cls: object, status: object) -> None:
    """Raise naming what is wrong unless `cls` is an exception class and `status` an HTTP
    error status (400-599)."""
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"statuses maps exception classes to statuses, got the key {cls!r:.100}")
    if type(status) is not int or not 400 <= status <= 599:
        raise ValueError(f"the status for {cls.__name__} must be an int in 400..599, got {status!r:.100}")
