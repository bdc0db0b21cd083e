"""Each city node's copy of the cells that live on the city's other nodes, so that a
ride's search stays what it is on one node: a read of node-local tables in its own
turn, no message (see `cell` and `matcher`).

A cell publishes its members and its quote in a table of its own node
(`CityContext.cell_table(geohash)`). A ride may live on another node than the cells
around its pickup (rides are placed by ride id, cells by geohash), so every node runs a
`CellMirror` (registered as `MIRROR`) that

- pushes, every `PUSH_EVERY` seconds, one message to the mirror of every other node:
  the members and quote of its own cells that changed since its last push (all of them
  every `FULL_EVERY`-th push), and the names of all its running cells;
- keeps the pushes it gets as tables under the same names, so `node.table(cell_table(g))`
  finds a remote cell's copy where it finds a local cell's own table. A remote cell no
  longer running is emptied (its quote kept), and so are all the cells of a node not
  heard from for `STALE_AFTER` seconds (down or cut off);
- publishes in a copy's table the remote cell's pid ("pid"), monitored, so that messages
  for it go straight to it (`CityContext.cast`) instead of through the router of its node:
  one turn less on that node for every location update that crosses. A cell's pid is
  sent to the other nodes as soon as it starts, and with its pushes; it is taken away as
  soon as the cell is known to be gone (its `Down`, a push without it, its node silent),
  and messages go through the router again, which starts it anew.

A copy is at most `PUSH_EVERY` plus the network's latency older than its cell (after a
restart of either side, up to `FULL_EVERY` pushes). That is harmless: an offer to a
driver who is no longer available is refused by the driver and times out (as on one
node, where positions are up to one update old), and the ride's demand goes to the
cell itself. What crosses is bounded by the cells of a node, not by the rides' searches:
a search runs at every batch of offers and reads dozens of cells, while a node pushes
`nodes - 1` messages per period whatever the load.

A cell's own node never holds a copy of it (cells are placed on a fixed node list:
`storage.cluster`), so a copy's table never takes the name of a running cell's.
Local cells are announced by the cells themselves as they start (`CityContext.started`);
a restarted mirror finds the running ones among the node's processes.

Casts: `("cell", geohash)` (a local cell started), `("cells", node, changed, live)`
(a push: `changed` maps geohash -> (ids, rows as bytes, quote, pid), `live` the sender's
running cells), `("started", node, geohash, pid)` (a cell of that node started).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from actors import Down, GenServer, RemoteName

from .cell import COLUMNS, NO_SURGE, Cell

MIRROR = "rides.mirror"
PUSH_EVERY = 0.5  # seconds between pushes
FULL_EVERY = 10  # every so many pushes, all the cells, changed or not
STALE_AFTER = 3.0  # seconds without a push after which a node's copies are emptied
MAX_COPIES = 100_000  # tables of remote cells a node holds
_EMPTY = ((), np.zeros((0, len(COLUMNS))))
_EMPTY[1].flags.writeable = False
_TICK = ("$mirror_tick",)

log = logging.getLogger("apps.rides")


class CellMirror(GenServer):
    """See the module docstring: `init(city)`, a `service.CityContext` of two nodes or more."""

    def init(self, city: Any) -> None:
        assert len(city.nodes) > 1, "a city on one node has nothing to mirror"
        self.city = city
        self.others = [RemoteName(MIRROR, n) for n in city.nodes if n != self.node.name]
        self.local: dict[str, Any] = {}  # geohash -> (members, quote) last pushed, or None
        self.copies: dict[str, Any] = {}  # geohash -> the table of a remote cell's copy
        self.origin: dict[str, str] = {}  # geohash -> the node of a copy that is not empty
        self.watched: dict[str, tuple] = {}  # geohash -> (pid, monitor ref) of a remote cell
        self.watches: dict[Any, str] = {}  # monitor ref -> geohash
        self.heard: dict[str, float] = {}  # node -> when its last push came
        self.pushes = 0
        for pid in self.node.processes():  # the cells already running (this is a restart)
            proc = self.node.get_process(pid)
            if isinstance(proc, Cell) and proc.city is city:
                self.local[proc.gh] = None
        self.send_after(PUSH_EVERY, self.pid, _TICK)

    def handle_cast(self, msg: tuple) -> None:
        if msg[0] == "cell":
            self.local.setdefault(msg[1], None)
            started = ("started", self.node.name, msg[1], self.city.registry.lookup(("cell", msg[1])))
            for other in self.others:
                self.cast(other, started)
        elif msg[0] == "cells":
            self._copy(*msg[1:])
        elif msg[0] == "started":
            self._started(*msg[1:])
        else:
            raise ValueError(f"rides mirror: unknown message {msg!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if msg == _TICK:
            self._push()
            self._expire()
            self.send_after(PUSH_EVERY, self.pid, _TICK)
        elif type(msg) is Down:
            gh = self.watches.pop(msg.ref, None)
            if gh is not None:
                del self.watched[gh]
                self.copies[gh].put("pid", None)
        else:
            super().handle_info(msg)

    # -- this node's cells, out ---------------------------------------------------------------

    def _push(self) -> None:
        full = self.pushes % FULL_EVERY == 0
        self.pushes += 1
        changed = {}
        for gh in list(self.local):
            table = self.node.table(self.city.cell_table(gh))
            if table is None:  # the cell stopped: its table went with it
                del self.local[gh]
                continue
            now = (table.get("members"), table.get("quote"))
            last = self.local[gh]
            if full or last is None or last[0] is not now[0] or last[1] is not now[1]:
                ids, rows = now[0]
                changed[gh] = (list(ids), rows.tobytes(), list(now[1]), self.city.registry.lookup(("cell", gh)))
                self.local[gh] = now
        push = ("cells", self.node.name, changed, list(self.local))
        for other in self.others:
            self.cast(other, push)

    # -- the other nodes' cells, in -----------------------------------------------------------

    def _copy(self, sender: str, changed: dict, live: list) -> None:
        if sender == self.node.name or sender not in self.city.nodes:
            return
        self.heard[sender] = self.now()
        for gh, (ids, data, quote, pid) in changed.items():
            table = self._table(sender, gh)
            if table is None:
                continue
            rows = np.frombuffer(data, dtype=np.float64).reshape(-1, len(COLUMNS))  # read-only
            assert len(rows) == len(ids), (gh, len(rows), len(ids))
            table.put("members", (tuple(ids), rows))
            table.put("quote", tuple(quote))
            self.origin[gh] = sender
            self._watch(gh, pid)
        running = set(live)  # membership only
        for gh in [g for g, node in self.origin.items() if node == sender and g not in running]:
            self._empty(gh)

    def _started(self, sender: str, gh: str, pid: Any) -> None:
        """A cell of node `sender` started: its pid, before the next push brings its members."""
        table = self._table(sender, gh) if sender != self.node.name and sender in self.city.nodes else None
        if table is not None and pid is not None:
            self.origin[gh] = sender
            self._watch(gh, pid)

    def _table(self, sender: str, gh: str) -> Any:
        """The copy of cell `gh`, made (empty) if need be; None if `sender` is not its
        node or the copies are at their limit."""
        home = self.city.home(("cell", gh))
        if home != sender:  # the sender's node list differs: not a copy to keep
            log.error("rides mirror: node %s pushed cell %s, which lives on %s", sender, gh, home)
            return None
        table = self.copies.get(gh)
        if table is None:
            if len(self.copies) >= MAX_COPIES:
                log.error("rides mirror: %d cells copied already; cell %s left out", MAX_COPIES, gh)
                return None
            table = self.copies[gh] = self.node.new_table(self.city.cell_table(gh))
            table.put("members", _EMPTY)
            table.put("quote", NO_SURGE)
        return table

    def _expire(self) -> None:
        oldest = self.now() - STALE_AFTER
        for node in [n for n, at in self.heard.items() if at < oldest]:
            del self.heard[node]
            for gh in [g for g, n in self.origin.items() if n == node]:
                self._empty(gh)

    def _watch(self, gh: str, pid: Any) -> None:
        """Publish (and monitor) `pid` as the remote cell `gh`'s process, or none."""
        watched = self.watched.get(gh)
        if watched is not None and watched[0] == pid:
            return
        if watched is not None:
            self.demonitor(watched[1], flush=True)
            del self.watches[watched[1]], self.watched[gh]
        if pid is not None:
            ref = self.monitor(pid)
            self.watched[gh] = (pid, ref)
            self.watches[ref] = gh
        self.copies[gh].put("pid", pid)

    def _empty(self, gh: str) -> None:
        """A copy whose cell no longer runs, or is out of reach: no members (its quote
        stays), no pid."""
        del self.origin[gh]
        self.copies[gh].put("members", _EMPTY)
        self._watch(gh, None)
