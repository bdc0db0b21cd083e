"""One process per ride request: the multi-phase match, then the trip's lifecycle.

Match (seeds: "top 3, 5 s timeout; next 3; expand radius, repeat"), all in the ride's
own turn: read the members of the live cells within the current radius from the tables
the cells publish on this node (`cell`), rank the union in one vectorised pass (`best`),
offer the best `batch` of them for `offer_timeout` seconds, then the next `batch`, then
widen the radius (`radii_km`), and after the widest start again from the narrowest. The
first search locks the pickup cell's published surge into the fare quote; every sweep
tells the pickup cell (started if need be) the ride's demand. The first driver whose
claim arrives while its offer is live wins; every other offer is withdrawn. At the
deadline (`match_limit` after the request) an unmatched ride is cancelled with a reason.
A claim after the deadline is refused.

Lifecycle: requested -> matched (a claim won) -> accepted (the driver confirmed it holds
the trip) -> arriving (the driver's location updates carry an ETA) -> in_progress
(pickup) -> completed (dropoff; the fare computed from the formula) | cancelled (no match,
or by the rider or driver before pickup).

State is stored after every turn that changes it: the quote and the offers out (before
they leave), the winner (before any driver hears it won), each later transition. The
request itself is the city's (its journal); the ranked candidates not offered yet are
not stored (a restarted ride searches again, skipping every driver already tried). A
crashed ride restarts (transient child) from what was stored and resumes: its deadline
and batch timers are re-armed from the stored times, its live offers stay live, a claim
is idempotent for the driver that won, and no other driver can win once one has.
Nothing is decided twice.

Messages to drivers and cells go straight to their running process when there is one
(`CityContext.cast`): a hop through their router is saved on every offer, withdrawal
and demand. A city's cells and rides run on one node: a cell elsewhere would have no
table here.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Collection

import numpy as np

from storage import PersistentServer

from . import geo, pricing
from .cell import ACCEPTANCE, AVAILABLE, COLUMNS, HEADING, LAT, LON, RATING, quote_of

ACTIVE = ("matched", "accepted", "arriving", "in_progress")
TERMINAL = ("completed", "cancelled")
CONFIRM_EVERY = 2.0  # seconds between reminders to a matched driver that has not confirmed
MAX_QUEUE = 60  # ranked candidates kept per search, at most (see MatchConfig.queue)
MAX_DECLINED = 1_000  # drivers who declined a ride, the newest kept (older ones may be asked again)
_DEADLINE, _BATCH, _CONFIRM, _STOP = ("$deadline",), ("$batch",), ("$confirm",), ("$stop",)


@dataclass(frozen=True)
class MatchConfig:
    """The match's knobs; the defaults are the design documents' numbers."""

    match_limit: float = 60.0
    offer_timeout: float = 5.0
    batch: int = 3
    radii_km: tuple[float, ...] = (1.0, 2.5, 5.0)
    sweep_pause: float = 1.0  # after the widest radius, before starting again
    start_hour: float = 8.0  # the local hour at node time 0 (time-of-day pricing)

    def __post_init__(self) -> None:
        if not 1.0 <= self.match_limit <= 3600.0:
            raise ValueError(f"match_limit must be 1..3600 s, got {self.match_limit!r}")
        if not 0.1 <= self.offer_timeout <= self.match_limit:
            raise ValueError(f"offer_timeout must be 0.1 s..match_limit, got {self.offer_timeout!r}")
        if not 1 <= self.batch <= 20:
            raise ValueError(f"batch must be 1..20 drivers, got {self.batch!r}")
        if not self.radii_km or list(self.radii_km) != sorted(self.radii_km) or not 0 < self.radii_km[0] \
                or self.radii_km[-1] > 15.0:
            raise ValueError(f"radii_km must be increasing, in (0, 15] km, got {self.radii_km!r}")
        if not 0 <= self.start_hour < 24:
            raise ValueError(f"start_hour must be in [0, 24), got {self.start_hour!r}")

    @property
    def queue(self) -> int:
        """Candidates worth ranking per search: as many as the batches the limit leaves
        time for (36 with the defaults), at most MAX_QUEUE. Declines can use them up
        sooner; the next, wider search then finds the rest again."""
        return min(MAX_QUEUE, self.batch * math.ceil(self.match_limit / self.offer_timeout))


def score(km: np.ndarray, rating: np.ndarray, acceptance: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """Drivers' scores (seeds), vectorised: 100 - 2 * km to pickup + 10 * rating + 5 *
    acceptance rate + 15 if heading toward the pickup."""
    return 100.0 - 2.0 * km + 10.0 * rating + 5.0 * acceptance + 15.0 * toward


def rank(rows: list[tuple]) -> list[Any]:
    """Driver ids best first from `(score, id)` rows; ties go to the smaller id as a string
    (deterministic)."""
    return [row[2] for row in sorted(((-s, str(driver), driver) for s, driver in rows), key=_KEY)]


_KEY = operator.itemgetter(0, 1)


def best(ids: list[Any], table: np.ndarray, lat: float, lon: float, radius_km: float, limit: int,
         skip: Collection[Any] = ()) -> list[Any]:
    """The best `limit` drivers of a union of cells' members (`ids`, and `table` their rows,
    `cell.COLUMNS`) that are available, within `radius_km` of (lat, lon) and not in
    `skip`, in `rank`'s order: one vectorised pass over the union, and `rank` only for the
    few that can make the cut."""
    assert len(ids) == len(table) and limit > 0, (len(ids), table.shape, limit)
    if not ids:
        return []
    near = np.flatnonzero((table[:, AVAILABLE] > 0.0) & geo.maybe_within(lat, lon, table[:, LAT], table[:, LON], radius_km))
    km = geo.haversine_km(lat, lon, table[near, LAT], table[near, LON])
    inside = km <= radius_km
    hits, km = near[inside], km[inside]
    rows = table[hits]
    toward = geo.heading_toward(rows[:, HEADING], rows[:, LAT], rows[:, LON], lat, lon)
    scores = score(km, rows[:, RATING], rows[:, ACCEPTANCE], toward)
    # Only drivers that can make the cut go to `rank`: those scoring at least the k-th
    # best score, k = limit + len(skip) (at most len(skip) of them are skipped), ties
    # included.
    k = limit + len(skip)
    if k < len(scores):
        cand = np.flatnonzero(scores >= np.partition(scores, len(scores) - k)[len(scores) - k])
        scores, hits = scores[cand], hits[cand]
    kept = [(value, ids[i]) for value, i in zip(scores.tolist(), hits.tolist()) if ids[i] not in skip]
    return rank(kept)[:limit]


class RideError(ValueError):
    """A trip transition that cannot be taken; the message says why."""


class Ride(PersistentServer):
    """See the module docstring. `init(store, key, request, config, city)`; the request is
    `{"rider", "pickup", "dropoff", "at", "deadline"}` as the city stored it."""

    def init(self, store: Any, key: Any, request: dict, config: MatchConfig, city: Any) -> None:
        self.id = key[1]  # before the state, which holds it
        super().init(store, key, request)
        self.config = config
        self.city = city
        self.queue: list[Any] = []  # the ranked candidates not offered yet: soft, a restart searches again
        self.deadline_timer = self.batch_timer = self.confirm_timer = None
        city.registry.register(("ride", self.id), self.pid)
        self.continue_with("resume")

    def initial_state(self, request: dict) -> dict[str, Any]:
        return {"id": self.id, "rider": request["rider"], "pickup": request["pickup"],
                "dropoff": request["dropoff"], "cell": geo.cell_of(*request["pickup"]),
                "requested_at": request["at"], "deadline": request["deadline"], "status": "requested",
                "surge": None, "ratio": None, "time_mult": None, "quote": None,
                "step": 0, "outstanding": [], "tried": [], "declined": [], "batch_until": None,
                "searched": 0, "found": 0, "driver": None, "matched_at": None, "accepted_at": None,
                "eta_min": None, "started_at": None, "completed_at": None, "distance_km": None,
                "minutes": None, "fare": None, "reason": None, "decided_at": None}

    # -- resume ---------------------------------------------------------------------------

    def handle_continue(self, arg: str) -> None:
        assert arg == "resume"
        s = self.state
        if s["status"] in TERMINAL:
            self._finish()
        elif s["status"] == "requested":
            self.deadline_timer = self._at(s["deadline"], _DEADLINE)
            if s["outstanding"] and s["batch_until"] is not None:  # its live offers stay live
                self.batch_timer = self._at(s["batch_until"], _BATCH)
            else:
                self._search()
        elif s["status"] == "matched":
            self.confirm_timer = self.send_after(0, self.pid, _CONFIRM)

    def _quote(self, surge: float, ratio: float) -> None:
        """Lock the surge of the pickup cell and the time-of-day multiplier; quote a fare."""
        s = self.state
        s["surge"], s["ratio"] = surge, ratio
        s["time_mult"] = pricing.time_multiplier(pricing.hour_at(s["requested_at"], self.config.start_hour))
        km = geo.distance_km(*s["pickup"], *s["dropoff"])
        s["quote"] = pricing.fare(km, pricing.trip_minutes_estimate(km), s["surge"], s["time_mult"])

    def _at(self, t: float, msg: tuple) -> Any:
        return self.send_after(max(0.0, t - self.now()), self.pid, msg)

    # -- the match ------------------------------------------------------------------------

    def _search(self) -> None:
        """Rank the members of the live cells within the current radius, read from the
        tables they publish (a cell not running has no members: they come back with its
        drivers' next updates), and offer to the best. The first search locks the pickup
        cell's surge into the quote; every search from the narrowest radius records the
        ride's demand with the pickup cell (started if need be: recording it again is
        harmless, and a demand whose message was lost is recorded at the next sweep)."""
        s = self.state
        if s["step"] == 0:
            self.city.cast(self, ("cell", s["cell"]), ("demand", self.id, s["deadline"]))
        if s["surge"] is None:
            self._quote(*quote_of(self.node, self.store, self.city, s["cell"]))
        lat, lon = s["pickup"]
        ids: list[Any] = []
        rows = []
        for cell in geo.cells_within(lat, lon, self.config.radii_km[s["step"]]):
            table = self.node.table(self.city.cell_table(cell))
            if table is not None:
                members, snapshot = table.get("members")
                ids += members
                rows.append(snapshot)
        skip = set(s["declined"]) | set(s["outstanding"]) | set(s["tried"])  # membership only
        table = np.concatenate(rows) if rows else np.zeros((0, len(COLUMNS)))
        self.queue = best(ids, table, lat, lon, self.config.radii_km[s["step"]], self.config.queue, skip)
        s["searched"] += 1
        s["found"] += len(self.queue)
        self._offer_next()

    def _offer_next(self) -> None:
        s = self.state
        cfg = self.config
        if not self.queue:
            if s["step"] + 1 < len(cfg.radii_km):
                s["step"] += 1
                self._search()
            else:  # a new sweep from the narrowest radius: everyone may be asked again
                s["step"] = 0
                s["tried"] = []
                s["batch_until"] = self.now() + cfg.sweep_pause
                self.batch_timer = self._at(s["batch_until"], _BATCH)
            return
        batch, self.queue = self.queue[:cfg.batch], self.queue[cfg.batch:]
        expires = min(self.now() + cfg.offer_timeout, s["deadline"])
        s["outstanding"] = batch
        s["tried"] += batch
        s["batch_until"] = expires
        km = geo.distance_km(*s["pickup"], *s["dropoff"])
        info = {"pickup": s["pickup"], "dropoff": s["dropoff"], "fare": s["quote"],
                "km": round(km, 3), "rider": s["rider"]}
        for driver in batch:
            self.city.cast(self, ("driver", driver), ("offer", self.id, self.pid, info, expires))
        self.batch_timer = self._at(expires, _BATCH)

    def _withdraw(self, keep: Any = None) -> None:
        s = self.state
        for driver in s["outstanding"]:
            if driver != keep:
                self.city.cast(self, ("driver", driver), ("withdraw", self.id))
        s["outstanding"] = []
        s["batch_until"] = None

    def _claim(self, driver: Any) -> bool:
        s = self.state
        if s["driver"] is not None:
            return s["driver"] == driver and s["status"] not in TERMINAL  # idempotent for the winner
        if s["status"] != "requested" or driver not in s["outstanding"] or self.now() > s["deadline"]:
            return False
        s["driver"] = driver
        s["status"] = "matched"
        s["matched_at"] = s["decided_at"] = self.now()
        self._withdraw(keep=driver)
        self.city.cast(self, ("cell", s["cell"]), ("undemand", self.id))
        self._cancel_timers()
        self.confirm_timer = self.send_after(CONFIRM_EVERY, self.pid, _CONFIRM)
        return True

    def _cancel_timers_batch(self) -> None:
        if self.batch_timer is not None:
            self.cancel_timer(self.batch_timer)
            self.batch_timer = None

    def _cancel_timers(self) -> None:
        for timer in (self.deadline_timer, self.batch_timer):
            if timer is not None:
                self.cancel_timer(timer)
        self.deadline_timer = self.batch_timer = None

    # -- messages ---------------------------------------------------------------------------

    def handle_info(self, msg: Any) -> None:
        s = self.state
        if msg == _BATCH:
            self.batch_timer = None
            if s["status"] == "requested":
                self._withdraw()
                if self.queue:
                    self._offer_next()
                else:
                    self._search()
        elif msg == _DEADLINE:
            self.deadline_timer = None
            if s["status"] == "requested":
                reason = ("no driver accepted within %g s" % self.config.match_limit if s["found"]
                          else "no available driver within %g km" % self.config.radii_km[-1])
                self._cancel(reason)
        elif msg == _STOP:
            self.stop()
        elif msg == _CONFIRM:
            if s["status"] == "matched":
                self.city.cast(self, ("driver", s["driver"]), ("remind", self.id, self.pid))
                self.confirm_timer = self.send_after(CONFIRM_EVERY, self.pid, _CONFIRM)
        else:
            super().handle_info(msg)

    def handle_cast(self, msg: tuple) -> None:
        s = self.state
        tag = msg[0]
        if tag == "claim":
            _, driver, reply_to = msg
            self.send(reply_to, ("claimed", self.id, self.pid, self._claim(driver)))
        elif tag == "confirm":
            if s["status"] == "matched" and msg[1] == s["driver"]:
                s["status"] = "accepted"
                s["accepted_at"] = self.now()
                self.cancel_timer(self.confirm_timer)
        elif tag == "decline":
            if s["status"] == "requested" and msg[1] in s["outstanding"]:
                s["outstanding"].remove(msg[1])
                s["declined"].append(msg[1])
                if len(s["declined"]) > MAX_DECLINED:  # the stored state stays bounded
                    del s["declined"][0]
                if not s["outstanding"]:
                    self._cancel_timers_batch()
                    self._offer_next()
        elif tag == "driver_at":
            if s["status"] in ("accepted", "arriving") and msg[1] == s["driver"]:
                s["status"] = "arriving"
                s["eta_min"] = round(pricing.pickup_eta_minutes(geo.distance_km(msg[2], msg[3], *s["pickup"])), 3)
        else:
            raise ValueError(f"ride {self.id}: unknown message {msg!r:.200}")

    def handle_call(self, request: tuple, caller: Any) -> Any:
        tag = request[0]
        if tag == "status":
            return dict(self.state)
        if tag == "pickup":
            return self._transition(request[1], ("accepted", "arriving"), "in_progress")
        if tag == "dropoff":
            return self._transition(request[1], ("in_progress",), "completed")
        if tag == "cancel":
            return self._cancel_by(request[1], request[2])
        return ValueError(f"ride {self.id}: unknown request {request!r:.200}")

    def _transition(self, driver: Any, allowed: tuple, to: str) -> Any:
        s = self.state
        if s["driver"] != driver:
            return RideError(f"ride {self.id}: driver {driver!r} is not its driver ({s['driver']!r})")
        if s["status"] == to:
            return dict(s)  # a retried request
        if s["status"] not in allowed:
            return RideError(f"ride {self.id} is {s['status']}; {to} needs {' or '.join(allowed)}")
        now = self.now()
        if to == "in_progress":
            s["status"], s["started_at"], s["eta_min"] = to, now, 0.0
            return dict(s)
        km = geo.distance_km(*s["pickup"], *s["dropoff"])
        minutes = (now - s["started_at"]) / 60.0
        s["distance_km"], s["minutes"] = km, minutes
        s["fare"] = pricing.fare(km, minutes, s["surge"], s["time_mult"])
        s["status"], s["completed_at"] = to, now
        self._finish()
        return dict(s)

    def _cancel_by(self, who: Any, reason: str) -> Any:
        s = self.state
        if s["status"] == "cancelled":
            return dict(s)
        if s["status"] not in ("requested",) + ACTIVE[:3]:
            return RideError(f"ride {self.id} is {s['status']}: too late to cancel")
        if who != s["rider"] and who != s["driver"]:
            return RideError(f"ride {self.id}: {who!r} is neither its rider nor its driver")
        if type(reason) is not str or not reason:
            return RideError(f"ride {self.id}: a cancellation needs a reason (a non-empty string)")
        self._cancel(f"cancelled by {who}: {reason}")
        return dict(s)

    def _cancel(self, reason: str) -> None:
        s = self.state
        if s["status"] == "requested":
            self._withdraw()
            self.city.cast(self, ("cell", s["cell"]), ("undemand", self.id))
            s["decided_at"] = self.now()
        self._cancel_timers()
        s["status"], s["reason"] = "cancelled", reason
        self._finish()

    def _finish(self) -> None:
        """A terminal ride frees its driver, leaves the city's open set and stops."""
        s = self.state
        if s["driver"] is not None:
            self.city.cast(self, ("driver", s["driver"]), ("trip_over", self.id))
        self.cast(self.city.gateway, ("closed", self.id))
        # Stopped from a message of its own: this may run at the end of an async callback,
        # where a stop would skip saving the state (HOOK-NEEDED: storage).
        self.send_after(0, self.pid, _STOP)
