"""Uber-style ride matching as supervised, persistent processes.

Modules: `geo` (cells, neighbours, haversine), `pricing` (fares, ETAs, surge),
`cell` (one process per geohash cell), `driver` (one per driver), `matcher` (one per ride
request: the match and the trip), `service` (the tree, the gateway, the API), `sim` (the
simulated system for scenarios).
"""
from .matcher import MatchConfig, RideError, best, rank, score
from .driver import OfferError
from .service import RideService

__all__ = ["MatchConfig", "OfferError", "RideError", "RideService", "best", "rank", "score"]
