"""A chat shard's stored state, as pure transitions (replayed on recovery: no clock, no I/O).

The state is one msgpack-able dict per shard:

- `inbox`: user -> `[seq, acked, items]`, the pending store of one user in order. Every
  item gets the next `seq` of its user; the device confirms cumulatively (`acked`), and
  confirmed items are removed. An item is `[seq, "m", msg_id, sender, payload]` (a message
  to the user) or `[seq, "r", msg_id, status, None]` (a receipt for one the user sent).
- `records`: msg_id -> `[sender, cid, to, status, delivered_at]` for messages stored here;
  kept after delivery for `retention` seconds so receipts and retried sends still find it.
- `dedup`: sender -> {client id -> msg_id}: a retried send is recognised, stored once.
- `outbox`: msg_id -> `[sender, status]`: receipts for senders homed on other shards, kept
  until that shard says it stored them (at most until the record is forgotten).
- `rstat`: msg_id -> `[status, t]`: the newest receipt put in a local sender's inbox, so a
  late or repeated receipt never moves a message back.
- `expiry`: `[t, kind, msg_id]` in time order: what to forget `retention` after `t`.
- `seen` (last seen, by user), `contacts`, `pushes` (push notification records), `gen` (the
  last message id assigned, so a restarted shard never assigns one again).

Events (lists): see the `E_*` constants. The shard batches confirmations and incoming
receipts, so `[E_CONFIRM, [[user, upto], ...], t]` and `[E_RECEIPTS, [[sender, msg_id,
status], ...], t]` each cover many messages. `apply` returns the receipts to forward to
other shards and the users whose inbox grew, for the shard process to act on. Journals
written before the batching (one user's confirm per event, `E_CONFIRM_ONE`) still
replay; an event kind it does not know (another version's) is refused by name.
"""
from __future__ import annotations

from typing import Any, Callable

from .receipts import DELIVERED, READ, SENT, advance

FORMAT = 1
E_STORE, E_CONFIRM, E_READ, E_RECEIPTS, E_ACKED, E_EXPIRE, E_SEEN, E_CONTACTS = (
    "m", "cs", "rd", "rc", "ok", "x", "s", "k")
E_CONFIRM_ONE = "c"  # [E_CONFIRM_ONE, user, upto, t]: one user's, as journals before batching hold


def empty(shard: int, shards: int) -> dict[str, Any]:
    """The state of a shard with nothing stored."""
    return {"format": FORMAT, "shard": shard, "shards": shards, "gen": -1, "inbox": {},
            "records": {}, "dedup": {}, "outbox": {}, "rstat": {}, "expiry": [], "seen": {},
            "contacts": {}, "pushes": []}


class Effects:
    """What an event asks the shard process to do: forward `receipts` ([sender, msg_id,
    status]) to other shards, push to the sessions of `users`."""

    __slots__ = ("receipts", "users")

    def __init__(self) -> None:
        self.receipts: list[list] = []
        self.users: list[Any] = []


class ShardBook:
    """Applies events to a shard state. `is_local(user)` says whether a user is homed on
    this shard (decided by the router, fixed for a deployment)."""

    def __init__(self, retention: float, max_pushes: int, is_local: Callable[[Any], bool]) -> None:
        self.retention = retention
        self.max_pushes = max_pushes
        self.is_local = is_local
        self._handlers = {kind: getattr(self, "_" + name) for kind, name in _HANDLERS.items()}

    def apply(self, state: dict[str, Any], event: list) -> Effects:
        handler = self._handlers.get(event[0])
        if handler is None:
            raise ValueError(f"unknown chat shard event {event[0]!r:.40} "
                             "(stored by another version of apps.chat?)")
        out = Effects()
        handler(state, event, out)
        return out

    # -- events ----------------------------------------------------------------------------

    def _store(self, state: dict, event: list, out: Effects) -> None:
        _, msg_id, sender, cid, to, payload, t, push = event
        assert msg_id > state["gen"], f"message id {msg_id} not after {state['gen']}"
        state["gen"] = msg_id
        state["records"][msg_id] = [sender, cid, to, SENT, None]
        state["dedup"].setdefault(sender, {})[cid] = msg_id
        self._append(state, to, ["m", msg_id, sender, payload], out)
        if push is not None:
            pushes = state["pushes"]
            pushes.append([to, push[0], push[1], msg_id, t])
            if len(pushes) > self.max_pushes:
                del pushes[:len(pushes) - self.max_pushes]

    def _confirm(self, state: dict, event: list, out: Effects) -> None:
        _, confirms, t = event
        records, expiry = state["records"], state["expiry"]
        for user, upto in confirms:
            box = state["inbox"][user]
            assert box[1] <= upto <= box[0], f"{user!r}: confirm {upto} outside {box[1]}..{box[0]}"
            items = box[2]
            done = upto - items[0][0] + 1 if items and items[0][0] <= upto else 0
            for item in items[:done]:
                if item[1] == "m":
                    record = records[item[2]]
                    if record[4] is None:
                        record[4] = t
                        expiry.append([t, "m", item[2]])
                    if advance(record[3], DELIVERED):
                        record[3] = DELIVERED
                        self._receipt(state, record[0], item[2], DELIVERED, t, out)
            del items[:done]
            box[1] = upto

    def _confirm_one(self, state: dict, event: list, out: Effects) -> None:
        _, user, upto, t = event
        self._confirm(state, [E_CONFIRM, [[user, upto]], t], out)

    def _read(self, state: dict, event: list, out: Effects) -> None:
        _, user, ids, t = event
        records = state["records"]
        for msg_id in ids:
            record = records.get(msg_id)
            if record is not None and advance(record[3], READ):
                assert record[2] == user, f"{user!r} read {msg_id}, sent to {record[2]!r}"
                record[3] = READ
                self._receipt(state, record[0], msg_id, READ, t, out)

    def _receipts(self, state: dict, event: list, out: Effects) -> None:
        for sender, msg_id, status in event[1]:
            self._local_receipt(state, sender, msg_id, status, event[2], out)

    def _acked(self, state: dict, event: list, out: Effects) -> None:
        outbox = state["outbox"]
        for msg_id, status in event[1]:
            entry = outbox.get(msg_id)
            if entry is not None and entry[1] <= status:
                del outbox[msg_id]

    def _expire(self, state: dict, event: list, out: Effects) -> None:
        horizon = event[1] - self.retention
        expiry, records, rstat = state["expiry"], state["records"], state["rstat"]
        done = 0
        for t, kind, msg_id in expiry:
            if t > horizon:
                break
            done += 1
            if kind == "m":
                sender, cid, *_ = records.pop(msg_id)
                state["outbox"].pop(msg_id, None)  # a receipt nobody took in that long: dropped
                cids = state["dedup"].get(sender, {})
                if cids.get(cid) == msg_id:  # else the client reused the id for a newer one
                    del cids[cid]
                    if not cids:
                        del state["dedup"][sender]
            else:
                entry = rstat.get(msg_id)
                if entry is not None and entry[1] <= horizon:  # else it changed since
                    del rstat[msg_id]
        del expiry[:done]

    def _seen(self, state: dict, event: list, out: Effects) -> None:
        state["seen"][event[1]] = event[2]

    def _contacts(self, state: dict, event: list, out: Effects) -> None:
        if event[2]:
            state["contacts"][event[1]] = list(event[2])
        else:
            state["contacts"].pop(event[1], None)

    # -- helpers ---------------------------------------------------------------------------

    def _append(self, state: dict, user: Any, item: list, out: Effects) -> None:
        box = state["inbox"].get(user)
        if box is None:
            box = state["inbox"][user] = [0, 0, []]
        box[0] += 1
        box[2].append([box[0], *item])
        if not out.users or out.users[-1] != user:
            out.users.append(user)

    def _receipt(self, state: dict, sender: Any, msg_id: int, status: int, t: float, out: Effects) -> None:
        if self.is_local(sender):
            self._local_receipt(state, sender, msg_id, status, t, out)
            return
        entry = state["outbox"].get(msg_id)
        if entry is None:
            state["outbox"][msg_id] = [sender, status]
        elif advance(entry[1], status):
            entry[1] = status
        out.receipts.append([sender, msg_id, status])

    def _local_receipt(self, state: dict, sender: Any, msg_id: int, status: int, t: float,
                       out: Effects) -> None:
        rstat = state["rstat"]
        entry = rstat.get(msg_id)
        if entry is not None and not advance(entry[0], status):
            return  # a repeat, or older than what the sender already has
        rstat[msg_id] = [status, t]
        state["expiry"].append([t, "r", msg_id])
        self._append(state, sender, ["r", msg_id, status, None], out)


_HANDLERS = {E_STORE: "store", E_CONFIRM: "confirm", E_CONFIRM_ONE: "confirm_one", E_READ: "read",
             E_RECEIPTS: "receipts", E_ACKED: "acked", E_EXPIRE: "expire", E_SEEN: "seen",
             E_CONTACTS: "contacts"}


def pending(state: dict[str, Any], user: Any) -> list[list]:
    """The user's undelivered items, oldest first."""
    box = state["inbox"].get(user)
    return box[2] if box is not None else []


def status_of(state: dict[str, Any], msg_id: int) -> int | None:
    """The receipt status of a message stored on this shard (None once forgotten)."""
    record = state["records"].get(msg_id)
    return record[3] if record is not None else None


__all__ = ["DELIVERED", "E_ACKED", "E_CONFIRM", "E_CONFIRM_ONE", "E_CONTACTS", "E_EXPIRE", "E_READ",
           "E_RECEIPTS", "E_SEEN", "E_STORE", "Effects", "READ", "SENT", "ShardBook", "empty", "pending",
           "status_of"]
