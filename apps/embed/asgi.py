"""ASGI (FastAPI, Starlette, on uvicorn): the app's lifespan runs the node.

    runtime = Runtime(tree, store="data")
    app = FastAPI(lifespan=lifespan(runtime), exception_handlers=exception_handlers())

    @app.get("/counters/{name}")
    async def read(name: str, embedded: Embedded = Depends(embedded)) -> int:
        return await embedded.node.call("counters", ("get", name))

Starlette: `Starlette(routes, lifespan=lifespan(runtime),
exception_handlers=exception_handlers())`; a handler reaches the node as
`request.app.state.letitcrash.node` (or `embedded(request)`).

On startup the node attaches to the server's event loop, opens its store and starts its
tree (a failure fails the startup: uvicorn exits). On shutdown it stops as
`Embedded.stop` says; uvicorn runs the lifespan's shutdown only after the requests in
flight were answered (on SIGTERM it stops accepting, drains, then shuts down), so every
request it drains still has its node. `uvicorn --workers N` runs the lifespan in each
worker process: one node per worker, so give the runtime `store_per_process=True`.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from .errors import HttpErrors
from .runtime import Embedded, Runtime


def lifespan(runtime: Runtime) -> Callable[[Any], Any]:
    """The `lifespan` of a Starlette or FastAPI app: starts the node with the app, sets
    `app.state.letitcrash`, stops it once the server has drained."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        app.state.letitcrash = await runtime.start()
        try:
            yield
        finally:
            await app.state.letitcrash.stop()

    return run


def embedded(conn: HTTPConnection) -> Embedded:
    """The app's started node: a FastAPI dependency (`Depends(embedded)`), or a plain
    call with a Starlette request or websocket."""
    return conn.app.state.letitcrash


def exception_handlers(errors: HttpErrors | None = None) -> dict[type[BaseException], Callable]:
    """Handlers answering every error of `errors` (by default the kernel's) with its
    status and `{"error": message}`; for the app's `exception_handlers`."""
    errors = errors or HttpErrors()

    async def answer(request: Request, exc: Exception) -> JSONResponse:
        failure = errors.answer(exc)
        return JSONResponse(failure.body, failure.status, failure.headers)

    return {cls: answer for cls in errors.types}
