"""Seeing a running node: an observer in the browser, a remote shell, tracing, metrics.

    from apps import observer

    obs = await observer.start(node, port=8090, store=store)   # on the node's running loop
    print(obs.url)                     # http://127.0.0.1:8090/?token=...: the page, live
    await obs.stop()

The page shows the supervision trees (restart counts; large dynamic supervisors and
entity routers collapsed), the processes (top N by mailbox, turns or memory, search, one
process in detail: links, monitors, status, state, last crash; kill it, trace it), the
node's counts and rates over the last minutes, the store, and the crash reports as they
happen. `GET /metrics` is the Prometheus endpoint. Everything needs the observer's token
(generated unless given; required to be given for a host that is not loopback).

With `attach=` the node also opens the attach socket (a Unix socket path, or a
`(host, port)` on loopback) for `letitcrash observe` and `letitcrash remsh` in other
OS processes, authenticated with `secret` (challenge and HMAC; see `protocol`).

    letitcrash serve --data data --observer 8090          # the page, and data/attach.sock
    letitcrash remsh data                                  # Python inside the running node
    letitcrash observe data --port 8091                    # the page, from another process
    letitcrash observe --cluster 127.0.0.1:4370            # any node of a cluster, by distribution

Every node of a cluster (`apps.cluster`) runs the agent behind a registered process, and
`letitcrash observe --cluster` asks it from a node that joins the cluster (`remote`: the
same ops, the crash stream and tracing as messages; the remote shell stays on the attach
socket).

Tracing, bounded as `recon_trace` is: `trace(node, "counter", max_events=20, seconds=5)`
(the API), `trace("counter")` in the remote shell, the Trace button on the page.

Modules: `probe` (the one adapter to the kernel), `agent` (the answers), `trace`,
`shell`, `metrics`, `protocol` (the attach protocol's message set), `attach` (its server
and client), `source` (local or attached, for the page), `remote` (the agent over
distribution, and a cluster's source), `web` (the aiohttp app), `static/`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from typing import Any

from actors import Future, Node

from .agent import Agent
from .attach import AttachServer, Client, is_loopback
from .probe import Probe
from .source import Local, OpError
from .trace import EVENTS, Trace, format_event

__all__ = ["Agent", "AttachServer", "Client", "Local", "Observer", "OpError", "Trace", "format_event",
           "start", "start_from_thread", "trace", "web_token"]

_WEB_TOKEN_TAG = b"letitcrash observer web token\x00"


def web_token(secret: bytes) -> str:
    """The observer page's token derived from an attach secret (so a node started with
    `letitcrash serve --observer` keeps one token across restarts)."""
    return hmac.new(secret, _WEB_TOKEN_TAG, hashlib.sha256).hexdigest()[:32]


class Observer:
    """A started observer: `url` (the page, with its token), `port`, `agent`; `stop()`."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.url: str | None = None
        self.port: int | None = None
        self.token: str | None = None
        self.attach: AttachServer | None = None
        self._runner: Any = None

    async def stop(self) -> None:
        """Stop serving the page and the attach socket, and let go of the node's agent (the
        last observer of the node takes the probe out)."""
        try:
            if self._runner is not None:
                await self._runner.cleanup()
            if self.attach is not None:
                await self.attach.stop()
        finally:
            self.agent.release()

    def stop_from_thread(self) -> None:
        """`stop` for an observer started with `start_from_thread`."""
        self.agent.node.run_from_thread(_on_loop(self.stop))


async def start(node: Node, *, port: int | None = 0, host: str = "127.0.0.1", token: str | None = None,
                store: Any = None, attach: str | os.PathLike | tuple[str, int] | None = None,
                secret: bytes | None = None, scan_limit: int = 100_000) -> Observer:
    """Start observing `node` (a real-time node, on its running loop): the page on
    `host:port` (None: no page; 0: any free port) and, with `attach`, the attach socket
    (`secret` required). `store`: the node's `Store`, for its sizes and commit latency."""
    if token is None and port is not None and not is_loopback(host):
        raise ValueError(f"an observer on {host} (not loopback) needs a token chosen by you: token=...")
    if attach is not None and (secret is None or len(secret) < 16):
        raise ValueError("an attach socket needs a secret of at least 16 bytes: secret=...")
    observer = Observer(Agent.of(node, store, scan_limit=scan_limit))
    try:
        if port is not None:
            from .web import serve_web  # aiohttp only when the page is served

            observer.token = token or secrets.token_hex(16)
            observer._runner, observer.port = await serve_web(Local(observer.agent), node.name, host=host,
                                                              port=port, token=observer.token)
            shown = f"[{host}]" if ":" in host else host
            observer.url = f"http://{shown}:{observer.port}/?token={observer.token}"
        if attach is not None:
            observer.attach = AttachServer(observer.agent, secret)
            if isinstance(attach, tuple):
                await observer.attach.start_tcp(*attach)
            else:
                await observer.attach.start_unix(attach)
    except BaseException:
        await observer.stop()
        raise
    return observer


def start_from_thread(node: Node, **options: Any) -> Observer:
    """`start` for a node running on a thread of its own (`node.start_thread()`, a WSGI
    server's), called from another thread; stop it with `stop_from_thread`."""

    return node.run_from_thread(_on_loop(lambda: start(node, **options)))


def _on_loop(coroutine: Any) -> Any:
    """A function for `node.run_from_thread` that runs `coroutine()` on the node's loop
    and returns a kernel Future of its result."""

    def begin() -> Future:
        done = Future()
        task = asyncio.ensure_future(coroutine())
        task.add_done_callback(lambda t: done.set_exception(t.exception()) if t.exception() is not None
                               else done.set_result(t.result()))
        return done
    return begin


def trace(node: Node, target: Any, *, max_events: int = 100, seconds: float = 10.0, emit: Any = None,
          events: Any = EVENTS) -> Trace:
    """Trace `target` (a pid or a registered name) on `node` for at most `max_events`
    events or `seconds` seconds: `await` the result for the events, or pass `emit(event)`
    to see each as it happens; `events` picks some of `EVENTS` (see `apps.observer.trace`).
    Call it on the node's thread."""
    probe = Probe.of(node)
    try:
        session = Trace(probe, target, emit, max_events=max_events, seconds=seconds, events=events)
    except BaseException:
        probe.release()
        raise
    session.done.add_done_callback(lambda _: probe.release())
    return session
