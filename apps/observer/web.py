"""The observer's web server (aiohttp): a few static files and a small JSON + SSE API.

    runner = await serve_web(source, node_name, host="127.0.0.1", port=8090, token=token)
    ...
    await runner.cleanup()

Routes (every /api route and /metrics need the token: `Authorization: Bearer <token>`,
or `?token=<token>` where a browser cannot set a header, as EventSource cannot):

    GET  /                      the page (index.html, observer.js, observer.css under /static)
    GET  /api/nodes             {"nodes": [...]}: the nodes this page can show (one, or a
                                cluster's, `apps.observer.remote.Cluster`)
    GET  /api/{op}              overview, tree, processes, process, crashes: JSON; query
                                parameters are the op's arguments (apps.observer.protocol)
    GET  /api/events            server-sent events: "overview" and "processes" every second,
                                "tree" every two, "crash" as each happens; the query takes
                                sort, limit, query (the process table's) and max_children
    GET  /api/trace             server-sent events: "trace" per event, then "end"; query:
                                target, max_events, seconds
    POST /api/kill              {"pid": "<node.7>"}: the token must be in the header
                                (a page on another site cannot send it), never the query
    GET  /metrics               Prometheus text

Every route but /api/nodes takes `node=NAME` (default: the first node) to pick one node
of a cluster; a single node's page takes only its own name.

A wrong or missing token is answered 401 before anything else; the comparison is in
constant time. The page keeps the token it was opened with (`/?token=...`) in the tab's
session storage and takes it out of the address bar.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from .metrics import CONTENT_TYPE
from .source import OpError

STATIC = Path(__file__).parent / "static"
READ_OPS = ("overview", "tree", "processes", "process", "crashes")
INT_ARGS = ("limit", "max_children", "history", "n", "max_events")
FLOAT_ARGS = ("seconds",)
MAX_STREAMS = 32  # event streams open at once
SOURCE = web.AppKey("source", Any)
TOKEN = web.AppKey("token", str)
NODE = web.AppKey("node", str)
STREAMS = web.AppKey("streams", set)


def make_app(source: Any, node_name: str, token: str) -> web.Application:
    """The observer's aiohttp application over `source` (`Local`, an attach `Client`, or a
    `Cluster`: a source per node, by `at(name)`)."""
    if len(token) < 16:
        raise ValueError("the observer's token must have at least 16 characters")
    app = web.Application(middlewares=[_guard])
    app[SOURCE], app[TOKEN], app[NODE], app[STREAMS] = source, token, node_name, set()
    app.router.add_get("/", _index)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/trace", _trace)
    app.router.add_post("/api/kill", _kill)
    app.router.add_get("/api/nodes", _nodes)
    app.router.add_get("/api/{op}", _read)
    app.router.add_get("/metrics", _metrics)
    app.on_shutdown.append(_close_streams)
    return app


async def serve_web(source: Any, node_name: str, *, host: str, port: int, token: str) -> tuple[web.AppRunner, int]:
    """Serve the observer; returns the runner (`await runner.cleanup()` stops it) and the
    port bound (port 0 picks one)."""
    runner = web.AppRunner(make_app(source, node_name, token), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def _authorized(request: web.Request, header_only: bool) -> bool:
    given = request.headers.get("Authorization", "")
    given = given[7:] if given.startswith("Bearer ") else ""
    if not given and not header_only:
        given = request.query.get("token", "")
    return hmac.compare_digest(given.encode(), request.app[TOKEN].encode())


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    path = request.path
    if (path.startswith("/api/") or path == "/metrics") and not _authorized(request, path == "/api/kill"):
        return web.json_response({"error": "a valid observer token is needed"}, status=401)
    try:
        return await handler(request)
    except OpError as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


def _op_args(query: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key, value in query.items():
        if key in ("token", "node"):
            continue
        try:
            args[key] = int(value) if key in INT_ARGS else float(value) if key in FLOAT_ARGS else value
        except ValueError:
            raise OpError(f"{key} must be a number, got {value!r:.40}") from None
    return args


def _source(request: web.Request) -> Any:
    """The source of the node the request names (`?node=`), OpError if there is none."""
    source, name = request.app[SOURCE], request.query.get("node")
    if hasattr(source, "at"):
        return source.at(name)
    if name not in (None, request.app[NODE]):
        raise OpError(f"this page shows node {request.app[NODE]} only, not {name!r:.80}")
    return source


def _node_names(request: web.Request) -> list[str]:
    source = request.app[SOURCE]
    return source.nodes() if hasattr(source, "at") else [request.app[NODE]]


async def _nodes(request: web.Request) -> web.Response:
    return web.json_response({"nodes": _node_names(request)})


async def _read(request: web.Request) -> web.Response:
    op = request.match_info["op"]
    if op not in READ_OPS:
        return web.json_response({"error": f"no such view {op!r:.40}; views: {', '.join(READ_OPS)}"}, status=404)
    value = await _source(request).ask(op, _op_args(request.query))
    if op == "process" and value is None:
        return web.json_response({"error": "no such process (it has exited)"}, status=404)
    return web.json_response(value)


async def _kill(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("pid"), str):
        return web.json_response({"error": 'send {"pid": "<node.serial>"}'}, status=400)
    killed = await _source(request).ask("kill", {"pid": body["pid"]})
    return web.json_response({"killed": killed}, status=200 if killed else 404)


async def _metrics(request: web.Request) -> web.Response:
    text = await _source(request).ask("metrics", {})
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


class _EventStream:
    """One server-sent event stream; writes from several tasks go out one at a time."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                    "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.lock = asyncio.Lock()

    async def __aenter__(self) -> _EventStream:
        streams = self.request.app[STREAMS]
        if len(streams) >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"at most {MAX_STREAMS} observer streams at once")
        await self.response.prepare(self.request)
        streams.add(asyncio.current_task())
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        self.request.app[STREAMS].discard(asyncio.current_task())
        # The browser went away, or the server stops: either way the stream is over.
        return exc[0] is not None and issubclass(exc[0], ConnectionError)

    async def send(self, event: str, data: Any) -> None:
        async with self.lock:
            await self.response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


async def _events(request: web.Request) -> web.StreamResponse:
    source = _source(request)
    table = _op_args(request.query)
    max_children = table.pop("max_children", 20)
    table.setdefault("limit", 50)
    stream = _EventStream(request)
    async with stream:
        await stream.send("hello", {"node": getattr(source, "target", request.app[NODE]),
                                    "nodes": _node_names(request)})

        async def crashes() -> None:
            async for _, report in source.stream("watch", {}):
                await stream.send("crash", report)

        watcher = asyncio.ensure_future(crashes())
        try:
            for report in await source.ask("crashes", {"n": 50}):
                await stream.send("crash", report)
            tick = 0
            while True:
                await stream.send("overview", await source.ask("overview", {"history": 300 if tick == 0 else 1}))
                await stream.send("processes", await source.ask("processes", table))
                if tick % 2 == 0:
                    await stream.send("tree", await source.ask("tree", {"max_children": max_children}))
                tick += 1
                await asyncio.sleep(1.0)
        finally:
            watcher.cancel()
    return stream.response


async def _trace(request: web.Request) -> web.StreamResponse:
    source = _source(request)
    args = _op_args(request.query)
    stream = _EventStream(request)
    async with stream:
        try:
            async for kind, value in source.stream("trace", args):
                await stream.send("trace" if kind == "event" else "end", value)
        except OpError as exc:
            await stream.send("failed", {"error": str(exc)})
    return stream.response


async def _close_streams(app: web.Application) -> None:
    for task in list(app[STREAMS]):
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*app[STREAMS], return_exceptions=True)
