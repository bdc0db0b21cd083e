"""Chat as a simulated system (scenarios name it `chat`, or `"apps.chat.sim:ChatSystem"`).

Server nodes "chat1".. each run a `ChatService` on a real LMDB store (sync mode) and host
their share of the shards; node "phones" (spared by random faults) runs every device:
user i has `1 + i % devices` of them ("phone", "laptop", "tablet"...), each its own
process with its own session. A device connects through its gateway node (its session
may live on another node than its home shard), keeps a heartbeat, sends messages to its
user's contacts one at a time (retrying an unacknowledged one with the same client id
until it is acknowledged, then the next), takes its items in seq order, confirms them,
reads some, and now and then goes offline for a while, goes silent until its session
times out, or (not the first device) goes away for longer than `device_expiry`, so the
server unlinks it and it comes back as a new device. While the workload is off nothing
new starts; devices reconnect, finish sends under way and confirm.

A device linked (the session's `attached` answer says `new`) at time T is owed every
message to its user whose send began after T, and the receipts of every message its
user sent after T (the server starts a new device where the user's first device is).

Checks:
- always: a receipt never moves back (each device sees sent < delivered < read, each
  status at most once per message: the sender gets one read receipt however many of
  the recipient's devices read it); no device takes a message twice; no message is
  stored twice; every acknowledged message no device has taken is in its recipient's
  stored pending store;
- eventually: every acknowledged message was taken by its recipient's devices, each
  device taking every message it is owed, each sender device's messages in the order
  they were acknowledged; every copy of a sent message ("s" item) a device got is one
  its user sent, every "read elsewhere" ("v") one its user received; every user's stored
  pending store is empty; every device saw `delivered` for each message its user sent
  that it is owed, and `read` for those read (within `retention` of being taken: the
  server forgets a delivered message's record after it, and a later read sends no
  receipt).
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
DEVICE_NAMES = ("phone", "laptop", "tablet", "desktop", "watch")


def _is_frame(msg: Any) -> bool:
    return type(msg) is tuple and bool(msg) and msg[0] in ("items", "closed", "presence", "room")


class _Device:
    """What one device remembers (its storage survives reconnects)."""

    __slots__ = ("user", "name", "session", "session_began", "last", "linked", "since", "unsure", "current",
                 "next_cid", "to_read",
                 "offline_until", "silent_until", "next_beat", "wait_until", "receipts", "taken",
                 "copies", "read_syncs")

    def __init__(self, user: str, name: str) -> None:
        self.user = user
        self.name = name
        self.session: Pid | None = None
        self.session_began = 0.0  # when the connect that made `session` began
        self.last = 0  # the seq of the last item taken
        self.linked: float | None = None  # the server's link time, as an attach answered it
        self.since: float | None = None  # when it learned of that link (after it: owed messages)
        self.unsure = False  # a session that may have linked it anew went unanswered
        self.current: list | None = None  # the message being sent: [to, cid, payload, preview, began, via]
        # (via: when the session of its first try began connecting, None before a try)
        self.next_cid = 0
        self.to_read: list[tuple[int, str, float]] = []  # (msg_id, sender, taken at) to mark read
        self.offline_until = 0.0
        self.silent_until = 0.0
        self.next_beat = 0.0
        self.wait_until = 0.0  # backoff after a failed send
        self.receipts: dict[int, int] = {}  # msg_id -> newest status seen
        self.taken: set[int] = set()  # messages taken (membership only)
        self.copies: list[tuple[int, str]] = []  # (msg_id, to) of "s" items: its user's sends
        self.read_syncs: list[int] = []  # msg_ids of "v" items: read on one of its user's devices

    @property
    def key(self) -> str:
        return f"{self.user}/{self.name}"


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
        "device_expiry": Field.seconds(10.0, 1.0, 86_400.0, "a device unseen this long is unlinked"),
        "top_restarts": top_restarts(20),
    }
    workload_options = {
        "users": Field.int(16, 2, 10_000, "users"),
        "devices": Field.int(3, 1, len(DEVICE_NAMES), "most devices a user has: user i has 1 + i % devices"),
        "contacts": Field.int(3, 1, 100, "contacts per user (whom it writes to, who see its presence)"),
        "rate": Field.float(1.0, 0.01, 1000.0, "messages per second per online user, shared by its devices"),
        "reads": Field.float(0.5, 0.0, 1.0, "fraction of received messages a device reads"),
        "offline": Field.float(0.05, 0.0, 10.0, "per second: chance an online device goes offline a while"),
        "silent": Field.float(0.02, 0.0, 10.0, "per second: chance a device stops heartbeating"),
        "away": Field.float(0.01, 0.0, 10.0, "per second: chance a companion device goes away past "
                                             "device_expiry (it is unlinked, and links again)"),
        "beat": Field.seconds(1.5, 0.1, 600.0, "heartbeat period of a device"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a device's call timeout"),
        "backoff": Field.seconds(0.2, 0.0, 60.0, "mean wait before a retry"),
    }

    def setup(self) -> None:
        opts = self.config
        self.servers = [f"chat{i + 1}" for i in range(opts["servers"])]
        self.chat = ChatConfig(
            shards=opts["shards"], nodes=tuple(self.servers), heartbeat_timeout=opts["heartbeat_timeout"],
            heartbeat_check=min(opts["heartbeat_check"], opts["heartbeat_timeout"]),
            retention=opts["retention"], window=opts["window"], resend_after=opts["resend_after"],
            device_expiry=opts["device_expiry"], call_timeout=self.load["timeout"] / 2, snapshot_every=200)
        self.ring = HashRing(self.chat.shards)
        users = [f"u{i}" for i in range(self.load["users"])]
        self.users = users
        n = len(users)
        self.contacts = {u: [users[(i + k) % n] for k in range(1, min(self.load["contacts"], n - 1) + 1)]
                         for i, u in enumerate(users)}
        self.devices = {u: [_Device(u, DEVICE_NAMES[d]) for d in range(1 + i % self.load["devices"])]
                        for i, u in enumerate(users)}
        # The model: what was acknowledged and what each device took, in order.
        self.acked: dict[tuple[str, Any], int] = {}  # (sender, cid) -> msg_id
        self.sent: dict[str, list[tuple[str, int, str, float, float]]] = {u: [] for u in users}
        """sender -> [(to, msg_id, sending device, when its send began, when the session of its
        first try began connecting)], in acknowledgement order"""
        self.taken: dict[str, list[tuple[str, int]]] = {}  # device key -> [(sender, msg_id)] in order
        self.delivered: dict[int, str] = {}  # msg_id -> its recipient, once a device took it
        self.read: dict[int, str] = {}  # msg_id -> sender, for reads the server stored
        self.read_asked: dict[int, tuple[float, set[str]]] = {}  # msg_id -> (first asked, the devices that asked)
        self.violations: list[str] = []
        self.counts = {"sent": 0, "acked": 0, "delivered": 0, "taken": 0, "devices": 0, "copies": 0,
                       "read_syncs": 0, "receipts": 0, "reads": 0, "retries": 0, "connects": 0, "links": 0,
                       "closed": 0, "presence": 0}
        self.counts["devices"] = sum(len(devices) for devices in self.devices.values())
        self.nodes = ServerNodes(self, self.servers, lambda node, store, resolve: ChatService(
            node, store, self.chat, resolve=resolve, max_restarts=opts["top_restarts"]))
        self.nodes.add()
        self.sim.add_node("phones", self._start_devices, targets=False)

    # -- devices ---------------------------------------------------------------------------------

    def _start_devices(self, node: Node) -> None:
        index = 0
        for user in self.users:
            for device in self.devices[user]:
                node.spawn(self._device, device, index)
                index += 1

    def _gateway(self, index: int) -> ChatService | None:
        for k in range(len(self.servers)):  # its own gateway, else the next one up
            service = self.nodes.up(self.servers[(index + k) % len(self.servers)])
            if service is not None:
                return service
        return None

    async def _device(self, proc: Any, device: _Device, index: int) -> None:
        try:
            await self._device_loop(proc, device, index)
        except Exception as exc:  # a device that crashes is a bug of the service's API (or ours)
            self.violations.append(f"device {device.key} crashed: {exc!r}")
            raise

    async def _device_loop(self, proc: Any, device: _Device, index: int) -> None:
        rng = self.sim.stream(f"workload/device-{device.key}")
        load = self.load
        user = device.user
        first = device is self.devices[user][0]
        rate = load["rate"] / len(self.devices[user])
        if first:
            await self._set_contacts(proc, user, index, rng)
        while True:
            try:
                frame = await proc.receive(_is_frame, timeout=TICK)
            except ReceiveTimeout:
                frame = None
            if frame is not None:
                await self._frame(proc, device, index, frame)
                continue
            now = proc.now()
            if now < device.silent_until:
                continue  # no network: nothing goes out
            if device.session is None:
                if now >= device.offline_until:
                    await self._connect(proc, device, index, rng)
                continue
            if self.workload_on and not first and rng.random() < load["away"] * TICK:
                await self._ask(proc, device, index, "disconnect")
                device.session = None  # back after its link expired (well before the run ends)
                device.offline_until = now + self.chat.device_expiry + rng.uniform(2.0, 4.0)
                continue
            if self.workload_on and rng.random() < load["offline"] * TICK:
                await self._ask(proc, device, index, "disconnect")
                device.session = None
                device.offline_until = now + rng.uniform(1.0, 5.0)
                continue
            if self.workload_on and rng.random() < load["silent"] * TICK:
                device.silent_until = now + rng.uniform(1.0, 2.0) * self.chat.heartbeat_timeout
                continue
            if now >= device.next_beat:
                if await self._ask(proc, device, index, "heartbeat") is not None:
                    device.next_beat = now + load["beat"]
            if device.to_read and device.session is not None:
                batch = device.to_read[:50]
                for msg_id, _, _ in batch:
                    self.read_asked.setdefault(msg_id, (now, set()))[1].add(device.key)
                if await self._ask(proc, device, index, "read", [m for m, _, _ in batch]) is not None:
                    del device.to_read[:len(batch)]
                    # A read the server answered once the message's record was forgotten
                    # (`retention` after its delivery) sends no receipt: expected only
                    # within it, less what clock skew can take off it.
                    kept = proc.now() - (self.chat.retention - SKEW_MARGIN)
                    self.read.update((m, sender) for m, sender, taken in batch if taken > kept)
                    self.counts["reads"] += len(batch)
            if device.current is None and self.workload_on and rng.random() < rate * TICK:
                contacts = self.contacts[user]
                to = contacts[rng.below(len(contacts))]
                device.next_cid += 1
                cid = f"{device.name}-{device.next_cid}"
                device.current = [to, cid, f"{device.key}>{to}#{cid}".encode(), f"message {cid} from {user}", now,
                                  None]
                self.counts["sent"] += 1
            if device.current is not None and now >= device.wait_until and device.session is not None:
                await self._send(proc, device, index, rng)

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

    async def _connect(self, proc: Any, device: _Device, index: int, rng: Any) -> None:
        service = self._gateway(index)
        began = proc.now()
        try:
            if service is None:
                raise NoProc("every chat node")
            session = await service.connect(proc, device.user, device.name, proc.pid)
        except (*RETRYABLE, ChildError, ChatError) as exc:
            device.unsure |= isinstance(exc, RETRYABLE)  # a session may have started, and linked
            device.offline_until = proc.now() + rng.uniform(0.0, 2.0 * self.load["backoff"])
            return
        try:
            info = await service.attached(proc, session)
        except (*RETRYABLE, ChatError):  # it may still link (and push): we cannot tell
            device.unsure = True
            device.offline_until = proc.now() + rng.uniform(0.0, 2.0 * self.load["backoff"])
            return
        device.session, device.session_began = session, began
        device.unsure = False
        if info["linked"] != device.linked:  # (re)linked: by this session, or one it never heard of
            device.linked, device.since = info["linked"], proc.now()  # owed what is sent from now on,
            device.last = max(device.last, info["acked"])  # from the server's position
            self.counts["links"] += 1
        device.next_beat = 0.0
        self.counts["connects"] += 1

    async def _ask(self, proc: Any, device: _Device, index: int, what: str, *args: Any) -> Any:
        """One request to the device's session; None if it failed (the session is then
        presumed gone: the device connects again)."""
        service = self._gateway(index) or next(iter(self.nodes.services.values()))
        try:
            return await getattr(service, what)(proc, device.session, *args)
        except RETRYABLE:
            device.session = None
            return None
        except BadRequest as exc:
            self.violations.append(f"{device.key}: {what} refused as a bad request: {exc}")
            return None
        except ChatError:  # the session is attaching to its shard: later
            return None

    async def _send(self, proc: Any, device: _Device, index: int, rng: Any) -> None:
        if device.current[5] is None:
            device.current[5] = device.session_began
        to, cid, payload, preview, began, via = device.current
        service = self._gateway(index) or next(iter(self.nodes.services.values()))
        try:
            msg_id = await service.send(proc, device.session, to, cid, payload, preview)
        except RETRYABLE:
            device.session = None
            self.counts["retries"] += 1
            return
        except BadRequest as exc:
            self.violations.append(f"{device.key}: a send was refused as a bad request: {exc}")
            device.current = None
            return
        except ChatError:  # unavailable or overloaded: the same message again, later
            self.counts["retries"] += 1
            device.wait_until = proc.now() + rng.uniform(0.0, 2.0 * self.load["backoff"])
            return
        key = (device.user, cid)
        known = self.acked.get(key)
        if known is not None and known != msg_id:
            self.violations.append(f"{device.user}'s message {cid} was stored twice: ids {known} and {msg_id}")
        if known is None:
            self.acked[key] = msg_id
            self.sent[device.user].append((to, msg_id, device.name, began, via))
            self.counts["acked"] += 1
        device.current = None

    async def _frame(self, proc: Any, device: _Device, index: int, frame: tuple) -> None:
        kind = frame[0]
        if kind == "closed":
            self.counts["closed"] += 1
            if device.session is not None:  # which session closed? ask the current one
                await self._ask(proc, device, index, "heartbeat")
            return
        if kind == "presence":
            self.counts["presence"] += 1
            return
        if kind != "items":
            return
        items, acked = frame[1], frame[2]
        if acked > device.last:
            if not device.unsure:
                self.violations.append(f"{device.key}: the server says items up to {acked} are confirmed, "
                                       f"but the device took only up to {device.last}")
            device.last = acked
        confirm = False
        for item in items:
            if item[0] <= device.last:
                confirm = True  # a repeat: our confirmation was lost, say it again
            if item[0] != device.last + 1:
                continue  # a repeat, or after a gap: it comes again
            device.last = item[0]
            confirm = True
            kind = item[1]
            if kind == "m":
                self._take(device, item[2], item[3], proc.now())
            elif kind == "r":
                self._receipt(device, item[2], item[3])
            elif kind == "s":
                device.copies.append((item[2], item[3]))
                self.counts["copies"] += 1
            else:
                device.read_syncs.append(item[2])
                self.counts["read_syncs"] += 1
        if confirm and device.session is not None:
            await self._ask(proc, device, index, "confirm", device.last)

    def _take(self, device: _Device, msg_id: int, sender: str, now: float) -> None:
        if msg_id in device.taken:
            self.violations.append(f"{device.key} took message {msg_id} from {sender} twice")
            return
        device.taken.add(msg_id)
        self.taken.setdefault(device.key, []).append((sender, msg_id))
        self.counts["taken"] += 1
        if msg_id not in self.delivered:
            self.delivered[msg_id] = device.user
            self.counts["delivered"] += 1
        if self.sim.stream(f"workload/reads-{device.key}").random() < self.load["reads"]:
            device.to_read.append((msg_id, sender, now))

    def _receipt(self, device: _Device, msg_id: int, status: int) -> None:
        self.counts["receipts"] += 1
        seen = device.receipts.get(msg_id)
        if seen is not None and status <= seen:
            self.violations.append(f"{device.key}: the receipt of message {msg_id} went from "
                                   f"{NAMES[seen]} to {NAMES[status]}")
            return
        device.receipts[msg_id] = status

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
        """Every acknowledged message no device has taken is in its recipient's stored
        pending store."""
        shards = self._stored_shards()
        for sender, messages in self.sent.items():
            for to, msg_id, _, _, _ in messages:
                if msg_id in self.delivered:
                    continue
                state = shards.get(self.ring.owner(to))
                if state is None:
                    continue  # its node is down
                if not any(item[2] == msg_id for item in book.pending(state, to)):
                    return (f"message {msg_id} from {sender} to {to} was acknowledged, but it is "
                            f"neither taken nor in the stored pending store of shard {self.ring.owner(to)}")
        return None

    @check("eventually")
    def delivered_to_every_device_once_in_order(self) -> str | None:
        """Every message was acknowledged and taken by its recipient's devices: each device
        took every one it is owed, each sender device's in acknowledgement order."""
        for devices in self.devices.values():
            for device in devices:
                if device.current is not None:
                    return (f"{device.key}'s message {device.current[1]} to {device.current[0]} was "
                            "never acknowledged")
        if not self.counts["acked"]:
            return "no message was acknowledged at all"
        order: dict[int, tuple[str, int]] = {}  # msg_id -> (sending device, rank among its messages)
        for sender, messages in self.sent.items():
            for rank, (to, msg_id, name, began, _) in enumerate(messages):
                order[msg_id] = (f"{sender}/{name}", rank)
                if self.delivered.get(msg_id) != to:
                    return f"message {msg_id} from {sender} to {to} was acknowledged but never taken"
                for device in self.devices[to]:
                    if device.since is not None and began > device.since and msg_id not in device.taken:
                        return (f"{device.key}, linked at {device.since:.2f}, never took message {msg_id} "
                                f"from {sender}, sent at {began:.2f}")
        for key, taken in self.taken.items():
            last: dict[str, int] = {}
            for sender, msg_id in taken:
                if msg_id not in order:
                    return f"{key} took message {msg_id} from {sender}, which was never acknowledged"
                origin, rank = order[msg_id]
                if rank < last.get(origin, -1):
                    return f"{key} took {origin}'s messages out of order (message {msg_id})"
                last[origin] = rank
        return None

    @check("eventually")
    def copies_and_read_syncs_reach_the_users_other_devices_once(self) -> str | None:
        """Every device got, once each, a copy of each message its user sent from another
        device and word of each message to its user read on another device; and nothing
        else: a copy is of a message its user sent, a "read elsewhere" of one it received.
        (Copies come in the order their receipts reach the user's shard, from the
        recipients' shards, which may resend: not in the order they were sent.) Owed where the server knew of both devices when it
        decided: a copy when the sending session began connecting after the device was
        linked (a session hears of a newer device by a cast that may come late), word of a
        read when the device was linked before the first read of it was asked."""
        mine = {u: {msg_id: (to, name, via) for to, msg_id, name, _, via in messages}
                for u, messages in self.sent.items()}
        for user, devices in self.devices.items():
            for device in devices:
                copies = set()
                for msg_id, to in device.copies:
                    sent = mine[user].get(msg_id)
                    if sent is None or sent[0] != to:
                        return f"{device.key} got a copy of message {msg_id} to {to}, which {user} never sent"
                    if msg_id in copies:
                        return f"{device.key} got a copy of message {msg_id} twice"
                    copies.add(msg_id)
                syncs = set()
                for msg_id in device.read_syncs:
                    if self.delivered.get(msg_id) != user:
                        return f"{device.key} heard that message {msg_id} was read, but it is not {user}'s"
                    if msg_id in syncs:
                        return f"{device.key} heard twice that message {msg_id} was read"
                    syncs.add(msg_id)
                if device.since is None:
                    continue
                for msg_id, (to, name, via) in mine[user].items():
                    if name != device.name and via > device.since and msg_id not in copies:
                        return (f"{device.key}, linked at {device.since:.2f}, never got a copy of message "
                                f"{msg_id} that {user}/{name} sent to {to} from a session begun at {via:.2f}")
                for msg_id, (asked, askers) in self.read_asked.items():
                    if msg_id in self.read and self.delivered.get(msg_id) == user and asked > device.since \
                            and device.key not in askers and msg_id not in syncs:
                        return (f"{device.key}, linked at {device.since:.2f}, never heard that message {msg_id} "
                                f"was read on another device (asked at {asked:.2f})")
        return None

    @check("eventually")
    def pending_stores_drained(self) -> str | None:
        """Every device came online and confirmed: every stored pending store is empty."""
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
        """Every device saw `delivered` for the messages its user sent that it is owed, and
        `read` for those read."""
        for sender, messages in self.sent.items():
            for device in self.devices[sender]:
                for _, msg_id, _, began, _ in messages:
                    if device.since is None or began <= device.since:
                        continue
                    want = READ if msg_id in self.read else DELIVERED
                    seen = device.receipts.get(msg_id, 0)
                    if seen < want:
                        return (f"{device.key} saw {NAMES.get(seen, 'no receipt')} for message "
                                f"{msg_id}, expected {NAMES[want]}")
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
