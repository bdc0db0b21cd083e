"""Chat as a simulated system (scenarios name it `chat`, or `"apps.chat.sim:ChatSystem"`).

Server nodes "chat1".. each run a `ChatService` on a real LMDB store (sync mode) and host
their share of the shards; node "phones" (spared by random faults) runs one phone per
user. A phone connects through its gateway node (its session may live on another node
than its home shard), keeps a heartbeat, sends messages to its contacts one at a time
(retrying an unacknowledged one with the same client id until it is acknowledged, then
the next), takes its items in seq order, confirms them, reads some, and now and then
goes offline for a while or goes silent until its session times out. While the workload
is off nothing new starts; phones reconnect, finish sends under way and confirm.

Checks:
- always: a receipt never moves back (each phone sees sent < delivered < read, each
  status at most once per message); no message is taken twice or stored twice; every
  acknowledged message not yet taken is in its recipient's stored pending store;
- eventually: every acknowledged message was taken by its recipient exactly once, each
  sender's messages to a recipient in the order they were acknowledged; every user's
  stored pending store is empty; every sender saw `delivered` for each of its messages
  and `read` for those read (within `retention` of being taken: the server forgets a
  delivered message's record after it, and a later read sends no receipt).
"""
from __future__ import annotations

from typing import Any

from actors import Node, NoProc, Pid, ReceiveTimeout
from sim.schema import Field
from sim.system import System, check
from supervision import ChildError

from apps.common import RETRYABLE, ServerNodes, ServerSystem, top_restarts

from . import store as book
from .config import ChatConfig
from .errors import BadRequest, ChatError
from .receipts import DELIVERED, NAMES, READ
from .router import HashRing
from .service import ChatService

TICK = 0.1
# Twice the simulator's default largest clock skew (2 s): between a message's delivery and
# its read, a server node's clock may go from one extreme to the other.
SKEW_MARGIN = 4.0


def _is_frame(msg: Any) -> bool:
    return type(msg) is tuple and bool(msg) and msg[0] in ("items", "closed", "presence", "room")


class _Phone:
    """What one user's phone remembers (its storage survives reconnects)."""

    __slots__ = ("user", "session", "last", "current", "next_cid", "to_read", "offline_until",
                 "silent_until", "next_beat", "wait_until", "receipts")

    def __init__(self, user: str) -> None:
        self.user = user
        self.session: Pid | None = None
        self.last = 0  # the seq of the last item taken
        self.current: tuple | None = None  # the message being sent: (to, cid, payload, preview)
        self.next_cid = 0
        self.to_read: list[tuple[int, str, float]] = []  # (msg_id, sender, taken at) to mark read
        self.offline_until = 0.0
        self.silent_until = 0.0
        self.next_beat = 0.0
        self.wait_until = 0.0  # backoff after a failed send
        self.receipts: dict[int, int] = {}  # msg_id -> newest status seen


class ChatSystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "servers": Field.int(2, 1, 16, "server nodes chat1.."),
        "shards": Field.int(8, 1, 1024, "chat shards, spread over the servers"),
        "heartbeat_timeout": Field.seconds(6.0, 0.5, 600.0, "a silent session is closed after this"),
        "heartbeat_check": Field.seconds(2.0, 0.1, 600.0, "sessions check their heartbeat this often"),
        "retention": Field.seconds(20.0, 1.0, 86_400.0, "delivered messages are forgotten after this"),
        "window": Field.int(16, 1, 10_000, "unconfirmed items pushed to a session at most"),
        "resend_after": Field.seconds(1.0, 0.05, 60.0, "stalled items and receipts go again after this"),
        "top_restarts": top_restarts(20),
    }
    workload_options = {
        "users": Field.int(16, 2, 10_000, "users, one phone each"),
        "contacts": Field.int(3, 1, 100, "contacts per user (whom it writes to, who see its presence)"),
        "rate": Field.float(1.0, 0.01, 1000.0, "messages per second per online phone"),
        "reads": Field.float(0.5, 0.0, 1.0, "fraction of received messages the user reads"),
        "offline": Field.float(0.05, 0.0, 10.0, "per second: chance an online phone goes offline a while"),
        "silent": Field.float(0.02, 0.0, 10.0, "per second: chance a phone stops heartbeating"),
        "beat": Field.seconds(1.5, 0.1, 600.0, "heartbeat period of a phone"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a phone's call timeout"),
        "backoff": Field.seconds(0.2, 0.0, 60.0, "mean wait before a retry"),
    }

    def setup(self) -> None:
        opts = self.config
        self.servers = [f"chat{i + 1}" for i in range(opts["servers"])]
        self.chat = ChatConfig(
            shards=opts["shards"], nodes=tuple(self.servers), heartbeat_timeout=opts["heartbeat_timeout"],
            heartbeat_check=min(opts["heartbeat_check"], opts["heartbeat_timeout"]),
            retention=opts["retention"], window=opts["window"], resend_after=opts["resend_after"],
            call_timeout=self.load["timeout"] / 2, snapshot_every=200)
        self.ring = HashRing(self.chat.shards)
        users = [f"u{i}" for i in range(self.load["users"])]
        self.users = users
        n = len(users)
        self.contacts = {u: [users[(i + k) % n] for k in range(1, min(self.load["contacts"], n - 1) + 1)]
                         for i, u in enumerate(users)}
        self.phones = {u: _Phone(u) for u in users}
        # The model: what was acknowledged and what each phone took, in order.
        self.acked: dict[tuple[str, Any], int] = {}  # (sender, cid) -> msg_id
        self.sent: dict[str, list[tuple[str, int]]] = {u: [] for u in users}  # sender -> [(to, id)]
        self.taken: dict[str, list[tuple[str, int]]] = {u: [] for u in users}  # user -> [(sender, id)]
        self.taken_ids: dict[int, str] = {}
        self.read: dict[int, str] = {}  # msg_id -> sender, for reads the server stored
        self.violations: list[str] = []
        self.counts = {"sent": 0, "acked": 0, "taken": 0, "receipts": 0, "reads": 0, "retries": 0,
                       "connects": 0, "closed": 0, "presence": 0}
        self.nodes = ServerNodes(self, self.servers, lambda node, store, resolve: ChatService(
            node, store, self.chat, resolve=resolve, max_restarts=opts["top_restarts"]))
        self.nodes.add()
        self.sim.add_node("phones", self._start_phones, targets=False)

    # -- phones ----------------------------------------------------------------------------------

    def _start_phones(self, node: Node) -> None:
        for i, user in enumerate(self.users):
            node.spawn(self._phone, user, i)

    def _gateway(self, index: int) -> ChatService | None:
        for k in range(len(self.servers)):  # its own gateway, else the next one up
            service = self.nodes.up(self.servers[(index + k) % len(self.servers)])
            if service is not None:
                return service
        return None

    async def _phone(self, proc: Any, user: str, index: int) -> None:
        try:
            await self._phone_loop(proc, user, index)
        except Exception as exc:  # a phone that crashes is a bug of the service's API (or ours)
            self.violations.append(f"phone {user} crashed: {exc!r}")
            raise

    async def _phone_loop(self, proc: Any, user: str, index: int) -> None:
        rng = self.sim.stream(f"workload/phone-{user}")
        phone = self.phones[user]
        load = self.load
        await self._set_contacts(proc, user, index, rng)
        while True:
            try:
                frame = await proc.receive(_is_frame, timeout=TICK)
            except ReceiveTimeout:
                frame = None
            if frame is not None:
                await self._frame(proc, phone, index, frame)
                continue
            now = proc.now()
            if now < phone.silent_until:
                continue  # no network: nothing goes out
            if phone.session is None:
                if now >= phone.offline_until:
                    await self._connect(proc, phone, index, rng)
                continue
            if self.workload_on and rng.random() < load["offline"] * TICK:
                await self._ask(proc, phone, index, "disconnect")
                phone.session = None
                phone.offline_until = now + rng.uniform(1.0, 5.0)
                continue
            if self.workload_on and rng.random() < load["silent"] * TICK:
                phone.silent_until = now + rng.uniform(1.0, 2.0) * self.chat.heartbeat_timeout
                continue
            if now >= phone.next_beat:
                if await self._ask(proc, phone, index, "heartbeat") is not None:
                    phone.next_beat = now + load["beat"]
            if phone.to_read and phone.session is not None:
                batch = phone.to_read[:50]
                if await self._ask(proc, phone, index, "read", [m for m, _, _ in batch]) is not None:
                    del phone.to_read[:len(batch)]
                    # A read the server answered once the message's record was forgotten
                    # (`retention` after its delivery) sends no receipt: expected only
                    # within it, less what clock skew can take off it.
                    kept = proc.now() - (self.chat.retention - SKEW_MARGIN)
                    self.read.update((m, sender) for m, sender, taken in batch if taken > kept)
                    self.counts["reads"] += len(batch)
            if phone.current is None and self.workload_on and rng.random() < load["rate"] * TICK:
                to = self.contacts[user][rng.below(len(self.contacts[user]))]
                phone.next_cid += 1
                cid = phone.next_cid
                phone.current = (to, cid, f"{user}>{to}#{cid}".encode(), f"message {cid} from {user}")
                self.counts["sent"] += 1
            if phone.current is not None and now >= phone.wait_until and phone.session is not None:
                await self._send(proc, phone, index, rng)

    async def _set_contacts(self, proc: Any, user: str, index: int, rng: Any) -> None:
        while True:
            service = self._gateway(index)
            try:
                if service is not None:
                    await service.set_contacts(proc, user, self.contacts[user])
                    return
            except (*RETRYABLE, ChatError):
                pass
            await proc.sleep(rng.uniform(0.0, 2.0 * self.load["backoff"]) + TICK)

    async def _connect(self, proc: Any, phone: _Phone, index: int, rng: Any) -> None:
        service = self._gateway(index)
        try:
            if service is None:
                raise NoProc("every chat node")
            phone.session = await service.connect(proc, phone.user, "phone", proc.pid)
            phone.next_beat = 0.0
            self.counts["connects"] += 1
        except (*RETRYABLE, ChildError, ChatError):
            phone.offline_until = proc.now() + rng.uniform(0.0, 2.0 * self.load["backoff"])

    async def _ask(self, proc: Any, phone: _Phone, index: int, what: str, *args: Any) -> Any:
        """One request to the phone's session; None if it failed (the session is then
        presumed gone: the phone connects again)."""
        service = self._gateway(index) or next(iter(self.nodes.services.values()))
        try:
            return await getattr(service, what)(proc, phone.session, *args)
        except RETRYABLE:
            phone.session = None
            return None
        except BadRequest as exc:
            self.violations.append(f"{phone.user}: {what} refused as a bad request: {exc}")
            return None
        except ChatError:  # the session is attaching to its shard: later
            return None

    async def _send(self, proc: Any, phone: _Phone, index: int, rng: Any) -> None:
        to, cid, payload, preview = phone.current
        service = self._gateway(index) or next(iter(self.nodes.services.values()))
        try:
            msg_id = await service.send(proc, phone.session, to, cid, payload, preview)
        except RETRYABLE:
            phone.session = None
            self.counts["retries"] += 1
            return
        except BadRequest as exc:
            self.violations.append(f"{phone.user}: a send was refused as a bad request: {exc}")
            phone.current = None
            return
        except ChatError:  # unavailable or overloaded: the same message again, later
            self.counts["retries"] += 1
            phone.wait_until = proc.now() + rng.uniform(0.0, 2.0 * self.load["backoff"])
            return
        key = (phone.user, cid)
        known = self.acked.get(key)
        if known is not None and known != msg_id:
            self.violations.append(f"{phone.user}'s message {cid} was stored twice: ids {known} and {msg_id}")
        if known is None:
            self.acked[key] = msg_id
            self.sent[phone.user].append((to, msg_id))
            self.counts["acked"] += 1
        phone.current = None

    async def _frame(self, proc: Any, phone: _Phone, index: int, frame: tuple) -> None:
        kind = frame[0]
        if kind == "closed":
            self.counts["closed"] += 1
            if phone.session is not None:  # which session closed? ask the current one
                await self._ask(proc, phone, index, "heartbeat")
            return
        if kind == "presence":
            self.counts["presence"] += 1
            return
        if kind != "items":
            return
        items, acked = frame[1], frame[2]
        if acked > phone.last:
            self.violations.append(f"{phone.user}: the server says items up to {acked} are confirmed, "
                                   f"but the phone took only up to {phone.last}")
            phone.last = acked
        confirm = False
        for item in items:
            if item[0] <= phone.last:
                confirm = True  # a repeat: our confirmation was lost, say it again
            if item[0] != phone.last + 1:
                continue  # a repeat, or after a gap: it comes again
            phone.last = item[0]
            confirm = True
            if item[1] == "m":
                self._take(phone, item[2], item[3], proc.now())
            else:
                self._receipt(phone, item[2], item[3])
        if confirm and phone.session is not None:
            await self._ask(proc, phone, index, "confirm", phone.last)

    def _take(self, phone: _Phone, msg_id: int, sender: str, now: float) -> None:
        if msg_id in self.taken_ids:
            self.violations.append(f"{phone.user} took message {msg_id} from {sender} twice")
            return
        self.taken_ids[msg_id] = phone.user
        self.taken[phone.user].append((sender, msg_id))
        self.counts["taken"] += 1
        if self.sim.stream(f"workload/reads-{phone.user}").random() < self.load["reads"]:
            phone.to_read.append((msg_id, sender, now))

    def _receipt(self, phone: _Phone, msg_id: int, status: int) -> None:
        self.counts["receipts"] += 1
        seen = phone.receipts.get(msg_id)
        if seen is not None and status <= seen:
            self.violations.append(f"{phone.user}: the receipt of message {msg_id} went from "
                                   f"{NAMES[seen]} to {NAMES[status]}")
            return
        phone.receipts[msg_id] = status

    # -- checks -----------------------------------------------------------------------------------

    def _stored_shards(self) -> dict[int, dict[str, Any]]:
        """The stored state of every shard whose node is up (records plus journal)."""
        out = {}
        for index in range(self.chat.shards):
            reader = book.ShardBook(self.chat.retention, self.chat.max_push_records,
                                    lambda user, index=index: self.ring.owner(user) == index,
                                    max_items=self.chat.max_pending, max_bytes=self.chat.max_pending_bytes)
            state = book.stored_shard(self.nodes.store(self.servers[index % len(self.servers)]), index,
                                      self.chat.shards, reader)
            if state is not None:  # else its node is down or its store failing: a later check looks
                out[index] = state
        return out

    @check("always")
    def receipts_forward_and_nothing_twice(self) -> str | None:
        """Receipts only move forward; no message is taken or stored twice."""
        return self.violations[0] if self.violations else None

    @check("always")
    def acknowledged_messages_are_stored(self) -> str | None:
        """Every acknowledged message is taken by its recipient or in its stored pending store."""
        shards = self._stored_shards()
        for sender, messages in self.sent.items():
            for to, msg_id in messages:
                if msg_id in self.taken_ids:
                    continue
                state = shards.get(self.ring.owner(to))
                if state is None:
                    continue  # its node is down
                if not any(item[2] == msg_id for item in book.pending(state, to)):
                    return (f"message {msg_id} from {sender} to {to} was acknowledged, but it is "
                            f"neither taken nor in the stored pending store of shard {self.ring.owner(to)}")
        return None

    @check("eventually")
    def delivered_exactly_once_in_order(self) -> str | None:
        """Every message was acknowledged, and taken once, in each sender's order."""
        for phone in self.phones.values():
            if phone.current is not None:
                return f"{phone.user}'s message {phone.current[1]} to {phone.current[0]} was never acknowledged"
        if not self.counts["acked"]:
            return "no message was acknowledged at all"
        for sender, messages in self.sent.items():
            for to, msg_id in messages:
                if self.taken_ids.get(msg_id) != to:
                    return f"message {msg_id} from {sender} to {to} was acknowledged but never taken"
        for user, taken in self.taken.items():
            last: dict[str, int] = {}
            order = {msg_id: i for i, (_, msg_id) in enumerate(self.sent_ids(user))}
            for sender, msg_id in taken:
                rank = order.get(msg_id)
                if rank is None:
                    return f"{user} took message {msg_id} from {sender}, which was never acknowledged"
                if rank < last.get(sender, -1):
                    return f"{user} took {sender}'s messages out of order (message {msg_id})"
                last[sender] = rank
        return None

    def sent_ids(self, user: str) -> list[tuple[str, int]]:
        """Every acknowledged message to `user`, in each sender's acknowledgement order."""
        return [(s, m) for s, messages in self.sent.items() for to, m in messages if to == user]

    @check("eventually")
    def pending_stores_drained(self) -> str | None:
        """Every user came online and confirmed: every stored pending store is empty."""
        shards = self._stored_shards()
        if len(shards) < self.chat.shards:
            return f"shards {sorted(set(range(self.chat.shards)) - set(shards))} are not up"
        for index, state in shards.items():
            for user, box in state["inbox"].items():
                if box[2]:
                    return (f"{user} still has {len(box[2])} items in the pending store of shard "
                            f"{index} (seq {box[2][0][0]}..{box[0]}, confirmed {box[1]})")
        return None

    @check("eventually")
    def senders_saw_their_receipts(self) -> str | None:
        """Every sender saw `delivered` for its messages and `read` for those read."""
        for sender, messages in self.sent.items():
            seen = self.phones[sender].receipts
            for _, msg_id in messages:
                want = READ if msg_id in self.read else DELIVERED
                if seen.get(msg_id, 0) < want:
                    return (f"{sender} saw {NAMES.get(seen.get(msg_id), 'no receipt')} for message "
                            f"{msg_id}, expected {NAMES[want]}")
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
