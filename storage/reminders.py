"""Durable reminders (Orleans'): timers of a persistent server kept in the store, so they
fire after a crash, a restart of the node, or in a later activation of an entity.

    class Invoice(PersistentServer):
        def handle_cast(self, msg):
            self.remind("overdue", 30 * 86400.0)                # once, in 30 days
            self.remind("report", 3600.0, period=86400.0)       # in an hour, then daily
        def handle_reminder(self, name):                        # a turn like the others
            ...

Contract:
- `remind(name, due, period=None)` registers (or replaces) the reminder `name` (a
  non-empty str): it fires `due` seconds from now, then every `period` seconds if one
  is given. It is a record of the server's key, saved with the turn, so it holds once
  that turn is stored. `cancel_reminder(name)` removes it; `reminders()` lists them. A
  reminder set and cancelled before its turn is saved is never written.
- Firing runs `handle_reminder(name)` in a turn of the server (the message arrives
  through `handle_info`: a server that defines `handle_info` passes what it does not know
  to `super().handle_info`, as every GenServer should). That turn also stores the
  reminder's end (or, periodic, its next time): a turn that crashes stores neither, and
  the restarted server fires it again. So a reminder fires at least once per due time,
  and its name tells the handler which one it is (to dedupe).
- A restarted server re-arms its stored reminders in `init`; one whose time passed
  meanwhile fires at once, once (missed periods are not replayed: the next one is the
  first period boundary after now, as Orleans' ticks).
- Times are kept on the clock that survives a restart: the node's own under the
  deterministic driver (the simulator keeps it across node restarts), the wall clock in
  real time. A server keeps at most `max_reminders` (1000 by default).
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from actors import packb

from .errors import LimitExceeded
from .store import KeyRef, Store, decode_payload

if TYPE_CHECKING:
    from .persistent import PersistentServer

TAG = "$reminder"  # record key (TAG, name)
_PREFIX = packb((TAG, ""))[:-1]  # how such a record key starts, encoded (the name's str header follows)


class Due(NamedTuple):
    """A reminder's timer message to its own server; stale once the reminder changed."""

    name: str
    at: float


def durable_now(node: Any) -> float:
    """Seconds on the clock reminders keep: the virtual clock, or the wall clock in real time."""
    return node.now() if node.seed is not None else time.time()


def is_reminder(key: Any) -> bool:
    """Whether a record key is a reminder's."""
    return type(key) is tuple and len(key) == 2 and key[0] == TAG


class Reminders:
    """One server's reminders: name -> [at, period, timer ref]."""

    __slots__ = ("server", "table")

    def __init__(self, server: PersistentServer) -> None:
        self.server = server
        self.table: dict[str, list] = {}

    def recover(self, records: list[tuple[Any, Any]]) -> None:
        """Re-arm the stored reminders (`records`: those of `is_reminder` keys)."""
        for key, (at, period) in sorted(records, key=lambda r: (r[1][0], r[0][1])):
            self.table[key[1]] = [at, period, None]
            self.arm(key[1])

    def set(self, name: Any, due: Any, period: Any) -> None:
        if type(name) is not str or not name:
            raise TypeError(f"a reminder's name is a non-empty str, got {name!r:.100}")
        if type(due) not in (int, float) or not 0 <= due < math.inf:
            raise ValueError(f"reminder {name!r}: due must be finite seconds >= 0, got {due!r}")
        if period is not None and (type(period) not in (int, float) or not 0 < period < math.inf):
            raise ValueError(f"reminder {name!r}: period must be None or finite seconds > 0, got {period!r}")
        server = self.server
        if name not in self.table and len(self.table) >= server.max_reminders:
            raise LimitExceeded(f"{server.key!r:.100} already has max_reminders={server.max_reminders} reminders")
        self.cancel(name)  # a stored record's deletion is staged now, so the new one may count as new
        self.table[name] = [durable_now(server.node) + due, period, None]
        self.arm(name)
        self.store(name, new=True)

    def cancel(self, name: str) -> bool:
        entry = self.table.pop(name, None)
        if entry is None:
            return False
        if entry[2] is not None:
            self.server.cancel_timer(entry[2])
        self.server.delete_record((TAG, name))
        if (TAG, name) in self.server._staged:  # else it was set in this turn: forgotten, nothing to save
            self.server._save_staged()
        return True

    def arm(self, name: str) -> None:
        entry = self.table[name]
        server = self.server
        entry[2] = server.send_after(max(0.0, entry[0] - durable_now(server.node)), server.pid, Due(name, entry[0]))

    def store(self, name: str, new: bool = False) -> None:
        """Stage reminder `name`'s record; `new`: not stored, nor pending deletion."""
        at, period, _ = self.table[name]
        self.server.put_record((TAG, name), [at, period], new=new)
        self.server._save_staged()

    def fire(self, due: Due) -> bool:
        """Take a due reminder: store its end or next time; False if it is stale."""
        entry = self.table.get(due.name)
        if entry is None or entry[0] != due.at:
            return False  # cancelled or set again after this timer was armed
        at, period, _ = entry
        if period is None:
            del self.table[due.name]
            self.server.delete_record((TAG, due.name))
            self.server._save_staged()
            return True
        now = durable_now(self.server.node)
        entry[0] = at + period * (math.floor(max(0.0, now - at) / period) + 1)  # the next boundary after now
        self.arm(due.name)
        self.store(due.name)
        return True

    def listing(self) -> dict[str, tuple[float, float | None]]:
        return {name: (at, period) for name, (at, period, _) in sorted(self.table.items())}


def next_due(store: Store, key: Any) -> float | None:
    """The earliest time a reminder of `key` is stored for (None: no reminder), read
    without starting its server (Entities wakes a passivated entity with it)."""
    ref = KeyRef(key)
    times = [decode_payload("record", payload, None, store.path, "records", ref)[0]
             for rkey, payload in store.load_records(ref) if rkey.startswith(_PREFIX)]
    return min(times) if times else None
