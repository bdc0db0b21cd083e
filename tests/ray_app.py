"""The application the Ray cluster tests start on every node host (`start`): an echo that
says which incarnation answers, where a key is placed as the node sees the cluster, and a
supervised tally kept in the node's LMDB store (under $LETITCRASH_TEST_DATA/NODE)."""
from __future__ import annotations

import os
from typing import Any

from actors import GenServer, Node
from actors.placement import node_for
from storage import PersistentServer, Store
from supervision import ChildSpec, Flags, Supervisor


class Echo(GenServer):
    """Answers what the tests ask of its node."""

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "who":
            return [self.node.name, self.node.creation]
        if request == "nodes":
            return self.node.nodes()
        if request[0] == "place":
            return node_for(self.node, request[1])
        return ValueError(f"no such request {request!r}")


class Tally(PersistentServer):
    """A count kept in LMDB: each call adds to it and answers the total, once stored."""

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        self.node.register("tally", self.pid)

    def initial_state(self) -> dict:
        return {"n": 0}

    def handle_call(self, delta: int, caller: Any) -> int:
        self.state["n"] += delta
        return self.state["n"]


def start(node: Node) -> None:
    store = Store(os.path.join(os.environ["LETITCRASH_TEST_DATA"], node.name.partition("@")[0]), node)
    node.spawn(Supervisor, [ChildSpec("tally", Tally, args=(store, "tally"))], Flags(max_restarts=10, max_seconds=5))
    node.register("echo", node.spawn(Echo))
