"""Heartbeats: a session silent for `heartbeat_timeout` seconds is closed; the check runs
every `heartbeat_check` seconds, for the whole node at once (the WhatsApp notes: 30 s,
checked every 10 s).

Sessions write the time of their last heartbeat into a table (`beats`, session pid ->
node time) that the node's checker owns, as Erlang sessions would write a public ETS
table: a per-session timer would cost every idle session a timer and a mailbox, and a
node is meant to hold a million of them. The checker sweeps the table and closes the
silent ones; a session that exits removes its entry (one that is killed is swept out, with
its entry in the sessions' route table, `routes`, if it had one).
"""
from __future__ import annotations

from typing import Any

from actors import GenServer, Pid

SWEEP = ("$chat.sweep",)


def us(seconds: float) -> int:
    """Whole microseconds: comparisons of node times that float rounding cannot tip."""
    return round(seconds * 1_000_000)


class Heartbeats(GenServer):
    """The node's heartbeat checker. Spawned as `(beats, timeout, every, routes)`."""

    def init(self, beats: dict[Pid, float], timeout: float, every: float, routes: dict[Pid, Any]) -> None:
        self.beats = beats
        self.routes = routes
        self.timeout = us(timeout)
        self.every = every
        self.send_after(every, self.pid, SWEEP)

    def handle_info(self, msg: Any) -> None:
        if msg != SWEEP:
            return super().handle_info(msg)
        now = us(self.now())
        silent = [pid for pid, beat in self.beats.items() if now - us(beat) >= self.timeout]
        for pid in silent:
            del self.beats[pid]
            self.routes.pop(pid, None)
            self.cast(pid, ("close", "heartbeat timeout"))
        self.send_after(self.every, self.pid, SWEEP)
