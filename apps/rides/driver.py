"""One process per driver: location, status (offline / online / busy), offers, its trip.

Durable (the store): status, rating, offers received and accepted (the acceptance rate),
the trip it drives, a claim in flight and the cell it was last reported in. Soft: the
position and heading (the phone sends one every ~4 s), the live offers, the phone's pid,
and the offers received since the last write (`unsaved_offers`): an offer changes
nothing that a guarantee rests on, so it is counted in memory and stored with the
driver's next accept, or when it goes offline or stops; a crash forgets at most those,
and the acceptance rate, a ranking hint, reads a little high until the next offers.

A driver not heard from for `OFFLINE_AFTER` (30) seconds goes offline and leaves its
cell; an offline driver without a trip stops (its state is stored) and the next message
starts it again (`storage.Entities`, key `("driver", id)`; a running driver is registered
as `("driver", id)` in the city's registry: rides send to it directly). The cell hears
from the driver at every update (position and availability), and between updates only
when its availability changed: a claim in flight is not reported (the driver refuses
offers meanwhile), a won claim is (busy).

Accepting an offer is a claim on the ride, and at most one claim is ever in flight: the
driver stores `claim = ride` before the claim leaves (the store holds its outputs until
the write commits), so after any crash it knows which ride it may have won and asks that
ride again (a claim by the same driver is idempotent). Claims and their answers are
messages (`("claim", driver, reply_to)` -> `("claimed", ride, ride_pid, won)`), so neither
process ever waits suspended; the phone's `accept` call is answered with the outcome.
The ride is the authority on who won; the driver takes a trip only when the ride says it
is the one. So no driver ever holds two rides and no ride two drivers. A won claim is
stored with the trip; a lost one only with the driver's next save (two of a match's
three claims lose, and nothing rests on it): a driver restarted meanwhile asks that ride
again, hears it lost, and lets go of it as it did before.

Two timers, both implied by the stored state, so they outlive crashes without being
stored themselves: while a claim is unanswered, "resolve" asks the ride again every
`RESOLVE_EVERY` seconds; while the driver has a trip, "trip check" checks every
`TRIP_CHECK_EVERY` seconds that the trip's ride still runs. A restarted driver arms them
from its stored `claim` and `trip` in `init` (the resolve at once: the answer to a claim
of an earlier incarnation was lost with it). A durable reminder (`storage.reminders`)
would give the same guarantee at the price of a record written when a claim is made and
deleted when it is answered, for each of a match's three claims.

Casts: `("update", lat, lon, heading, phone)`, `("offline",)`,
`("offer", ride, ride_pid, info, expires)`, `("withdraw", ride)`, `("remind", ride, ride_pid)`,
`("trip_over", ride)`.
Calls: `("accept", ride)` -> "accepted" (or raises why not), `("decline", ride)`,
`("state",)`, `("offers",)`.
"""
from __future__ import annotations

import math
from typing import Any

from actors import NoReply
from storage import PersistentServer

from . import geo
from .cell import OFFLINE_AFTER

DEFAULT_RATING = 4.5
DEFAULT_ACCEPTANCE = 0.8  # before a driver has had any offer
RESOLVE_EVERY = 2.0  # seconds between retries of a claim whose answer was lost
TRIP_CHECK_EVERY = 10.0  # seconds between checks that the trip's ride still runs
MAX_OFFERS = 16  # live offers a driver holds at once
_STALE, _RESOLVE, _TRIP_CHECK = ("$stale",), ("$resolve",), ("$trip_check",)


class OfferError(ValueError):
    """An accept or decline that cannot be taken: the message says why."""


class Driver(PersistentServer):
    """See the module docstring; `city` is bound by `service.bind`. Its state is saved
    explicitly (`storage.persistent`): most of its turns (location updates, offers,
    withdrawals) change nothing stored, and every change below calls `save()`."""

    city: Any = None
    save_explicitly = True

    def init(self, store: Any, key: Any) -> None:
        super().init(store, key)
        self.id = key[1]
        self.lat = self.lon = None
        self.heading = 0.0
        self.seen = self.now()  # a start is caused by a message from the driver or about it
        self.phone = None
        self.unsaved_offers = 0  # offers received and not yet in the state (see above)
        self.offers: dict[Any, tuple] = {}  # ride -> (ride pid, info, expires)
        self.stale_armed = False
        self.claimant = None  # the phone waiting for a claim's answer
        self.resolve_timer = None  # armed while a claim is unanswered
        self.trip_timer = None  # armed while the driver has a trip
        self.told_available: bool | None = None  # what the cell last heard (soft, like the cell)
        self.city.registry.register(("driver", self.id), self.pid)  # for introspection and checks
        if self.state["status"] != "offline":
            self._arm_stale()
        if self.state["claim"] is not None:
            self._arm("resolve_timer", 0, _RESOLVE)  # a claim whose answer this incarnation never got
        if self.state["trip"] is not None:
            self._arm("trip_timer", TRIP_CHECK_EVERY, _TRIP_CHECK)

    def initial_state(self) -> dict[str, Any]:
        return {"status": "offline", "rating": DEFAULT_RATING, "offered": 0, "accepted": 0,
                "trip": None, "claim": None, "cell": None}

    @property
    def acceptance(self) -> float:
        offered = self.state["offered"] + self.unsaved_offers
        return self.state["accepted"] / offered if offered else DEFAULT_ACCEPTANCE

    def _store_offers(self) -> None:
        """Move the offers counted in memory into the state (stored at the end of the turn)."""
        if self.unsaved_offers:
            self.state["offered"] += self.unsaved_offers
            self.unsaved_offers = 0
            self.save()

    def terminate(self, reason: Any) -> None:
        self._store_offers()  # a stop saves the state it stops with

    # -- casts ------------------------------------------------------------------------

    def handle_cast(self, msg: tuple) -> None:
        tag = msg[0]
        if tag == "update":
            self._update(*msg[1:])
        elif tag == "offer":
            self._offer(*msg[1:])
        elif tag == "withdraw":
            if self.offers.pop(msg[1], None) is not None:  # an accepted offer's answer says it all
                self._tell_phone(("withdrawn", msg[1]))
        elif tag == "remind":
            self._remind(msg[1], msg[2])
        elif tag == "trip_over":
            if self.state["trip"] == msg[1]:
                self._free()
        elif tag == "offline":
            self._offline()
        else:
            raise ValueError(f"driver {self.id}: unknown message {msg!r:.200}")

    def _remind(self, ride: Any, ride_pid: Any) -> None:
        """A matched ride waits for this driver's confirmation, which may have been lost."""
        if self.state["trip"] == ride:
            self.cast(ride_pid, ("confirm", self.id))
        elif self.state["claim"] == ride:
            self._resolve()

    def _update(self, lat: float, lon: float, heading: float, phone: Any) -> None:
        self.lat, self.lon, self.heading, self.seen = lat, lon, heading, self.now()
        if phone is not None:
            self.phone = phone
        s = self.state
        if s["status"] == "offline":
            s["status"] = "online"
            self.save()
        cell = geo.cell_of(lat, lon)
        if s["cell"] != cell:
            if s["cell"] is not None:
                self._to_cell(s["cell"], ("leave", self.id))
            s["cell"] = cell
            self.save()
        self._report()
        self._arm_stale()
        if s["trip"] is not None:
            self.city.to_ride(self, s["trip"], ("driver_at", self.id, lat, lon))

    def _report(self) -> None:
        """Tell the driver's cell where it is and whether it can take a ride."""
        s = self.state
        if s["cell"] is None or self.lat is None:
            return  # not located since it started: its next update reports it
        self.told_available = self._available()
        self._to_cell(s["cell"], ("at", self.id, self.lat, self.lon, self.heading, self.told_available,
                                  s["rating"], self.acceptance))

    def _available(self) -> bool:
        return self.state["status"] == "online" and self.state["claim"] is None

    def _to_cell(self, cell: str, msg: tuple) -> None:
        self.city.cast(self, ("cell", cell), msg)

    def _offer(self, ride: Any, ride_pid: Any, info: dict, expires: float) -> None:
        s = self.state
        if s["status"] != "online" or s["claim"] is not None or ride in self.offers:
            return  # not available: the ride's offer times out
        if len(self.offers) >= MAX_OFFERS:
            return
        self.offers[ride] = (ride_pid, info, expires)
        self.unsaved_offers += 1
        self._tell_phone(("offer", ride, info, expires))

    def _tell_phone(self, msg: tuple) -> None:
        if self.phone is not None:
            self.send(self.phone, ("driver", self.id) + msg)

    def _offline(self) -> None:
        s = self.state
        if s["cell"] is not None:
            self._to_cell(s["cell"], ("leave", self.id))
            s["cell"] = None
            self.save()
        self.offers.clear()
        self._store_offers()
        if s["trip"] is None and s["claim"] is None:
            s["status"] = "offline"
            self.save()
            self.stop()  # stored; the next message starts it again

    def _free(self) -> None:
        """The trip is over: back online if the driver is still reporting, else offline."""
        s = self.state
        s["trip"] = None
        self.save()
        self._disarm("trip_timer")
        if self.lat is not None and self.now() - self.seen < OFFLINE_AFTER:
            s["status"] = "online"
            self._report()
        else:
            self._offline()

    # -- calls ---------------------------------------------------------------------------

    def handle_call(self, request: tuple, caller: Any) -> Any:
        tag = request[0]
        if tag == "accept":
            return self._accept(request[1], caller)
        if tag == "decline":
            offer = self.offers.pop(request[1], None)
            if offer is None:
                return OfferError(f"driver {self.id} has no live offer for ride {request[1]!r}")
            self.cast(offer[0], ("decline", self.id))
            return "declined"
        if tag == "state":
            return dict(self.state, id=self.id, lat=self.lat, lon=self.lon, acceptance=self.acceptance,
                        offered=self.state["offered"] + self.unsaved_offers)
        if tag == "offers":
            now = self.now()
            return sorted(ride for ride, (_, _, expires) in self.offers.items() if expires >= now)
        return ValueError(f"driver {self.id}: unknown request {request!r:.200}")

    def _accept(self, ride: Any, caller: Any) -> Any:
        s = self.state
        offer = self.offers.pop(ride, None)
        if offer is None or offer[2] < self.now():
            return OfferError(f"driver {self.id} has no live offer for ride {ride!r} (expired or withdrawn)")
        if s["trip"] is not None or s["claim"] is not None:
            return OfferError(f"driver {self.id} is busy with ride {s['trip'] or s['claim']!r}")
        if s["status"] != "online":
            return OfferError(f"driver {self.id} is {s['status']}, cannot accept ride {ride!r}")
        s["claim"] = ride  # stored before the claim below leaves
        s["accepted"] += 1
        self.save()
        self._store_offers()
        self.claimant = caller
        # The cell is not told: a claim is settled in a few messages, offers meanwhile are
        # refused here (`_offer`), and the cell hears when the driver becomes busy.
        # The ride may have restarted since its offer: ask its current incarnation.
        self.cast(self.city.registry.lookup(("ride", ride)) or offer[0], ("claim", self.id, self.pid))
        self._arm("resolve_timer", RESOLVE_EVERY, _RESOLVE)
        return NoReply  # answered when the ride answers the claim

    def _claimed(self, ride: Any, ride_pid: Any, won: bool) -> None:
        """The ride answered a claim: take the trip (and confirm it) or go back to waiting."""
        s = self.state
        if s["claim"] != ride:
            return  # an answer to a claim already settled (a repeated claim)
        s["claim"] = None  # a lost claim's end is not saved by itself: see the module docstring
        self._disarm("resolve_timer")
        if won is True:
            s["trip"] = ride
            s["status"] = "busy"
            self.save()
            self.offers.clear()
            self._arm("trip_timer", TRIP_CHECK_EVERY, _TRIP_CHECK)
            self.cast(ride_pid, ("confirm", self.id))
            answer: Any = "accepted"
        else:
            answer = OfferError(f"ride {ride!r} went to another driver or was cancelled")
        if self.told_available is not self._available():
            self._report()
        if self.claimant is not None:
            self.reply(self.claimant, answer)
            self.claimant = None

    # -- timers ----------------------------------------------------------------------------

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is tuple and msg[0] == "claimed":
            return self._claimed(*msg[1:])
        if msg == _STALE:
            self.stale_armed = False
            left = self.seen + OFFLINE_AFTER - self.now()
            if left > 0:
                self._arm_stale(left)
            elif self.state["status"] != "offline":
                self._offline()
            return None
        if msg == _RESOLVE:
            self.resolve_timer = None
            return self._resolve()
        if msg == _TRIP_CHECK:
            self.trip_timer = None
            return self._check_trip()
        return super().handle_info(msg)

    def _arm_stale(self, after: float = OFFLINE_AFTER) -> None:
        if not self.stale_armed:
            self.stale_armed = True
            self.send_after(after, self.pid, _STALE)

    def _arm(self, field: str, after: float, msg: tuple) -> None:
        """(Re)start the timer kept in attribute `field`: `msg` to itself in `after` seconds."""
        self._disarm(field)
        setattr(self, field, self.send_after(after, self.pid, msg))

    def _disarm(self, field: str) -> None:
        timer = getattr(self, field)
        if timer is not None:
            self.cancel_timer(timer)
            setattr(self, field, None)

    def _resolve(self) -> None:
        """A claim still unanswered: claim again (a claim by the same driver is idempotent);
        a ride that has finished answers through its stored state (`service.settle`). Again
        in RESOLVE_EVERY seconds while the claim stays unanswered."""
        if self.state["claim"] is not None:
            self.city.to_ride(self, self.state["claim"], ("claim", self.id, self.pid))
            self._arm("resolve_timer", RESOLVE_EVERY, _RESOLVE)

    def _check_trip(self) -> None:
        """A trip whose ride ended while its `trip_over` was lost must not keep the driver
        busy: a ride no longer running answers from its stored state (`service.settle`).
        Again in TRIP_CHECK_EVERY seconds while the trip lasts."""
        if self.state["trip"] is not None:
            self.city.to_ride(self, self.state["trip"], ("check_trip", self.id, self.pid))
            self._arm("trip_timer", TRIP_CHECK_EVERY, _TRIP_CHECK)


def check_heading(heading: Any) -> float:
    if type(heading) not in (int, float) or not math.isfinite(heading):
        raise ValueError(f"heading must be a finite number of degrees, got {heading!r}")
    return float(heading) % 360.0
