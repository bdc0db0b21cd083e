"""Fares, ETAs and surge, with the numbers of the design documents.

- Surge per cell from the demand/supply ratio (open requests / available drivers, at
  least one driver): < 0.5 -> 1.0, < 1.0 -> 1.2, < 2.0 -> 1.5, < 3.0 -> 2.0, else 2.5 (the cap).
- Time of day: 1.3 in the peaks (7-9 h and 17-19 h, hours inclusive), 1.2 late at night
  (0-5 h), else 1.0.
- Fare: (2.50 base + 1.20 per km + 0.25 per minute) * surge * time multiplier, rounded to
  cents. Distance is pickup to dropoff (great circle); minutes are the trip's duration.
- ETA to pickup: 2 minutes per km; trip duration estimate: 3 minutes per km.
"""
from __future__ import annotations

import math

SURGE_TABLE = ((0.5, 1.0), (1.0, 1.2), (2.0, 1.5), (3.0, 2.0))
SURGE_MAX = 2.5
SURGE_LEVELS = (1.0, 1.2, 1.5, 2.0, 2.5)
SURGE_EVERY = 30.0  # seconds between a cell's surge recomputations

BASE_FARE = 2.50
PER_KM = 1.20
PER_MINUTE = 0.25
PICKUP_MIN_PER_KM = 2.0
TRIP_MIN_PER_KM = 3.0
MAX_FARE = 100_000.0  # a fare above this is a bug, not a long ride


def demand_supply_ratio(demand: int, supply: int) -> float:
    assert demand >= 0 and supply >= 0, (demand, supply)
    return demand / max(supply, 1)


def surge_for(ratio: float) -> float:
    """The surge multiplier of a demand/supply ratio (the table above)."""
    assert ratio >= 0 and math.isfinite(ratio), ratio
    for bound, multiplier in SURGE_TABLE:
        if ratio < bound:
            return multiplier
    return SURGE_MAX


def time_multiplier(hour: int) -> float:
    """1.3 at peak hours, 1.2 late at night, 1.0 otherwise."""
    assert 0 <= hour < 24, hour
    if 7 <= hour <= 9 or 17 <= hour <= 19:
        return 1.3
    if 0 <= hour <= 5:
        return 1.2
    return 1.0


def hour_at(seconds: float, start_hour: float) -> int:
    """The local hour `seconds` after a clock that started at `start_hour`."""
    return int((start_hour + seconds / 3600.0) % 24.0)


def fare(distance_km: float, minutes: float, surge: float, time_mult: float) -> float:
    """The fare of a trip, rounded to cents."""
    assert distance_km >= 0 and minutes >= 0, (distance_km, minutes)
    assert surge in SURGE_LEVELS, surge
    amount = round((BASE_FARE + PER_KM * distance_km + PER_MINUTE * minutes) * surge * time_mult, 2)
    assert 0 < amount <= MAX_FARE, amount
    return amount


def pickup_eta_minutes(distance_km: float) -> float:
    return PICKUP_MIN_PER_KM * distance_km


def trip_minutes_estimate(distance_km: float) -> float:
    return TRIP_MIN_PER_KM * distance_km
