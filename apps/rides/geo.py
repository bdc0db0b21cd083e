"""Geography for ride matching: geohash cells (precision 6), neighbours, covering cells,
vectorised haversine distances and headings.

A precision-6 geohash cell is 1/2**15 of the globe each way: 0.0055 deg of latitude
(611 m) by 0.011 deg of longitude (966 m at 38 deg N). A point's cell is found from its
grid index, and named by interleaving the index bits (exactly `geohash2.encode`, a few
times faster: it runs on every location update); covering a radius is grid arithmetic
too, leaving out the cells whose rectangle is beyond the radius.

    >>> cell_of(37.7749, -122.4194)
    '9q8yyk'
    >>> len(cells_within(37.7749, -122.4194, 1.0))    # the cell, its neighbours and more
    15
"""
from __future__ import annotations

import functools
import math

import geohash2
import numpy as np

PRECISION = 6
EARTH_RADIUS_KM = 6371.0088
CELL_LAT = 180.0 / 2 ** 15  # degrees of latitude per precision-6 cell
CELL_LON = 360.0 / 2 ** 15
KM_PER_DEG_LAT = math.pi * EARTH_RADIUS_KM / 180.0
MAX_COVER_CELLS = 4096  # limit on one covering: a radius of ~15 km at mid latitudes


def check_point(lat: float, lon: float, what: str = "location") -> tuple[float, float]:
    """The point as floats, or ValueError naming what is wrong with it."""
    if type(lat) is float and type(lon) is float and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        return lat, lon  # the usual case, checked in one expression (a NaN fails it)
    for name, value, bound in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
        if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > bound:
            raise ValueError(f"{what}: {name} must be a finite number in [-{bound:g}, {bound:g}], got {value!r}")
    return float(lat), float(lon)


def cell_of(lat: float, lon: float) -> str:
    """The precision-6 geohash of a point (exactly `geohash2.encode(lat, lon, 6)`, from the
    grid index: no string bisection on the location-update path)."""
    return _name(*_index(lat, lon))


_TOP = 2 ** 15 - 1  # the last grid index each way


def _index(lat: float, lon: float) -> tuple[int, int]:
    """The grid index of the cell holding the point. Geohash puts a point on an edge in
    the lower cell; the edges -90 + i * CELL_LAT (and likewise for longitude) are exact
    floats, so the estimate is corrected against them."""
    return _bisect(lat, -90.0, CELL_LAT), _bisect(lon, -180.0, CELL_LON)


def _bisect(x: float, origin: float, step: float) -> int:
    i = min(_TOP, max(0, int((x - origin) / step)))
    if i > 0 and x <= origin + i * step:
        i -= 1
    elif i < _TOP and x > origin + (i + 1) * step:
        i += 1
    return i


_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


@functools.lru_cache(maxsize=65_536)
def _name(i_lat: int, i_lon: int) -> str:
    """The geohash of the cell at a grid index: its bits interleaved, longitude first."""
    i_lon %= 2 ** 15
    bits = 0
    for k in range(14, -1, -1):
        bits = (bits << 2) | ((i_lon >> k) & 1) << 1 | ((i_lat >> k) & 1)
    return "".join(_BASE32[(bits >> shift) & 31] for shift in range(25, -1, -5))


def neighbours(cell: str) -> list[str]:
    """The 8 cells around `cell` (fewer at a pole), north-west first, row by row."""
    lat, lon, _, _ = geohash2.decode_exactly(cell)
    i_lat, i_lon = _index(lat, lon)
    return [_name(i_lat + dy, i_lon + dx) for dy in (1, 0, -1) for dx in (-1, 0, 1)
            if (dy or dx) and 0 <= i_lat + dy < 2 ** 15]


def cells_within(lat: float, lon: float, radius_km: float) -> list[str]:
    """Every cell that may hold a point within `radius_km` of (lat, lon), and always the
    point's cell and its neighbours. Ordered by rings around the point's cell, so the
    nearest are asked first. A cell of the covering grid is left out when its rectangle is
    farther than the radius from the part of the point's cell the point is in (one of
    `SUB` x `SUB`): about half of them at the usual radii. Answers are computed for all
    the parts of a cell at once and cached: requests keep coming from the same cells."""
    assert radius_km > 0, radius_km
    i_lat, i_lon = _index(lat, lon)
    sub_lat = int((lat - (-90.0 + i_lat * CELL_LAT)) / CELL_LAT * SUB)
    sub_lon = int((lon - (-180.0 + i_lon * CELL_LON)) / CELL_LON * SUB)
    return list(_within(i_lat, i_lon, radius_km)[min(SUB - 1, max(0, sub_lat))][min(SUB - 1, max(0, sub_lon))])


SUB = 4  # parts per cell side for `cells_within`: finer keeps fewer cells, costs more memory


@functools.lru_cache(maxsize=8_192)
def _within(i_lat: int, i_lon: int, radius_km: float) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """`cells_within` for each part of the cell at (i_lat, i_lon): [sub_lat][sub_lon]."""
    names, near, south, west, coslat = _cover(i_lat, i_lon, radius_km)
    part_lat, part_lon = CELL_LAT / SUB, CELL_LON / SUB
    lo_lat = (-90.0 + i_lat * CELL_LAT + np.arange(SUB) * part_lat)[:, None]  # the parts' south
    lo_lon = (-180.0 + i_lon * CELL_LON + np.arange(SUB) * part_lon)[:, None]  # and west edges
    # The gaps between each part and each cell, north-south and east-west (0 if they overlap).
    south_north = np.maximum(0.0, np.maximum(south - (lo_lat + part_lat), lo_lat - (south + CELL_LAT)))
    east_west = np.maximum(0.0, np.maximum(west - (lo_lon + part_lon), lo_lon - (west + CELL_LON))) * coslat
    reach = (radius_km * 1.01 + 0.001) / KM_PER_DEG_LAT  # flat distances vs haversine: a margin
    keep = near | ((south_north ** 2)[:, None, :] + (east_west ** 2)[None, :, :] <= reach * reach)
    shared: dict[bytes, tuple[str, ...]] = {}  # neighbouring parts mostly keep the same cells

    def cells(kept: np.ndarray) -> tuple[str, ...]:
        pattern = kept.tobytes()
        found = shared.get(pattern)
        if found is None:
            found = shared[pattern] = tuple(names[i] for i in np.flatnonzero(kept).tolist())
        return found

    return tuple(tuple(cells(keep[a, b]) for b in range(SUB)) for a in range(SUB))


@functools.lru_cache(maxsize=16_384)
def _cover(i_lat: int, i_lon: int, radius_km: float) -> tuple:
    """The grid of cells around the cell at (i_lat, i_lon) that a circle of `radius_km`
    from anywhere in it may reach, rings first: their names, whether they are the cell or
    a neighbour, their south and west edges, and the cosine that turns their degrees of
    longitude into degrees of latitude without overestimating a distance (taken at the
    latitude nearest a pole). Cached, as ride requests keep asking for the same few radii
    around the same cells."""
    lat = -90.0 + (i_lat + 0.5) * CELL_LAT
    rows = max(1, math.ceil(radius_km / (CELL_LAT * KM_PER_DEG_LAT)))
    coslat = max(0.01, math.cos(math.radians(lat)))
    cols = max(1, math.ceil(radius_km / (CELL_LON * KM_PER_DEG_LAT * coslat)))
    if (2 * rows + 1) * (2 * cols + 1) > MAX_COVER_CELLS:
        raise ValueError(f"a radius of {radius_km} km covers more than {MAX_COVER_CELLS} cells")
    offsets = [o for o in _rings(rows, cols) if 0 <= i_lat + o[0] < 2 ** 15]
    dy = np.array([o[0] for o in offsets])
    south = -90.0 + (i_lat + dy) * CELL_LAT
    polar = np.maximum.reduce([np.abs(south), np.abs(south + CELL_LAT), np.full(len(dy), abs(lat) + CELL_LAT)])
    return (tuple(_name(i_lat + y, i_lon + x) for y, x in offsets),
            np.array([max(abs(y), abs(x)) <= 1 for y, x in offsets]), south,
            -180.0 + (i_lon + np.array([o[1] for o in offsets])) * CELL_LON,
            np.cos(np.radians(np.minimum(90.0, polar))))


@functools.lru_cache(maxsize=256)
def _rings(rows: int, cols: int) -> tuple[tuple[int, int], ...]:
    """The (dy, dx) offsets of a grid `rows` by `cols` cells each way from its centre,
    ring by ring (the same for every cell: cached)."""
    return tuple(sorted(((dy, dx) for dy in range(-rows, rows + 1) for dx in range(-cols, cols + 1)),
                        key=lambda o: (max(abs(o[0]), abs(o[1])), o)))


def offsets_deg(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray,
                radius_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Degrees north and east from (lat, lon) to points (`lats`, `lons`), the east ones
    wrapped into [-180, 180) when a disc of `radius_km` around the point may cross the
    antimeridian: what the search's measures (`within_reach`, `arc_km`, `toward`) take,
    so the differences are made once. Two flat arrays, not one (n, 2) array: numpy runs
    an operation on an (n, 2) array one row at a time, about ten times slower."""
    north, east = lats - lat, lons - lon
    reach = radius_km / KM_PER_DEG_LAT
    if abs(lon) + reach / max(_cos_far(lat, reach), 1e-9) >= 180.0:
        east = (east + 180.0) % 360.0 - 180.0
    return north, east


def _cos_far(lat: float, reach: float) -> float:
    """The cosine at the latitude farthest from the equator that `reach` degrees from `lat` reach."""
    return math.cos(math.radians(min(90.0, abs(lat) + reach)))


def within_reach(lat: float, north: np.ndarray, east: np.ndarray, radius_km: float) -> np.ndarray:
    """A cheap superset of the points (`offsets_deg` from a point at `lat`) within
    `radius_km`: flat offsets, the east-west one scaled by the cosine at the latitude
    farthest from the equator the radius reaches (so never overestimated), against the
    radius with a margin. What it keeps is then measured with `arc_km`; at city radii it
    keeps about the disc."""
    reach = radius_km / KM_PER_DEG_LAT
    east = east * _cos_far(lat, reach)
    return north * north + east * east <= (reach * 1.01 + 1e-5) ** 2


def arc_km(lat: float, north: np.ndarray, east: np.ndarray, lat_cos: np.ndarray) -> np.ndarray:
    """Great-circle distances in km (haversine) from a point at `lat` to points `north`
    and `east` of it (`offsets_deg`) whose latitudes' cosines are `lat_cos` (vectorised)."""
    dlat = np.sin(north * (math.pi / 360.0))  # the sines of half the differences in radians
    dlon = np.sin(east * (math.pi / 360.0))
    a = dlat * dlat + math.cos(math.radians(lat)) * lat_cos * (dlon * dlon)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0, out=a), out=a), out=a)


def haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Great-circle distances in km from one point to arrays of points (vectorised)."""
    return arc_km(lat, lats - lat, lons - lon, np.cos(np.radians(lats)))


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points in km (the same formula as
    `haversine_km`, in scalar math: no array set-up for one pair)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(a, 1.0)))


def bearings_deg(lats: np.ndarray, lons: np.ndarray, lat: float, lon: float) -> np.ndarray:
    """Initial bearing (degrees clockwise from north) from each point toward (lat, lon)."""
    p1, p2 = np.radians(lats), math.radians(lat)
    dl = math.radians(lon) - np.radians(lons)
    y = np.sin(dl) * math.cos(p2)
    x = np.cos(p1) * math.sin(p2) - np.sin(p1) * math.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(y, x)) % 360.0


def heading_toward(headings: np.ndarray, lats: np.ndarray, lons: np.ndarray, lat: float, lon: float,
                   tolerance_deg: float = 45.0) -> np.ndarray:
    """True where a driver's heading points within `tolerance_deg` of the direction to
    (lat, lon) (`toward`, from the drivers' positions and headings in degrees)."""
    rad = np.radians(headings)
    return toward(lat, lats - lat, lons - lon, np.sin(rad), np.cos(rad), tolerance_deg)


def toward(lat: float, north: np.ndarray, east: np.ndarray, heading_east: np.ndarray,
           heading_north: np.ndarray, tolerance_deg: float = 45.0) -> np.ndarray:
    """True where a driver `north` and `east` (`offsets_deg`) of a point at `lat`, heading
    along the unit vector (`heading_east`, `heading_north`) (the sine and cosine of its
    heading), points within `tolerance_deg` of the direction to the point. The direction
    is taken in the flat local frame (north and east offsets), which at the few
    kilometres of a search is the great-circle bearing to within a tenth of a degree, and
    costs no trigonometry per driver. A driver at the point itself has no direction to it:
    not heading toward."""
    east = east * math.cos(math.radians(lat))
    away = heading_east * east + heading_north * north  # the heading . the offset from the point
    dist = np.hypot(north, east)
    return (dist > 0.0) & (away <= -math.cos(math.radians(tolerance_deg)) * dist)


def step_toward(lat: float, lon: float, to_lat: float, to_lon: float, km: float) -> tuple[float, float]:
    """The point `km` along the straight line (in degrees) from one point to another,
    stopping at the target: how simulated drivers move."""
    total = distance_km(lat, lon, to_lat, to_lon)
    if total <= km or total == 0.0:
        return to_lat, to_lon
    f = km / total
    return lat + (to_lat - lat) * f, lon + (to_lon - lon) * f


def heading_of(lat: float, lon: float, to_lat: float, to_lon: float) -> float:
    """Bearing in degrees from one point toward another."""
    return float(bearings_deg(np.array([lat]), np.array([lon]), to_lat, to_lon)[0])
