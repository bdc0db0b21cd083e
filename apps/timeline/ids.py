"""The node's tweet id server: Snowflake ids that stay unique across restarts.

The generator's time may only reach as far as a lease stored in LMDB: when an id needs a
later millisecond, the lease is moved `config.lease` seconds ahead, and that id's reply
leaves only once the new lease is committed. A restarted node starts after its stored
lease, so even a clock that went back (another machine, a skewed one) never repeats an
id. One write per lease, not per id.
"""
from __future__ import annotations

from typing import Any

from storage import PersistentServer, Store

from .errors import BadRequest
from .snowflake import MAX_SEQ, Snowflake, make_id, split_id


class IdServer(PersistentServer):
    """Answers `"next"` with a new tweet id. Spawned as `(store, machine, lease seconds)`."""

    def init(self, store: Store, machine: int, lease: float) -> None:
        self.machine = machine
        self.lease_ms = max(1, int(lease * 1000))
        super().init(store, ("timeline.ids", machine))
        leased = self.state["lease"]
        self.gen = Snowflake(machine, make_id(leased, machine, MAX_SEQ) if leased >= 0 else -1)

    def initial_state(self) -> dict[str, int]:
        return {"lease": -1}

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request != "next":
            return BadRequest(f"the id server takes only 'next', not {request!r:.60}")
        tweet_id = self.gen.next(self.now())
        ms = split_id(tweet_id)[0]
        if ms > self.state["lease"]:
            self.state["lease"] = ms + self.lease_ms  # saved before this reply leaves
        return tweet_id
