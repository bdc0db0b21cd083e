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

`serve()` is `letitcrash serve`: it runs the above until SIGTERM or SIGINT (Ctrl-C), then
stops it in order and closes the store. Being the program, not a library, it also tunes
CPython's cycle collector (`GC_THRESHOLDS`, then `gc.freeze()` once started) and its GIL
switch interval (`SWITCH_INTERVAL`). A SIGKILL loses nothing acknowledged: every
acknowledgement left only after its write was committed (`storage`).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
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


class _Acceptor(asyncio.Protocol):
    """A fresh socket's protocol until its connection process has started and taken it over."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # until the process owns the socket
        node = self.server.node
        started = start_child(node, CONNECTIONS, CONNECTION_SPEC, self.server.ctx, transport,
                              timeout=self.server.ctx.chat.config.call_timeout)

        def refused(done: Any) -> None:
            if done.exception() is not None:  # at max_connections, or shutting down
                log.warning("a connection was refused: %s", done.exception())
                transport.write(P.encode({"t": "error", "id": None, "code": P.OVERLOADED,
                                          "message": "the server cannot take more connections"}))
                transport.close()

        started.add_done_callback(refused)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the process took over: it sees the transport closing and ends


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
        self.connections = Application(DynamicSupervisor, DynamicFlags(max_children=max_connections),
                                       name=CONNECTIONS)
        self.listener: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 7400) -> tuple[str, int]:
        """Start the applications, then listen; returns the address bound (port 0 picks one)."""
        assert self.listener is None, "the server was already started"
        self.timeline.start()
        self.chat.start()
        self.connections.start(self.node)
        loop = asyncio.get_running_loop()
        try:
            self.listener = await loop.create_server(lambda: _Acceptor(self), host, port, backlog=1024)
        except BaseException:  # e.g. the port is taken: leave nothing running
            await self.stop()
            raise
        return self.listener.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening, then stop the applications in the reverse order of their start
        (connections first: their clients are told, and their sessions close)."""
        if self.listener is not None:
            self.listener.close()
        await self.connections.stop()
        await self.chat.stop()
        await self.timeline.stop()


async def serve(data: str, host: str, port: int, secret_file: str | None, limits: Limits,
                ready: Callable[[str, int], None], mode: str = "sync",
                max_connections: int = 100_000) -> None:
    """Run a server on store directory `data` until SIGTERM or SIGINT; `ready(host, port)`
    is called once it listens. The secret defaults to `data/secret`, made on first use.
    `mode` is the store's (`sync`: acknowledged survives power loss; `process`: kill -9)."""
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
            gc.freeze()  # what start-up made lives as long as the server: never scan it again
            ready(*address)
            await stopping.wait()
            log.info("stopping: connections, chat, timeline, then the store")
            await server.stop()
        finally:
            store.close()
    print("letitcrash: server stopped", file=sys.stderr, flush=True)
