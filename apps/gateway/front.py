"""The gateway's front: every client request comes here and is answered from here,
within its budget, whatever the dependencies do.

    ("get", client, route, arg, deadline) -> Answer | RateLimited | Overloaded | Unavailable | the dependency's refusal

1. Rate limit: each client has a token bucket (`config.burst` tokens, refilled at
   `config.rate` a second); a request without a token is refused with `RateLimited` and
   the seconds until the next token.
2. Routing: the request goes to the route's pool (breaker and bulkhead), which answers
   the front with the outcome of the call.
3. Deadline: the front answers at the latest at `answer_by = min(now + call_timeout,
   deadline - margin)`: with the live answer if it came, else with the fallback. A
   client that retries after the front restarted keeps its first deadline.
4. Fallback: the route's last good answer for that arg (`cache`), else its default,
   else `Overloaded` (the bulkhead was full) or `Unavailable`.

The buckets live in memory and are saved every `config.checkpoint_every` seconds (only
the changed ones, and a bucket full again is dropped) by the `Limits` process; a
restarted front loads them, so a crash does not hand every client a full bucket. (A
client may regain the tokens it took since the last save.) The front itself never
writes to the store: a slow or failing disk never holds up an answer.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from actors import GenServer, NoReply
from storage import EventSourcedServer, Store

from apps.common import stored_state

from .cache import cached
from .config import GatewayConfig, Route, refilled, take
from .errors import Overloaded, RateLimited, Unavailable
from .pool import RESULT, pool_name

LIMITS = "gateway.limits"
LIMITS_KEY = ("gateway", "limits")
_LATE, _CHECKPOINT = "$late", ("$checkpoint",)


class Answer(NamedTuple):
    """What a client gets: the value, and where it came from: "live" (the dependency
    answered), "cache" (its last good answer) or "default"; `reason` says why a fallback
    was used: "circuit_open", "overloaded", "timeout", "error" or "unavailable"."""

    route: str
    value: Any
    source: str
    reason: str | None = None


def apply_limits(state: dict, event: list) -> None:
    """Fold a checkpoint of buckets into the stored ones (None: the bucket is full again)."""
    for client, bucket in event[1].items():
        if bucket is None:
            state.pop(client, None)
        else:
            state[client] = bucket


class Limits(EventSourcedServer):
    """Saves the front's bucket checkpoints: `init(store, key)`; casts `("checkpoint", {client: bucket|None})`."""

    snapshot_every = 20

    def initial_state(self) -> dict:
        return {}

    def apply(self, event: list) -> None:
        apply_limits(self.state, event)

    def handle_cast(self, msg: tuple) -> None:
        self.persist(["buckets", msg[1]])


class Front(GenServer):
    """`init(store, config, routes)`; see the module docstring."""

    def init(self, store: Store, config: GatewayConfig, routes: dict[str, Route]) -> None:
        self.config = config
        self.routes = routes
        now = self.now()
        # Loaded without credit for the time the front was down (a clock may restart).
        saved = stored_state(store, LIMITS_KEY, dict, apply_limits) or {}
        self.buckets: dict[Any, list] = {client: [bucket[0], now] for client, bucket in saved.items()}
        self.dirty: dict[Any, None] = {}
        self.pending: dict[int, tuple] = {}  # ref -> (caller, route, arg, timer)
        self.serial = 0
        self.counts = dict.fromkeys(("requests", "live", "cache", "default", "refused", "rate_limited"), 0)
        self.send_after(config.checkpoint_every, self.pid, _CHECKPOINT)

    def handle_call(self, req: tuple, caller: Any) -> Any:
        if req[0] == "get":
            return self._get(caller, *req[1:])
        if req[0] == "stats":
            return {**self.counts, "pending": len(self.pending), "clients": len(self.buckets)}
        return ValueError(f"gateway.front: unknown request {req!r:.200}")

    def _get(self, caller: Any, client: Any, route: str, arg: Any, deadline: float) -> Any:
        cfg = self.config
        now = self.now()
        self.counts["requests"] += 1
        allowed, bucket, wait = take(self.buckets.pop(client, None), now, cfg.rate, cfg.burst)
        self.buckets[client] = bucket  # most recently used last
        self.dirty[client] = None
        if len(self.buckets) > cfg.max_clients:  # the least recently seen client starts over full
            del self.buckets[next(iter(self.buckets))]
        if not allowed:
            self.counts["rate_limited"] += 1
            return RateLimited(client, wait)
        answer_by = min(now + cfg.call_timeout, deadline - cfg.margin)
        pool = self.node.whereis(pool_name(route))
        if answer_by <= now or pool is None or len(self.pending) >= cfg.max_pending:
            reason = "timeout" if answer_by <= now else "unavailable" if pool is None else "overloaded"
            return self._fallback(route, arg, reason)
        self.serial += 1
        ref = self.serial
        timer = self.send_after(answer_by - now, self.pid, (_LATE, ref))
        self.pending[ref] = (caller, route, arg, timer)
        self.cast(pool, ("get", self.pid, ref, arg, answer_by))
        return NoReply

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg[0] == RESULT:
            _, ref, kind, value = msg
            entry = self.pending.pop(ref, None)
            if entry is not None:  # else answered already, at its deadline
                self.cancel_timer(entry[3])
                self.reply(entry[0], self._outcome(entry[1], entry[2], kind, value))
        elif type(msg) is tuple and msg[0] == _LATE:
            entry = self.pending.pop(msg[1], None)
            if entry is not None:
                self.reply(entry[0], self._fallback(entry[1], entry[2], "timeout"))
        elif msg == _CHECKPOINT:
            self._checkpoint()
            self.send_after(self.config.checkpoint_every, self.pid, _CHECKPOINT)
        else:
            super().handle_info(msg)

    def _outcome(self, route: str, arg: Any, kind: str, value: Any) -> Any:
        if kind == "ok":
            self.counts["live"] += 1
            return Answer(route, value, "live")
        if kind == "rejected":
            self.counts["refused"] += 1
            return value
        return self._fallback(route, arg, kind)

    def _fallback(self, route: str, arg: Any, reason: str) -> Any:
        spec = self.routes[route]
        if spec.cache:
            found, value = cached(self.node, route, arg)
            if found:
                self.counts["cache"] += 1
                return Answer(route, value, "cache", reason)
        if spec.default is not None:
            self.counts["default"] += 1
            return Answer(route, spec.default(arg), "default", reason)
        self.counts["refused"] += 1
        if reason == "overloaded":
            return Overloaded(f"route {route}: too many calls in flight, and no fallback")
        return Unavailable(f"route {route}: {reason}, and no fallback for {arg!r:.100}")

    def _checkpoint(self) -> None:
        """Send the buckets changed since the last checkpoint to `Limits`; forget the
        ones that are full again (None in the checkpoint)."""
        if not self.dirty or self.node.whereis(LIMITS) is None:
            return  # (kept for the next one)
        cfg, now = self.config, self.now()
        changed = {}
        for client in self.dirty:
            bucket = self.buckets.get(client)
            if bucket is None or refilled(bucket, now, cfg.rate, cfg.burst):
                self.buckets.pop(client, None)
                changed[client] = None
            else:
                changed[client] = list(bucket)
        self.dirty = {}
        self.cast(LIMITS, ("checkpoint", changed))
