"""The ride service as a simulated system (scenarios name it `rides`, or `"apps.rides.sim:RidesSystem"`).

Node "city" runs the ride service on a real LMDB store; node "phones" (spared by random
faults) runs one phone process per driver and one per rider. A driver's phone reports its
position every ~4 s, wanders while idle, accepts some of its offers after a moment's
thought, drives to the pickup and to the dropoff, and says so. A rider requests rides
(its own ids, retried until acknowledged), waits for the decision and sometimes cancels.
Phones keep driving while the workload is off: only new requests stop.

Checks:
- always: no ride has two drivers (phones told "accepted" for the same ride); no driver
  is on two active rides (the stored rides); no ride is matched after its deadline; every
  completed ride's fare follows the formula from its stored fields;
- eventually: every acknowledged request was decided (matched or cancelled) within its
  limit (plus the time the city was down and the worst clock skew); every driver's cell
  holds it at its position and no cell holds anyone else.
"""
from __future__ import annotations

import math
from typing import Any

from actors import Node, NoProc, ReceiveTimeout
from apps.common import RETRYABLE, ServerNodes, ServerSystem, top_restarts
from sim.core import buggify
from sim.schema import Field
from sim.system import System, check
from storage import Store

from . import geo, pricing
from .cell import LAT, LON
from .driver import OfferError
from .matcher import ACTIVE, MatchConfig, RideError
from .service import RideService

CENTER = (37.7749, -122.4194)
UPDATE_EVERY = 4.0


class RidesSystem(ServerSystem, System):
    """See the module docstring."""

    name = "rides"
    options = {
        "match_limit": Field.seconds(20.0, 2.0, 600.0, "a request's limit to be matched"),
        "offer_timeout": Field.seconds(3.0, 0.1, 60.0, "how long one batch of offers stays live"),
        "city_km": Field.float(2.0, 0.2, 20.0, "side of the square the city covers"),
        "start_hour": Field.float(8.0, 0.0, 23.99, "local hour at time 0 (time-of-day pricing)"),
        "top_restarts": top_restarts(50),
    }
    workload_options = {
        "drivers": Field.int(24, 1, 100_000, "driver phones"),
        "riders": Field.int(8, 1, 100_000, "rider phones"),
        "rate": Field.float(0.2, 0.001, 1000.0, "ride requests per second per rider"),
        "accept": Field.float(0.6, 0.0, 1.0, "probability a driver accepts an offer"),
        "cancel": Field.float(0.1, 0.0, 1.0, "probability a rider cancels a request still waiting"),
        "speed": Field.float(40.0, 1.0, 1000.0, "driving speed, metres per second"),
        "timeout": Field.seconds(1.0, 0.01, 60.0, "a phone's call timeout"),
    }

    def setup(self) -> None:
        cfg = self.config
        self.match = MatchConfig(match_limit=cfg["match_limit"], offer_timeout=cfg["offer_timeout"],
                                 start_hour=cfg["start_hour"])
        self.requests: dict[str, dict] = {}  # ride -> the rider's view: acked, decided
        self.winners: dict[str, list[str]] = {}  # ride -> drivers told "accepted"
        self.violations: list[str] = []
        self.down_since: float | None = None
        self.downtime = 0.0
        self.counts = dict.fromkeys(("requests", "acked", "matched", "cancelled", "rider_cancels", "offers",
                                     "accepts", "accepts_refused", "pickups", "completed", "updates",
                                     "retries"), 0)
        self.nodes = ServerNodes(self, ["city"], self._city, on_crash=self._crashed)
        self.nodes.add()
        self.sim.add_node("phones", self._start_phones, targets=False)

    # -- the city --------------------------------------------------------------------------

    def _city(self, node: Node, store: Store, resolve: Any) -> RideService:
        """The city's service, as it (re)boots: the time it was down counts as downtime."""
        if self.down_since is not None:
            self.downtime += self.sim.now - self.down_since
            self.down_since = None
        return RideService(node, store, self.match, max_restarts=self.config["top_restarts"])

    def _crashed(self, name: str, power_loss: bool) -> None:
        self.down_since = self.sim.now

    def _svc(self) -> RideService:
        return self.nodes.serving("city")

    # -- phones ------------------------------------------------------------------------------

    def _start_phones(self, node: Node) -> None:
        for i in range(self.load["riders"]):
            node.spawn(self._rider, i)
        for i in range(self.load["drivers"]):
            node.spawn(self._driver, i)

    def _point(self, rng: Any) -> tuple[float, float]:
        half = self.config["city_km"] / 2 / geo.KM_PER_DEG_LAT
        return (CENTER[0] + rng.uniform(-half, half),
                CENTER[1] + rng.uniform(-half, half) / math.cos(math.radians(CENTER[0])))

    async def _driver(self, proc: Any, i: int) -> None:
        rng = self.sim.stream(f"workload/driver-{i}")
        me = f"d{i}"
        lat, lon = self._point(rng)
        heading, goal = 0.0, self._point(rng)
        trip: list | None = None  # [ride, stage, target]
        step_km = self.load["speed"] * UPDATE_EVERY / 1000.0
        next_update = proc.now() + rng.uniform(0.0, UPDATE_EVERY)
        while True:
            try:
                msg = await proc.receive(timeout=max(0.0, next_update - proc.now()))
            except ReceiveTimeout:
                msg = None
            if msg is None:
                next_update = proc.now() + UPDATE_EVERY * rng.uniform(0.9, 1.1)
                target = trip[2] if trip is not None else goal
                heading = geo.heading_of(lat, lon, *target) if (lat, lon) != tuple(target) else heading
                lat, lon = geo.step_toward(lat, lon, *target, step_km)
                if trip is None and (lat, lon) == tuple(goal):
                    goal = self._point(rng)
                try:
                    self._svc().driver_update(proc, me, lat, lon, heading, proc.pid)
                    self.counts["updates"] += 1
                except NoProc:
                    continue
                if trip is not None and (lat, lon) == tuple(trip[2]):
                    trip = await self._drive_on(proc, me, trip)
                continue
            if msg[2] == "offer":
                self.counts["offers"] += 1
                if trip is None and rng.random() < self.load["accept"]:
                    await proc.sleep(rng.uniform(0.1, 1.5))
                    trip = await self._accept(proc, me, msg[3], msg[4])

    async def _accept(self, proc: Any, me: str, ride: str, info: dict) -> list | None:
        try:
            answer = await self._svc().accept(proc, me, ride)
        except (OfferError, *RETRYABLE):
            self.counts["accepts_refused"] += 1
            return None
        assert answer == "accepted", answer
        self.counts["accepts"] += 1
        self.winners.setdefault(ride, []).append(me)
        if len(self.winners[ride]) > 1:
            self.violations.append(f"ride {ride} accepted by {self.winners[ride]} (t={self.sim.now:.3f})")
        return [ride, "pickup", tuple(info["pickup"])]

    async def _drive_on(self, proc: Any, me: str, trip: list) -> list | None:
        """At the trip's target: pick up or drop off (a failed call is retried next update)."""
        ride, stage, _ = trip
        try:
            st = await (self._svc().pickup if stage == "pickup" else self._svc().dropoff)(proc, ride, me)
        except RideError:
            return None  # cancelled meanwhile
        except RETRYABLE:
            self.counts["retries"] += 1
            return trip
        if buggify("rides.dropoff_twice") and stage == "dropoff":
            await self._svc().dropoff(proc, ride, me)  # a retry the ride must take as the same answer
        if stage == "pickup":
            self.counts["pickups"] += 1
            return [ride, "dropoff", tuple(st["dropoff"])]
        self.counts["completed"] += 1
        return None

    async def _rider(self, proc: Any, i: int) -> None:
        rng = self.sim.stream(f"workload/rider-{i}")
        seq = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / self.load["rate"]))
            if not self.workload_on:
                continue
            seq += 1
            ride = f"r{i}-{seq}"
            pickup, dropoff = self._point(rng), self._point(rng)
            view = self.requests[ride] = {"decided": None}
            self.counts["requests"] += 1
            while True:
                try:
                    await self._svc().request_ride(proc, ride, f"rider{i}", pickup, dropoff, self.load["timeout"])
                    break
                except RETRYABLE:
                    self.counts["retries"] += 1
                    await proc.sleep(rng.uniform(0.1, 0.5))
            self.counts["acked"] += 1
            view["acked"] = True
            cancel_at = proc.now() + rng.uniform(1.0, self.match.match_limit) if rng.random() < self.load["cancel"] else None
            while view["decided"] is None:
                await proc.sleep(1.0)
                try:
                    st = await self._svc().status(proc, ride)
                    if st["status"] != "requested":
                        view["decided"] = st["status"]
                        self.counts["matched" if st["driver"] is not None else "cancelled"] += 1
                    elif cancel_at is not None and proc.now() >= cancel_at:
                        await self._svc().cancel(proc, ride, f"rider{i}", "changed my mind")
                        self.counts["rider_cancels"] += 1
                        cancel_at = None
                except (RideError, *RETRYABLE):
                    self.counts["retries"] += 1

    # -- checks ---------------------------------------------------------------------------------

    def _stored_rides(self) -> dict[str, dict] | None:
        store = self.nodes.store("city")
        if store is None or store.closed:
            return None
        out = {}
        for ride in self.requests:
            found = store.read(("ride", ride))
            if found is not None:
                out[ride] = found[1]
        return out

    @check("always")
    def one_driver_per_ride(self) -> str | None:
        """No ride was won by two drivers."""
        return self.violations[0] if self.violations else None

    @check("always")
    def one_ride_per_driver(self) -> str | None:
        """No driver holds two active rides (in the stored rides)."""
        rides = self._stored_rides() or {}
        holder: dict[str, str] = {}
        for ride, st in rides.items():
            if st["status"] in ACTIVE:
                other = holder.setdefault(st["driver"], ride)
                if other != ride:
                    return f"driver {st['driver']} is on rides {other} and {ride} at once"
        return None

    @check("always")
    def matched_within_deadline(self) -> str | None:
        """No ride was matched after its deadline."""
        for ride, st in (self._stored_rides() or {}).items():
            if st["matched_at"] is not None and st["matched_at"] > st["deadline"]:
                return f"ride {ride} matched at {st['matched_at']:.3f}, after its deadline {st['deadline']:.3f}"
        return None

    @check("always")
    def fares_follow_the_formula(self) -> str | None:
        """A completed ride's fare is the formula applied to its own stored fields."""
        for ride, st in (self._stored_rides() or {}).items():
            if st["status"] != "completed":
                continue
            km = geo.distance_km(*st["pickup"], *st["dropoff"])
            minutes = (st["completed_at"] - st["started_at"]) / 60.0
            tm = pricing.time_multiplier(pricing.hour_at(st["requested_at"], self.match.start_hour))
            want = pricing.fare(km, minutes, st["surge"], tm)
            if st["surge"] not in pricing.SURGE_LEVELS or st["time_mult"] != tm or st["fare"] != want:
                return (f"ride {ride}: fare {st['fare']} with surge {st['surge']} and time {st['time_mult']}; "
                        f"the formula gives {want} (time multiplier {tm})")
        return None

    @check("eventually")
    def every_request_decided_in_time(self) -> str | None:
        """Every acknowledged request ended matched or cancelled, within its limit."""
        rides = self._stored_rides()
        if rides is None:
            return "the city is down after heal"
        slack = self.downtime + 2.0  # downtime and clock skew: a restarted city decides at once
        for ride, view in self.requests.items():
            if not view.get("acked"):
                continue
            st = rides.get(ride)
            if st is None or st["status"] == "requested":
                return f"ride {ride} was acknowledged but is {st['status'] if st else 'not stored'}"
            if st["decided_at"] is not None and st["decided_at"] > st["deadline"] + slack:
                return (f"ride {ride} decided at {st['decided_at']:.3f}, limit {st['deadline']:.3f} "
                        f"(+{slack:.3f} s allowed)")
        return None

    @check("eventually")
    def some_requests_matched(self) -> str | None:
        """Matching works at all: of 5 or more acknowledged requests, one at least was
        matched (the checks above also hold for a city that cancels every request). A
        scenario with too few drivers ever to be near a pickup would fail it: the
        shipped ones have 24 in a few square kilometres."""
        rides = self._stored_rides()
        if rides is None:
            return "the city is down after heal"
        acked = [ride for ride, view in self.requests.items() if view.get("acked")]
        if len(acked) >= 5 and not any(rides.get(r, {}).get("matched_at") is not None for r in acked):
            return f"none of {len(acked)} acknowledged requests was matched"
        return None

    @check("eventually")
    def cells_agree_with_drivers(self) -> str | None:
        """Each located, online driver is a member of its position's cell, at that position,
        and no cell holds a driver located elsewhere."""
        node = self.sim.node("city")
        if node is None:
            return "the city is down after heal"
        registry = self.nodes.services["city"].city.registry
        where: dict[str, str] = {}
        for n in range(self.load["drivers"]):
            driver = f"d{n}"
            pid = registry.lookup(("driver", driver))
            d = node.get_process(pid) if pid is not None else None
            if d is None or d.lat is None or d.state["status"] == "offline":
                continue
            cell = geo.cell_of(d.lat, d.lon)
            where[driver] = cell
            pid = registry.lookup(("cell", cell))
            c = node.get_process(pid) if pid is not None else None
            if c is None or driver not in c.slot:
                return f"driver {driver} at {d.lat:.5f},{d.lon:.5f} is not a member of cell {cell}"
            row = c.slot[driver]
            if (c.rows[row, LAT], c.rows[row, LON]) != (d.lat, d.lon):
                return f"cell {cell} has driver {driver} at another position"
        # Every cell a driver can be in: the drivers stay in the city's square.
        for cell in geo.cells_within(*CENTER, self.config["city_km"] / math.sqrt(2)):
            pid = registry.lookup(("cell", cell))
            for driver in node.get_process(pid).ids if pid is not None else ():
                if where.get(driver) != cell:
                    return f"cell {cell} holds driver {driver}, who is at {where.get(driver)}"
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
