"""Ride matching: geography, pricing, ranking, and the processes on the deterministic driver."""

import geohash2
import numpy as np
import pytest

from actors import GenServer, Node, TableError
from apps.rides import MatchConfig, OfferError, RideError, RideService, best, rank, score
from apps.rides import geo, pricing
from apps.rides.cell import COLUMNS, member_row
from apps.rides.service import CityContext
from storage import Store

pytestmark = pytest.mark.usefixtures("quiet_crash_reports")  # rides and drivers crash on purpose

SF = (37.7749, -122.4194)


# -- geography -----------------------------------------------------------------------------

def test_cell_and_neighbours_are_adjacent_cells():
    cell = geo.cell_of(*SF)
    assert cell == "9q8yyk"
    around = geo.neighbours(cell)
    assert len(around) == 8 and len(set(around)) == 8 and cell not in around
    for other in around:  # adjacency is symmetric
        assert cell in geo.neighbours(other)


def test_cells_within_start_with_the_cell_and_its_neighbours_and_grow_with_the_radius():
    small = geo.cells_within(*SF, 0.3)
    assert small[0] == geo.cell_of(*SF) and set(small) == {geo.cell_of(*SF), *geo.neighbours(geo.cell_of(*SF))}
    wider = geo.cells_within(*SF, 2.5)
    assert set(small) < set(wider) and len(wider) == len(set(wider))
    # every point within the radius falls in a covering cell
    rng = np.random.default_rng(3)
    for bearing, km in zip(rng.uniform(0, 2 * np.pi, 200), rng.uniform(0, 2.5, 200)):
        lat = SF[0] + km * np.cos(bearing) / geo.KM_PER_DEG_LAT
        lon = SF[1] + km * np.sin(bearing) / (geo.KM_PER_DEG_LAT * np.cos(np.radians(SF[0])))
        if geo.distance_km(*SF, lat, lon) <= 2.5:
            assert geo.cell_of(lat, lon) in wider


def test_cell_of_is_geohash2_including_points_on_cell_edges():
    rng = np.random.default_rng(7)
    points = list(zip(rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000)))
    for i in range(0, 2 ** 15, 997):  # on an edge, and one float either side of it
        edge_lat, edge_lon = -90.0 + i * geo.CELL_LAT, -180.0 + i * geo.CELL_LON
        points += [(float(np.nextafter(edge_lat, d)), float(np.nextafter(edge_lon, d))) for d in (-1e3, 1e3)]
        points.append((edge_lat, edge_lon))
    points += [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)]
    for lat, lon in points:
        lat, lon = float(min(90.0, max(-90.0, lat))), float(min(180.0, max(-180.0, lon)))
        assert geo.cell_of(lat, lon) == geohash2.encode(lat, lon, geo.PRECISION), (lat, lon)


@pytest.mark.parametrize("centre", [SF, (60.17, 24.94), (-33.87, 151.21)])
def test_cells_within_cover_the_disc_from_anywhere_in_a_cell(centre):
    rng = np.random.default_rng(11)
    for _ in range(150):  # pickups all over the cells around the centre, and their parts
        lat, lon = centre[0] + rng.uniform(-0.01, 0.01), centre[1] + rng.uniform(-0.01, 0.01)
        radius = float(rng.choice([1.0, 2.5]))
        cells = set(geo.cells_within(lat, lon, radius))
        for bearing, km in zip(rng.uniform(0, 2 * np.pi, 30), radius * np.sqrt(rng.uniform(0, 1, 30))):
            p = (lat + km * np.cos(bearing) / geo.KM_PER_DEG_LAT,
                 lon + km * np.sin(bearing) / (geo.KM_PER_DEG_LAT * np.cos(np.radians(lat))))
            if geo.distance_km(lat, lon, *p) <= radius:
                assert geo.cell_of(*p) in cells, (lat, lon, radius, p)


def test_cells_within_leave_out_cells_beyond_the_radius():
    lat, lon = geo.geohash2.decode(geo.cell_of(*SF))  # the middle of the cell
    cells = geo.cells_within(float(lat), float(lon), 1.0)
    assert 9 < len(cells) < 25  # more than the neighbours, fewer than the 5 x 5 grid around them
    assert len(geo.cells_within(float(lat), float(lon), 5.0)) < 200


def test_haversine_is_vectorised_and_matches_known_distances():
    la = (34.0522, -118.2437)
    d = geo.haversine_km(*SF, np.array([SF[0], la[0]]), np.array([SF[1], la[1]]))
    assert d[0] == 0.0 and 555 < d[1] < 562  # San Francisco to Los Angeles
    assert abs(geo.distance_km(0, 0, 1, 0) - 111.195) < 0.01
    rng = np.random.default_rng(5)  # the scalar distance is the vectorised one
    lats, lons = rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)
    assert [geo.distance_km(*SF, la, lo) for la, lo in zip(lats, lons)] == pytest.approx(
        geo.haversine_km(*SF, lats, lons).tolist(), rel=1e-12)


def test_heading_toward_the_pickup():
    lats, lons = np.array([37.78, 37.78, SF[0]]), np.array([SF[1], SF[1], SF[1]])  # north, and at it
    toward = geo.heading_toward(np.array([180.0, 0.0, 0.0]), lats, lons, *SF)
    assert toward.tolist() == [True, False, False]  # at the pickup there is no direction to it
    east = geo.heading_toward(np.array([270.0, 225.0, 180.0]), np.full(3, SF[0] + 0.009),
                              np.full(3, SF[1] + 0.0114), *SF)  # 1 km north and 1 km east
    assert east.tolist() == [True, True, False]  # the pickup lies at 225.04 degrees


@pytest.mark.parametrize("lat", [0.0, 37.77, -70.0, 85.0, 89.99])
@pytest.mark.parametrize("radius", [1.0, 5.0, 15.0])
def test_within_reach_keeps_every_point_within_the_radius(lat, radius):
    rng = np.random.default_rng(7)
    d = radius / 111.0 * 1.5
    lats = np.clip(lat + rng.uniform(-d, d, 20_000), -90, 90)
    lons = 10.0 + rng.uniform(-d, d, 20_000) / max(0.05, np.cos(np.radians(lat)))
    inside = geo.haversine_km(lat, 10.0, lats, lons) <= radius
    kept = _maybe_within(lat, 10.0, lats, lons, radius)
    assert not (inside & ~kept).any()
    assert kept.sum() <= 1.1 * inside.sum()  # and little more: it is a prefilter worth having


def _maybe_within(lat, lon, lats, lons, radius):
    return geo.within_reach(lat, *geo.offsets_deg(lat, lon, lats, lons, radius), radius)


def test_within_reach_across_the_antimeridian():
    lats, lons = np.array([-17.7, -17.7, -17.7]), np.array([179.995, -179.995, 179.0])
    assert _maybe_within(-17.7, 179.999, lats, lons, 1.0).tolist() == [True, True, False]
    assert _maybe_within(-17.7, -179.999, lats, lons, 1.0).tolist() == [True, True, False]
    offsets = geo.offsets_deg(-17.7, 179.999, lats, lons, 1.0)
    assert geo.arc_km(-17.7, *offsets, np.cos(np.radians(lats)))[1] == pytest.approx(
        geo.distance_km(-17.7, 179.999, -17.7, -179.995), rel=1e-9)  # 0.6 km, not 38,000


def test_bad_points_are_named():
    with pytest.raises(ValueError, match="pickup: latitude"):
        geo.check_point(91.0, 0.0, "pickup")
    with pytest.raises(ValueError, match="longitude"):
        geo.check_point(0.0, float("nan"))


# -- pricing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio,surge", [(0.0, 1.0), (0.49, 1.0), (0.5, 1.2), (0.99, 1.2), (1.0, 1.5),
                                         (1.99, 1.5), (2.0, 2.0), (2.99, 2.0), (3.0, 2.5), (50.0, 2.5)])
def test_surge_table(ratio, surge):
    assert pricing.surge_for(ratio) == surge


def test_demand_supply_ratio_counts_at_least_one_driver():
    assert pricing.demand_supply_ratio(3, 0) == 3.0
    assert pricing.demand_supply_ratio(3, 6) == 0.5


@pytest.mark.parametrize("hour,mult", [(0, 1.2), (5, 1.2), (6, 1.0), (7, 1.3), (9, 1.3), (10, 1.0),
                                       (17, 1.3), (19, 1.3), (20, 1.0), (23, 1.0)])
def test_time_of_day_multiplier(hour, mult):
    assert pricing.time_multiplier(hour) == mult


def test_fare_formula_and_clock_hours():
    assert pricing.fare(10.0, 20.0, 1.5, 1.3) == round((2.5 + 12.0 + 5.0) * 1.5 * 1.3, 2)
    assert pricing.hour_at(0, 8.0) == 8 and pricing.hour_at(3600 * 17, 8.0) == 1
    with pytest.raises(AssertionError):
        pricing.fare(1.0, 1.0, 1.7, 1.0)  # not a surge level


# -- ranking ----------------------------------------------------------------------------------

def test_rank_follows_the_score():
    ids = ["far", "near", "toward", "rated"]
    scores = score(np.array([4.0, 0.5, 2.0, 0.5]),     # 100 - 8 + 49 + 4.5 = 145.5
                   np.array([4.9, 4.5, 4.5, 5.0]),     # 100 - 1 + 45 + 4 = 148
                   np.array([0.9, 0.8, 0.8, 0.1]),     # 100 - 4 + 45 + 4 + 15 = 160
                   np.array([False, False, True, False]))  # 100 - 1 + 50 + 0.5 = 149.5
    assert scores.tolist() == pytest.approx([145.5, 148.0, 160.0, 149.5])
    assert rank(zip(scores.tolist(), ids)) == ["toward", "rated", "near", "far"]
    assert rank([(1.0, "b"), (1.0, "a")]) == ["a", "b"]
    assert rank([(1.0, 10), (1.0, 9)]) == [10, 9]  # "10" < "9"
    assert rank([]) == []


def _members(rows):
    """A cell's table (`cell.COLUMNS`) from (lat, lon, heading, rating, acceptance, available) rows."""
    return np.array([member_row(*map(float, row)) for row in rows], dtype=float).reshape(-1, len(COLUMNS))


def test_best_ranks_the_union_of_cells_within_the_radius():
    north = SF[0] + 0.0045  # 500 m north of the pickup
    ids = ["a", "b", "c", "busy", "far", "south"]
    table = _members([(north, SF[1], 0.0, 4.5, 0.8, 1),      # heading away
                      (north, SF[1], 180.0, 4.5, 0.8, 1),    # heading toward the pickup: 163
                      (SF[0], SF[1], 90.0, 4.0, 0.5, 1),     # at the pickup, low rating
                      (SF[0], SF[1], 0.0, 5.0, 1.0, 0),      # the best, but not available
                      (SF[0] + 0.05, SF[1], 180.0, 5.0, 1.0, 1),  # 5.6 km: beyond the radius
                      (SF[0] - 0.0045, SF[1], 0.0, 4.5, 0.8, 1)])  # 163 too: "b" < "south"
    assert best(ids, table, *SF, 1.0, 10) == ["b", "south", "a", "c"]
    assert best(ids, table, *SF, 1.0, 2) == ["b", "south"]
    assert best(ids, table, *SF, 1.0, 10, skip={"b"}) == ["south", "a", "c"]
    assert best(ids, table, *SF, 10.0, 10) == ["b", "south", "far", "a", "c"]  # 158.9: 11 km less
    assert best([], _members([]), *SF, 1.0, 3) == []


def test_best_is_rank_over_every_eligible_driver():
    """`best` against the plain definition: every available driver within the radius and
    not skipped, scored and ranked, the first `limit` kept."""
    rng = np.random.default_rng(9)
    for trial in range(300):
        n = int(rng.integers(0, 150))
        table = _members(np.column_stack([
            SF[0] + rng.uniform(-0.01, 0.01, n), SF[1] + rng.uniform(-0.012, 0.012, n),
            rng.choice([0.0, 90.0, 180.0, 270.0], n), rng.choice([4.0, 4.5, 5.0], n),
            rng.choice([0.5, 1.0], n), rng.choice([0.0, 1.0], n, p=[0.2, 0.8])]))
        if trial % 3 == 0 and n:
            table[:] = table[0]  # all tied
        ids = [f"d{i}" for i in rng.permutation(n)]
        skip = set(ids[:int(rng.integers(0, 10))])
        limit, radius = int(rng.integers(1, 40)), float(rng.choice([0.5, 1.0, 2.5]))
        km = geo.haversine_km(*SF, table[:, 0], table[:, 1])
        toward = geo.heading_toward(table[:, 2], table[:, 0], table[:, 1], *SF)
        scores = score(km, table[:, 3], table[:, 4], toward).tolist()
        eligible = [(scores[i], ids[i]) for i in range(n)
                    if table[i, 5] > 0 and km[i] <= radius and ids[i] not in skip]
        assert best(ids, table, *SF, radius, limit, skip) == rank(eligible)[:limit], trial


def test_best_cuts_ties_as_rank_does():
    ids = [f"d{i}" for i in range(9, 0, -1)]  # d9 .. d1, all alike
    table = _members([(SF[0], SF[1], 0.0, 4.5, 0.8, 1)] * 9)
    assert best(ids, table, *SF, 1.0, 3) == ["d1", "d2", "d3"]
    assert best(ids, table, *SF, 1.0, 3, skip={"d2"}) == ["d1", "d3", "d4"]


def test_match_config_limits():
    with pytest.raises(ValueError, match="batch"):
        MatchConfig(batch=0)
    with pytest.raises(ValueError, match="radii_km"):
        MatchConfig(radii_km=(5.0, 1.0))
    # candidates ranked per search: the batches the limit leaves time for, at most 60
    assert MatchConfig().queue == 36 and MatchConfig(match_limit=20.0, offer_timeout=3.0).queue == 21
    assert MatchConfig(match_limit=3600.0, offer_timeout=0.1).queue == 60


# -- processes --------------------------------------------------------------------------------

def make_city(path, match_limit=30.0, seed=5, creation=0, clock=0.0):
    node = Node(seed=seed, creation=creation)
    node.advance(clock)
    store = Store(path, node)
    rides = RideService(node, store, MatchConfig(match_limit=match_limit))
    rides.start()
    return node, rides, store


@pytest.fixture
def city(tmp_path):
    node, rides, store = make_city(tmp_path / "rides")
    yield node, rides, store
    store.close()


def call(node, fut):
    return node.run_until_complete(fut)


def place(node, rides, drivers, heading=0.0):
    """Drivers north of SF, 100 m apart; each reports once."""
    for i, name in enumerate(drivers):
        rides.driver_update(node, name, SF[0] + 0.0009 * (i + 1), SF[1], heading=heading)
    node.run_for(0.5)


def request(node, rides, ride="r1", pickup=SF, dropoff=(37.80, -122.41)):
    return call(node, rides.request_ride(node, ride, "alice", pickup, dropoff))


def placed_and_requested(node, rides, drivers):
    """The drivers placed, ride "r1" requested at SF, and a second for its first offers."""
    place(node, rides, drivers)
    request(node, rides)
    node.run_for(1.0)


def offered(node, rides, drivers):
    return [d for d in drivers if call(node, rides.offers(node, d))]


def test_a_whole_trip_and_its_fare(city):
    node, rides, _ = city
    place(node, rides, ["d1", "d2"])
    assert request(node, rides) == "r1"
    node.run_for(1.0)
    assert call(node, rides.accept(node, "d1", "r1")) == "accepted"
    node.run_for(0.5)
    assert call(node, rides.status(node, "r1"))["status"] == "accepted"
    rides.driver_update(node, "d1", SF[0] + 0.0005, SF[1], heading=180.0)
    node.run_for(0.5)
    st = call(node, rides.status(node, "r1"))
    assert st["status"] == "arriving" and 0 < st["eta_min"] < 0.2
    assert call(node, rides.driver(node, "d1"))["status"] == "busy"
    assert call(node, rides.pickup(node, "r1", "d1"))["status"] == "in_progress"
    node.run_for(600.0)
    done = call(node, rides.dropoff(node, "r1", "d1"))
    km = geo.distance_km(*SF, 37.80, -122.41)
    assert done["status"] == "completed" and abs(done["minutes"] - 10.0) < 1e-9
    assert done["fare"] == pricing.fare(km, 10.0, done["surge"], done["time_mult"])
    assert done["time_mult"] == 1.3  # the city's clock starts at 8 h: a peak hour
    node.run_for(1.0)
    assert call(node, rides.status(node, "r1"))["fare"] == done["fare"]  # from the store now
    assert call(node, rides.driver(node, "d1"))["trip"] is None
    assert call(node, rides.open_rides(node)) == []


def test_first_acceptance_wins_and_the_other_offers_are_withdrawn(city):
    node, rides, _ = city
    drivers = ["d1", "d2", "d3"]
    placed_and_requested(node, rides, drivers)
    assert offered(node, rides, drivers) == drivers  # the best 3
    assert call(node, rides.accept(node, "d2", "r1")) == "accepted"
    with pytest.raises(OfferError):
        call(node, rides.accept(node, "d1", "r1"))
    node.run_for(0.5)
    assert offered(node, rides, drivers) == []
    assert call(node, rides.status(node, "r1"))["driver"] == "d2"
    assert call(node, rides.driver(node, "d1"))["status"] == "online"


class Phone(GenServer):
    """A driver's phone: keeps what the drivers tell it."""

    def init(self, heard):
        self.heard = heard

    def handle_info(self, msg):
        self.heard.append(msg[1:3])  # (driver, "offer" | "withdrawn")


def test_a_phone_hears_its_offers_and_the_withdrawal_of_those_still_open(city):
    node, rides, _ = city
    heard = []
    phone = node.spawn(Phone, heard)
    for i, name in enumerate(["d1", "d2", "d3"]):
        rides.driver_update(node, name, SF[0] + 0.0009 * (i + 1), SF[1], phone=phone)
    node.run_for(0.5)
    request(node, rides)
    node.run_for(1.0)
    assert sorted(heard) == [("d1", "offer"), ("d2", "offer"), ("d3", "offer")]
    futures = {d: rides.accept(node, d, "r1") for d in ("d1", "d2")}  # both accept at once
    node.run_for(1.0)
    outcomes = {d: f.exception() or f.result() for d, f in futures.items()}
    # One of them won; the other was told why.
    assert sorted(o if o == "accepted" else type(o).__name__ for o in outcomes.values()) == ["OfferError", "accepted"]
    assert heard[3:] == [("d3", "withdrawn")]  # the loser accepted: its answer, not a withdrawal


def test_drivers_whose_claims_lose_in_the_winners_turn_get_their_answer_and_no_withdrawal(city):
    node, rides, _ = city
    drivers = ["d1", "d2", "d3"]
    placed_and_requested(node, rides, drivers)
    sent = []
    node.trace(rides.city.registry.lookup(("ride", "r1")), lambda event, pid, detail: sent.append((event, detail)))
    futures = [rides.accept(node, d, "r1") for d in drivers]  # all three at once: one turn of the ride
    node.run_for(1.0)
    assert sorted("won" if f.exception() is None else "lost" for f in futures) == ["lost", "lost", "won"]
    casts = [detail[1] for event, detail in sent if event == "send" and type(detail[1]) is tuple]
    assert sorted(msg[3] for msg in casts if msg[0] == "claimed") == [False, False, True]
    assert [msg for msg in casts if msg[0] == "withdraw"] == []  # a losing claim's answer ends its offer
    assert offered(node, rides, drivers) == []


def test_batches_of_three_then_a_wider_radius_then_cancelled_with_a_reason(city):
    node, rides, _ = city
    near = [f"n{i}" for i in range(5)]
    place(node, rides, near)
    rides.driver_update(node, "far", SF[0] + 0.02, SF[1])  # 2.2 km away: the second radius
    node.run_for(0.5)
    request(node, rides)
    node.run_for(1.0)
    assert offered(node, rides, near + ["far"]) == near[:3]
    node.run_for(5.0)
    assert offered(node, rides, near + ["far"]) == near[3:]
    node.run_for(5.0)
    assert offered(node, rides, near + ["far"]) == ["far"]
    node.run_for(30.0)
    st = call(node, rides.status(node, "r1"))
    assert st["status"] == "cancelled" and st["reason"] == "no driver accepted within 30 s"
    assert st["decided_at"] - st["requested_at"] == pytest.approx(30.0)
    with pytest.raises(OfferError):
        call(node, rides.accept(node, "far", "r1"))


def test_no_driver_nearby_cancels_with_that_reason(city):
    node, rides, _ = city
    request(node, rides)
    node.run_for(40.0)
    st = call(node, rides.status(node, "r1"))
    assert st["status"] == "cancelled" and st["reason"] == "no available driver within 5 km"


def test_a_silent_driver_goes_offline_and_leaves_its_cell(city):
    node, rides, _ = city
    place(node, rides, ["d1"])
    cell = geo.cell_of(SF[0] + 0.0009, SF[1])
    assert call(node, rides.driver(node, "d1"))["cell"] == cell
    node.run_for(29.0)
    assert call(node, rides.driver(node, "d1"))["status"] == "online"
    node.run_for(2.0)
    assert call(node, rides.driver(node, "d1"))["status"] == "offline"
    assert node.get_process(rides.city.registry.lookup(("cell", cell))).ids == []
    assert node.whereis("rides.drivers") is not None


def test_membership_follows_the_driver_and_surge_follows_demand(tmp_path):
    node, rides, store = make_city(tmp_path, match_limit=120.0)
    place(node, rides, ["d1"])
    rides.driver_update(node, "d1", 37.79, -122.40)
    node.run_for(0.5)
    old = node.get_process(rides.city.registry.lookup(("cell", geo.cell_of(SF[0] + 0.0009, SF[1]))))
    new = node.get_process(rides.city.registry.lookup(("cell", geo.cell_of(37.79, -122.40))))
    assert old.ids == [] and new.ids == ["d1"]
    far = (37.70, -122.45)  # a cell without drivers: three requests, no supply
    for i in range(3):
        request(node, rides, f"r{i}", pickup=far)
    node.run_for(31.0)
    assert call(node, rides.cell(node, *far)) == {"surge": 2.5, "ratio": 3.0, "supply": 0, "demand": 3}
    store.close()


def test_a_ride_quotes_the_stored_surge_of_a_pickup_cell_that_is_not_running(tmp_path):
    node, rides, store = make_city(tmp_path, match_limit=120.0)
    far = (37.70, -122.45)  # a cell without drivers: three requests, no supply
    for i in range(3):
        request(node, rides, f"r{i}", pickup=far)
    node.run_for(31.0)
    assert call(node, rides.cell(node, *far))["surge"] == 2.5
    cell = rides.city.registry.lookup(("cell", geo.cell_of(*far)))
    node.exit(cell, "kill")  # its table goes with it; its stored state stays
    node.run_for(0.1)
    assert node.table(CityContext.cell_table(geo.cell_of(*far))) is None
    request(node, rides, "r3", pickup=far)
    node.run_for(0.1)
    st = call(node, rides.status(node, "r3"))
    assert (st["surge"], st["ratio"]) == (2.5, 3.0)
    assert st["quote"] == pricing.fare(geo.distance_km(*far, *st["dropoff"]),
                                       pricing.trip_minutes_estimate(geo.distance_km(*far, *st["dropoff"])),
                                       2.5, st["time_mult"])
    store.close()


def test_bad_input_is_named_and_loses_nothing(city):
    node, rides, store = city
    place(node, rides, ["d1"])
    request(node, rides)
    with pytest.raises(ValueError, match="pickup"):
        request(node, rides, "r2", pickup=(37.7, 200.0))
    with pytest.raises(ValueError, match="ride id"):
        request(node, rides, "")
    assert request(node, rides) == "r1"  # a retry is the same ride
    node.run_for(1.0)
    with pytest.raises(RideError, match="not its driver"):
        call(node, rides.pickup(node, "r1", "d9"))
    with pytest.raises(RideError, match="needs a reason"):
        call(node, rides.cancel(node, "r1", "alice", ""))
    assert call(node, rides.status(node, "r1"))["status"] == "requested"
    assert call(node, rides.open_rides(node)) == ["r1"]
    assert call(node, rides.accept(node, "d1", "r1")) == "accepted"


def test_a_ride_killed_mid_match_resumes_without_double_assigning(city):
    node, rides, _ = city
    drivers = ["d1", "d2", "d3"]
    placed_and_requested(node, rides, drivers)
    first = rides.city.registry.lookup(("ride", "r1"))
    node.exit(first, "kill")
    node.run_for(0.1)
    second = rides.city.registry.lookup(("ride", "r1"))
    assert second is not None and second != first
    assert offered(node, rides, drivers) == drivers  # the live offers survived
    assert call(node, rides.accept(node, "d3", "r1")) == "accepted"
    node.exit(second, "kill")
    node.run_for(0.1)
    with pytest.raises(OfferError):
        call(node, rides.accept(node, "d1", "r1"))
    st = call(node, rides.status(node, "r1"))
    assert st["driver"] == "d3" and st["status"] in ("matched", "accepted")
    node.run_for(3.0)
    assert call(node, rides.status(node, "r1"))["status"] == "accepted"


def test_a_ride_stores_a_decline_and_its_win_and_nothing_for_a_losing_claim(city):
    """A decline, the offers out and the win survive the ride's crash; a status call and a
    losing claim write nothing."""
    node, rides, store = city
    drivers = ["d1", "d2", "d3", "d4"]
    placed_and_requested(node, rides, drivers)
    call(node, rides.decline(node, "d1", "r1"))
    node.run_for(0.1)
    writes = store.writes
    call(node, rides.status(node, "r1"))
    assert store.writes == writes
    node.exit(rides.city.registry.lookup(("ride", "r1")), "kill")
    node.run_for(0.1)
    st = call(node, rides.status(node, "r1"))
    assert st["declined"] == ["d1"] and st["outstanding"] == ["d2", "d3"]
    assert call(node, rides.accept(node, "d2", "r1")) == "accepted"
    node.run_for(0.5)
    writes = store.writes
    with pytest.raises(OfferError):
        call(node, rides.accept(node, "d3", "r1"))
    node.run_for(0.5)
    assert store.writes == writes
    node.exit(rides.city.registry.lookup(("ride", "r1")), "kill")
    node.run_for(3.0)
    st = call(node, rides.status(node, "r1"))
    assert st["driver"] == "d2" and st["status"] == "accepted"


def test_a_cell_shares_one_read_only_snapshot_until_its_members_change(city):
    node, rides, _ = city
    place(node, rides, ["d1"])
    rides.driver_update(node, "d2", SF[0] + 0.0008, SF[1])
    node.run_for(0.5)
    cell = node.get_process(rides.city.registry.lookup(("cell", geo.cell_of(SF[0] + 0.0009, SF[1]))))
    ids, rows = cell.snapshot()
    assert cell.snapshot()[1] is rows and set(ids) == {"d1", "d2"}
    with pytest.raises(ValueError):
        rows[0, 0] = 0.0  # read-only: every search that got it may still hold it
    rides.driver_update(node, "d1", SF[0] + 0.0010, SF[1])
    node.run_for(0.5)
    ids2, rows2 = cell.snapshot()
    assert rows2 is not rows and rows2[ids2.index("d1"), 0] == SF[0] + 0.0010
    assert rows[ids.index("d1"), 0] == SF[0] + 0.0009  # the old one is as it was


def test_cells_publish_their_members_in_node_tables_that_searches_read(city):
    node, rides, _ = city
    north = (SF[0] + 0.006, SF[1])  # 667 m away, in the next cell north
    gh = geo.cell_of(*north)
    assert gh != geo.cell_of(*SF)
    rides.driver_update(node, "d1", *north, heading=180.0)
    node.run_for(0.5)
    table = node.table(CityContext.cell_table(gh))
    members, rows = table.get("members")
    assert members == ("d1",) and rows[0, 0] == north[0]
    rides.driver_update(node, "d1", north[0] + 0.0001, north[1], heading=180.0)
    node.run_for(0.5)
    assert table.get("members")[1][0, 0] == north[0] + 0.0001  # republished after the move
    request(node, rides)
    node.run_for(1.0)
    assert offered(node, rides, ["d1"]) == ["d1"]  # found through the table of a cell not asked
    cell = rides.city.registry.lookup(("cell", gh))
    node.exit(cell, "kill")
    node.run_for(0.1)
    with pytest.raises(TableError):
        table.get("members")  # it went with its owner; a restarted cell starts a new one
    assert node.table(CityContext.cell_table(gh)) is not table


def test_offers_are_counted_in_memory_and_stored_with_the_accept(city):
    node, rides, store = city
    drivers = ["d1", "d2", "d3"]
    placed_and_requested(node, rides, drivers)
    assert call(node, rides.driver(node, "d1"))["offered"] == 1
    assert call(node, rides.driver(node, "d1"))["acceptance"] == 0.0
    assert store.read(("driver", "d1"))[1]["offered"] == 0  # soft until the next write
    assert call(node, rides.accept(node, "d1", "r1")) == "accepted"
    node.run_for(0.5)
    assert store.read(("driver", "d1"))[1]["offered"] == 1
    assert store.read(("driver", "d1"))[1]["accepted"] == 1
    rides.driver_offline(node, "d2")  # going offline stores them too
    node.run_for(0.5)
    assert store.read(("driver", "d2"))[1]["offered"] == 1


def test_a_killed_driver_keeps_its_trip(city):
    node, rides, _ = city
    placed_and_requested(node, rides, ["d1"])
    assert call(node, rides.accept(node, "d1", "r1")) == "accepted"
    node.exit(rides.city.registry.lookup(("driver", "d1")), "kill")
    node.run_for(0.1)
    st = call(node, rides.driver(node, "d1"))
    assert st["trip"] == "r1" and st["status"] == "busy"


def test_a_drivers_claim_retry_outlives_its_crashes(city):
    node, rides, store = city
    placed_and_requested(node, rides, ["d1"])
    driver = lambda: rides.city.registry.lookup(("driver", "d1"))  # noqa: E731
    node.exit(rides.city.registry.lookup(("ride", "r1")), "kill")  # the claim goes to a dead ride
    accepted = rides.accept(node, "d1", "r1")
    node.run_for(0.01)
    assert not accepted.done() and store.read(("driver", "d1"))[1]["claim"] == "r1"
    node.exit(driver(), "kill")  # the claim's answer is lost with it
    assert call(node, rides.driver(node, "d1"))["claim"] == "r1"  # started again by the query
    node.run_for(2.5)  # the restarted driver asks the restarted ride again, and the claim wins
    st = call(node, rides.driver(node, "d1"))
    assert (st["claim"], st["trip"], st["status"]) == (None, "r1", "busy")
    assert call(node, rides.pickup(node, "r1", "d1"))["status"] == "in_progress"
    call(node, rides.dropoff(node, "r1", "d1"))
    node.run_for(0.5)
    assert call(node, rides.driver(node, "d1"))["trip"] is None


def test_a_lost_claim_is_not_written_and_a_driver_restarted_with_it_lets_go_of_it(city):
    node, rides, store = city
    drivers = ["d1", "d2"]
    placed_and_requested(node, rides, drivers)
    won, lost = rides.accept(node, "d1", "r1"), rides.accept(node, "d2", "r1")  # both claim at once
    node.run_for(0.5)
    assert won.result() == "accepted" and isinstance(lost.exception(), OfferError)
    assert store.read(("driver", "d2"))[1]["claim"] == "r1"  # stored as a claim, lost: not written again
    assert call(node, rides.driver(node, "d2"))["claim"] is None
    node.exit(rides.city.registry.lookup(("driver", "d2")), "kill")
    assert call(node, rides.driver(node, "d2"))["claim"] == "r1"  # started again from the store
    node.run_for(0.5)  # it asks the ride again at once, and hears it lost
    rides.driver_update(node, "d2", SF[0] + 0.0018, SF[1])
    node.run_for(0.5)
    st = call(node, rides.driver(node, "d2"))
    assert (st["claim"], st["trip"], st["status"]) == (None, None, "online")
    members = node.table(CityContext.cell_table(geo.cell_of(SF[0] + 0.0018, SF[1]))).get("members")
    assert "d2" in members[0] and members[1][members[0].index("d2"), 5] == 1.0  # available again


def test_a_driver_restarted_with_a_trip_whose_end_it_missed_frees_itself(city):
    node, rides, store = city
    placed_and_requested(node, rides, ["d1"])
    assert call(node, rides.accept(node, "d1", "r1")) == "accepted"
    assert call(node, rides.pickup(node, "r1", "d1"))["status"] == "in_progress"
    call(node, rides.dropoff(node, "r1", "d1"))  # its trip_over is on its way to the driver
    node.exit(rides.city.registry.lookup(("driver", "d1")), "kill")  # and lost with it
    node.run_for(0.5)
    st = call(node, rides.driver(node, "d1"))  # started again by the query, still on the trip
    assert (st["trip"], st["status"]) == ("r1", "busy")
    rides.driver_update(node, "d1", SF[0] + 0.0009, SF[1])
    node.run_for(10.5)  # the trip check finds the ride completed
    st = call(node, rides.driver(node, "d1"))
    assert (st["trip"], st["status"]) == (None, "online")


def test_a_node_restart_resumes_open_rides_from_the_store(tmp_path):
    node, rides, store = make_city(tmp_path, seed=2)
    place(node, rides, ["d1"])
    request(node, rides, "done")
    node.run_for(1.0)
    call(node, rides.accept(node, "d1", "done"))
    request(node, rides, "open", pickup=(37.70, -122.45))
    node.run_for(1.0)
    store.crash()  # the node dies: nothing more is written
    # the clock goes on across the reboot, as the simulator's does
    node, rides, store = make_city(tmp_path, seed=2, creation=1, clock=node.now() + 1.0)
    node.run_for(0.1)
    assert call(node, rides.open_rides(node)) == ["done", "open"]
    assert call(node, rides.status(node, "done"))["driver"] == "d1"
    assert call(node, rides.status(node, "open"))["status"] == "requested"
    node.run_for(29.0)
    assert call(node, rides.status(node, "open"))["status"] == "cancelled"
    assert call(node, rides.open_rides(node)) == ["done"]
    store.close()
