"""The outbox: a node's durable set of playlists whose replica has changes some peer node
has not acknowledged yet.

A replica calls `("dirty", playlist)` before its first change since it was last in step
with every peer; the answer comes once the mark is stored, so a change is never stored
without its mark. Every `sync_every` seconds the outbox pokes up to `push_batch` marked
playlists (round-robin) with `("push",)`, which starts a passivated or crashed replica
again; the replica pushes its changes to the peers behind, and casts `("clean",
playlist)` once all have acknowledged them. So changes reach a node that was down or cut
off, after a crash or a restart of either side. With `max_dirty` playlists marked, a new
mark is refused (`Unavailable`): edits wait instead of growing the set without bound.
"""
from __future__ import annotations

from typing import Any

from storage import EventSourcedServer, Store, entity_cast

from .context import REPLICAS, Context
from .errors import BadRequest, Unavailable

POKE = ("$outbox.poke",)
E_DIRTY, E_CLEAN = "d", "c"


class Outbox(EventSourcedServer):
    """See the module docstring. Spawned as `(store, context)`."""

    snapshot_every = 1_000

    def init(self, store: Store, ctx: Context) -> None:
        self.ctx = ctx
        super().init(store, ("playlists.outbox", ctx.node.name))
        self.cursor = 0  # where the next round of pokes starts
        self.send_after(ctx.config.sync_every, self.pid, POKE)

    def initial_state(self) -> dict[str, Any]:
        return {"dirty": {}}

    def apply(self, event: list) -> None:
        if event[0] == E_DIRTY:
            self.state["dirty"][event[1]] = 1
        else:
            assert event[0] == E_CLEAN, event
            self.state["dirty"].pop(event[1], None)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if type(request) is not tuple or len(request) != 2 or request[0] != "dirty":
            return BadRequest(f"the outbox takes ('dirty', playlist), not {request!r:.80}")
        dirty = self.state["dirty"]
        if request[1] not in dirty:
            if len(dirty) >= self.ctx.config.max_dirty:
                return Unavailable(f"the outbox of {self.ctx.node.name} holds {len(dirty)} changed "
                                   "playlists (max_dirty); retry later")
            self.persist([E_DIRTY, request[1]])
        return "ok"

    def handle_cast(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "clean":
            if msg[1] in self.state["dirty"]:
                self.persist([E_CLEAN, msg[1]])
        else:
            super().handle_info(msg)  # logged and dropped

    def handle_info(self, msg: Any) -> None:
        if msg != POKE:
            return super().handle_info(msg)
        self.send_after(self.ctx.config.sync_every, self.pid, POKE)
        replicas = self.ctx.local(REPLICAS)
        dirty = list(self.state["dirty"])
        if replicas is None or not dirty:
            return None
        batch = self.ctx.config.push_batch
        start = self.cursor % len(dirty)
        chosen = (dirty[start:] + dirty[:start])[:batch]
        self.cursor = start + len(chosen)
        for playlist in chosen:
            entity_cast(self, replicas, ("playlist", playlist), ("push",))
        return None
