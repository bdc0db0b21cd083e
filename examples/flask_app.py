"""A Flask app whose worker threads call into letitcrash processes on a node of their own.

    LETITCRASH_DATA=/tmp/kv gunicorn --chdir examples --threads 8 -b 127.0.0.1:8082 flask_app:app
    curl -X PUT --data-binary hello localhost:8082/kv/greeting   # {"key": "greeting", "version": 1}
    curl -i localhost:8082/kv/greeting                           # hello, with ETag: "1"
    curl 'localhost:8082/kv/greeting?newer_than=1&wait=20'       # waits for version 2
    curl localhost:8082/stats                                    # {"GET": 2, "PUT": 1}
    curl -X DELETE localhost:8082/stats                          # 202: reset
    curl -X POST localhost:8082/crash                            # 500; the supervisor restarts it

The node runs on a thread of its own (`NodeThread`), started by the first request each
gunicorn worker takes, so `--preload` and `-w N` are safe: each worker starts its own node,
after the fork, on a store of its own (`store_per_process`). Flask's threads use the
node's thread-safe calls: `call_from_thread` blocks the thread until the reply comes;
`cast_from_thread` (to `handle_cast`) and `send_from_thread` (a plain message, to
`handle_info`) return at once. The values are stored (mode "sync": a 200 answer to a PUT
means the value is on disk); the request counts are in memory, lost on restart by design.
On SIGTERM gunicorn stops accepting and finishes the requests in flight, a waiting
`?wait=` included; the node stops when the worker exits.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

from flask import Flask, Response, abort, request

from actors import GenServer, NoReply
from apps.embed import Runtime
from apps.embed.wsgi import NodeThread, init_flask
from storage import PersistentServer
from supervision import ChildSpec

MAX_KEYS = 1000
MAX_VALUE = 1024  # bytes
MAX_WATCHERS = 1000  # requests waiting for a new version; more are answered at once
MAX_WAIT = 30.0  # seconds
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})  # counted by name in /stats
KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeyValue(PersistentServer):
    """A small key-value map `{key: [version, bytes]}`, saved after every turn that
    changed it; a reader may wait for a version newer than the one it has."""

    def init(self, store: Any, key: Any) -> None:
        super().init(store, key)
        self.watchers: dict[Any, tuple[str, int]] = {}  # caller -> (key, the version it has)

    def initial_state(self) -> dict:
        return {}

    def handle_call(self, request: tuple, caller: Any) -> Any:
        """("get", key, newer_than, wait): `[version, value]` or None, waiting up to `wait`
        seconds for a version above `newer_than`; ("put", key, value): the new version,
        or None when a new key would pass MAX_KEYS; ("crash",): let it crash."""
        if request[0] == "get":
            _, key, newer_than, wait = request
            entry = self.state.get(key)
            if (entry and entry[0] > newer_than) or wait <= 0 or len(self.watchers) >= MAX_WATCHERS:
                return entry
            self.watchers[caller] = (key, newer_than)
            self.send_after(wait, self.pid, ("give up", caller))
            return NoReply
        if request[0] == "put":
            _, key, value = request
            if key not in self.state and len(self.state) >= MAX_KEYS:
                return None
            entry = self.state[key] = [self.state.get(key, [0])[0] + 1, value]
            for watcher, (watched, _) in list(self.watchers.items()):
                if watched == key:
                    self.reply(watcher, entry)
                    del self.watchers[watcher]
            return entry[0]
        if request[0] == "crash":
            raise RuntimeError("crash requested over HTTP")
        raise ValueError(f"unknown request {request!r:.100}")

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg[0] == "give up" and msg[1] in self.watchers:
            key, _ = self.watchers.pop(msg[1])
            self.reply(msg[1], self.state.get(key))
        else:
            super().handle_info(msg)


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


def tree(node: Any, store: Any) -> list[ChildSpec]:
    """The app's supervision tree, started once the store is open."""
    return [ChildSpec("kv", KeyValue, args=(store, "kv"), options={"name": "kv"}),
            ChildSpec("stats", Stats, options={"name": "stats"})]


nodes = NodeThread(Runtime(tree, os.environ.get("LETITCRASH_DATA", "flask-data"), store_per_process=True))
app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_VALUE  # a bigger body is a 413
init_flask(app)


@app.before_request
def count_request() -> None:
    method = request.method if request.method in METHODS else "other"
    nodes.node.cast_from_thread("stats", method)  # no reply to wait for


def check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        abort(Response(json.dumps({"error": f"keys are 1-64 of A-Z a-z 0-9 _ . -, not {key[:100]!r}"}),
                       400, content_type="application/json"))
    return key


@app.get("/kv/<key>")
def read(key: str) -> Any:
    check_key(key)
    newer_than = request.args.get("newer_than", 0, type=int)
    wait = min(max(request.args.get("wait", 0.0, type=float), 0.0), MAX_WAIT)
    entry = nodes.node.call_from_thread("kv", ("get", key, newer_than, wait), timeout=wait + 5.0)
    if entry is None:
        return {"error": f"no key {key!r}"}, 404
    return entry[1], 200, {"Content-Type": "application/octet-stream", "ETag": f'"{entry[0]}"'}


@app.put("/kv/<key>")
def write(key: str) -> Any:
    version = nodes.node.call_from_thread("kv", ("put", check_key(key), request.get_data()))
    if version is None:
        return {"error": f"at the limit of {MAX_KEYS} keys"}, 507
    return {"key": key, "version": version}


@app.get("/stats")
def stats() -> Any:
    return nodes.node.call_from_thread("stats", "get")


@app.delete("/stats")
def reset_stats() -> Any:
    nodes.node.send_from_thread("stats", "reset")  # a plain message, to handle_info
    return "", 202


@app.post("/crash")
def crash() -> Any:
    nodes.node.call_from_thread("kv", ("crash",))  # raises CallExit: a 500, then a restart
