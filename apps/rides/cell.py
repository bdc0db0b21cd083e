"""One process per geohash cell: the drivers in it, its demand and supply, its surge.

Soft state, rebuilt from the drivers' next location updates (every ~4 s) after a crash:
the members' positions, headings, ratings, acceptance rates and availability, in numpy
arrays so a nearby search is one vectorised haversine over the cell. Durable state (the
store): the open ride requests whose pickup is in the cell (`demand`, each with the
request's deadline, so an entry whose removal was lost expires) and the last surge.

Every `SURGE_EVERY` (30) seconds the cell drops members not heard from for
`OFFLINE_AFTER` seconds and expired demand, then recomputes its surge from the
demand/supply ratio (`pricing.surge_for`). Cells are activated entities (`storage.Entities`,
key `("cell", geohash)`); each registers itself in the city's registry so ride requests
can ask only the cells that exist.

Casts: `("at", driver, lat, lon, heading, available, rating, acceptance)`,
`("leave", driver)`, `("demand", ride, deadline[, reply_to, tag])` (with a reply_to, also
answered `("quote", tag, surge, ratio)`), `("undemand", ride)`,
`("nearby", lat, lon, radius_km, reply_to, tag)` (answered with a plain message
`("nearby", tag, rows)`, the available members within the radius already scored:
`matcher.candidates` rows). Calls: `("surge",)` -> dict, `("members",)` -> sorted ids.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from storage import PersistentServer

from . import geo, pricing
from .matcher import candidates

OFFLINE_AFTER = 30.0  # seconds without an update after which a driver is offline
MAX_MEMBERS = 100_000
MAX_DEMAND = 100_000
_COLUMNS = ("lat", "lon", "heading", "rating", "acceptance", "seen")
_TICK = ("$surge_tick",)


class Cell(PersistentServer):
    """See the module docstring. Started by `storage.Entities` as `init(store, key)`;
    `city` is bound by `service.bind` (a `CityContext`)."""

    city: Any = None

    def init(self, store: Any, key: Any) -> None:
        super().init(store, key)
        assert key[0] == "cell" and len(key[1]) == geo.PRECISION, key
        self.gh = key[1]
        self.slot: dict[Any, int] = {}  # driver -> row in the arrays
        self.ids: list[Any] = []
        self.cols = {name: np.zeros(16) for name in _COLUMNS}
        self.available = np.zeros(16, dtype=bool)
        self.city.registry.register(("cell", self.gh), self.pid)
        self.send_after(pricing.SURGE_EVERY, self.pid, _TICK)

    def initial_state(self) -> dict[str, Any]:
        return {"demand": {}, "surge": 1.0, "ratio": 0.0, "supply": 0, "at": 0.0}

    # -- membership --------------------------------------------------------------------

    def _put(self, driver: Any, lat: float, lon: float, heading: float, available: bool,
             rating: float, acceptance: float) -> None:
        i = self.slot.get(driver)
        if i is None:
            if len(self.ids) >= MAX_MEMBERS:
                raise OverflowError(f"cell {self.gh} is full ({MAX_MEMBERS} drivers)")
            i = self.slot[driver] = len(self.ids)
            self.ids.append(driver)
            if i == len(self.available):
                for name in _COLUMNS:
                    self.cols[name] = np.resize(self.cols[name], 2 * i)
                self.available = np.resize(self.available, 2 * i)
        c = self.cols
        c["lat"][i], c["lon"][i], c["heading"][i] = lat, lon, heading
        c["rating"][i], c["acceptance"][i], c["seen"][i] = rating, acceptance, self.now()
        self.available[i] = available

    def _drop(self, driver: Any) -> None:
        i = self.slot.pop(driver, None)
        if i is None:
            return
        last = len(self.ids) - 1
        if i != last:  # move the last row into the hole
            moved = self.ids[last]
            self.ids[i] = moved
            self.slot[moved] = i
            for col in self.cols.values():
                col[i] = col[last]
            self.available[i] = self.available[last]
        self.ids.pop()

    # -- callbacks ------------------------------------------------------------------------

    def handle_cast(self, msg: tuple) -> None:
        tag = msg[0]
        if tag == "at":
            self._put(*msg[1:])
        elif tag == "leave":
            self._drop(msg[1])
        elif tag == "nearby":
            _, lat, lon, radius, reply_to, ref = msg
            self.send(reply_to, ("nearby", ref, self._nearby(lat, lon, radius)))
        elif tag == "demand":
            demand = self.state["demand"]
            if msg[1] not in demand and len(demand) >= MAX_DEMAND:
                raise OverflowError(f"cell {self.gh} has {MAX_DEMAND} open requests")
            demand[msg[1]] = msg[2]
            if len(msg) == 5:  # and a quote: the surge the ride's fare is locked at
                self.send(msg[3], ("quote", msg[4], self.state["surge"], self.state["ratio"]))
        elif tag == "undemand":
            self.state["demand"].pop(msg[1], None)
        else:
            raise ValueError(f"cell {self.gh}: unknown message {msg!r:.200}")

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "surge":
            return {k: self.state[k] for k in ("surge", "ratio", "supply")} | {
                "demand": len(self.state["demand"])}
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

    def _nearby(self, lat: float, lon: float, radius_km: float) -> list[tuple]:
        """Available members within the radius, scored (`matcher.candidates` rows)."""
        n = len(self.ids)
        if n == 0:
            return []
        c = self.cols
        km = geo.haversine_km(lat, lon, c["lat"][:n], c["lon"][:n])
        hits = np.flatnonzero(self.available[:n] & (km <= radius_km))
        if len(hits) == 0:
            return []
        toward = geo.heading_toward(c["heading"][hits], c["lat"][hits], c["lon"][hits], lat, lon)
        return candidates([self.ids[i] for i in hits.tolist()], km[hits], c["rating"][hits],
                          c["acceptance"][hits], toward)

    def _recompute(self) -> None:
        now = self.now()
        n = len(self.ids)
        stale = [self.ids[i] for i in np.flatnonzero(self.cols["seen"][:n] < now - OFFLINE_AFTER)]
        for driver in stale:
            self._drop(driver)
        demand = self.state["demand"]
        for ride in [r for r, deadline in demand.items() if deadline < now]:
            del demand[ride]
        supply = int(self.available[:len(self.ids)].sum())
        ratio = pricing.demand_supply_ratio(len(demand), supply)
        self.state.update(surge=pricing.surge_for(ratio), ratio=ratio, supply=supply, at=now)
