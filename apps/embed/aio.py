"""aiohttp: a cleanup context runs the node, a middleware maps the errors.

    app = web.Application()
    setup(app, Runtime(tree, store="data"))

    async def read(request: web.Request) -> web.Response:
        value = await embedded(request).node.call("counters", ("get", request.match_info["name"]))
        return web.json_response(value)

On startup the node attaches to the server's loop, opens its store and starts its tree
(a failure fails the startup). aiohttp's shutdown closes the listening sockets, runs
`on_shutdown` (where an app closes its websockets, which would otherwise hold the
shutdown until `shutdown_timeout`), waits for the handlers in flight, and only then runs
the cleanup contexts: the node stops after the requests were drained.
"""
from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .errors import HttpErrors
from .runtime import Embedded, Runtime

EMBEDDED = web.AppKey("letitcrash", Embedded)
"""Where the started node is kept: `app[EMBEDDED]`."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, runtime: Runtime, errors: HttpErrors | None = None) -> None:
    """Run `runtime`'s node with `app` and answer the errors of `errors` (by default the
    kernel's) with their status and `{"error": message}`."""

    async def node_context(app: web.Application) -> AsyncIterator[None]:
        app[EMBEDDED] = await runtime.start()
        try:
            yield
        finally:
            await app[EMBEDDED].stop()

    app.cleanup_ctx.append(node_context)
    app.middlewares.append(error_middleware(errors or HttpErrors()))


def embedded(request: web.Request) -> Embedded:
    """The app's started node."""
    return request.app[EMBEDDED]


def error_middleware(errors: HttpErrors) -> Callable:
    """A middleware answering the errors of `errors`."""

    @web.middleware
    async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.types as exc:
            failure = errors.answer(exc)
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)

    return answer_errors
