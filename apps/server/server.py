"""The chat server: one real-time node running the chat and timeline applications behind an
asyncio TCP server, every accepted connection a supervised `Connection` process.

    async with Node() as node:
        store = Store("data", node)                         # mode="sync": acknowledged = on disk
        server = ChatServer(node, store, load_secret("data/secret", create=True))
        host, port = await server.start("127.0.0.1", 7400)
        ...
        await server.stop()                                 # listener, connections, chat, timeline
        store.close()

    node applications, started in this order and stopped in the reverse one:
    timeline              TimelineService's tree
    chat                  ChatService's tree
    server.connections    DynamicSupervisor of Connection processes (temporary)

Connections are capped below the process's descriptor limit (`RLIMIT_NOFILE`, read at
`start` and stated in the log): `max_connections` is lowered to leave `SPARE_FDS` free
for the store, the log and sockets being closed or refused. A connection over the cap is
answered `overloaded` and closed. Should descriptors still run out, accepting stops for
`ACCEPT_RETRY` seconds at a time (asyncio's own accept loop would log a traceback per
failed accept and retry them all). Conditions that repeat (refused connections, failed
accepts) are logged at most once per `REPORT_EVERY` seconds, with their count.

`serve()` is `letitcrash serve`: it runs the above until SIGTERM or SIGINT (Ctrl-C), then
stops it in order and closes the store. Being the program, not a library, it also tunes
CPython's cycle collector (`GC_THRESHOLDS`, then `gc.freeze()` once started) and its GIL
switch interval (`SWITCH_INTERVAL`). A SIGKILL loses nothing acknowledged: every
acknowledgement left only after its write was committed (`storage`).
"""
from __future__ import annotations

import asyncio
import errno
import gc
import logging
import math
import os
import resource
import signal
import socket
import sys
from typing import Any, Callable

from actors import Node
from apps.chat import ChatConfig, ChatService
from apps.timeline import TimelineConfig, TimelineService
from storage import Store
from supervision import Application, ChildSpec, DynamicFlags, DynamicSupervisor, start_child

from . import protocol as P
from .auth import load_secret
from .connection import Connection, Context, Limits

log = logging.getLogger("apps.server")

CONNECTIONS = "server.connections"
GC_THRESHOLDS = (50_000, 20, 20)
"""`letitcrash serve` collects cycles less often than CPython's default (700, 10, 10): a
full collection scans every connection, session and stored chat item, and at the default
one came every 1.5 to 2.5 s under load, pausing every connection for 40 to 180 ms."""
SWITCH_INTERVAL = 0.0005
"""Seconds the node's thread may hold the GIL while the store's writer thread waits for it
(CPython's default is 0.005): the writer runs Python between LMDB calls, so at the
default a group commit under load took 7-9 ms (p50) and 60-70 ms (p99), at this one
2-3 ms and under 30 ms, and every acknowledgement waits for a commit."""
CONNECTION_SPEC = ChildSpec("connection", Connection, restart="temporary", shutdown=1.0)
SPARE_FDS = 64
"""Descriptors left free of connections: the store's files, the log, sockets that are
closing (up to `connection.CLOSE_GRACE`) or being refused."""
ACCEPT_RETRY = 0.5  # seconds between attempts to accept while descriptors are out
ACCEPT_BATCH = 128  # connections accepted in one turn of the event loop at most
REPORT_EVERY = 60.0  # seconds between log lines about one repeating condition
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Repeated:
    """A condition that may come thousands of times a second: logged at most once per
    REPORT_EVERY seconds of the node's clock, saying how often it came since."""

    def __init__(self, node: Node, message: str) -> None:
        self.node = node
        self.message = message + " (%d times since the last such line)"
        self.count = 0
        self.last = -math.inf

    def happened(self, *args: Any) -> None:
        self.count += 1
        now = self.node.now()
        if now - self.last >= REPORT_EVERY:
            log.warning(self.message, *args, self.count)
            self.count, self.last = 0, now


class _Acceptor(asyncio.Protocol):
    """A fresh socket's protocol until its connection process has started and taken it over."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # until the process owns the socket
        server = self.server
        started = start_child(server.node, CONNECTIONS, CONNECTION_SPEC, server.ctx, transport,
                              timeout=server.ctx.chat.config.call_timeout)

        def refused(done: Any) -> None:
            if done.exception() is not None:  # at max_connections, or shutting down
                server.refused.happened(done.exception())
                transport.write(P.encode({"t": "error", "id": None, "code": P.OVERLOADED,
                                          "message": "the server cannot take more connections"}))
                transport.close()

        started.add_done_callback(refused)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the process took over: it sees the transport closing and ends


class _Listener:
    """The listening socket, accepted from by hand (see the module docstring)."""

    def __init__(self, server: ChatServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.failed = _Repeated(server.node, "cannot accept connections: %s; retrying every %g s")
        self.retry: asyncio.TimerHandle | None = None
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRORS:
                    continue  # that connection only (aborted before it was accepted)
                self.failed.happened(exc.strerror, ACCEPT_RETRY)
                self.loop.remove_reader(self.sock.fileno())
                self.retry = self.loop.call_later(ACCEPT_RETRY, self._resume)
                return
            conn.setblocking(False)
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: _Acceptor(self.server), conn)
        except OSError:  # reset before it was set up
            conn.close()

    def _resume(self) -> None:
        self.retry = None
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to what the process's descriptor limit leaves for connections
    (see the module docstring); the decision is logged. OSError if it leaves none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    in_use = _open_descriptors()
    cap = min(wanted, soft - in_use - SPARE_FDS)
    if cap < 1:
        raise OSError(errno.EMFILE, f"the descriptor limit (RLIMIT_NOFILE {soft}, {in_use} in use) leaves no "
                      f"room for connections beside the {SPARE_FDS} kept spare; raise it (ulimit -n)")
    log.info("at most %d connections (max_connections %d; descriptor limit %d, %d in use, %d kept spare)",
             cap, wanted, soft, in_use, SPARE_FDS)
    return cap


def _open_descriptors() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing))
        except OSError:
            continue
    return 0


class ChatServer:
    """See the module docstring. `max_connections` bounds the connection processes."""

    def __init__(self, node: Node, store: Store, secret: bytes, limits: Limits | None = None, *,
                 chat_config: ChatConfig | None = None, timeline_config: TimelineConfig | None = None,
                 max_connections: int = 100_000) -> None:
        self.node = node
        self.store = store
        self.chat = ChatService(node, store, chat_config)
        self.timeline = TimelineService(node, store, timeline_config)
        self.ctx = Context(self.chat, self.timeline, secret, limits or Limits())
        self.max_connections = max_connections
        self.connections: Application | None = None
        self.refused = _Repeated(node, "refused a connection: %s")
        self.listener: _Listener | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 7400) -> tuple[str, int]:
        """Start the applications, then listen; returns the address bound (port 0 picks one).
        OSError if the address cannot be bound or the descriptor limit leaves no room."""
        assert self.connections is None, "the server was already started"
        self.connections = Application(DynamicSupervisor, DynamicFlags(
            max_children=connection_cap(self.max_connections)), name=CONNECTIONS)
        self.timeline.start()
        self.chat.start()
        self.connections.start(self.node)
        try:
            family, _, _, _, address = (await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0]
            sock = socket.create_server(address, family=family, backlog=1024)
            sock.setblocking(False)
            self.listener = _Listener(self, sock)
        except BaseException:  # e.g. the port is taken: leave nothing running
            await self.stop()
            raise
        return sock.getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening, then stop the applications in the reverse order of their start
        (connections first: their clients are told, and their sessions close)."""
        if self.listener is not None:
            self.listener.close()
        if self.connections is not None:
            await self.connections.stop()
        await self.chat.stop()
        await self.timeline.stop()


async def serve(data: str, host: str, port: int, secret_file: str | None, limits: Limits,
                ready: Callable[[str, int], None], mode: str = "sync",
                max_connections: int = 100_000, observe: dict[str, Any] | None = None) -> None:
    """Run a server on store directory `data` until SIGTERM or SIGINT; `ready(host, port)`
    is called once it listens. The secret defaults to `data/secret`, made on first use.
    `mode` is the store's (`sync`: acknowledged survives power loss; `process`: kill -9).
    `observe`: options of `apps.observer.start` to watch the node (its URL is logged)."""
    os.makedirs(data, exist_ok=True)
    secret = load_secret(secret_file or os.path.join(data, "secret"), create=secret_file is None)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
    async with Node() as node:
        store = Store(os.path.join(data, "store"), node, mode=mode)
        try:
            server = ChatServer(node, store, secret, limits, max_connections=max_connections)
            address = await server.start(host, port)
            watching = await _observe(node, store, observe) if observe is not None else None
            gc.freeze()  # what start-up made lives as long as the server: never scan it again
            ready(*address)
            if watching is not None:
                _announce(watching)
            await stopping.wait()
            log.info("stopping: connections, chat, timeline, then the store")
            if watching is not None:
                await watching.stop()
            await server.stop()
        finally:
            store.close()
    print("letitcrash: server stopped", file=sys.stderr, flush=True)


async def _observe(node: Node, store: Store, options: dict[str, Any]) -> Any:
    from apps import observer  # its extra (aiohttp, prometheus-client) only when asked for

    return await observer.start(node, store=store, **options)


def _announce(watching: Any) -> None:
    if watching.url is not None:
        print(f"letitcrash: observer on {watching.url}", flush=True)
    if watching.attach is not None:
        print(f"letitcrash: attach socket {watching.attach.address}", flush=True)
