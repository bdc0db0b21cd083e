"""Distribution: a real-time node's connections to nodes in other OS processes.

    node = Node("a@127.0.0.1", creation=new_creation())
    async with node:
        dist = await Distribution(node, secret=b"s3cret", listen="tcp:127.0.0.1:4370").start()
        await dist.connect("b@127.0.0.1", "tcp:127.0.0.1:4371")
        node.cast(RemoteName("counter", "b@127.0.0.1"), 1)   # or any pid of that node
        await dist.stop()

Contract (Erlang's distribution, with the choices named):
- A node is `name@host` plus its creation (incarnation, in every pid it makes): a node
  restarted with a new creation never gets what was meant for its previous life.
- One connection per pair of nodes, made on first use (a send, call, link or monitor to a
  node not connected starts connecting; what is sent meanwhile waits, in order) or with
  `connect`. Opening it is the handshake of `actors.handshake` (the secret, Erlang's
  cookie, never crosses; two nodes connecting at once keep one connection). Once up, each
  node tells the other the nodes it knows, and each connects to those it has not met
  (Erlang's connect_all, on by default): a cluster is a full mesh.
- A connection is a `Peer`, the boundary's connection object (`actors.boundary`): what
  the kernel sends is encoded at once (`actors.wire`), batched, and written once per
  round of the event loop, after the callback that made it (a node's tick: its passes,
  and the commits that release what persistent processes held), or as soon as
  `FLUSH_BYTES` wait. Deliveries between two processes keep their order; nothing else
  is promised, as in Erlang.
- It ends when the stream closes, when the peer sends what cannot be taken (one log
  line), when nothing came for 3 ticks (a frozen peer; a tick is `ticktime / 4`, written
  when nothing else was for a tick, checked every half tick: a frozen peer is noticed
  3 to 3.5 ticks after its last frame; Erlang's window is 3 to 5), when its unsent bytes
  pass `max_buffer` (the peer reads too slowly: "overloaded"; the sending process is
  never blocked, so the connection goes instead, as Erlang's does once its busy
  distribution buffer stays full), or on `disconnect`. Then the kernel gives each side's
  links `noconnection`, its monitors `Down(..., "noconnection")`, its waiting calls fail,
  node watchers get `NodeDown(name, reason)`; what was in flight on it is lost. Any
  number of detectors may report the same loss: the first acts, the others do nothing.
- Connecting fails (unknown address, refused, no handshake within `setup_time`): what was
  waiting to go is lost and links and monitors set up across get `noconnection`; no new
  attempt to that node is made on first use for `retry_after` seconds (an explicit
  `connect` tries at once).
- Bounds: `max_frame` bytes in a frame read (larger: the connection closes), a message
  that cannot fit raises in its sender; `max_buffer` unsent bytes per peer;
  `max_handshakes` at once (more: closed at once).
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from .boundary import Delivery
from .handshake import HANDSHAKE_LIMIT, MAX_SHARED_PEERS, Handshake, HandshakeError, valid_name
from .peers import Discovery, PeerTable, parse_address
from .wire import ROOM, SEAL_BYTES, TICK, Channel, Inbox, Outbox, Run, WireError

log = logging.getLogger("actors.dist")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
DEFAULT_MAX_BUFFER = 64 * 1024 * 1024
FLUSH_BYTES = SEAL_BYTES  # waiting this much, a peer's batch leaves without waiting for the pass's end
SILENT_TICKS = 3  # ticks without a frame after which a peer counts as gone


def new_creation() -> int:
    """A creation (incarnation) for a node starting now: random, never 0, 20 bits."""
    return int.from_bytes(os.urandom(3), "big") % (2**20 - 1) + 1


class Peer:
    """The connection to one node for one connection life (see the module docstring)."""

    __slots__ = ("dist", "name", "creation", "channel", "outbox", "message", "inbox", "queued", "last_write",
                 "closed", "handshake", "deadline", "frame_limit")

    def __init__(self, dist: Distribution, name: str) -> None:
        self.dist = dist
        self.name = name
        self.creation = -1
        self.channel: Channel | None = None  # None while connecting
        self.outbox = Outbox(dist.node.name, name, dist.max_frame, dist.dropped, self.added)  # what waits to leave
        self.message = self.outbox.message  # the boundary's hottest call goes straight there
        self.inbox = Inbox(dist.node, name)
        self.queued = False  # in the distribution's list of peers to flush
        self.last_write = 0.0
        self.closed = False
        self.handshake: Handshake | None = None  # this node's own attempt, while connecting
        self.deadline: asyncio.TimerHandle | None = None
        self.frame_limit = dist.max_frame  # the peer's, once known

    # -- the boundary's connection -----------------------------------------------------------------

    def send(self, delivery: Delivery) -> None:
        self.outbox.add(delivery)  # raises in the sender for what cannot go

    def added(self) -> None:
        """The outbox was empty, or holds much: it leaves at the pass's end, or now."""
        dist = self.dist
        if self.outbox.size > dist.max_buffer:
            dist.overloaded(self)
        elif not self.queued:
            self.queued = True
            dist.mark(self)
        elif self.outbox.size >= FLUSH_BYTES and self.channel is not None:
            self.flush()

    def close(self) -> None:
        """The boundary is done with this connection: its stream closes."""
        if self.closed:
            return
        self.closed = True
        dist = self.dist
        for table in (dist.up, dist.connecting):
            if table.get(self.name) is self:
                del table[self.name]
        if self.deadline is not None:
            self.deadline.cancel()
        if self.handshake is not None:
            self.handshake.fail(HandshakeError("closed"))
        if self.channel is not None:
            self.flush()  # what was sent before the disconnect still leaves, as the stream closes
            self.channel.close()

    # -- the stream ---------------------------------------------------------------------------------

    def bind(self, channel: Channel, creation: int, frame_limit: int) -> None:
        self.channel = channel
        self.creation = creation
        self.frame_limit = frame_limit
        self.outbox.limit = frame_limit - ROOM
        channel.owner = self
        channel.set_limit(self.dist.max_frame)
        self.last_write = channel.loop.time()

    def flush(self) -> None:
        channel = self.channel
        if channel is None or not (self.outbox.items or self.outbox.sealed):
            return
        frames = self.outbox.take()
        if max(map(len, frames)) > self.frame_limit:
            # made before the peer's (smaller) frame limit was known: it cannot go, and
            # dropping it alone would break the order of what follows
            self.dist.lost(self, f"a batch waiting to go is over {self.name}'s frame limit")
            return
        dist = self.dist
        for data in frames:
            channel.write(data)
            dist.bytes_out += len(data)
        dist.frames_out += len(frames)
        self.last_write = channel.loop.time()
        if channel.unsent() > self.dist.max_buffer:
            self.dist.overloaded(self)

    def frame(self, payload: Any) -> None:
        if not payload:
            return  # a tick
        try:
            deliveries = self.inbox.decode(payload)
        except WireError as exc:
            self.dist.lost(self, f"bad_frame: {exc}")
            return
        dist = self.dist
        dist.frames_in += 1
        dist.bytes_in += len(payload) + 4  # (its length prefix too, as bytes_out counts it)
        boundary = dist.node._boundary
        arrive, arrive_run = boundary.arrive, boundary.arrive_run
        taken = 0
        try:
            for delivery in deliveries:
                if type(delivery) is Run:
                    arrive_run(*delivery)
                    taken += len(delivery.msgs)
                else:
                    arrive(delivery)
                    taken += 1
        except Exception:  # noqa: BLE001 - a kernel fault must not take the event loop down
            log.exception("node %s: a delivery from %s failed", dist.node.name, self.name)
            dist.lost(self, "delivery_failed")
        finally:
            dist.deliveries_in += taken

    def channel_lost(self, reason: str) -> None:
        self.dist.lost(self, reason)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "up" if self.channel is not None else "connecting"
        return f"<Peer {self.name} {state}>"


def _settle(target: Any, value: Any) -> None:
    """Give a waiting future its result (or exception); anything else is left alone."""
    if isinstance(target, asyncio.Future) and not target.done():
        if isinstance(value, BaseException):
            target.set_exception(value)
        else:
            target.set_result(value)


class Distribution:
    """A node's distribution; see the module docstring."""

    def __init__(self, node: Any, *, secret: bytes | str, listen: str | None = None,
                 discovery: Discovery | None = None, ticktime: float = 60.0, connect_all: bool = True,
                 max_frame: int = DEFAULT_MAX_FRAME, max_buffer: int = DEFAULT_MAX_BUFFER,
                 setup_time: float = 7.0, retry_after: float = 1.0, max_handshakes: int = 64) -> None:
        secret = secret.encode() if isinstance(secret, str) else secret
        if not secret:
            raise ValueError("a distribution needs a non-empty secret (all nodes of a cluster share it)")
        if not valid_name(node.name):
            raise ValueError(f"a distributed node is named name@host, not {node.name!r}")
        if node._clock.virtual:
            raise ValueError("distribution runs a real-time node (Node() without a seed): a simulation's "
                             "nodes meet through its network")
        if not (ticktime > 0 and setup_time > 0 and retry_after >= 0 and max_handshakes >= 1):
            raise ValueError(f"ticktime ({ticktime}) and setup_time ({setup_time}) must be positive, retry_after "
                             f"({retry_after}) not negative, max_handshakes ({max_handshakes}) at least 1")
        if not (1024 <= max_frame <= 2**31 and max_buffer >= max_frame):
            raise ValueError(f"max_frame ({max_frame}) must be 1024 to 2**31 bytes, and max_buffer ({max_buffer}) "
                             "at least max_frame (it must hold a frame)")
        self.node = node
        self.secret = secret
        self.listen = str(parse_address(listen)) if listen is not None else None
        self.discovery: Discovery = discovery if discovery is not None else PeerTable()
        self.ticktime, self.tick_every = ticktime, ticktime / 4
        self.connect_all = connect_all
        self.max_frame, self.max_buffer, self.max_handshakes = max_frame, max_buffer, max_handshakes  # bounds
        self.setup_time, self.retry_after = setup_time, retry_after  # seconds
        self.address: str | None = None  # where this node accepts connections, once started
        self.up: dict[str, Peer] = {}
        self.connecting: dict[str, Peer] = {}
        self.accepting: dict[str, Handshake] = {}  # incoming handshakes by the name they gave
        self.dialing: dict[str, Handshake] = {}  # outgoing handshakes to an address, name unknown
        self.handshakes: set[Handshake] = set()
        self.retry_at: dict[str, float] = {}
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.dirty: list[Peer] = []
        self.flush_soon = False  # a flush is scheduled
        self.server: asyncio.AbstractServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ticker: asyncio.TimerHandle | None = None
        self.stopping = False
        self.refused = 0  # connections refused since the last log line about them
        self.refused_logged = 0.0
        self.drops = 0  # messages dropped since the last log line about them
        self.drops_logged = -1.0
        # counters since start (see statistics)
        self.frames_out = self.bytes_out = self.frames_in = self.bytes_in = self.deliveries_in = 0

    # -- starting and stopping --------------------------------------------------------------------

    async def start(self) -> Distribution:
        """Listen (if `listen` was given) and take over the node's connections to others."""
        loop = self.loop = asyncio.get_running_loop()
        node = self.node
        if node._boundary.connector is not None:
            raise RuntimeError(f"node {node.name} already has a distribution")
        if self.listen is not None:
            address = parse_address(self.listen)
            if address.kind == "unix":
                self.server = await loop.create_unix_server(self.accepted, address.path)
                self.address = str(address)
            else:
                self.server = await loop.create_server(self.accepted, address.host, address.port)
                port = self.server.sockets[0].getsockname()[1]
                self.address = str(address._replace(port=port))
        node._boundary.connector = self.reach
        self.ticker = loop.call_later(self.tick_every / 2, self.tick)
        return self

    async def stop(self) -> None:
        """Stop accepting, flush and close every connection (each peer sees it close)."""
        self.stopping = True
        node = self.node
        if self.server is not None:
            self.server.close()
        for peer in list(self.up.values()):
            node._boundary.disconnect(peer.name, "disconnect", peer)
            peer.close()
        for peer in list(self.connecting.values()):
            self.setup_failed(peer, "stopping")
        for handshake in list(self.handshakes):
            handshake.fail(HandshakeError("stopping"))
        if self.ticker is not None:
            self.ticker.cancel()
        if node._boundary.connector == self.reach:
            node._boundary.connector = None
        if self.server is not None:
            await self.server.wait_closed()

    # -- connecting ---------------------------------------------------------------------------------

    async def connect(self, name: str, address: str | None = None) -> None:
        """Connect to node `name` (at `address`, else where discovery says) now; raises
        `ConnectionError` naming why not."""
        if address is not None:
            self.discovery.learn(name, address)
        if name in self.up:
            return
        self.retry_at.pop(name, None)
        waiter = self.waiter(name)
        if self.reach(name) is None:
            raise ConnectionError(f"node {name}: not a node this one can connect to")
        await waiter

    async def connect_address(self, address: str) -> str:
        """Connect to whatever node listens at `address`; returns its name."""
        canonical = str(parse_address(address))
        assert self.loop is not None, "start the distribution first"
        done: asyncio.Future = self.loop.create_future()
        handshake = Handshake(self, True, None, self.handshake_done)
        handshake.target = done
        self.dialing[canonical] = handshake
        self.loop.create_task(self.dial(canonical, handshake))
        return await done

    def waiter(self, name: str) -> asyncio.Future:
        assert self.loop is not None, "start the distribution first"
        future = self.loop.create_future()
        self.waiters.setdefault(name, []).append(future)
        return future

    def reach(self, name: str) -> Peer | None:
        """The boundary's connector: the connection being made to `name`, or a new attempt."""
        peer = self.connecting.get(name)
        if peer is not None or self.stopping or name == self.node.name or not valid_name(name):
            return peer
        if self.loop is None or self.loop.time() < self.retry_at.get(name, 0.0):
            return None
        peer = self.connecting[name] = Peer(self, name)
        peer.deadline = self.loop.call_later(self.setup_time, self.setup_failed, peer, "setup_timeout")
        self.loop.create_task(self.resolve_and_dial(peer))
        return peer

    async def resolve_and_dial(self, peer: Peer) -> None:
        try:
            address = await self.discovery.resolve(peer.name)
        except Exception as exc:  # noqa: BLE001 - a discovery's failure is this attempt's
            self.setup_failed(peer, f"discovery failed: {exc!r:.200}")
            return
        if address is None:
            self.setup_failed(peer, "no address known")
            return
        if peer.closed or peer.channel is not None or self.connecting.get(peer.name) is not peer:
            return  # the node connected to this one meanwhile
        handshake = peer.handshake = Handshake(self, True, peer.name, self.handshake_done)
        handshake.target = peer
        await self.dial(str(parse_address(address)), handshake)

    async def dial(self, address: str, handshake: Handshake) -> None:
        self.handshakes.add(handshake)
        handshake.address = address
        assert self.loop is not None

        def channel() -> Channel:
            return Channel(handshake, HANDSHAKE_LIMIT, on_made=handshake.start)
        where = parse_address(address)
        try:
            if where.kind == "unix":
                await self.loop.create_unix_connection(channel, where.path)
            else:
                await self.loop.create_connection(channel, where.host, where.port)
        except OSError as exc:
            handshake.fail(HandshakeError(f"cannot connect to {address}: {exc.strerror or exc}"))

    def accepted(self) -> Channel:
        """A connection came in: its handshake starts (or it closes, past the bound)."""
        if len(self.handshakes) >= self.max_handshakes or self.stopping:
            self.note_refused()
            return Channel(_Refused(), HANDSHAKE_LIMIT, on_made=Channel.close)
        handshake = Handshake(self, False, None, self.handshake_done)
        self.handshakes.add(handshake)
        return Channel(handshake, HANDSHAKE_LIMIT, on_made=handshake.start)

    # -- the handshake's questions --------------------------------------------------------------

    def announce(self) -> list:
        node = self.node
        return [node.name, node.creation, self.address, self.max_frame]

    def shared_peers(self) -> dict[str, str]:
        known = self.discovery.known()
        if self.address is not None:
            known[self.node.name] = self.address
        return dict(list(known.items())[:MAX_SHARED_PEERS])

    def admit(self, handshake: Handshake) -> str:
        """An acceptor's decision on a hello: "ok", "ok_simultaneous", or a refusal raised."""
        name, creation = handshake.peer["name"], handshake.peer["creation"]
        peer = self.up.get(name)
        if peer is not None:  # replaced once the digests match (see actors.handshake)
            self.accepting[name] = handshake
            return "alive" if peer.creation == creation else "ok"
        other = self.accepting.get(name)
        if other is not None and not other.finished:
            raise handshake.refuse("busy")
        mine = self.own_attempt(name, handshake.peer["address"])
        if mine is not None:
            if self.node.name > name or mine.step == "ack":
                # Erlang's tie-break: the greater name's attempt stays; but one past its
                # reply stays whatever the names: its acceptor may hold it as up already
                raise handshake.refuse("nok")
            mine.give_way()
            self.accepting[name] = handshake
            return "ok_simultaneous"
        self.accepting[name] = handshake
        return "ok"

    def own_attempt(self, name: str, address: Any) -> Handshake | None:
        """This node's own handshake in progress with node `name` (by name, or address)."""
        peer = self.connecting.get(name)
        if peer is not None and peer.handshake is not None and not peer.handshake.finished:
            return peer.handshake
        try:
            canonical = str(parse_address(address)) if address is not None else None
        except ValueError:
            return None
        dialing = self.dialing.get(canonical) if canonical is not None else None
        return dialing if dialing is not None and not dialing.finished else None

    def handshake_done(self, handshake: Handshake, error: HandshakeError | None) -> None:
        self.handshakes.discard(handshake)
        name = handshake.peer.get("name", "")
        if self.accepting.get(name) is handshake:
            del self.accepting[name]
        target = handshake.target
        if handshake.address is not None and self.dialing.get(handshake.address) is handshake:
            del self.dialing[handshake.address]
        if type(target) is Peer and target.handshake is handshake:
            target.handshake = None
        if error is None and not self.stopping:
            self.bring_up(handshake)
            _settle(target, name)
            return
        reason = error.reason if error is not None else "stopping"
        benign = reason.rpartition(": ")[2] in ("nok", "alive", "gave_way")
        if benign and reason.endswith("alive") and name in self.up:
            _settle(target, name)  # connected already
        elif isinstance(target, asyncio.Future):
            _settle(target, ConnectionError(f"connecting to {handshake.address}: {reason}"))
        elif type(target) is Peer and not benign:
            self.setup_failed(target, reason)
        elif not handshake.initiator and not benign and self.refusal_worth_a_line(reason):
            where = handshake.channel.peername() if handshake.channel is not None else "?"
            log.warning("node %s: refused a connection from %s (%s): %s", self.node.name,
                        name or "a peer", where, reason)

    @staticmethod
    def refusal_worth_a_line(reason: str) -> bool:
        """A peer that closes during the handshake says nothing worth a warning; one with a
        wrong secret, a wrong version, a bad name or garbage does."""
        return not reason.startswith(("connection_closed", "stopping", "closed"))

    def bring_up(self, handshake: Handshake) -> None:
        info = handshake.peer
        name = info["name"]
        channel = handshake.channel
        assert channel is not None, "a handshake that succeeded had a stream"
        old = self.up.get(name)
        if old is not None and old.creation == info["creation"] and info["status"] != "alive":
            log.info("node %s: a second connection to %s closed (made in a race)", self.node.name, name)
            channel.close()  # the first stays
            return
        peer = self.connecting.pop(name, None)
        if peer is None or peer.closed:
            peer = Peer(self, name)
        elif peer.deadline is not None:
            peer.deadline.cancel()
        peer.bind(channel, info["creation"], info["max_frame"])
        self.node._boundary.attach(name, peer, info["creation"])  # an old connection goes first
        self.up[name] = peer
        self.retry_at.pop(name, None)
        if info["address"] is not None:
            self.discovery.learn(name, info["address"])
        for other, address in info["peers"].items():
            if other != self.node.name:
                self.discovery.learn(other, address)
        peer.flush()
        for waiter in self.waiters.pop(name, ()):
            _settle(waiter, None)
        if self.connect_all:
            for other in info["peers"]:
                if other not in self.up and other != self.node.name:
                    self.reach(other)

    # -- losing a connection ------------------------------------------------------------------------

    def lost(self, peer: Peer, reason: str) -> None:
        """A detector says the connection to `peer` is gone (see the module docstring)."""
        if peer.closed:
            return
        if self.connecting.get(peer.name) is peer:
            self.setup_failed(peer, reason)
            return
        level = logging.WARNING if reason.startswith(("bad_frame", "overloaded", "delivery_failed")) \
            else logging.INFO
        log.log(level, "node %s: lost the connection to %s: %s", self.node.name, peer.name, reason)
        self.node._boundary.disconnect(peer.name, reason.partition(":")[0], peer)
        peer.close()

    def setup_failed(self, peer: Peer, reason: str) -> None:
        """Connecting to `peer` failed: see the module docstring."""
        if peer.closed or self.connecting.get(peer.name) is not peer:
            return
        del self.connecting[peer.name]
        peer.close()
        if self.loop is not None:
            self.retry_at[peer.name] = self.loop.time() + self.retry_after
        waiters = self.waiters.pop(peer.name, ())
        if not self.stopping:  # a `connect` hears why; a connection made on first use says it here
            log.log(logging.DEBUG if waiters else logging.WARNING, "node %s: could not connect to %s: %s",
                    self.node.name, peer.name, reason)
        if peer.name not in self.node._boundary.peers:
            self.node._boundary.disconnect(peer.name, "connection_setup_failed")
        for waiter in waiters:
            _settle(waiter, ConnectionError(f"node {peer.name}: {reason}"))

    def overloaded(self, peer: Peer) -> None:
        waiting = peer.outbox.size + (peer.channel.unsent() if peer.channel is not None else 0)
        self.lost(peer, f"overloaded: {waiting} bytes unsent, over the limit of {self.max_buffer} "
                        "(the peer reads too slowly)")

    def dropped(self, what: str) -> None:
        """A message that could not go (see `actors.wire.Outbox`): logged, at most a line a second."""
        self.drops += 1
        now = self.node.now()  # the node's clock, as every kernel decision
        if now - self.drops_logged >= 1.0:
            more = f" ({self.drops - 1} more since the last line)" if self.drops > 1 else ""
            log.warning("node %s: dropped %s%s", self.node.name, what, more)
            self.drops, self.drops_logged = 0, now

    def note_refused(self) -> None:
        self.refused += 1
        now = self.node.now()  # the node's clock, as every kernel decision
        if now - self.refused_logged >= 60.0:
            log.warning("node %s: refused %d connections: %d handshakes at once is the limit",
                        self.node.name, self.refused, self.max_handshakes)
            self.refused, self.refused_logged = 0, now

    # -- flushing and ticks --------------------------------------------------------------------------

    def mark(self, peer: Peer) -> None:
        """`peer` has deliveries waiting: they leave once the loop's current callback
        is over (a tick of the node, a frame's deliveries, asyncio code)."""
        self.dirty.append(peer)
        if not self.flush_soon and self.loop is not None:
            self.flush_soon = True
            self.loop.call_soon(self.flush_scheduled)

    def flush_scheduled(self) -> None:
        """What the last callback of the loop made leaves now, one write per peer. Not at
        the end of each scheduler pass: a persistent process's replies are released by
        its store's commit, a pass hook that runs after, and would wait for the next pass."""
        self.flush_soon = False
        self.flush_all()

    def flush_all(self) -> None:
        """Every peer's waiting deliveries leave, one write each."""
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for peer in dirty:
                peer.queued = False
                if not peer.closed:
                    peer.flush()

    def tick(self) -> None:
        loop = self.loop
        assert loop is not None
        now = loop.time()
        every = self.tick_every
        for peer in list(self.up.values()):
            channel = peer.channel
            assert channel is not None
            if now - channel.last_read > SILENT_TICKS * every:
                self.lost(peer, f"net_tick_timeout: nothing for {now - channel.last_read:.3f} s")
            elif now - peer.last_write >= every:
                channel.write(TICK)
                peer.last_write = now
        self.ticker = loop.call_later(every / 2, self.tick)

    # -- introspection ------------------------------------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counters since the distribution was made, over all its connections: `frames_out`
        and `bytes_out` written (length prefixes included), `frames_in` and `bytes_in` read,
        and `deliveries_in`, the deliveries those frames carried (a message, a call, a reply,
        a signal: one each). The sum of every node's `deliveries_in` is what crossed between
        the nodes; rates are differences of two readings."""
        return {"frames_out": self.frames_out, "bytes_out": self.bytes_out, "frames_in": self.frames_in,
                "bytes_in": self.bytes_in, "deliveries_in": self.deliveries_in}

    def nodes(self) -> list[str]:
        """The nodes connected through this distribution, sorted."""
        return sorted(self.up)

    def info(self, name: str) -> dict[str, Any] | None:
        """What is known of the connection to node `name`, or None."""
        peer = self.up.get(name) or self.connecting.get(name)
        if peer is None:
            return None
        return {"state": "up" if peer.channel is not None else "connecting", "creation": peer.creation,
                "waiting_bytes": peer.outbox.size, "unsent_bytes": peer.channel.unsent() if peer.channel else 0}

    def __repr__(self) -> str:
        return f"<Distribution {self.node.name} at {self.address} {len(self.up)} up>"


class _Refused:
    """The owner of a connection refused before its handshake: it takes nothing."""

    def frame(self, payload: Any) -> None:
        """Nothing is read from a refused connection."""

    def channel_lost(self, reason: str) -> None:
        """Nothing to undo."""
