"""A Flask app for the pre-fork test: its node counts the requests of its OS process.

`START_IN_MASTER=1` starts the node as the module is imported, so under
`gunicorn --preload` in the master, before the workers are forked.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from actors import GenServer
from apps.embed import Runtime
from apps.embed.wsgi import NodeThread, init_flask
from supervision import ChildSpec


class Hits(GenServer):
    def init(self) -> None:
        self.n = 0

    def handle_call(self, request: Any, caller: Any) -> int:
        self.n += 1
        return self.n


nodes = NodeThread(Runtime(lambda node, store: [ChildSpec("hits", Hits, options={"name": "hits"})],
                           os.environ["LETITCRASH_DATA"], store_per_process=True))
if os.environ.get("START_IN_MASTER"):
    nodes.embedded  # noqa: B018 - started here, before any fork
app = Flask(__name__)
init_flask(app)


@app.get("/")
def whoami() -> dict:
    count = nodes.node.call_from_thread("hits", "hit")
    return {"pid": os.getpid(), "store": Path(nodes.embedded.store.path).name, "count": count}
