"""A chat shard's stored state: records, and the pure transitions that change them
(replayed on recovery: no clock, no I/O).

A shard is an event-sourced server: every change is an event in its journal, and every
`snapshot_every` events it saves a small head (its state) and the records its events
changed since the last snapshot (see `storage.persistent`), never the whole shard. So no
stored value grows with traffic: each record is one user's, one message's or one
receipt's, bounded by the config (`apps.chat.config.check_storage` checks that every one
fits the store's `max_value_bytes`).

The head: `{"format": 2, "shard", "shards", "gen"}` (`gen`: the last message id
assigned, so a restarted shard never assigns one again). Records (key -> value):

- `("box", user)` -> `[seq, acked]`: the head of the user's pending store, saved when a
  confirmation moves `acked` (a recovered `seq` is at least its last item's). Every item
  gets the next `seq` of its user; `acked` is the highest seq one of its devices has
  confirmed (the messages up to it are delivered).
- `("item", user, seq)` -> `[seq, "m", msg_id, sender, payload]` (a message to the user),
  `[seq, "r", msg_id, status, None]` (a receipt for one the user sent), `[seq, "s",
  msg_id, to, payload]` (a message the user sent, copied to all its devices when it has
  several when the copy reaches its shard) or `[seq, "v", msg_id, sender, None]` (a message to the user was read on one
  of its devices, when it has several). Deleted once every linked device confirmed it.
- `("dev", user, device)` -> `[acked, seen, linked]`: a linked device (at most
  `max_devices` per user) with its own cumulative confirmation, when it was last seen
  (linked, disconnected, or still connected: refreshed) and when it was linked (which
  tells a device that was unlinked and linked again from one that was not). `acked` is saved only while the device
  is ahead of the user's slowest device: the slowest is at the oldest stored item, so a
  device's position is `max(acked, floor)` (`floor`: the seq before the oldest item,
  or `seq` when none is left), and a single-device user's confirmations write no device
  record. A device unlinked (by its user, or unseen for `device_expiry`) is deleted,
  and the items only it still needed with it. A new device starts at the box's `acked`:
  it gets what no device has taken yet, and everything after.
- `("msg", msg_id)` -> `[sender, cid, to, status, delivered_at]` for messages stored
  here; kept after delivery for `retention` seconds so receipts and retried sends still
  find it.
- `("out", msg_id)` -> `[sender, status, t]`, or `[sender, status, t, to, payload]` while
  it carries the message for the sender's devices: a receipt for a sender homed on
  another shard (made at `t`), kept until that shard says it stored it; never sent once
  older than `retention`.
- `("rcpt", msg_id)` -> `[status, t]`: the newest receipt put in a local sender's
  inbox (`sent` for a copy to its devices), so a late or repeated receipt never moves a
  message back. Kept for `RECEIPT_MEMORY` x `retention`: longer than any shard may
  resend it, whatever the clock skew between their nodes.
- `("seen", user)` -> last seen; `("contacts", user)` -> the users who see its
  presence; `("push", msg_id)` -> `[to, title, body, t]` (push notification records,
  the newest `max_push_records`).

A user's pending store holds at most `max_pending` items and `max_pending_bytes` of
payload: a message past them that no device has taken is refused (the shard checks),
and items a device has taken but a slower one has not are dropped, oldest first, to
make room (that device then misses them: its position jumps past them).

In memory (`empty()`), a dict: `head`; `inbox`: user -> `[seq, acked, items, bytes,
held]` (items in order; bytes: the payloads of the undelivered ones, after `acked`;
held: of the others); `devices`: user -> its `Device`s (a tuple, in link order); `records`, `outbox`,
`rstat` (its entries as tuples), `seen`, `contacts` as stored; `pushes`: `[to, title, body, msg_id, t]` oldest
first; and what is derived from them on recovery: `dedup` (sender -> {client id ->
msg_id}: a retried send is recognised), `senders` (sender -> [bytes, {recipient ->
[items, bytes]}] of its messages undelivered here: the per-sender quotas), `expiry` /
`rstat_expiry` (`(t, msg_id)`, what to forget when), `by_seen` (every `Device` as a key,
least recently seen first: what to expire). What is kept for every message through the
retention period and never changes is a tuple: the cyclic garbage collector stops
tracking a tuple of numbers at its first pass, where it would traverse a list at every
pass of its generation.

Events (lists): see the `E_*` constants. Confirmations and incoming receipts are batched,
so `[E_CONFIRM, [[user, upto, device], ...], t]` and `[E_RECEIPTS, [[sender, msg_id,
status(, to, payload)], ...], t]` each cover many messages (`chunks` cuts them to fit
a stored value). `apply` returns the receipts to forward to other shards
and the users whose inbox grew. A shard stored by the previous version (one snapshot
holding the whole state, `"format": 1`) is converted by `from_v1` and saved as records
at its first snapshot; its journal replays as it is (a confirmation naming no device,
from before devices, moves the box as a single device's does). An event kind this
version does not know (another version's) is refused by name.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterator

from storage import StorageError, Store

from .receipts import DELIVERED, READ, SENT, advance

FORMAT = 2
E_STORE, E_CONFIRM, E_READ, E_RECEIPTS, E_ACKED, E_EXPIRE, E_SEEN, E_CONTACTS = (
    "m", "cs", "rd", "rc", "ok", "x", "s", "k")
E_LINK, E_UNLINK, E_ALIVE = "dl", "du", "da"
"""[E_LINK, user, device, t]: a new device; [E_UNLINK, [[user, device], ...]]: devices
dropped; [E_ALIVE, [[user, device], ...], t]: connected devices seen now."""
E_CONFIRM_ONE = "c"  # [E_CONFIRM_ONE, user, upto, t]: one user's, as journals before batching hold
EVENT_CHUNK = 128  # entries of one batched event at most (and they fit a stored value: see `chunks`)
RECEIPT_MEMORY = 2  # a sender's shard remembers receipts this many retention periods
Stage = Callable[..., None]


def _no_stage(key: Any, value: Any = None, new: bool = False) -> None:
    """Staging for a state nobody saves (tests, reading a stored shard)."""


def empty_head(shard: int, shards: int) -> dict[str, Any]:
    return {"format": FORMAT, "shard": shard, "shards": shards, "gen": -1}


def empty(shard: int = 0, shards: int = 1, head: dict[str, Any] | None = None) -> dict[str, Any]:
    """The in-memory state of a shard with nothing stored (see the module docstring)."""
    return {"head": head if head is not None else empty_head(shard, shards), "inbox": {},
            "devices": {}, "by_seen": {}, "records": {}, "dedup": {}, "senders": {}, "outbox": {},
            "rstat": {}, "expiry": [], "rstat_expiry": [], "seen": {}, "contacts": {}, "pushes": []}


class Device:
    """A linked device: its stored `acked`, `seen` and `linked` (see the module docstring),
    and what the shard process keeps of it while it is connected, never stored: its
    `session` (None while offline), the `outlet` its frames go to, the highest seq
    `pushed` to it, and its position at the last tick while it had unconfirmed items
    (`stalled`). One object a device: a node holds a million of them."""

    __slots__ = ("user", "name", "acked", "seen", "linked", "session", "outlet", "pushed", "stalled")

    def __init__(self, user: Any, name: Any, acked: int, seen: float, linked: float) -> None:
        self.user = user
        self.name = name
        self.acked = acked
        self.seen = seen
        self.linked = linked
        self.session: Any = None
        self.outlet: Any = None
        self.pushed = 0
        self.stalled: int | None = None

    def record(self) -> list:
        """The stored value."""
        return [self.acked, self.seen, self.linked]

    def __repr__(self) -> str:
        return f"<Device {self.user!r:.40} {self.name!r:.40} acked={self.acked}>"


def device_of(state: dict[str, Any], user: Any, name: Any) -> Device | None:
    """`user`'s device `name`, or None if it is not linked."""
    for dev in state["devices"].get(user, ()):
        if dev.name == name:
            return dev
    return None


def floor(box: list) -> int:
    """The seq before the user's oldest stored item: what every device has confirmed."""
    items = box[2]
    return items[0][0] - 1 if items else box[0]


def position(state: dict[str, Any], user: Any, device: Any) -> int | None:
    """The seq up to which `device` of `user` has confirmed, or None if it is not linked."""
    dev = device_of(state, user, device)
    if dev is None:
        return None
    box = state["inbox"].get(user)
    return dev.acked if box is None else max(dev.acked, floor(box))


class Effects:
    """What an event asks the shard process to do: forward `receipts` ([sender, msg_id,
    status(, to, payload)]) to other shards, push to the sessions of `users`."""

    __slots__ = ("receipts", "users")

    def __init__(self) -> None:
        self.receipts: list[list] = []
        self.users: list[Any] = []


class ShardBook:
    """Applies events to a shard's state, staging every record it changes with `put(key,
    value, new)` / `delete(key)` (the shard's `put_record` / `delete_record`; `new` for a
    record made by this event). `is_local(user)` says whether a user is homed on this
    shard (decided by the router, fixed for a deployment). A user's pending store keeps at
    most `max_items` items and `max_bytes` of payload, as far as dropping items some
    device took makes room (see the module docstring); unbounded unless given."""

    def __init__(self, retention: float, max_pushes: int, is_local: Callable[[Any], bool],
                 put: Stage = _no_stage, delete: Callable[[Any], None] = _no_stage, *,
                 max_items: int = sys.maxsize, max_bytes: int = sys.maxsize) -> None:
        self.retention = retention
        self.max_pushes = max_pushes
        self.is_local = is_local
        self.put = put
        self.delete = delete
        self.max_items = max_items
        self.max_bytes = max_bytes
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
        if len(event) > 8:  # the sender has other devices: they get a copy
            _, msg_id, sender, cid, to, payload, t, push, echo = event
        else:
            _, msg_id, sender, cid, to, payload, t, push = event
            echo = False
        head = state["head"]
        assert msg_id > head["gen"], f"message id {msg_id} not after {head['gen']}"
        head["gen"] = msg_id
        record = state["records"][msg_id] = [sender, cid, to, SENT, None]
        self.put(("msg", msg_id), record, True)
        state["dedup"].setdefault(sender, {})[cid] = msg_id
        self._append(state, to, ["m", msg_id, sender, payload], out)
        _quota(state["senders"], sender, to, len(payload), 1)
        if echo:
            self._receipt(state, sender, msg_id, SENT, t, out, [to, payload])
        if push is not None:
            pushes = state["pushes"]
            pushes.append([to, push[0], push[1], msg_id, t])
            self.put(("push", msg_id), [to, push[0], push[1], t], True)
            while len(pushes) > self.max_pushes:
                self.delete(("push", pushes.pop(0)[3]))

    def _confirm(self, state: dict, event: list, out: Effects) -> None:
        """Each entry: a device confirmed up to `upto`. The items after the box's `acked`
        up to it are delivered (receipts for its messages), and those up to `lowest` (what
        every device has now) deleted; one pass for a single device, whose confirmation
        does both at once."""
        _, confirms, t = event
        inbox, devices, records, expiry, senders = (state["inbox"], state["devices"], state["records"],
                                                    state["expiry"], state["senders"])
        delete = self.delete
        for entry in confirms:
            user, upto = entry[0], entry[1]
            box = inbox[user]
            items = box[2]
            if not items:
                continue  # a repeat (the shard drops them, but a journal may hold one)
            first, acked = items[0][0], box[1]
            devs = devices.get(user, ())
            if len(entry) > 2:
                for dev in devs:
                    if dev.name == entry[2]:
                        break
                else:
                    continue  # unlinked after this confirmation was taken
                lowest = upto
            else:  # from before devices: the box moves as its one device's
                dev, lowest = None, max(upto, acked)
            if len(devs) > 1 or dev is None:
                for other in devs:
                    if other is not dev:
                        lowest = min(lowest, max(other.acked, first - 1))
            if first <= acked and lowest >= first:  # delivered before, kept for a slower device until now
                for item in items[:min(acked, lowest) + 1 - first]:
                    delete(("item", user, item[0]))
                    box[4] -= _size(item)
            if upto > acked:
                for item in items[acked + 1 - first:upto + 1 - first]:
                    kept = item[0] > lowest
                    if not kept:
                        delete(("item", user, item[0]))
                    if item[4] is None:
                        continue
                    size = len(item[4])
                    box[3] -= size
                    if kept:
                        box[4] += size
                    if item[1] != "m":
                        continue
                    _quota(senders, item[3], user, size, -1)
                    record = records[item[2]]
                    if record[4] is None:
                        record[4] = t
                        expiry.append((t, item[2]))
                    if advance(record[3], DELIVERED):
                        record[3] = DELIVERED
                        self._receipt(state, record[0], item[2], DELIVERED, t, out)
                    self.put(("msg", item[2]), record)
                box[1] = upto
                self.put(("box", user), box[:2])
            assert lowest <= box[1], f"{user!r}: items up to {lowest} to drop, {box[1]} delivered"
            if lowest >= first:
                del items[:lowest + 1 - first]
            if dev is not None and upto > lowest:  # ahead of a slower device: its own record
                dev.acked = upto
                self.put(("dev", user, dev.name), dev.record())

    def _confirm_one(self, state: dict, event: list, out: Effects) -> None:
        _, user, upto, t = event
        self._confirm(state, [E_CONFIRM, [[user, upto]], t], out)

    def _read(self, state: dict, event: list, out: Effects) -> None:
        _, user, ids, t = event
        records = state["records"]
        others = len(state["devices"].get(user, ())) > 1  # they learn it was read
        for msg_id in ids:
            record = records.get(msg_id)
            if record is not None and advance(record[3], READ):
                assert record[2] == user, f"{user!r} read {msg_id}, sent to {record[2]!r}"
                record[3] = READ
                self.put(("msg", msg_id), record)
                self._receipt(state, record[0], msg_id, READ, t, out)
                if others:
                    self._append(state, user, ["v", msg_id, record[0], None], out)

    def _receipts(self, state: dict, event: list, out: Effects) -> None:
        for receipt in event[1]:
            self._local_receipt(state, receipt[0], receipt[1], receipt[2], event[2], out,
                                receipt[3:] if len(receipt) > 3 else None)

    def _acked(self, state: dict, event: list, out: Effects) -> None:
        outbox = state["outbox"]
        for msg_id, status in event[1]:
            entry = outbox.get(msg_id)
            if entry is not None and entry[1] <= status:
                del outbox[msg_id]
                self.delete(("out", msg_id))

    def _expire(self, state: dict, event: list, out: Effects) -> None:
        now = event[1]
        horizon = now - self.retention
        records, outbox = state["records"], state["outbox"]
        done = _expired(state["expiry"], horizon)
        for _, msg_id in done:
            sender, cid, *_ = records.pop(msg_id)
            self.delete(("msg", msg_id))
            if outbox.pop(msg_id, None) is not None:  # a receipt nobody took in that long: dropped
                self.delete(("out", msg_id))
            cids = state["dedup"].get(sender, {})
            if cids.get(cid) == msg_id:  # else the client reused the id for a newer one
                del cids[cid]
                if not cids:
                    del state["dedup"][sender]
        rhorizon = now - RECEIPT_MEMORY * self.retention
        rstat = state["rstat"]
        for _, msg_id in _expired(state["rstat_expiry"], rhorizon):
            entry = rstat.get(msg_id)
            if entry is not None and entry[1] <= rhorizon:  # else it changed since
                del rstat[msg_id]
                self.delete(("rcpt", msg_id))

    def _seen(self, state: dict, event: list, out: Effects) -> None:
        user, t = event[1], event[2]
        if len(event) > 3:  # [E_SEEN, user, t, device, offline]: a device disconnected
            self._touch(state, user, event[3], t)
            if not event[4]:
                return  # another device is still connected: the user is not offline
        state["seen"][user] = t
        self.put(("seen", user), t)

    def _contacts(self, state: dict, event: list, out: Effects) -> None:
        if event[2]:
            contacts = state["contacts"][event[1]] = list(event[2])
            self.put(("contacts", event[1]), contacts)
        elif state["contacts"].pop(event[1], None) is not None:
            self.delete(("contacts", event[1]))

    def _link(self, state: dict, event: list, out: Effects) -> None:
        _, user, device, t = event
        assert device_of(state, user, device) is None, f"{user!r} {device!r} linked twice"
        box = state["inbox"].get(user)
        dev = Device(user, device, box[1] if box is not None else 0, t, t)
        state["devices"][user] = (*state["devices"].get(user, ()), dev)
        self.put(("dev", user, device), dev.record(), True)
        state["by_seen"][dev] = None

    def _unlink(self, state: dict, event: list, out: Effects) -> None:
        devices = state["devices"]
        for user, device in event[1]:
            dev = device_of(state, user, device)
            if dev is None:
                continue
            devs = devices[user] = tuple(d for d in devices[user] if d is not dev)
            self.delete(("dev", user, device))
            del state["by_seen"][dev]
            if not devs:
                del devices[user]
            box = state["inbox"].get(user)
            if box is not None:  # the items only it still needed go with it
                low = floor(box)
                self._drop(user, box, min((max(d.acked, low) for d in devs), default=box[1]))

    def _alive(self, state: dict, event: list, out: Effects) -> None:
        for user, device in event[1]:
            self._touch(state, user, device, event[2])

    # -- helpers ---------------------------------------------------------------------------

    def _append(self, state: dict, user: Any, item: list, out: Effects) -> None:
        box = state["inbox"].get(user)
        if box is None:
            box = state["inbox"][user] = [0, 0, [], 0, 0]
        box[0] += 1
        stored = [box[0], *item]
        items = box[2]
        items.append(stored)
        if item[3] is not None:
            box[3] += len(item[3])
        self.put(("item", user, box[0]), stored, True)
        if items[0][0] <= box[1] and (len(items) > self.max_items or box[3] + box[4] > self.max_bytes):
            self._make_room(user, box)  # (only items some device took can make room)
        if not out.users or out.users[-1] != user:
            out.users.append(user)

    def _make_room(self, user: Any, box: list) -> None:
        """Drop the oldest items some device took while the box is over its limits."""
        items, size, n = box[2], box[3] + box[4], 0
        while n < len(items) and items[n][0] <= box[1] and \
                (len(items) - n > self.max_items or size > self.max_bytes):
            size -= _size(items[n])
            n += 1
        if n:
            self._drop(user, box, items[n - 1][0])

    def _drop(self, user: Any, box: list, upto: int) -> None:
        """Delete the items up to seq `upto`: every device has them (or does without)."""
        items = box[2]
        done = 0
        for item in items:
            if item[0] > upto:
                break
            assert item[0] <= box[1], f"{user!r}: item {item[0]} dropped before any device took it"
            self.delete(("item", user, item[0]))
            box[4] -= _size(item)
            done += 1
        del items[:done]

    def _touch(self, state: dict, user: Any, device: Any, t: float) -> None:
        """`device` of `user` was seen at `t` (nothing if it is not linked)."""
        dev = device_of(state, user, device)
        if dev is None:
            return
        dev.seen = t
        self.put(("dev", user, device), dev.record())
        by_seen = state["by_seen"]
        del by_seen[dev]
        by_seen[dev] = None  # to the end: the order is the order of last seen

    def _receipt(self, state: dict, sender: Any, msg_id: int, status: int, t: float, out: Effects,
                 echo: list | None = None) -> None:
        if self.is_local(sender):
            self._local_receipt(state, sender, msg_id, status, t, out, echo)
            return
        entry = state["outbox"].get(msg_id)
        if entry is None:
            entry = state["outbox"][msg_id] = [sender, status, t] if echo is None else [sender, status, t, *echo]
            self.put(("out", msg_id), entry, True)
        else:
            if advance(entry[1], status):
                entry[1], entry[2] = status, t
            self.put(("out", msg_id), entry)
        out.receipts.append([sender, msg_id, status] if len(entry) == 3 else [sender, msg_id, status, *entry[3:]])

    def _local_receipt(self, state: dict, sender: Any, msg_id: int, status: int, t: float,
                       out: Effects, echo: list | None = None) -> None:
        rstat = state["rstat"]
        entry = rstat.get(msg_id)
        if entry is not None and not advance(entry[0], status):
            return  # a repeat, or older than what the sender already has
        if echo is not None and entry is None and len(state["devices"].get(sender, ())) > 1:
            # the message itself, for the sender's devices (its session may think it has
            # several after one was unlinked: the copy is decided here, where they are)
            self._append(state, sender, ["s", msg_id, echo[0], echo[1]], out)
        rstat[msg_id] = (status, t)
        self.put(("rcpt", msg_id), rstat[msg_id], entry is None)
        state["rstat_expiry"].append((t, msg_id))
        if status != SENT:
            self._append(state, sender, ["r", msg_id, status, None], out)


_HANDLERS = {E_STORE: "store", E_CONFIRM: "confirm", E_CONFIRM_ONE: "confirm_one", E_READ: "read",
             E_RECEIPTS: "receipts", E_ACKED: "acked", E_EXPIRE: "expire", E_SEEN: "seen",
             E_CONTACTS: "contacts", E_LINK: "link", E_UNLINK: "unlink", E_ALIVE: "alive"}


def _size(item: list) -> int:
    """The payload bytes of a stored item."""
    return len(item[4]) if item[4] is not None else 0


def _expired(entries: list[list], horizon: float) -> list[list]:
    """Remove and return the entries at or before `horizon` (the list is in time order)."""
    done = 0
    for t, _ in entries:
        if t > horizon:
            break
        done += 1
    out = entries[:done]
    del entries[:done]
    return out


def _quota(senders: dict, sender: Any, to: Any, size: int, sign: int) -> None:
    """A message of `size` bytes from `sender` to `to` entered (sign 1) or left (-1) the
    pending store."""
    entry = senders.get(sender)
    if entry is None:
        entry = senders[sender] = [0, {}]
    quota = entry[1].get(to)
    if quota is None:
        quota = entry[1][to] = [0, 0]
    entry[0] += sign * size
    quota[0] += sign
    quota[1] += sign * size
    if not quota[0]:
        del entry[1][to]
        if not entry[1]:
            del senders[sender]


# -- recovery ------------------------------------------------------------------------------------

def from_records(head: dict[str, Any], records: list[tuple[Any, Any]]) -> dict[str, Any]:
    """The in-memory state from the stored head and records (see the module docstring)."""
    state = empty(head=head)
    inbox, devices, items, linked = state["inbox"], state["devices"], [], []
    for key, value in records:
        kind = key[0]
        if kind == "item":
            items.append((key[1], value))
        elif kind == "box":
            inbox[key[1]] = [value[0], value[1], [], 0, 0]
        elif kind == "dev":
            linked.append(Device(key[1], key[2], *value))
        elif kind == "rcpt":
            state["rstat"][key[1]] = tuple(value)
        elif kind in _TABLES:
            state[_TABLES[kind]][key[1]] = value
        elif kind == "push":
            state["pushes"].append([value[0], value[1], value[2], key[1], value[3]])
        else:
            raise ValueError(f"unknown chat shard record {key!r:.80} (stored by another version?)")
    for user, item in sorted(items, key=lambda ui: ui[1][0]):
        box = inbox.get(user)
        if box is None:  # no confirmation yet
            box = inbox[user] = [0, 0, [], 0, 0]
        box[2].append(item)
        box[0] = max(box[0], item[0])
    for dev in sorted(linked, key=lambda dev: dev.linked):  # link order, as they were
        devices[dev.user] = (*devices.get(dev.user, ()), dev)
    for dev in sorted(linked, key=lambda dev: dev.seen):
        state["by_seen"][dev] = None
    state["pushes"].sort(key=lambda p: p[3])
    _derive(state)
    return state


_TABLES = {"msg": "records", "out": "outbox", "rcpt": "rstat", "seen": "seen", "contacts": "contacts"}


def _derive(state: dict[str, Any]) -> None:
    """What is not stored: duplicate detection, quotas, pending bytes and expiry lists."""
    records, dedup, senders = state["records"], state["dedup"], state["senders"]
    for msg_id in sorted(records):  # a client id reused later maps to the newer message
        record = records[msg_id]
        dedup.setdefault(record[0], {})[record[1]] = msg_id
        if record[4] is not None:
            state["expiry"].append((record[4], msg_id))
    for user, box in state["inbox"].items():
        for item in box[2]:
            size = _size(item)
            if item[0] <= box[1]:
                box[4] += size
                continue
            box[3] += size
            if item[1] == "m":
                _quota(senders, item[3], user, size, 1)
    state["expiry"].sort()
    state["rstat_expiry"] = sorted((entry[1], msg_id) for msg_id, entry in state["rstat"].items())


def records_of(state: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """Every record of an in-memory state, as they are stored."""
    for user, box in state["inbox"].items():
        if box[1]:
            yield ("box", user), box[:2]
        for item in box[2]:
            yield ("item", user, item[0]), item
    for user, devs in state["devices"].items():
        for dev in devs:
            yield ("dev", user, dev.name), dev.record()
    for kind, table in _TABLES.items():
        for key, value in state[table].items():
            yield (kind, key), list(value) if kind == "rcpt" else value  # (a tuple in memory)
    for to, title, body, msg_id, t in state["pushes"]:
        yield ("push", msg_id), [to, title, body, t]


def from_v1(old: dict[str, Any]) -> dict[str, Any]:
    """The in-memory state of a shard the previous version stored as one snapshot
    (format 1); its outbox entries, which had no time, count from their delivery."""
    assert old.get("format") == 1, old.get("format")
    state = empty(head={"format": FORMAT, "shard": old["shard"], "shards": old["shards"], "gen": old["gen"]})
    for user, (seq, acked, items) in old["inbox"].items():
        state["inbox"][user] = [seq, acked, items, 0, 0]
    records = state["records"]
    records.update(old["records"])
    state["outbox"] = {msg_id: [sender, status, (records.get(msg_id) or [None] * 5)[4] or 0.0]
                       for msg_id, (sender, status) in old["outbox"].items()}
    for name in ("seen", "contacts", "pushes"):
        state[name] = old[name]
    state["rstat"] = {msg_id: tuple(entry) for msg_id, entry in old["rstat"].items()}
    _derive(state)
    return state


def stored_shard(store: Store | None, index: int, shards: int, book: ShardBook) -> dict[str, Any] | None:
    """Shard `index`'s state as `store` has it (head and records, the journal after them
    replayed with `book`, which stages nothing), or None while the store is down or
    failing (a check looks again later)."""
    if store is None or store.closed or store.crashed:
        return None
    key = ("chat.shard", index)
    try:
        found = store.read(key)
        records = store.read_records(key)
    except StorageError:
        return None
    head = found[1] if found is not None and found[1] is not None else empty_head(index, shards)
    state = from_v1(head) if head["format"] == 1 else from_records(head, list(records.items()))
    for event in found[2] if found is not None else ():
        book.apply(state, event)
    return state


def check_fits(config: Any, max_value_bytes: int) -> None:
    """Raise ValueError naming the limits when `config` allows a stored value (a record
    or an event) larger than the store's `max_value_bytes`: a shard could then accept a
    request it cannot store."""
    name = 4 * config.max_id_len + 5  # msgpack str: up to 4 bytes a character, a 5-byte header
    num = 9
    message = 16 + 4 * num + 3 * name + config.max_payload + 5 + (name + 13) + 4 * config.push_body + 5
    largest = [
        (message, f"max_payload ({config.max_payload}), max_id_len ({config.max_id_len}) and "
                  f"push_body ({config.push_body}) allow a stored message of"),
        (16 + name + config.max_contacts * name, f"max_contacts ({config.max_contacts}) and "
                                                  f"max_id_len ({config.max_id_len}) allow a contact list of"),
    ]
    for size, what in largest:
        if size > max_value_bytes:
            raise ValueError(f"ChatConfig {what} up to {size} bytes, over the store's max_value_bytes "
                             f"({max_value_bytes}): lower them or raise max_value_bytes")


def chunks(entries: list, budget: int) -> list[list]:
    """`entries` (lists of strs, ints and bytes) in pieces of at most `EVENT_CHUNK`, each
    encoding to at most `budget` bytes (a larger entry alone): each piece is one stored
    event. A batch of messages' copies or long names is cut by size, and one entry fits
    whenever a message does (`check_fits`)."""
    out: list[list] = []
    chunk: list = []
    total = 0
    for entry in entries:
        size = 8
        for value in entry:  # an upper bound of the msgpack size: 4 bytes a character
            kind = type(value)
            size += 4 * len(value) + 5 if kind is str else len(value) + 5 if kind is bytes else 9
        if chunk and (len(chunk) == EVENT_CHUNK or total + size > budget):
            out.append(chunk)
            chunk, total = [], 0
        chunk.append(entry)
        total += size
    if chunk:
        out.append(chunk)
    return out


def pending(state: dict[str, Any], user: Any) -> list[list]:
    """The user's stored items (those some linked device has not confirmed), oldest first."""
    box = state["inbox"].get(user)
    return box[2] if box is not None else []


def status_of(state: dict[str, Any], msg_id: int) -> int | None:
    """The receipt status of a message stored on this shard (None once forgotten)."""
    record = state["records"].get(msg_id)
    return record[3] if record is not None else None


__all__ = ["DELIVERED", "EVENT_CHUNK", "E_ACKED", "E_ALIVE", "E_CONFIRM", "E_CONFIRM_ONE",
           "E_CONTACTS", "E_EXPIRE", "E_LINK", "E_READ", "E_RECEIPTS", "E_SEEN", "E_STORE", "E_UNLINK",
           "Device", "Effects", "FORMAT", "READ", "RECEIPT_MEMORY", "SENT", "ShardBook", "check_fits", "chunks",
           "device_of", "empty",
           "empty_head", "floor", "from_records", "from_v1", "pending", "position", "records_of",
           "status_of", "stored_shard"]
