"""One process per geohash cell: the drivers in it, its demand and supply, its surge.

Soft state, rebuilt from the drivers' next location updates (every ~4 s) after a crash:
the members' positions, headings, ratings, acceptance rates and availability, one row
each in a numpy array (`COLUMNS`; `member_row` adds what a search derives from them, the
heading's unit vector and the latitude's cosine, once per update rather than once per
search that reads the row). Durable state (the store): the open ride requests
whose pickup is in the cell (`demand`, each with the request's deadline, so an entry
whose removal was lost expires), a record each (`("demand", ride)`: a save writes the
requests that changed, however many there are), and the last surge.

A nearby search does no arithmetic here and sends no message: the cell publishes its
members as they are, a read-only copy of its rows (`snapshot`), and its quote (surge,
ratio) in a node-local table (`actors.tables`, named `CityContext.cell_table(geohash)`),
and a ride reads the tables of the cells around its pickup in its own turn, then ranks
the union in one vectorised pass (`matcher.best`). The copy is made again at every change
(a few microseconds for a cell's few hundred rows: cheaper than a turn), so a reader
always sees the members as they are. A ride tells its pickup cell its demand by message
(`demand`); `quote_of` reads a cell's quote, from the store when it is not running.

Every `SURGE_EVERY` (30) seconds the cell drops members not heard from for
`OFFLINE_AFTER` seconds and expired demand, then recomputes its surge from the
demand/supply ratio (`pricing.surge_for`). Cells are activated entities (`storage.Entities`,
key `("cell", geohash)`); each registers itself in the city's registry so ride requests
can ask only the cells that exist.

Casts: `("at", driver, lat, lon, heading, available, rating, acceptance)`,
`("leave", driver)`, `("demand", ride, deadline)`, `("undemand", ride)`.
Calls: `("surge",)` -> dict, `("members",)` -> sorted ids.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from storage import PersistentServer

from . import geo, pricing

OFFLINE_AFTER = 30.0  # seconds without an update after which a driver is offline
MAX_MEMBERS = 100_000
MAX_DEMAND = 100_000
COLUMNS = ("lat", "lon", "heading", "rating", "acceptance", "available",  # a member's row (available: 1.0 / 0.0)
           "heading_east", "heading_north", "lat_cos")  # derived (`member_row`)
LAT, LON, HEADING, RATING, ACCEPTANCE, AVAILABLE, HEADING_EAST, HEADING_NORTH, LAT_COS = range(len(COLUMNS))
NO_SURGE = (1.0, 0.0)  # the quote (surge, ratio) of a cell without demand
_TICK = ("$surge_tick",)


def quote_of(node: Any, store: Any, city: Any, geohash: str) -> tuple[float, float]:
    """The (surge, ratio) cell `geohash` quotes: published in its table while it runs,
    else as stored (a cell never started has no surge)."""
    table = node.table(city.cell_table(geohash))
    if table is not None:
        return table.get("quote")
    stored = store.read(("cell", geohash))
    return NO_SURGE if stored is None else (stored[1]["surge"], stored[1]["ratio"])


def member_row(lat: float, lon: float, heading: float, rating: float, acceptance: float,
               available: bool) -> tuple[float, ...]:
    """A member's row (`COLUMNS`): what its driver reported, and the sine and cosine of its
    heading and the cosine of its latitude, which every search reading the row needs."""
    rad = math.radians(heading)
    return (lat, lon, heading, rating, acceptance, 1.0 if available else 0.0,
            math.sin(rad), math.cos(rad), math.cos(math.radians(lat)))


class Cell(PersistentServer):
    """See the module docstring. Started by `storage.Entities` as `init(store, key)`;
    `city` is bound by `service.bind` (a `CityContext`). Saved explicitly
    (`storage.persistent`): a location update changes nothing stored, and the only change
    of its state (demand is records) is the surge's, which calls `save()`."""

    city: Any = None
    save_explicitly = True

    def init(self, store: Any, key: Any) -> None:
        super().init(store, key)
        assert key[0] == "cell" and len(key[1]) == geo.PRECISION, key
        self.gh = key[1]
        self.slot: dict[Any, int] = {}  # driver -> its row
        self.ids: list[Any] = []
        self.rows = np.zeros((16, len(COLUMNS)))
        self.seen = np.zeros(16)  # when each member was last heard from
        self.table = self.node.new_table(self.city.cell_table(self.gh))
        self._publish()
        self._publish_quote()
        self.city.registry.register(("cell", self.gh), self.pid)
        self.send_after(pricing.SURGE_EVERY, self.pid, _TICK)

    def initial_state(self) -> dict[str, Any]:
        return {"surge": NO_SURGE[0], "ratio": NO_SURGE[1], "supply": 0, "at": 0.0}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        self.demand: dict[Any, float] = self.take_table("demand", records)

    # -- membership --------------------------------------------------------------------

    def _put(self, driver: Any, lat: float, lon: float, heading: float, available: bool,
             rating: float, acceptance: float) -> None:
        i = self.slot.get(driver)
        if i is None:
            if len(self.ids) >= MAX_MEMBERS:
                raise OverflowError(f"cell {self.gh} is full ({MAX_MEMBERS} drivers)")
            i = self.slot[driver] = len(self.ids)
            self.ids.append(driver)
            if i == len(self.seen):
                self.rows = np.resize(self.rows, (2 * i, len(COLUMNS)))
                self.seen = np.resize(self.seen, 2 * i)
        self.rows[i] = member_row(lat, lon, heading, rating, acceptance, available)
        self.seen[i] = self.now()
        self._publish()

    def _drop(self, driver: Any, publish: bool = True) -> None:
        i = self.slot.pop(driver, None)
        if i is None:
            return
        last = len(self.ids) - 1
        if i != last:  # move the last row into the hole
            moved = self.ids[last]
            self.ids[i] = moved
            self.slot[moved] = i
            self.rows[i] = self.rows[last]
            self.seen[i] = self.seen[last]
        self.ids.pop()
        if publish:
            self._publish()

    def _publish(self) -> None:
        rows = self.rows[:len(self.ids)].copy()
        rows.flags.writeable = False
        self.table.put("members", (tuple(self.ids), rows))

    def _publish_quote(self) -> None:
        self.table.put("quote", (self.state["surge"], self.state["ratio"]))

    def snapshot(self) -> tuple[tuple, np.ndarray]:
        """The members and their rows (`COLUMNS`), read-only: what a search gets (the
        table's value). Shared by every search until the members change (never mutated:
        a new one then)."""
        return self.table.get("members")

    # -- callbacks ------------------------------------------------------------------------

    def handle_cast(self, msg: tuple) -> None:
        tag = msg[0]
        if tag == "at":
            self._put(*msg[1:])
        elif tag == "leave":
            self._drop(msg[1])
        elif tag == "demand":
            self._demand(msg[1], msg[2])
        elif tag == "undemand":
            if self.demand.pop(msg[1], None) is not None:
                self.delete_record(("demand", msg[1]))
        else:
            raise ValueError(f"cell {self.gh}: unknown message {msg!r:.200}")

    def _demand(self, ride: Any, deadline: float) -> None:
        demand = self.demand
        if ride not in demand and len(demand) >= MAX_DEMAND:
            raise OverflowError(f"cell {self.gh} has {MAX_DEMAND} open requests")
        demand[ride] = deadline
        self.put_record(("demand", ride), deadline)

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "surge":
            return {k: self.state[k] for k in ("surge", "ratio", "supply")} | {
                "demand": len(self.demand)}
        if request[0] == "members":
            return sorted(self.ids)
        return ValueError(f"cell {self.gh}: unknown request {request!r:.200}")

    def handle_info(self, msg: Any) -> None:
        if msg == _TICK:
            self._recompute()
            self.send_after(pricing.SURGE_EVERY, self.pid, _TICK)
        else:
            super().handle_info(msg)

    # -- work ---------------------------------------------------------------------------

    def _recompute(self) -> None:
        now = self.now()
        n = len(self.ids)
        stale = [self.ids[i] for i in np.flatnonzero(self.seen[:n] < now - OFFLINE_AFTER)]
        for driver in stale:
            self._drop(driver, publish=False)
        if stale:
            self._publish()
        demand = self.demand
        for ride in [r for r, deadline in demand.items() if deadline < now]:
            del demand[ride]
            self.delete_record(("demand", ride))
        supply = int(np.count_nonzero(self.rows[:len(self.ids), AVAILABLE]))
        ratio = pricing.demand_supply_ratio(len(demand), supply)
        self.state.update(surge=pricing.surge_for(ratio), ratio=ratio, supply=supply, at=now)
        self.save()
        self._publish_quote()
