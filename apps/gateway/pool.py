"""One process per route: the route's circuit breaker and its bulkhead.

A request `("get", reply_to, ref, arg, answer_by)` is answered to `reply_to` as
`(RESULT, ref, kind, value)`, kind one of:

- "overloaded": `max_concurrent` calls are in flight already (the bulkhead is full);
- "circuit_open": the breaker refuses the call (it counts no failure);
- "ok" (value: the answer), after a call that succeeded; the answer goes to the cache;
- "rejected" (value: the error): the dependency refused the request itself (a
  ValueError or TypeError, HTTP's 4xx); that is an answer, not a failure;
- "error": the call failed (any other exception, or its process died);
- "timeout": no answer by `answer_by`; the call's process is killed.

Each call runs in its own process (Hystrix's command): spawned linked by the pool, which
traps exits and so is its supervisor (temporary children: a call is never restarted).
The breaker is `supervision.CircuitBreaker`, driven by hand (`allow`, `record_success`,
`record_failure`) around the calls: failures and timeouts count, refusals of the bulkhead
and of the breaker do not. Its state, with how often it opened and closed, is published
in the node table ("gateway.pool", route) under "breaker".
"""
from __future__ import annotations

from typing import Any

from actors import Exit, GenServer, packb
from supervision import CircuitBreaker
from supervision.breaker import CLOSED, OPEN

from .cache import NAME as CACHE, TABLE
from .config import Fetch, GatewayConfig, Route

RESULT = "$result"
_DONE, _EXPIRED = "$done", "$expired"


def pool_name(route: str) -> str:
    return f"gateway.pool.{route}"


def breaker_of(node: Any, route: str) -> tuple[str, int, int] | None:
    """(state, times opened, times closed) of the route's breaker, or None while its
    pool is not running (counts start over with each pool)."""
    table = node.table(("gateway.pool", route))
    return None if table is None else table.get("breaker")


async def command(proc: Any, pool: Any, fetch: Fetch, arg: Any) -> None:
    """One call to the dependency; its outcome goes to the pool."""
    try:
        value = await fetch(proc, arg)
    except Exception as exc:  # noqa: BLE001 - every failure is the pool's to count
        proc.send(pool, (_DONE, proc.pid, "error", exc))
        return
    proc.send(pool, (_DONE, proc.pid, "ok", value))


class Pool(GenServer):
    """`init(route, config)`; spawn it trapping exits. See the module docstring."""

    def init(self, route: Route, config: GatewayConfig) -> None:
        assert self.trap_exit, "a pool supervises its calls: spawn it with trap_exit=True"
        self.route = route
        self.limit = route.max_concurrent or config.max_concurrent
        self.breaker = CircuitBreaker(self.node, failure_threshold=config.failure_threshold,
                                      reset_timeout=config.reset_timeout, name=route.name)
        self.inflight: dict[Any, tuple] = {}  # call pid -> (reply_to, ref, arg, timer)
        self.counts = dict.fromkeys(("calls", "ok", "rejected", "errors", "timeouts", "overloaded",
                                     "short_circuited", "opened", "closed"), 0)
        self.table = self.node.new_table(("gateway.pool", route.name))
        self._publish()

    def handle_cast(self, msg: tuple) -> None:
        _, reply_to, ref, arg, answer_by = msg
        if len(self.inflight) >= self.limit:
            self.counts["overloaded"] += 1
            self.send(reply_to, (RESULT, ref, "overloaded", None))
            return
        before = self.breaker.state
        allowed = self.breaker.allow()
        self._moved(before)
        if not allowed:
            self.counts["short_circuited"] += 1
            self.send(reply_to, (RESULT, ref, "circuit_open", None))
            return
        self.counts["calls"] += 1
        pid = self.spawn_link(command, self.pid, self.route.fetch, arg)
        timer = self.send_after(max(0.0, answer_by - self.now()), self.pid, (_EXPIRED, pid))
        self.inflight[pid] = (reply_to, ref, arg, timer)

    def handle_call(self, req: tuple, caller: Any) -> Any:
        if req[0] == "stats":
            return {**self.counts, "state": self.breaker.state, "inflight": len(self.inflight)}
        return ValueError(f"{pool_name(self.route.name)}: unknown request {req!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Exit:
            entry = self.inflight.pop(msg.pid, None)
            if entry is not None:  # the call died before it reported
                self.cancel_timer(entry[3])
                self._end(entry, "error", msg.reason, success=False)
        elif type(msg) is tuple and msg[0] == _DONE:
            entry = self.inflight.pop(msg[1], None)
            if entry is not None:  # else it had timed out already
                self.cancel_timer(entry[3])
                self._done(entry, msg[2], msg[3])
        elif type(msg) is tuple and msg[0] == _EXPIRED:
            entry = self.inflight.pop(msg[1], None)
            if entry is not None:
                self.exit(msg[1], "kill")
                self._end(entry, "timeout", None, success=False)
        else:
            super().handle_info(msg)

    def _done(self, entry: tuple, kind: str, value: Any) -> None:
        if kind == "ok":
            self._end(entry, "ok", value, success=True)
            if self.route.cache:
                self._remember(entry[2], value)
        elif isinstance(value, (ValueError, TypeError)):  # the dependency answered: a bad request
            self._end(entry, "rejected", value, success=True)
        else:
            self._end(entry, "error", value, success=False)

    def _end(self, entry: tuple, kind: str, value: Any, success: bool) -> None:
        self.counts[{"ok": "ok", "rejected": "rejected", "error": "errors", "timeout": "timeouts"}[kind]] += 1
        before = self.breaker.state
        if success:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        self._moved(before)
        self.send(entry[0], (RESULT, entry[1], kind, value))

    def _remember(self, arg: Any, value: Any) -> None:
        try:
            blob = packb(value)
        except (TypeError, ValueError, OverflowError):
            return  # not storable: this answer has no fallback copy
        table = self.node.table(TABLE)
        if table is not None and table.get((self.route.name, arg)) != blob:
            self.cast(CACHE, ("put", self.route.name, arg, blob))

    def _moved(self, before: str) -> None:
        after = self.breaker.state
        if after != before:
            if after == OPEN:
                self.counts["opened"] += 1
            elif after == CLOSED:
                self.counts["closed"] += 1
            self._publish()

    def _publish(self) -> None:
        self.table.put("breaker", (self.breaker.state, self.counts["opened"], self.counts["closed"]))
