"""A threaded WSGI server whose worker threads call into letitcrash processes.

    python examples/threaded_server.py --data /tmp/kv --port 8081
    curl -X PUT -d hello localhost:8081/kv/greeting     # 204: stored (LMDB, mode "sync")
    curl localhost:8081/kv/greeting                     # hello
    curl localhost:8081/stats                           # {"GET": 1, "PUT": 1, ...}
    curl -X DELETE localhost:8081/stats                 # 202: reset

The node runs on a thread of its own, inside its own asyncio loop (`node.start_thread()`);
the program around it knows nothing of asyncio. WSGI worker threads (stdlib `wsgiref` with
`ThreadingMixIn`, one thread per request) use the node's thread-safe entry points:
`node.call_from_thread` blocks the worker until the reply comes; `cast_from_thread`
(to `handle_cast`) and `send_from_thread` (a plain message, to `handle_info`) return at
once. SIGTERM or Ctrl-C: stop accepting, finish the requests in flight, stop the node,
close the store, exit 0.
"""
from __future__ import annotations

import json
import re
import signal
import threading
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from actors import GenServer, Node
from storage import PersistentServer, Store
from supervision import ChildSpec, Supervisor

from common import STATUS, command_line  # examples/common.py

MAX_KEYS = 1000
MAX_VALUE = 1024  # bytes
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})  # counted by name in /stats
KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeyValue(PersistentServer):
    """A small key-value map `{key: bytes}`, saved after every turn that changed it."""

    def initial_state(self) -> dict:
        return {}

    def handle_call(self, request: tuple, caller: Any) -> bytes | bool | None:
        """("get", key): the value or None; ("put", key, value): False when a new key
        would pass MAX_KEYS, else True once stored."""
        if request[0] == "get":
            return self.state.get(request[1])
        _, key, value = request
        if key not in self.state and len(self.state) >= MAX_KEYS:
            return False
        self.state[key] = value
        return True


class Stats(GenServer):
    """Requests seen per HTTP method (in memory: lost on restart, by design)."""

    def init(self) -> None:
        self.hits: dict[str, int] = {}

    def handle_cast(self, method: str) -> None:
        self.hits[method] = self.hits.get(method, 0) + 1

    def handle_info(self, msg: Any) -> None:
        if msg == "reset":
            self.hits.clear()

    def handle_call(self, request: Any, caller: Any) -> dict[str, int]:
        return dict(self.hits)


def start_node(data: str) -> tuple[Node, Store]:
    """A real-time node on a thread of its own, with the store and the supervision tree
    made on that thread (`run_from_thread`), as everything touching the node must be."""
    node = Node().start_thread()

    def boot() -> Store:
        store = Store(data, node)
        node.spawn(Supervisor, [
            ChildSpec("kv", KeyValue, args=(store, "kv"), options={"name": "kv"}),
            ChildSpec("stats", Stats, options={"name": "stats"})])
        return store

    try:
        return node, node.run_from_thread(boot)
    except BaseException:
        node.stop_thread()
        raise


def make_app(node: Node) -> Callable:
    """The WSGI application; it runs on the server's worker threads."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        node.cast_from_thread("stats", method if method in METHODS else "other")  # no reply
        try:
            status, body = route(node, method, path, environ)
        except tuple(STATUS) as exc:
            status, body = STATUS[type(exc)], str(exc).encode()
        headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    return app


def route(node: Node, method: str, path: str, environ: dict) -> tuple[int, bytes]:
    if path == "/stats":
        if method == "GET":
            return 200, json.dumps(node.call_from_thread("stats", "get")).encode()
        if method == "DELETE":
            node.send_from_thread("stats", "reset")
            return 202, b""
        return 405, b"use GET or DELETE on /stats"
    prefix, _, key = path.partition("/kv/")
    if prefix or not key:
        return 404, f"no such resource {path[:100]!r}".encode()
    if not KEY.fullmatch(key):
        return 400, f"keys are 1-64 of A-Z a-z 0-9 _ . -, not {key[:100]!r}".encode()
    if method == "GET":
        value = node.call_from_thread("kv", ("get", key))
        return (200, value) if value is not None else (404, f"no key {key!r}".encode())
    if method == "PUT":
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            return 400, f"bad Content-Length {length[:20]!r}".encode()
        if int(length) > MAX_VALUE:
            return 413, f"values are at most {MAX_VALUE} bytes".encode()
        value = environ["wsgi.input"].read(int(length))
        if not node.call_from_thread("kv", ("put", key, value)):
            return 507, f"at the limit of {MAX_KEYS} keys".encode()
        return 204, b""
    return 405, b"use GET or PUT on a key"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request; `server_close()` waits for the threads still running."""

    block_on_close = True


class QuietHandler(WSGIRequestHandler):
    timeout = 10.0  # seconds a client may take per socket read: a silent one frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr


def main(data: str, host: str, port: int) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node, store = start_node(data)
    try:
        with make_server(host, port, make_app(node), ThreadingWSGIServer, QuietHandler) as server:
            serving = threading.Thread(target=server.serve_forever, name="wsgi-accept")
            serving.start()
            print(f"listening on http://{host}:{server.server_port}", flush=True)
            try:
                stop.wait()
            finally:
                server.shutdown()  # no new requests; leaving the block waits for those in flight
                serving.join()
    finally:
        node.stop_thread()  # only then: the worker threads no longer call the node
        store.close()  # after the processes: their last writes have committed
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    args = command_line(__doc__, 8081)
    main(args.data, args.host, args.port)
