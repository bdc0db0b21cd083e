"""What the observer tests share: the processes of the nodes they watch."""
from __future__ import annotations

from actors import GenServer
from storage import PersistentServer


class Worker(GenServer):
    """Counts its casts; crashes on "boom"."""

    def init(self):
        self.seen = 0

    def handle_cast(self, msg):
        if msg == "boom":
            raise RuntimeError("let it crash")
        self.seen += 1

    def handle_call(self, request, caller):
        return self.seen


class Cart(PersistentServer):
    """A stored list of items; a call adds one and answers how many there are."""

    def initial_state(self):
        return {"items": []}

    def handle_call(self, item, caller):
        self.state["items"].append(item)
        return len(self.state["items"])
