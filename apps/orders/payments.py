"""A payment provider, as an external service the order saga calls: its own supervision
tree, its own store, on its own node if need be. It behaves like a real one (Stripe's
API): every charge carries an idempotency key, and a request with a key the provider has
seen gets the first answer again (a capture, or the same decline) without charging
anything; the same key with other parameters is refused (`BadRequest`).

    bank = PaymentService(node, store, ProviderConfig(latency=(0.01, 0.3), error_rate=0.05))
    bank.start()
    receipt = node.run_until_complete(bank.charge(node, "alice", "order-1", 1999, "pm_card_visa", "order-1"))
    node.run_until_complete(bank.cancel(node, "alice", "order-1"))     # refunded

Tree (one_for_one):

    payments_sup
    ├─ payments.accounts   Entities of Account (key ("account", customer)): the charges
    │                      by idempotency key, captured | declined | refunded | canceled
    └─ payments.api        PaymentApi: validates, then answers after the provider's
                           latency; with `ProviderConfig` it also fails (503, nothing
                           done) and loses answers (the charge is done, the caller never
                           hears), drawn from a seeded stream

`cancel(key)` is what a saga's compensation calls: a captured charge is refunded; a key
the provider never saw is marked canceled, so a charge that arrives later with it (a
retry still in the network) is declined with code "canceled". A charge is never left
standing for an order that was called off, whatever order the messages arrive in.
Payment methods are Stripe's test ones: "pm_card_chargeDeclined..." are declined, any
other is captured.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from actors import GenServer, Node, NoReply, Process, seed_for
from storage import Entities, PersistentServer, Store, entity_call
from supervision import ChildSpec

from apps.common import TreeService

from .config import check_amount, check_ident, check_method
from .errors import BadRequest, Declined, Unavailable

DECLINES = {"pm_card_chargeDeclined": "generic_decline",
            "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
            "pm_card_chargeDeclinedExpiredCard": "expired_card"}
MAX_CHARGES = 10_000  # idempotency keys an account keeps (besides the retention)
RETENTION = 86_400.0  # seconds a key is kept (Stripe: 24 h)
MAX_PENDING = 100_000  # requests the api holds at once
_DONE, _REPLY = "$done", "$reply"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """How the simulated provider misbehaves: each answer comes after a latency drawn in
    `latency` (seconds); `error_rate` of requests fail at once with `Unavailable` (nothing
    done); `lost_rate` of them are done but never answered. Draws come from a stream
    seeded with `seed`."""

    latency: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.0
    lost_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.latency
        if not (type(lo) in (int, float) and type(hi) in (int, float) and 0 <= lo <= hi < math.inf):
            raise ValueError(f"ProviderConfig.latency must be (lo, hi) seconds, 0 <= lo <= hi, got {self.latency!r}")
        for name in ("error_rate", "lost_rate"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 <= value <= 1:
                raise ValueError(f"ProviderConfig.{name} must be a probability in [0, 1], got {value!r}")


class Account(PersistentServer):
    """A customer's charges, by idempotency key. `init(store, ("account", customer))`."""

    def initial_state(self) -> dict[str, Any]:
        return {"charges": {}, "count": 0}

    def handle_call(self, req: tuple, caller: Any) -> Any:
        tag, key = req[0], req[1]
        charge = self.state["charges"].get(key)
        if tag == "charge":
            return self._charge(key, charge, *req[2:])
        if tag == "cancel":
            return self._cancel(key, charge)
        if tag == "get":
            return None if charge is None else dict(charge)
        return BadRequest(f"account: unknown request {req!r:.200}")

    def _charge(self, key: Any, charge: dict | None, amount: int, method: str, order: Any) -> Any:
        if charge is None:
            code = DECLINES.get(method)
            charge = self._new(key, order, amount, method, "declined" if code else "captured", code)
        elif charge["status"] != "canceled" and (charge["amount"], charge["method"], charge["order"]) != (
                amount, method, order):
            return BadRequest(f"idempotency key {key!r} was used for another charge "
                              f"({charge['amount']} cents for order {charge['order']!r})")
        if charge["status"] in ("declined", "canceled"):
            return Declined(charge["code"])
        return {"id": charge["id"], "amount": charge["amount"], "status": charge["status"]}

    def _cancel(self, key: Any, charge: dict | None) -> Any:
        if charge is None:
            charge = self._new(key, None, 0, None, "canceled", "canceled")
        elif charge["status"] == "captured":
            charge["status"] = "refunded"
            charge["refunded_at"] = self.now()
        return {"id": charge["id"], "status": charge["status"]}

    def _new(self, key: Any, order: Any, amount: int, method: Any, status: str, code: str | None) -> dict:
        s = self.state
        s["count"] += 1
        now = self.now()
        charge = {"id": f"ch_{self.key[1]}_{s['count']}", "order": order, "amount": amount, "method": method,
                  "status": status, "code": code, "at": now, "refunded_at": None}
        charges = s["charges"]
        charges[key] = charge
        while len(charges) > MAX_CHARGES or charges[next(iter(charges))]["at"] < now - RETENTION:
            del charges[next(iter(charges))]
        return charge


class PaymentApi(GenServer):
    """The provider's front: `init(config, accounts)`; see the module docstring."""

    def init(self, config: ProviderConfig, accounts: str) -> None:
        self.config = config
        self.accounts = accounts
        self.rand = random.Random(seed_for(config.seed, "payments.api")).random
        self.pending = 0

    def handle_call(self, req: tuple, caller: Any) -> Any:
        if not isinstance(req, tuple) or not req or req[0] not in ("charge", "cancel", "get"):
            return BadRequest(f"payments: unknown request {req!r:.200}")
        try:
            customer = check_ident(req[1], "customer id")
            key = check_ident(req[2], "idempotency key")
            if req[0] == "charge":
                check_amount(req[3])
                check_method(req[4])
                check_ident(req[5], "order id")
        except (BadRequest, IndexError) as exc:
            return exc if isinstance(exc, BadRequest) else BadRequest(f"payments: malformed request {req!r:.200}")
        cfg = self.config
        fail, lose, delay = self.rand() < cfg.error_rate, self.rand() < cfg.lost_rate, self.rand()
        if fail and req[0] != "get":
            return Unavailable("the payment provider is unavailable (503); retry with the same key")
        if self.pending >= MAX_PENDING:
            return Unavailable(f"the payment provider has {MAX_PENDING} requests in flight; retry")
        self.pending += 1
        me, node = self.pid, self.node
        entity_call(node, self.accounts, ("account", customer), (req[0], key, *req[3:])).add_done_callback(
            lambda done: node.send(me, (_DONE, caller, done, lose and req[0] != "get",
                                        cfg.latency[0] + delay * (cfg.latency[1] - cfg.latency[0]))))
        return NoReply

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg and msg[0] == _DONE:
            _, caller, done, lose, delay = msg
            self.pending -= 1
            answer = done.exception() or done.result()
            if lose:
                return
            if delay > 0:
                self.send_after(delay, self.pid, (_REPLY, caller, answer))
            else:
                self.reply(caller, answer)
        elif type(msg) is tuple and msg and msg[0] == _REPLY:
            self.reply(msg[1], msg[2])
        else:
            super().handle_info(msg)


class PaymentService(TreeService):
    """The provider on one node; see the module docstring."""

    name = "payments_sup"
    api = "payments.api"
    accounts = "payments.accounts"

    def __init__(self, node: Node, store: Store, config: ProviderConfig | None = None, *,
                 max_restarts: int = 100) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or ProviderConfig()

    def children(self) -> list[ChildSpec]:
        return [ChildSpec("accounts", Entities, args=(self.store, Account, 60.0), options={"name": self.accounts}),
                ChildSpec("api", PaymentApi, args=(self.config, self.accounts), options={"name": self.api})]

    def charge(self, caller: Node | Process, customer: Any, key: Any, amount: int, method: str, order: Any) -> Any:
        """Charge `amount` cents; resolves to `{"id", "amount", "status"}` or raises `Declined`."""
        return self._call(caller, self.api, ("charge", customer, key, amount, method, order))

    def cancel(self, caller: Node | Process, customer: Any, key: Any) -> Any:
        """Refund the charge made with `key`, or make sure none will be: `{"id", "status"}`."""
        return self._call(caller, self.api, ("cancel", customer, key))

    def charge_of(self, caller: Node | Process, customer: Any, key: Any) -> Any:
        """The charge made with `key` (a dict), or None."""
        return self._call(caller, self.api, ("get", customer, key))
