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
crashed ride restarts (transient child) from what was stored and resumes in its stored
status, whose timeouts start again from the stored times: its live offers stay live, a
claim is idempotent for the driver that won, and no other driver can win once one has.
Nothing is decided twice.

The lifecycle is a state machine (`actors.GenStateMachine`) whose state is the status:
the match deadline is the state timeout of "requested" and the confirmation reminders
that of "matched", so leaving a status ends its timer; the offers out are the generic
timeout "batch".

Messages to drivers and cells go straight to their running process when there is one
(`CityContext.cast`): a hop through their router is saved on every offer, withdrawal
and demand. On a city of several nodes, the cells of the other nodes are read in the
copies of their tables kept on this node (`mirror`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Collection

import numpy as np

from actors import GenericTimeout, GenServer, GenStateMachine, KeepState, NextState, Reply, StateTimeout, Stop
from storage import PersistentServer

from . import geo, pricing
from .cell import ACCEPTANCE, AVAILABLE, COLUMNS, HEADING_EAST, HEADING_NORTH, LAT, LAT_COS, LON, RATING, quote_of

ACTIVE = ("matched", "accepted", "arriving", "in_progress")
TERMINAL = ("completed", "cancelled")
CONFIRM_EVERY = 2.0  # seconds between reminders to a matched driver that has not confirmed
MAX_QUEUE = 60  # ranked candidates kept per search, at most (see MatchConfig.queue)
MAX_DECLINED = 1_000  # drivers who declined a ride, the newest kept (older ones may be asked again)
_BATCH, _STOP = ("timeout", "batch"), ("$stop",)


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
    # Sorted as plain tuples, the position last: no key function per row, and two ids
    # alike as strings keep their order without being compared.
    return [row[3] for row in sorted([(-s, str(driver), i, driver) for i, (s, driver) in enumerate(rows)])]


def best(ids: list[Any], table: np.ndarray, lat: float, lon: float, radius_km: float, limit: int,
         skip: Collection[Any] = ()) -> list[Any]:
    """The best `limit` drivers of a union of cells' members (`ids`, and `table` their rows,
    `cell.COLUMNS`) that are available, within `radius_km` of (lat, lon) and not in
    `skip`, in `rank`'s order: one vectorised pass over the union, and `rank` only for the
    few that can make the cut."""
    assert len(ids) == len(table) and limit > 0, (len(ids), table.shape, limit)
    if not ids:
        return []
    north, east = geo.offsets_deg(lat, lon, table[:, LAT], table[:, LON], radius_km)
    near = np.flatnonzero(geo.within_reach(lat, north, east, radius_km) & (table[:, AVAILABLE] > 0.0))
    north, east = north[near], east[near]
    km = geo.arc_km(lat, north, east, table[near, LAT_COS])
    inside = np.flatnonzero(km <= radius_km)
    hits, km, north, east = near[inside], km[inside], north[inside], east[inside]
    toward = geo.toward(lat, north, east, table[hits, HEADING_EAST], table[hits, HEADING_NORTH])
    scores = score(km, table[hits, RATING], table[hits, ACCEPTANCE], toward)
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


class Ride(PersistentServer, GenStateMachine):
    """See the module docstring. `init(store, key, request, config, city)`; the request is
    `{"rider", "pickup", "dropoff", "at", "deadline"}` as the city stored it."""

    state_enter = True

    def init(self, store: Any, key: Any, request: dict, config: MatchConfig, city: Any) -> str:
        self.id = key[1]  # before the state, which holds it
        super().init(store, key, request)
        self.config = config
        self.city = city
        self.queue: list[Any] = []  # the ranked candidates not offered yet: soft, a restart searches again
        self.withdrawing: list[Any] = []  # drivers to tell at the end of this turn (see `_withdraw`)
        city.registry.register(("ride", self.id), self.pid)
        return self.state["status"]  # a restarted ride resumes in its stored status

    def initial_state(self, request: dict) -> dict[str, Any]:
        return {"id": self.id, "rider": request["rider"], "pickup": request["pickup"],
                "dropoff": request["dropoff"], "cell": geo.cell_of(*request["pickup"]),
                "requested_at": request["at"], "deadline": request["deadline"], "status": "requested",
                "surge": None, "ratio": None, "time_mult": None, "quote": None,
                "step": 0, "outstanding": [], "tried": [], "declined": [], "batch_until": None,
                "searched": 0, "found": 0, "driver": None, "matched_at": None, "accepted_at": None,
                "eta_min": None, "started_at": None, "completed_at": None, "distance_km": None,
                "minutes": None, "fare": None, "reason": None, "decided_at": None}

    # -- the lifecycle ------------------------------------------------------------------------

    def handle_event(self, event: Any, content: Any, state: str) -> Any:
        if event == "enter":
            return self._entered(state, content)
        if event == "cast":
            return self._cast(content)
        if event == "state_timeout":
            return self._timed_out(content)
        if event == _BATCH:
            return self._timed_out("batch")
        if event == "info":
            return Stop() if content == _STOP else GenServer.handle_info(self, content)  # logged, dropped
        return self._call(content, event[1])

    def _entered(self, state: str, old: str) -> Any:
        s = self.state
        if state == "requested":  # new, or resumed: its live offers stay live
            deadline = StateTimeout(s["deadline"], "deadline", absolute=True)
            if s["outstanding"] and s["batch_until"] is not None:
                return KeepState(deadline, GenericTimeout("batch", s["batch_until"], absolute=True))
            return KeepState(deadline, self._search())
        if state == "matched":  # reminders until the driver confirms; at once when resumed
            return KeepState(StateTimeout(0 if old == state else CONFIRM_EVERY, "confirm"))
        if state in TERMINAL:
            self._finish()
        return None

    def _to(self, status: str, *actions: Any) -> NextState:
        self.state["status"] = status
        return NextState(status, *actions)

    def _quote(self, surge: float, ratio: float) -> None:
        """Lock the surge of the pickup cell and the time-of-day multiplier; quote a fare."""
        s = self.state
        s["surge"], s["ratio"] = surge, ratio
        s["time_mult"] = pricing.time_multiplier(pricing.hour_at(s["requested_at"], self.config.start_hour))
        km = geo.distance_km(*s["pickup"], *s["dropoff"])
        s["quote"] = pricing.fare(km, pricing.trip_minutes_estimate(km), s["surge"], s["time_mult"])

    # -- the match ------------------------------------------------------------------------

    def _search(self) -> GenericTimeout:
        """Rank the members of the live cells within the current radius, read from the
        tables they publish (a cell not running has no members: they come back with its
        drivers' next updates), and offer to the best. The first search locks the pickup
        cell's surge into the quote; every search from the narrowest radius records the
        ride's demand with the pickup cell (started if need be: recording it again is
        harmless, and a demand whose message was lost is recorded at the next sweep).
        Returns the timeout of the offers it made."""
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
        return self._offer_next()

    def _offer_next(self) -> GenericTimeout:
        """Offer to the next batch (or search wider, or pause before a new sweep); returns
        the timeout of what it started."""
        s = self.state
        cfg = self.config
        if not self.queue:
            if s["step"] + 1 < len(cfg.radii_km):
                s["step"] += 1
                return self._search()
            s["step"] = 0  # a new sweep from the narrowest radius: everyone may be asked again
            s["tried"] = []
            s["batch_until"] = self.now() + cfg.sweep_pause
            return GenericTimeout("batch", s["batch_until"], absolute=True)
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
        return GenericTimeout("batch", expires, absolute=True)

    def _withdraw(self, keep: Any = None) -> GenericTimeout:
        """Withdraw the offers out (but `keep`'s); returns the cancellation of their timeout.
        The withdrawals leave at the end of the turn (`run_turn`), to the drivers whose
        claim this turn did not answer: the claims of an offer's batch mostly arrive
        together, and a losing claim's answer already ends the driver's offer."""
        s = self.state
        self.withdrawing += [driver for driver in s["outstanding"] if driver != keep]
        s["outstanding"] = []
        s["batch_until"] = None
        return GenericTimeout("batch", None)

    def run_turn(self, turn: Callable[[], bool]) -> None:
        def then_withdraw() -> bool:
            suspended = turn()
            if self.withdrawing:
                self._send_withdrawals()
            return suspended
        super().run_turn(then_withdraw)

    def _send_withdrawals(self) -> None:
        live = self.state["outstanding"]  # offered again in this turn: the offer stands
        for driver in self.withdrawing:
            if driver not in live:
                self.city.cast(self, ("driver", driver), ("withdraw", self.id))
        self.withdrawing = []

    def _claim(self, driver: Any) -> tuple[bool, Any]:
        """Whether `driver` holds the ride (a claim is idempotent for the winner), and the
        transition if this claim won it."""
        s = self.state
        if s["driver"] is not None:
            return s["driver"] == driver and s["status"] not in TERMINAL, None
        if s["status"] != "requested" or driver not in s["outstanding"] or self.now() > s["deadline"]:
            return False, None
        s["driver"] = driver
        s["matched_at"] = s["decided_at"] = self.now()
        self.queue = []  # no more offers: the matched ride keeps no candidates
        withdrawn = self._withdraw(keep=driver)
        self.city.cast(self, ("cell", s["cell"]), ("undemand", self.id))
        return True, self._to("matched", withdrawn)

    # -- events ---------------------------------------------------------------------------------

    def _timed_out(self, what: str) -> Any:
        s = self.state
        if what == "batch":  # the offers out expired: the next batch, or a new search
            self._withdraw()
            return KeepState(self._offer_next() if self.queue else self._search())
        if what == "deadline":
            return self._cancel("no driver accepted within %g s" % self.config.match_limit if s["found"]
                                else "no available driver within %g km" % self.config.radii_km[-1])
        assert what == "confirm" and s["status"] == "matched", (what, s["status"])
        self.city.cast(self, ("driver", s["driver"]), ("remind", self.id, self.pid))
        return KeepState(StateTimeout(CONFIRM_EVERY, "confirm"))

    def _cast(self, msg: tuple) -> Any:
        s = self.state
        tag = msg[0]
        if tag == "claim":
            _, driver, reply_to = msg
            won, transition = self._claim(driver)
            if driver in self.withdrawing:  # its answer below ends its offer
                self.withdrawing.remove(driver)
            self.send(reply_to, ("claimed", self.id, self.pid, won))
            return transition
        if tag == "confirm":
            if s["status"] == "matched" and msg[1] == s["driver"]:
                s["accepted_at"] = self.now()
                return self._to("accepted")
        elif tag == "decline":
            if s["status"] == "requested" and msg[1] in s["outstanding"]:
                s["outstanding"].remove(msg[1])
                s["declined"].append(msg[1])
                if len(s["declined"]) > MAX_DECLINED:  # the stored state stays bounded
                    del s["declined"][0]
                if not s["outstanding"]:
                    return KeepState(self._offer_next())
        elif tag == "driver_at":
            if s["status"] in ("accepted", "arriving") and msg[1] == s["driver"]:
                s["eta_min"] = round(pricing.pickup_eta_minutes(geo.distance_km(msg[2], msg[3], *s["pickup"])), 3)
                return self._to("arriving")
        else:
            raise ValueError(f"ride {self.id}: unknown message {msg!r:.200}")
        return None

    def _call(self, request: tuple, caller: Any) -> Any:
        tag = request[0]
        if tag == "status":
            return KeepState(Reply(caller, dict(self.state)))
        if tag == "pickup":
            return self._transition(caller, request[1], ("accepted", "arriving"), "in_progress")
        if tag == "dropoff":
            return self._transition(caller, request[1], ("in_progress",), "completed")
        if tag == "cancel":
            return self._cancel_by(caller, request[1], request[2])
        return KeepState(Reply(caller, ValueError(f"ride {self.id}: unknown request {request!r:.200}")))

    def _transition(self, caller: Any, driver: Any, allowed: tuple, to: str) -> Any:
        s = self.state
        if s["driver"] != driver:
            return KeepState(Reply(caller, RideError(f"ride {self.id}: driver {driver!r} is not its driver "
                                                     f"({s['driver']!r})")))
        if s["status"] == to:
            return KeepState(Reply(caller, dict(s)))  # a retried request
        if s["status"] not in allowed:
            return KeepState(Reply(caller, RideError(f"ride {self.id} is {s['status']}; {to} needs "
                                                     f"{' or '.join(allowed)}")))
        now = self.now()
        if to == "in_progress":
            s["started_at"], s["eta_min"] = now, 0.0
        else:
            km = geo.distance_km(*s["pickup"], *s["dropoff"])
            minutes = (now - s["started_at"]) / 60.0
            s["distance_km"], s["minutes"] = km, minutes
            s["fare"] = pricing.fare(km, minutes, s["surge"], s["time_mult"])
            s["completed_at"] = now
        transition = self._to(to)
        return NextState(to, Reply(caller, dict(s)), *transition.actions)

    def _cancel_by(self, caller: Any, who: Any, reason: str) -> Any:
        s = self.state
        if s["status"] == "cancelled":
            return KeepState(Reply(caller, dict(s)))
        if s["status"] not in ("requested",) + ACTIVE[:3]:
            error = RideError(f"ride {self.id} is {s['status']}: too late to cancel")
        elif who != s["rider"] and who != s["driver"]:
            error = RideError(f"ride {self.id}: {who!r} is neither its rider nor its driver")
        elif type(reason) is not str or not reason:
            error = RideError(f"ride {self.id}: a cancellation needs a reason (a non-empty string)")
        else:
            transition = self._cancel(f"cancelled by {who}: {reason}")
            return NextState("cancelled", Reply(caller, dict(s)), *transition.actions)
        return KeepState(Reply(caller, error))

    def _cancel(self, reason: str) -> NextState:
        s = self.state
        actions = []
        if s["status"] == "requested":
            actions.append(self._withdraw())
            self.city.cast(self, ("cell", s["cell"]), ("undemand", self.id))
            s["decided_at"] = self.now()
        s["reason"] = reason
        return self._to("cancelled", *actions)

    def _finish(self) -> None:
        """A terminal ride frees its driver, leaves the city's open set and stops."""
        s = self.state
        if s["driver"] is not None:
            self.city.cast(self, ("driver", s["driver"]), ("trip_over", self.id))
        self.cast(self.city.gateway, ("closed", self.id))
        # Stopped from a message of its own: a stop during init would fail the start of
        # a ride restarted when it had just ended.
        self.send_after(0, self.pid, _STOP)
