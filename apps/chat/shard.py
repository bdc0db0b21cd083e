"""A chat shard: the home of the users the ring places on it, as an event-sourced server.

It stores every message sent to its users (its pending store), pushes their items to
their sessions and takes their confirmations; it keeps their presence and contacts, and
forwards receipts to the shards of the senders. Every change is an event in LMDB
(`apps.chat.store` has the events, their pure transitions and the records a snapshot
saves): a reply or a push leaves only once the event is committed, so `sent` means
stored and a pushed item is never one a crash can lose.

Requests (calls answer a value, or an error object the client API raises):
- `("store", sender, to, cid, payload, preview)` -> message id. A repeat of (sender, cid)
  answers the first id and stores nothing. Refused with `Overloaded` when the recipient
  holds `max_pending` items or `max_pending_bytes`, and with `QuotaExceeded` when the
  sender's undelivered messages on this shard would pass `max_sender_bytes` or reach
  `max_sender_offline` offline recipients (see `apps.chat.config`).
- `("attach", user, session, outlet, device, again)` -> `(acked, seq, devices, new,
  linked)` (see `ChatService.attached`): the session's device (`outlet`) now gets the user's items (up to `window`
  unconfirmed, from its own position) and contacts' presence as frames
  (`apps.chat.protocol`), sent to it directly. A device not linked yet is linked (a
  stored event; `new`), starting where the user's first device is (see
  `apps.chat.store`), unless the user has `max_devices` linked: `QuotaExceeded`. An
  older session of the same device is closed ("replaced", by an exit signal that a
  lost message cannot leave unsaid: see `apps.chat.session`); the user's other devices
  stay. A session attaching `again` (its shard went down) is answered "replaced" if
  another session of its device is attached (that one is newer), and "unlinked" if its
  device was unlinked meanwhile. The shard links to the session (both trap exits): the
  session's end means the device is offline (the user, once it was its last), with a
  last seen time; the shard's end makes the session attach again. One link costs less
  than a monitor each way, and a node holds a million sessions. Sessions hear
  `("devices", n)` when another device of their user is linked: a user with several
  sends a copy of each message to all of them.
- `("read", user, ids)` -> "ok" once the read receipts are stored.
- `("presence_of", user, viewer)` -> `(status, last_seen)` if `user` lists `viewer` as
  a contact (or is the viewer), else `Forbidden`; `("contacts", user, list)`;
  `("pushes", user)` -> push notification records; `("pending", user)` -> items;
  `("devices", user)` -> `[[device, online, last_seen], ...]`; `("unlink", user,
  device)` -> "ok" once the device's state is dropped (its session is closed,
  "unlinked").
`store` and `read` come forwarded by a session with its device's caller: the answer goes
straight to the device.
Casts: `("confirm", user, device, upto)` (a lost one heals itself: the items come again
and are confirmed again), `("presence", user, status, session)`; between shards
`("receipts", from_shard, [[sender, msg_id, status(, to, payload)]])`, `("acked", [[msg_id, status]])`,
`("peer_presence", contact, user, status, last_seen)`.

Presence goes only between contacts both ways: a user's changes go to the contacts it
lists, and each contact's shard passes them on only if that contact lists the user too,
so nobody can push presence to someone who did not list them.

Batches: confirmations and incoming receipts are taken first and stored by a flush the
shard sends itself when it takes the first of a batch, so it runs after the messages
queued by then: one event (and one `receipts` cast per shard) for a whole batch instead
of one per message. No caller waits for them (they are casts): the flush delays only the
next window of items and the receipts, by a turn (a `read` stores the batch first, so a
device's `delivered` still goes before its `read`). A message is stored and answered in
its own turn: batched too, its answer waits a commit longer, which measured slower for
senders that wait for it. The sender's shard acknowledges the receipts it stored at its
next tick, one cast per shard for all of them (sooner once `ACK_BATCH` are due to one
shard): receipts come from every shard, so acknowledging each flush's would cost a cast
(a frame, between nodes) per receipt. A shard resends a receipt unacknowledged for two
ticks, longer than an acknowledgement waits. Acknowledgements from other shards are
stored at once, batched like confirmations, so that a receipt the sender's shard stored
is not sent again (a shard that crashed before storing one sends it again; the sender's
shard remembers the receipts it took `RECEIPT_MEMORY` times as long as any shard may
resend them, and acknowledges a repeat again). A crash
loses only what was taken and not stored, which heals like a lost message: the items
come again and are confirmed again, receipts are resent and the sender's shard
recognises repeats (receipts never go back).

Every `resend_after` seconds a tick resends what is stalled: items a session has not
confirmed since the last tick (go-back-N from the first unconfirmed one), receipts no
shard has acknowledged in two ticks (never one older than `retention`); acknowledges the
receipts it stored; and forgets records older than `retention`. It also marks the connected devices seen now and then (every quarter of
`device_expiry`, so a restart does not take them for gone) and unlinks the devices unseen
for `device_expiry`.
"""
from __future__ import annotations

import logging
from typing import Any

from actors import Exit, Pid
from storage import EventSourcedServer, LimitExceeded, Store

from apps.timeline.snowflake import Snowflake

from . import store as book
from .config import ChatConfig
from .errors import BadRequest, ChatError, Forbidden, Overloaded, QuotaExceeded
from .protocol import PRESENCE, check_contacts, check_message, check_name, push_record
from .router import Router
from .session import DISMISSED

log = logging.getLogger("apps.chat")
TICK = ("$chat.tick",)
FLUSH = ("$chat.flush",)
ACK_BATCH = book.EVENT_CHUNK  # stored receipts due to one shard that are acknowledged before the tick
SHOWN_DEVICES = 5  # device names an error message lists at most


class Shard(EventSourcedServer):
    """One chat shard; see the module docstring. Spawned as `(store, index, router)`."""

    def init(self, store: Store, index: int, router: Router) -> None:
        config = router.config
        assert 0 <= index < config.shards, (index, config.shards)
        self.index = index
        self.router = router
        self.config: ChatConfig = config
        self.snapshot_every = config.snapshot_every
        self.book = book.ShardBook(config.retention, config.max_push_records,
                                   lambda user: router.home(user) == index,
                                   self.put_record, self.delete_record,
                                   max_items=config.max_pending, max_bytes=config.max_pending_bytes)
        self._effects: book.Effects | None = None
        # Entries of two names and three numbers (a confirmation, a receipt without its
        # message...) that fit half a stored value, with room for the event around them.
        entry = 8 + 2 * (4 * config.max_id_len + 5) + 3 * 9
        self.small_chunk = max(1, min(book.EVENT_CHUNK, store.max_value_bytes // 2 // entry))
        self.trap_exit = True  # sessions are linked: their exits come as messages
        super().init(store, ("chat.shard", index))
        if (self.state["shard"], self.state["shards"]) != (index, config.shards):
            raise ValueError(f"stored chat shard {self.state['shard']} of {self.state['shards']} "
                             f"cannot be shard {index} of {config.shards}: the ring changed")
        if self._migrated:
            self.save_snapshot()  # saved at the end of init (a turn): the old snapshot as records
        self.gen = Snowflake(index, self.state["gen"])
        self.by_pid: dict[Pid, book.Device] = {}  # session -> its device (attached: see book.Device)
        self.status: dict[str, str] = {}  # online or away, while a device is attached; absent: offline
        self.outbox_sent: dict[int, float] = {}  # msg_id -> when its receipt last went out
        # Taken since the last flush (see _flush_batch): device -> [user, confirmed seq,
        # device name] (the keys hash by identity; a dict iterates in insertion order, so
        # nothing depends on it);
        # receipts from other shards, and what to acknowledge to each once they are
        # stored; their acknowledgements of ours (msg_id -> status). Stored receipts
        # wait for the tick to be acknowledged (`ack_due`: shard -> [[msg_id, status]]).
        self.confirms: dict[book.Device, list] = {}
        self.inflow: list[list] = []
        self.acks: dict[int, list[list]] = {}
        self.ack_due: dict[int, list[list]] = {}
        self.acked: dict[int, int] = {}
        self.flush_due = False
        self.send_after(config.resend_after, self.pid, TICK)

    def initial_state(self) -> dict[str, Any]:
        return book.empty_head(self.index, self.config.shards)

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        """The records of the last snapshot; a snapshot of the previous version (one
        value holding the whole shard) is converted, its records saved as init ends."""
        self._migrated = self.state.get("format") == 1
        if self._migrated:
            self.data = book.from_v1(self.state)
            for key, value in book.records_of(self.data):
                self.put_record(key, value)
            log.info("chat shard %d: converting its stored state to records", self.index)
        else:
            self.data = book.from_records(self.state, records)
        self.state = self.data["head"]

    def apply(self, event: list) -> None:
        self._effects = self.book.apply(self.data, event)

    def _persist(self, event: list) -> book.Effects:
        self.persist(event)
        effects, self._effects = self._effects, None
        return effects

    # -- requests --------------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        try:
            kind = request[0]
            if kind == "store":
                return self._store(*request[1:])
            if kind == "attach":
                return self._attach(*request[1:])
            if kind == "presence_of":
                return self._presence_of(self._local_user(request[1]), request[2])
            if kind == "contacts":
                return self._set_contacts(request[1], request[2])
            if kind == "pushes":
                user = self._local_user(request[1])
                return [{"title": p[1], "body": p[2], "msg_id": p[3], "at": p[4]}
                        for p in self.data["pushes"] if p[0] == user]
            if kind == "read":
                self._read(self._local_user(request[1]), request[2])
                return "ok"
            if kind == "pending":
                return [list(item) for item in book.pending(self.data, self._local_user(request[1]))]
            if kind == "devices":
                return self._devices(self._local_user(request[1]))
            if kind == "unlink":
                return self._unlink(self._local_user(request[1]), request[2])
        except ChatError as exc:
            return exc
        except LimitExceeded as exc:  # an event over the store's value limit: nothing was applied
            return BadRequest(f"chat shard {self.index} cannot store {request[0]!r:.20}: {exc}")
        except (TypeError, ValueError, IndexError) as exc:
            return BadRequest(f"chat shard {self.index} cannot take {request!r:.120}: {exc}")
        return BadRequest(f"chat shard {self.index} does not understand {request!r:.120}")

    def handle_cast(self, msg: Any) -> None:
        kind = msg[0]
        if kind == "confirm":
            self._take_confirm(msg[1], msg[2], msg[3])
        elif kind == "presence":
            _, user, status, session = msg
            dev = self.by_pid.get(session)
            if dev is not None and dev.user == user and status in PRESENCE[:2]:
                self.status[user] = status
                self._broadcast(user, status)
        elif kind == "receipts":
            self.inflow += msg[2]
            self.acks.setdefault(msg[1], []).extend([[r[1], r[2]] for r in msg[2]])
            self._flush_later()
        elif kind == "acked":
            outbox = self.data["outbox"]
            for msg_id, status in msg[1]:
                entry = outbox.get(msg_id)
                if entry is not None and entry[1] <= status and self.acked.get(msg_id, 0) < status:
                    self.outbox_sent.pop(msg_id, None)
                    self.acked[msg_id] = status
            if self.acked:
                self._flush_later()
        elif kind == "peer_presence":
            self._tell_contact(*msg[1:])
        else:
            log.warning("chat shard %d dropped an unknown cast %.120r", self.index, msg)

    def handle_info(self, msg: Any) -> None:
        if msg == FLUSH:
            self._flush_batch()
        elif msg == TICK:
            self._tick()
        elif type(msg) is Exit:
            self._session_down(msg.pid)
        else:
            super().handle_info(msg)

    # -- storing and delivering --------------------------------------------------------------

    def _local_user(self, user: Any) -> str:
        check_name("user", user, self.config)
        if self.router.home(user) != self.index:
            raise BadRequest(f"user {user!r} lives on chat shard {self.router.home(user)}, not "
                             f"{self.index} (a client with another ring configuration?)")
        return user

    def _store(self, sender: str, to: str, cid: Any, payload: bytes, preview: str, echo: bool = False) -> int:
        check_name("sender", sender, self.config)
        check_message(to, cid, payload, preview, self.config)
        self._local_user(to)
        dup = self.data["dedup"].get(sender, {}).get(cid)
        if dup is not None:
            return dup  # a client retry: stored once, acknowledged again
        self._check_room(sender, to, len(payload))
        now = self.now()
        msg_id = self.gen.next(now)
        push = None if to in self.status else push_record(sender, preview, self.config)
        event = [book.E_STORE, msg_id, sender, cid, to, payload, now, push]
        if echo is True:  # the sender has other devices: they get a copy
            event.append(True)
        self._act(self._persist(event))
        return msg_id

    def _check_room(self, sender: str, to: str, size: int) -> None:
        """Refuse a message the recipient's pending store or the sender's quotas on this
        shard cannot take (see `apps.chat.config`). Items some device has taken do not
        count: they make room (see `apps.chat.store`)."""
        config = self.config
        box = self.data["inbox"].get(to)
        if box is not None:
            if box[0] - box[1] >= config.max_pending:
                raise Overloaded(f"{to!r} has {box[0] - box[1]} undelivered items (max_pending); retry later")
            if box[3] + size > config.max_pending_bytes:
                raise Overloaded(f"{to!r} has {box[3]} bytes of undelivered messages; this one would "
                                 f"pass max_pending_bytes ({config.max_pending_bytes}); retry later")
        entry = self.data["senders"].get(sender)
        if entry is None:
            return
        held, sent = entry
        if held + size > config.max_sender_bytes:
            raise QuotaExceeded(f"{sender!r} has {held} bytes of messages not yet delivered on chat "
                                f"shard {self.index}; this one would pass max_sender_bytes "
                                f"({config.max_sender_bytes}); retry once they are delivered")
        if to not in sent and to not in self.status:
            offline = sum(1 for user in sent if user not in self.status)
            if offline >= config.max_sender_offline:
                raise QuotaExceeded(f"{sender!r} has messages waiting for {offline} offline users on "
                                    f"chat shard {self.index} (max_sender_offline); retry once they "
                                    "are delivered")

    def _attach(self, user: str, session: Pid, outlet: Pid, device: str, again: bool) -> Any:
        self._local_user(user)
        check_name("device", device, self.config)
        dev = book.device_of(self.data, user, device)
        if again and dev is not None and dev.session not in (None, session):
            return "replaced"
        new = dev is None
        if new:
            if again:
                return "unlinked"  # dropped while its session was away: it links again
            dev = self._link(user, device)
        if dev.session not in (None, session):  # the device connected again: its older session goes
            self._dismiss(dev.session, "replaced")
            del self.by_pid[dev.session]
            dev.session = None
        now = self.now()
        if dev.session is None:
            self.link(session)  # a session already gone: its Exit(noproc) comes as a message
            dev.session = session
            self.by_pid[session] = dev
            if dev.seen <= now - self.config.device_expiry / 4:  # seen now (see _tick)
                self._persist([book.E_ALIVE, [[user, device]], now])
        dev.outlet = outlet
        box = self.data["inbox"].get(user)
        acked = max(dev.acked, book.floor(box)) if box is not None else dev.acked
        dev.pushed = acked  # a (re)attached session gets everything unconfirmed
        dev.stalled = None
        if self.status.get(user) != "online":
            self.status[user] = "online"
            self._broadcast(user, "online")
        if box is not None:
            self._push_to(dev, box)
        linked = len(self.data["devices"][user])
        if new:
            self._tell_devices(user, but=session)
        return acked, box[0] if box is not None else 0, linked, new, dev.linked

    def _link(self, user: str, device: str) -> book.Device:
        devs = self.data["devices"].get(user, ())
        if len(devs) >= self.config.max_devices:
            names = ", ".join(repr(dev.name) for dev in devs[:SHOWN_DEVICES])
            more = f" and {len(devs) - SHOWN_DEVICES} more" if len(devs) > SHOWN_DEVICES else ""
            raise QuotaExceeded(f"{user!r} has {len(devs)} devices linked ({names}{more}), the most "
                                f"max_devices allows: unlink one first (a device unseen for "
                                f"{self.config.device_expiry:g} s is unlinked by itself)")
        self._act(self._persist([book.E_LINK, user, device, self.now()]))
        return self.data["devices"][user][-1]

    def _tell_devices(self, user: str, but: Pid) -> None:
        """Tell the user's sessions (but the one that knows) how many devices it has linked
        (once a device is linked: copies are dropped, if need be, where they are stored)."""
        devs = self.data["devices"].get(user, ())
        for dev in devs:
            if dev.session not in (None, but):
                self.cast(dev.session, ("devices", len(devs)))

    def _dismiss(self, session: Pid, reason: str) -> None:
        """Tell an attached session it is no longer (`reason`: "replaced", "unlinked"), by
        an exit signal, keeping the link: a cast may be lost, and a signal only with the
        connection, which the link then reports to the session ("noconnection": it
        attaches again, and hears it then). Its exit later comes here as a stranger's."""
        self.exit(session, (DISMISSED, reason))

    def _detach(self, dev: book.Device) -> bool:
        """Forget an attached device's session (gone, or dismissed); True if it was its
        user's last."""
        del self.by_pid[dev.session]
        dev.session = dev.outlet = None
        if any(other.session is not None for other in self.data["devices"][dev.user]):
            return False
        self.status.pop(dev.user, None)
        return True

    def _push(self, user: str) -> None:
        """Send each of the user's attached devices the items after those already pushed
        to it, within its window."""
        devs = self.data["devices"].get(user)
        if devs:
            box = self.data["inbox"].get(user)
            if box is not None:
                for dev in devs:
                    if dev.session is not None:
                        self._push_to(dev, box)

    def _push_to(self, dev: book.Device, box: list) -> None:
        items = box[2]
        if not items:
            return
        first = items[0][0]
        acked = dev.acked if dev.acked >= first else first - 1
        start = max(dev.pushed, acked) + 1
        end = min(box[0], acked + self.config.window)
        if start > end:
            return
        self.send(dev.outlet, ("items", items[start - first:end - first + 1], acked))
        dev.pushed = end

    def _take_confirm(self, user: str, device: str, upto: int) -> None:
        box = self.data["inbox"].get(user)
        if box is None:
            return
        for dev in self.data["devices"].get(user, ()):
            if dev.name == device:
                break
        else:
            return  # a device unlinked meanwhile
        taken = self.confirms.get(dev)
        if taken is not None and upto <= taken[1]:
            return  # taken already
        if upto <= box[1]:  # some device has these: news only to a device behind it
            items = box[2]
            if upto <= dev.acked or upto <= (items[0][0] - 1 if items else box[0]):
                return  # below its position: a repeat
        elif upto > box[0]:
            log.warning("chat shard %d: %r (%r) confirmed item %d, but only %d exist; ignored",
                        self.index, user, device, upto, box[0])
            return
        if taken is None:
            self.confirms[dev] = [user, upto, device]  # as the stored event has it
        else:
            taken[1] = upto
        self._flush_later()

    def _chunks(self, entries: list, sized: bool = False) -> list[list]:
        """`entries` in pieces that are each one stored event: cut by size if `sized` (they
        may carry messages: see `apps.chat.store.chunks`), else by count (names and
        numbers only: `small_chunk` of them fit)."""
        if sized:
            return book.chunks(entries, self.store.max_value_bytes // 2)
        n = self.small_chunk
        return [entries[i:i + n] for i in range(0, len(entries), n)]

    def _flush_later(self) -> None:
        """Have _flush_batch run after the messages queued now (one flush per batch)."""
        if not self.flush_due:
            self.flush_due = True
            self.send(self.pid, FLUSH)

    def _flush_batch(self) -> None:
        """Store the confirmations and receipts taken since the last flush, one event each
        for the whole batch; then push, forward and acknowledge (what leaves once they
        are stored)."""
        self.flush_due = False
        now = self.now()
        if self.confirms:
            confirms, self.confirms = self.confirms, {}
            for chunk in self._chunks(list(confirms.values())):
                self._act(self._persist([book.E_CONFIRM, chunk, now]))
            inbox = self.data["inbox"]
            for dev in confirms:
                if dev.session is not None:  # (None too once unlinked)
                    dev.stalled = None
                    self._push_to(dev, inbox[dev.user])
        if self.inflow:
            inflow, acks, self.inflow, self.acks = self.inflow, self.acks, [], {}
            rstat, home = self.data["rstat"], self.router.home
            news = [r for r in inflow
                    if home(r[0]) == self.index and (r[1] not in rstat or rstat[r[1]][0] < r[2])]
            for chunk in self._chunks(news, max(map(len, news), default=0) > 3):  # copies: by size
                self._act(self._persist([book.E_RECEIPTS, chunk, now]))
            due = self.ack_due
            for shard, done in acks.items():
                waiting = due.setdefault(shard, [])
                waiting += done
                if len(waiting) >= ACK_BATCH:
                    self._acknowledge(shard)
        if self.acked:
            outbox = self.data["outbox"]
            done = [[msg_id, status] for msg_id, status in self.acked.items()
                    if msg_id in outbox and outbox[msg_id][1] <= status]
            self.acked = {}
            for chunk in self._chunks(done):
                self._persist([book.E_ACKED, chunk])

    def _acknowledge(self, shard: int) -> None:
        """Tell `shard` which of its receipts are stored here (once they are: the cast
        leaves with this turn's commit, after theirs; a lost one makes the peer resend)."""
        done = self.ack_due.pop(shard)
        peer = self.router.shard(shard)
        if peer is not None:
            self.cast(peer, ("acked", done))

    def _read(self, user: str, ids: list[int]) -> None:
        if self.confirms:  # the device's confirmation came first: its `delivered` goes first
            self._flush_batch()
        records = self.data["records"]
        news, others = [], []
        for msg_id in dict.fromkeys(ids):  # each id once, however often it is named
            record = records.get(msg_id)
            if record is None or record[3] == book.READ:
                continue  # forgotten after retention, or already read (on this device or another)
            if record[2] != user:
                others.append(msg_id)
                continue
            news.append(msg_id)
        if others:  # one line per request, not per id
            log.warning("chat shard %d: %r read %d message(s) sent to others, such as %d (sent to %r); ignored",
                        self.index, user, len(others), others[0], records[others[0]][2])
        if news:
            self._act(self._persist([book.E_READ, user, news, self.now()]))

    def _act(self, effects: book.Effects) -> None:
        for user in effects.users:
            self._push(user)
        if effects.receipts:
            self._forward(effects.receipts)

    def _forward(self, receipts: list[list]) -> None:
        """Send receipts to the shards of their senders, one cast per shard."""
        now = self.now()
        by_shard: dict[int, list[list]] = {}
        for receipt in receipts:
            by_shard.setdefault(self.router.home(receipt[0]), []).append(receipt)
            self.outbox_sent[receipt[1]] = now
        for shard, batch in by_shard.items():
            pid = self.router.shard(shard)
            if pid is not None:
                self.cast(pid, ("receipts", self.index, batch))

    # -- devices ----------------------------------------------------------------------------------

    def _devices(self, user: str) -> list[list]:
        return [[dev.name, dev.session is not None, dev.seen] for dev in self.data["devices"].get(user, ())]

    def _unlink(self, user: str, device: Any) -> str:
        check_name("device", device, self.config)
        dev = book.device_of(self.data, user, device)
        if dev is None:
            names = ", ".join(repr(dev.name) for dev in self.data["devices"].get(user, ())[:SHOWN_DEVICES])
            raise BadRequest(f"{user!r} has no device {device!r} linked (linked: {names or 'none'})")
        if dev.session is not None:
            self._dismiss(dev.session, "unlinked")
            if self._detach(dev):
                self._persist([book.E_SEEN, user, self.now()])
                self._broadcast(user, "offline")
        self.confirms.pop(dev, None)  # (a device linked again under its name starts afresh)
        self._act(self._persist([book.E_UNLINK, [[user, device]]]))
        return "ok"

    # -- presence --------------------------------------------------------------------------------

    def _set_contacts(self, user: str, contacts: Any) -> str:
        self._local_user(user)
        self._persist([book.E_CONTACTS, user, check_contacts(user, contacts, self.config)])
        return "ok"

    def _presence_of(self, user: str, viewer: Any) -> tuple[str, float | None]:
        check_name("viewer", viewer, self.config)
        if viewer != user and viewer not in self.data["contacts"].get(user, ()):
            raise Forbidden(f"{user!r} shares presence with its contacts only, and {viewer!r} "
                            "is not one")
        return self.status.get(user, "offline"), self.data["seen"].get(user)

    def _broadcast(self, user: str, status: str) -> None:
        seen = self.data["seen"].get(user)
        for contact in self.data["contacts"].get(user, ()):
            home = self.router.home(contact)
            if home == self.index:
                self._tell_contact(contact, user, status, seen)
            else:
                pid = self.router.shard(home)
                if pid is not None:  # presence is news, not a record: lost if the shard is away
                    self.cast(pid, ("peer_presence", contact, user, status, seen))

    def _tell_contact(self, contact: str, user: str, status: str, seen: float | None) -> None:
        """Pass `user`'s presence to `contact`'s devices if `contact` lists `user` too."""
        if contact in self.status and user in self.data["contacts"].get(contact, ()):
            for dev in self.data["devices"][contact]:
                if dev.session is not None:
                    self.send(dev.outlet, ("presence", user, status, seen))

    def _session_down(self, pid: Pid) -> None:
        dev = self.by_pid.get(pid)
        if dev is None:
            return  # a replaced session, or a stranger's exit
        offline = self._detach(dev)
        self._persist([book.E_SEEN, dev.user, self.now(), dev.name, offline])
        if offline:
            self._broadcast(dev.user, "offline")

    # -- the tick ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.now()
        retention = self.config.retention
        expiry, rstat_expiry = self.data["expiry"], self.data["rstat_expiry"]
        if expiry and expiry[0][0] <= now - retention or \
                rstat_expiry and rstat_expiry[0][0] <= now - book.RECEIPT_MEMORY * retention:
            self._persist([book.E_EXPIRE, now])  # first: what is forgotten is not resent
        inbox = self.data["inbox"]
        alive, refresh = [], now - self.config.device_expiry / 4
        for dev in self.by_pid.values():  # every connected device, every tick: kept lean
            box = inbox.get(dev.user)
            if box is None:
                acked = dev.pushed
            else:  # max(dev.acked, book.floor(box)), without the calls
                items = box[2]
                low = items[0][0] - 1 if items else box[0]
                acked = dev.acked if dev.acked > low else low
            if dev.pushed <= acked:
                dev.stalled = None
            elif dev.stalled == acked:  # no progress for a whole tick: go back
                dev.pushed = acked
                self._push_to(dev, box)
            else:
                dev.stalled = acked
            if dev.seen <= refresh:
                alive.append([dev.user, dev.name])
        for chunk in self._chunks(alive):
            self._persist([book.E_ALIVE, chunk, now])
        self._expire_devices(now)
        for shard in list(self.ack_due):
            self._acknowledge(shard)
        horizon, oldest = now - 2 * self.config.resend_after, now - retention  # see the docstring
        due = [[entry[0], msg_id, entry[1], *entry[3:]] for msg_id, entry in self.data["outbox"].items()
               if self.outbox_sent.get(msg_id, horizon) <= horizon and entry[2] > oldest]
        if due:
            self._forward(due)
        self.send_after(self.config.resend_after, self.pid, TICK)

    def _expire_devices(self, now: float) -> None:
        """Unlink the devices unseen for `device_expiry` (a chunk of them a tick)."""
        horizon = now - self.config.device_expiry
        gone = []
        for dev in self.data["by_seen"]:
            if dev.seen > horizon or len(gone) == self.small_chunk:
                break
            if dev.session is None:
                gone.append([dev.user, dev.name])
                self.confirms.pop(dev, None)
        if gone:
            self._act(self._persist([book.E_UNLINK, gone]))
