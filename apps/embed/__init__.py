"""Embedding a node in the web servers people already run.

    from apps.embed import Runtime
    runtime = Runtime(tree=lambda node, store: [ChildSpec(...)], store="data")

- `runtime`: `Runtime`, what a node needs to start (the tree, the store and its
  durability), and `Embedded`, one started node; shared by the adapters below.
- `errors`: `HttpErrors`, what a failed call means to an HTTP client (`NoProc` 404 or
  503, `CallTimeout` 504, overload 503, a crash 500 with no traceback).
- `asgi`: FastAPI and Starlette on uvicorn (`lifespan`, `embedded`, `exception_handlers`).
- `aio`: aiohttp (`setup`, `embedded`).
- `wsgi`: Flask, Django on gunicorn and other WSGI servers (`NodeThread`, `init_flask`).

Each adapter imports its framework; this package imports none (they are optional
extras: `pip install 'letitcrash[fastapi]'`, `[asgi]`, `[aiohttp]`, `[wsgi]`).
"""
from .errors import Failure, HttpErrors
from .runtime import Embedded, Runtime

__all__ = ["Embedded", "Failure", "HttpErrors", "Runtime"]
