"""WSGI (Flask, on gunicorn, waitress or werkzeug): a node on a thread of its own, one per
OS process, started on first use.

    nodes = NodeThread(Runtime(tree, store="data", store_per_process=True))
    app = Flask(__name__)
    init_flask(app)

    @app.get("/counters/<name>")
    def read(name):
        return {"value": nodes.node.call_from_thread("counters", ("get", name))}

Worker threads reach the node with its thread-safe calls (`call_from_thread`,
`cast_from_thread`, `send_from_thread`, `run_from_thread`). The node starts when a
thread first asks for it, so a pre-forking server (gunicorn, even with `--preload`) starts
one node in each worker, after the fork, never in the master. A node started before a
fork belongs to the parent: the child forgets it (never touching the parent's store) and
starts its own. At interpreter exit (a gunicorn worker exits after its graceful drain of
the requests in flight) the node stops as `Embedded.stop_thread` says; `stop()` does it
earlier. To start it eagerly, ask for it in gunicorn's `post_fork` hook:
`post_fork = lambda server, worker: nodes.embedded`.

Other frameworks (Django) use `NodeThread` the same way and answer errors with
`HttpErrors().answer(exc)` where the framework catches exceptions.
"""
from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any

from actors import Node

from .errors import HttpErrors
from .runtime import Embedded, Runtime


class NodeThread:
    """`runtime`'s node for this OS process; see the module docstring."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._embedded: Embedded | None = None
        self._lock = threading.Lock()
        self._forsaken: list[Embedded] = []  # started before a fork: the parent's, left alone
        forked = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: (method := forked()) and method())

    @property
    def embedded(self) -> Embedded:
        """The started node, its store and its service; starts them on first use."""
        embedded = self._embedded
        if embedded is not None:
            return embedded
        with self._lock:
            if self._embedded is None:
                self._embedded = self.runtime.start_thread()
                atexit.register(self.stop)
            return self._embedded

    @property
    def started(self) -> bool:
        """Whether this process's node runs."""
        return self._embedded is not None

    @property
    def node(self) -> Node:
        """The started node (started on first use)."""
        return self.embedded.node

    def stop(self) -> None:
        """Stop the node of this process, if it started (again on next use)."""
        with self._lock:
            embedded, self._embedded = self._embedded, None
            atexit.unregister(self.stop)
        if embedded is not None:
            embedded.stop_thread()

    def _forked(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self._embedded is not None:
            self._embedded.forsake()
            self._forsaken.append(self._embedded)  # kept referenced: its store never closes here
            self._embedded = None


def init_flask(app: Any, errors: HttpErrors | None = None) -> None:
    """Answer the errors of `errors` (by default the kernel's) in a Flask app with their
    status and `{"error": message}`."""
    errors = errors or HttpErrors()

    def answer(exc: Exception) -> tuple[dict, int, dict]:
        failure = errors.answer(exc)
        return failure.body, failure.status, failure.headers

    for cls in errors.types:
        app.register_error_handler(cls, answer)
