"""Persistent servers shared by the storage tests and the crash-test child."""
from __future__ import annotations

from typing import Any

from actors import Exit, GenServer
from storage import EventSourcedServer, PersistentServer


def checked(n: int) -> dict[str, Any]:
    """A counter state whose parts depend on each other, so a torn state shows."""
    return {"n": n, "check": n * 7919 % 1_000_003, "pad": "x" * (n % 97)}


class Counter(PersistentServer):
    def initial_state(self, start: int = 0) -> dict[str, Any]:
        return checked(start)

    def handle_cast(self, delta: int) -> None:
        self.state = checked(self.state["n"] + delta)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return self.state["n"]
        if request == "state":
            return self.state
        if request == "rev":
            return self.revision
        op, *args = request
        if op == "add":
            self.handle_cast(args[0])
            return self.state["n"]
        if op == "set":  # any value, encodable or not
            self.state = args[0]
            return "ok"
        if op == "add_then_crash":
            self.handle_cast(args[0])
            raise RuntimeError("crashed after changing state")
        if op == "add_then_stop":
            self.handle_cast(args[0])
            self.stop("normal")
            return self.state["n"]
        if op == "add_and_tell":  # the message reveals the new state
            self.handle_cast(args[1])
            self.send(args[0], ("counter", self.state["n"]))
            return self.state["n"]
        raise ValueError(f"unknown request {request!r}")


class Ledger(EventSourcedServer):
    snapshot_every = 4

    def initial_state(self) -> dict[str, Any]:
        return {"items": []}

    def apply(self, event: Any) -> None:
        self.state["items"].append(event)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return self.state["items"]
        if request == "rev":
            return self.revision
        if request == "snapshot":
            self.save_snapshot()
            return "ok"
        op, *args = request
        if op == "append":
            for value in args:
                self.persist(value)
            return len(self.state["items"])
        raise ValueError(f"unknown request {request!r}")


class Restarter(GenServer):
    """Restarts its child (`cls` on `key`, a Counter on "k" by default) the moment it
    exits: in the same pass as the child's last write."""

    def init(self, store, cls=Counter, key="k"):
        self.trap_exit = True
        self.store, self.cls, self.key = store, cls, key
        self.child = self.spawn_link(cls, store, key)
        self.restarted = None

    def handle_info(self, msg):
        assert isinstance(msg, Exit)
        self.restarted = (self.spawn_link(self.cls, self.store, self.key), self.store.commits)

    def handle_call(self, request, caller):
        return self.child if request == "child" else self.restarted
