"""The ride service as a simulated system (scenarios name it `rides`, or `"apps.rides.sim:RidesSystem"`).

Node "city" runs the ride service on a real LMDB store, or with `cities = N` (N > 1)
nodes "city1".."cityN" each run it on their own store, one city over N nodes (cells,
drivers and rides placed by their keys, `service.CityContext`); node "phones" (spared
by random faults) runs one phone process per driver and one per rider, each talking to
the service of its driver's or its ride's node. A driver's phone reports its
position every ~4 s, wanders while idle, accepts some of its offers after a moment's
thought, drives to the pickup and to the dropoff, and says so. A rider requests rides
(its own ids, retried until acknowledged), waits for the decision and sometimes cancels.
Phones keep driving while the workload is off: only new requests stop.

Checks:
- always: no ride has two drivers (phones told "accepted" for the same ride); no driver
  is on two active rides (the stored rides); no ride is matched after its deadline; every
  completed ride's fare follows the formula from its stored fields; no cell, driver or
  ride runs twice at once anywhere in the city (checked as each starts,
  `sim.systems.entities.Ledger`);
- eventually: every acknowledged request was decided (matched or cancelled) within its
  limit (plus the time its node was down and the worst clock skew); every driver's cell
  holds it at its position and no cell holds anyone else; no driver still claims or
  drives a ride that ended (its lost answer or `trip_over` was settled).

Deliberate bug (`bug = "live_placement"`), the naive design: keys are placed over the
city nodes connected now (`sim.systems.entities.LiveRouter`), so a key whose node is
down or cut off starts on another node, from that node's store: a partition runs it on
both sides (`single_activation` fails).
"""
from __future__ import annotations

import math
from typing import Any

from actors import Node, NoProc, ReceiveTimeout
from apps.common import RETRYABLE, ServerNodes, read_key, ServerSystem, top_restarts
from sim.core import buggify
from sim.schema import Field
from sim.system import System, check
from sim.systems.entities import Ledger, LiveRouter, live_home
from storage import Store
from storage.cluster import check_nodes, node_of

from . import geo, pricing
from .cell import LAT, LON, OFFLINE_AFTER
from .driver import TRIP_CHECK_EVERY, OfferError
from .matcher import ACTIVE, TERMINAL, MatchConfig, RideError
from .service import CityContext, RideService

CENTER = (37.7749, -122.4194)
BUGS = ("none", "live_placement")
IN_FLIGHT = 0.1  # seconds: well above the scenarios' network latency (at most 10 ms)
EXPIRED = OFFLINE_AFTER + pricing.SURGE_EVERY  # the longest a cell keeps a silent member
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
        "cities": Field.int(1, 1, 64, "city nodes: 1 is node 'city', more are city1.."),
        "bug": Field.str("none", BUGS, "a deliberate bug (see the module docstring)"),
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
        self.cities = ["city"] if cfg["cities"] == 1 else [f"city{i + 1}" for i in range(cfg["cities"])]
        self.down_since: dict[str, float] = {}
        self.downtime = dict.fromkeys(self.cities, 0.0)
        self.placement = check_nodes(self.cities)
        self.ledger = Ledger(self.sim)
        self.counts = dict.fromkeys(("requests", "acked", "matched", "cancelled", "rider_cancels", "offers",
                                     "accepts", "accepts_refused", "pickups", "completed", "updates",
                                     "retries"), 0)
        self.nodes = ServerNodes(self, self.cities, self._city, on_crash=self._crashed)
        self.nodes.add()
        self.sim.add_node("phones", self._start_phones, targets=False)

    # -- the city --------------------------------------------------------------------------

    def _city(self, node: Node, store: Store, resolve: Any) -> RideService:
        """A city node's service, as it (re)boots: the time it was down counts as its downtime."""
        since = self.down_since.pop(node.name, None)
        if since is not None:
            self.downtime[node.name] += self.sim.now - since
        make = LivePlacementRides if self.config["bug"] == "live_placement" else RideService
        return make(node, store, self.match, nodes=self.cities, max_restarts=self.config["top_restarts"],
                    activated=self.ledger.activated)

    def _crashed(self, name: str, power_loss: bool) -> None:
        self.down_since[name] = self.sim.now

    def _home(self, key: tuple) -> str:
        """The node `key` lives on (the placement the city is meant to have, whatever the bug)."""
        return node_of(key, self.placement)

    def _svc(self, key: tuple) -> RideService:
        """The service of `key`'s node (a driver's phone connects there, a rider's request
        goes there); NoProc while that node is down."""
        return self.nodes.serving(self._home(key))

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
                    self._svc(("driver", me)).driver_update(proc, me, lat, lon, heading, proc.pid)
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
            answer = await self._svc(("driver", me)).accept(proc, me, ride)
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
            svc = self._svc(("ride", ride))
            st = await (svc.pickup if stage == "pickup" else svc.dropoff)(proc, ride, me)
        except RideError:
            return None  # cancelled meanwhile
        except RETRYABLE:
            self.counts["retries"] += 1
            return trip
        if buggify("rides.dropoff_twice") and stage == "dropoff":
            await self._svc(("ride", ride)).dropoff(proc, ride, me)  # a retry the ride must take as the same answer
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
                    await self._svc(("ride", ride)).request_ride(proc, ride, f"rider{i}", pickup, dropoff,
                                                                 self.load["timeout"])
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
                    st = await self._svc(("ride", ride)).status(proc, ride)
                    if st["status"] != "requested":
                        view["decided"] = st["status"]
                        self.counts["matched" if st["driver"] is not None else "cancelled"] += 1
                    elif cancel_at is not None and proc.now() >= cancel_at:
                        await self._svc(("ride", ride)).cancel(proc, ride, f"rider{i}", "changed my mind")
                        self.counts["rider_cancels"] += 1
                        cancel_at = None
                except (RideError, *RETRYABLE):
                    self.counts["retries"] += 1

    # -- checks ---------------------------------------------------------------------------------

    def _stored_rides(self, complete: bool = False) -> dict[str, dict] | None:
        """The requested rides as their nodes' stores hold them: those of the stores that
        can be read now, or (`complete`) None unless all can."""
        out = {}
        for ride in self.requests:
            found = read_key(self.nodes.store(self._home(("ride", ride))), ("ride", ride))
            if found is False and complete:
                return None
            if found:
                out[ride] = found[1]
        return out

    def _running(self, key: tuple) -> Any:
        """The process of cell or driver `key` on its node, or None."""
        service = self.nodes.up(self._home(key))
        pid = service.city.registry.lookup(key) if service is not None else None
        return service.node.get_process(pid) if pid is not None else None

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
        rides = self._stored_rides(complete=True)
        if rides is None:
            return "a city node is down after heal"
        for ride, view in self.requests.items():
            if not view.get("acked"):
                continue
            st = rides.get(ride)
            if st is None or st["status"] == "requested":
                return f"ride {ride} was acknowledged but is {st['status'] if st else 'not stored'}"
            # Its node's downtime and clock skew: a restarted node decides at once.
            slack = self.downtime[self._home(("ride", ride))] + 2.0
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
        rides = self._stored_rides(complete=True)
        if rides is None:
            return "a city node is down after heal"
        acked = [ride for ride, view in self.requests.items() if view.get("acked")]
        if len(acked) >= 5 and not any(rides.get(r, {}).get("matched_at") is not None for r in acked):
            return f"none of {len(acked)} acknowledged requests was matched"
        return None

    @check("eventually")
    def cells_agree_with_drivers(self) -> str | None:
        """Each located, online driver is a member of its position's cell, at that position,
        and no cell holds a driver located elsewhere. Over several nodes, what a driver
        tells a cell of another node crosses the network: a driver that moved less than
        `IN_FLIGHT` seconds ago is left out (its message may be on its way), and a cell
        may hold a driver whose `leave` was lost, as long as it has not heard from it for
        two updates and the driver has not outlived the cell's expiry of the silent
        (`OFFLINE_AFTER`, at its next surge tick)."""
        down = [name for name in self.cities if self.nodes.up(name) is None]
        if down:
            return f"city node {down[0]} is down after heal"
        spread = len(self.cities) > 1
        in_flight = IN_FLIGHT if spread else 0.0
        where: dict[str, str | None] = {}
        for n in range(self.load["drivers"]):
            driver = f"d{n}"
            d = self._running(("driver", driver))
            if d is None or d.lat is None or d.state["status"] == "offline":
                continue
            if d.now() - d.seen < in_flight:
                where[driver] = None  # either cell may hold it for a moment
                continue
            cell = geo.cell_of(d.lat, d.lon)
            where[driver] = cell
            c = self._running(("cell", cell))
            if c is None or driver not in c.slot:
                return f"driver {driver} at {d.lat:.5f},{d.lon:.5f} is not a member of cell {cell}"
            row = c.slot[driver]
            if (c.rows[row, LAT], c.rows[row, LON]) != (d.lat, d.lon):
                return f"cell {cell} has driver {driver} at another position"
        # Every cell a driver can be in: the drivers stay in the city's square.
        for cell in geo.cells_within(*CENTER, self.config["city_km"] / math.sqrt(2)):
            c = self._running(("cell", cell))
            for driver in c.ids if c is not None else ():
                at = where.get(driver, "")
                silent = c.now() - c.seen[c.slot[driver]]
                if at in (cell, None) or spread and 2 * UPDATE_EVERY < silent <= EXPIRED:
                    continue
                return f"cell {cell} holds driver {driver}, who is at {at or 'no cell'} (silent for {silent:.3f} s)"
        return None

    @check("eventually")
    def drivers_let_go_of_ended_rides(self) -> str | None:
        """No driver still claims or drives a ride that ended a trip check ago or more: a
        lost answer to its claim, or a lost `trip_over`, is settled from the stored ride
        (on the ride's node, when that is another: `service.settle`)."""
        rides = self._stored_rides(complete=True)
        if rides is None:
            return "a city node is down after heal"
        for n in range(self.load["drivers"]):
            d = self._running(("driver", f"d{n}"))
            for what in ("claim", "trip") if d is not None else ():
                st = rides.get(d.state[what]) if d.state[what] is not None else None
                if st is None or st["status"] not in TERMINAL:
                    continue
                ended = st["completed_at"] if st["status"] == "completed" else st["decided_at"]
                if ended is not None and ended < self.sim.now - TRIP_CHECK_EVERY - 2.0:  # + clock skew
                    return f"driver d{n} still holds its {what} on ride {st['id']}, {st['status']} at {ended:.3f}"
        return None

    @check("always")
    def single_activation(self) -> str | None:
        """No cell, driver or ride runs twice at once, on one node or on two."""
        return self.ledger.violation()

    def stats(self) -> dict[str, int]:
        return {**self.counts, "activations": self.ledger.activations}


class LiveCity(CityContext):
    """The deliberate bug: a key lives on the node picked among the city nodes connected now."""

    def home(self, key: tuple) -> str:
        return live_home(self.node, key, self.nodes)


class LivePlacementRides(RideService):
    """The deliberate bug's service: its routers and its city place keys over live nodes."""

    router = LiveRouter
    context = LiveCity
