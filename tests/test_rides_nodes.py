"""Ride matching over several city nodes: each cell, driver and ride on its own node, a
ride matched with a driver of another node whose cell lives on a third (the mirror's
copy), a gateway refusing what is not its node's, and `scenarios/rides_nodes.toml` under
node kills and partitions, where a deliberately naive placement and a gateway that loses
drivers' messages for its rides are caught.

CI runs a few seeds; set LETITCRASH_SIM_SEEDS=N to run seeds 1..N instead."""
from __future__ import annotations

import itertools

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from actors.system import resume, suspend
from apps.rides import MatchConfig, RideError, RideService, geo
from apps.rides.cell import Cell
from apps.rides.mirror import PUSH_EVERY, STALE_AFTER, CellMirror
from apps.rides.service import CityContext, RideCity
from sim.core import Simulation
from sim.runner import run
from sim.scenario import load
from storage import Store

pytestmark = pytest.mark.usefixtures("quiet_crash_reports")

NODES = ("c1", "c2", "c3")
PICKUP = (37.7749, -122.4194)
DROPOFF = (37.80, -122.41)


@pytest.fixture
def city(tmp_path):
    """Three simulated nodes, each running the ride service on its own store: (the
    simulation, the services and the stores by node name)."""
    sim = Simulation(seed=1)
    services, stores = {}, {}

    def boot(node):
        if node.name in stores:  # a restart: the crashed incarnation's store goes first
            stores[node.name].close()
        store = stores[node.name] = Store(tmp_path / node.name, node, simulated=True)
        services[node.name] = RideService(node, store, MatchConfig(match_limit=30.0), nodes=NODES)
        services[node.name].start()

    for name in NODES:
        sim.add_node(name, boot)
    yield sim, services, stores
    sim.close()
    for store in stores.values():
        store.close()


def first(ids, home, wanted):
    return next(i for i in ids if home(i) == wanted)


def test_a_ride_is_matched_with_a_driver_of_another_node_in_a_cell_of_a_third(city):
    sim, services, stores = city
    ctx = services["c1"].city
    cell = geo.cell_of(*PICKUP)
    cell_node = ctx.home(("cell", cell))
    driver_node, ride_node = [n for n in NODES if n != cell_node]
    driver = first((f"d{i}" for i in itertools.count()), lambda d: ctx.home(("driver", d)), driver_node)
    ride = first((f"r{i}" for i in itertools.count()), lambda r: ctx.home(("ride", r)), ride_node)
    assert services[driver_node].driver_node(driver) == driver_node

    # From the ride's node: the driver's update crosses to its node, the driver tells its
    # cell on a third node, and that node's mirror copies the cell to the others.
    services[ride_node].driver_update(sim.node(ride_node), driver, PICKUP[0] + 0.001, PICKUP[1], heading=180.0)
    sim.run(1.5)
    on_ride_node = sim.node(ride_node)
    table = on_ride_node.table(CityContext.cell_table(cell))
    assert table is not None and table.get("members")[0] == (driver,)
    assert isinstance(on_ride_node.get_process(table.owner.pid), CellMirror)  # a copy, not the cell
    assert not [p for p in on_ride_node.processes() if isinstance(on_ride_node.get_process(p), Cell)]

    asked = services[driver_node].request_ride(sim.node(driver_node), ride, "alice", PICKUP, DROPOFF)
    sim.run(2.0)
    assert asked.result() == ride
    offers = services[cell_node].offers(sim.node(cell_node), driver)
    sim.run(2.5)
    assert offers.result() == [ride]
    accepted = services[cell_node].accept(sim.node(cell_node), driver, ride)
    sim.run(3.5)
    assert accepted.result() == "accepted"
    status = services[driver_node].status(sim.node(driver_node), ride)
    sim.run(4.0)
    assert status.result()["driver"] == driver and status.result()["status"] in ("accepted", "arriving")
    assert sim.node(ride_node).whereis("rides.city") is not None
    assert services[ride_node].city.registry.lookup(("ride", ride)) is not None  # it runs on its node only
    assert all(services[n].city.registry.lookup(("ride", ride)) is None for n in NODES if n != ride_node)


def pickup_cell_and_a_driver(services, driver_on_cells_node):
    """The pickup's cell, its node, another node, and a driver of the cell's node or of
    the other one."""
    ctx = services["c1"].city
    cell = geo.cell_of(*PICKUP)
    cell_node = ctx.home(("cell", cell))
    other = next(n for n in NODES if n != cell_node)
    home = cell_node if driver_on_cells_node else other
    return cell, cell_node, other, first((f"d{i}" for i in itertools.count()), lambda d: ctx.home(("driver", d)), home)


def test_a_copy_is_emptied_when_its_cells_node_goes_silent_and_filled_again_when_it_is_back(city):
    sim, services, stores = city
    cell, cell_node, other, driver = pickup_cell_and_a_driver(services, True)
    services[cell_node].driver_update(sim.node(cell_node), driver, *PICKUP)
    sim.run(1.0)
    copy = lambda: sim.node(other).table(CityContext.cell_table(cell))  # noqa: E731
    assert copy().get("members")[0] == (driver,) and copy().get("quote") == (1.0, 0.0)
    sim.crash_node(cell_node)
    sim.run(1.0 + STALE_AFTER + 2 * PUSH_EVERY)
    assert copy().get("members")[0] == () and copy().get("quote") == (1.0, 0.0)  # its drivers are out of reach
    sim.restart_node(cell_node)
    services[cell_node].driver_update(sim.node(cell_node), driver, *PICKUP)
    sim.run(sim.now + 1.0)
    assert copy().get("members")[0] == (driver,)


def test_a_driver_tells_a_cell_of_another_node_at_its_pid_and_its_router_once_it_is_gone(city):
    """The mirror publishes a remote cell's pid: with the router of the cell's node
    suspended, the driver's updates still reach the running cell; once the cell is
    killed, its pid is withdrawn and the next update goes through the router (resumed),
    which starts the cell again."""
    sim, services, stores = city
    cell, cell_node, driver_node, driver = pickup_cell_and_a_driver(services, False)
    node, far = sim.node(driver_node), sim.node(cell_node)
    services[driver_node].driver_update(node, driver, *PICKUP)
    for _ in range(100):  # the cell's node tells its pid as it starts, before pushing its members
        sim.run(sim.now + 0.005)
        copy = node.table(CityContext.cell_table(cell))
        if copy is not None and copy.get("pid") is not None:
            break
    assert copy.get("pid") is not None and copy.get("members")[0] == ()
    sim.run(sim.now + 2 * PUSH_EVERY)
    cell_pid = services[cell_node].city.registry.lookup(("cell", cell))
    copy = node.table(CityContext.cell_table(cell))
    assert cell_pid is not None and copy.get("pid") == cell_pid
    suspended = suspend(far, "rides.cells")
    sim.run(sim.now + 0.1)
    assert suspended.done()
    moved = (PICKUP[0] + 0.0001, PICKUP[1])
    services[driver_node].driver_update(node, driver, *moved)
    sim.run(sim.now + 0.5)
    members, rows = far.table(CityContext.cell_table(cell)).get("members")
    assert members == (driver,) and tuple(rows[0, :2]) == moved
    far.exit(cell_pid, "kill")
    sim.run(sim.now + 0.5)
    assert copy.get("pid") is None  # its Down withdrew it
    resume(far, "rides.cells")
    services[driver_node].driver_update(node, driver, *PICKUP)
    sim.run(sim.now + 1.0 + 2 * PUSH_EVERY)
    again = services[cell_node].city.registry.lookup(("cell", cell))
    assert again not in (None, cell_pid) and far.table(CityContext.cell_table(cell)).get("members")[0] == (driver,)
    assert copy.get("pid") == again


def test_a_gateway_refuses_a_ride_of_another_node_and_stores_nothing(city):
    sim, services, stores = city
    ctx = services["c1"].city
    ride = first((f"r{i}" for i in itertools.count()), lambda r: ctx.home(("ride", r)), "c2")
    node = sim.node("c1")
    asked = node.call("rides.city", ("request", ride, "alice", PICKUP, DROPOFF))  # c1's own gateway
    sim.run(0.5)
    with pytest.raises(RideError, match=f"ride '{ride}' lives on node c2, not on c1"):
        raise asked.result()
    assert stores["c1"].read(("ride", ride)) is None and sim.node("c1").whereis("rides.city") is not None


def test_a_node_list_without_this_node_or_with_a_node_twice_is_refused(tmp_path):
    sim = Simulation(seed=1)
    node = sim.add_node("c9", lambda node: None)
    store = Store(tmp_path, node, simulated=True)
    with pytest.raises(ValueError, match="node 'c9' is not in the city's node list"):
        RideService(node, store, nodes=NODES)
    with pytest.raises(ValueError, match="node 'c9' is twice in the node list"):
        RideService(node, store, nodes=("c9", "c9"))
    store.close()
    sim.close()


@pytest.mark.parametrize("seed", range(1, SIM_SEEDS + 1))
def test_the_city_over_three_nodes_holds_its_invariants_under_node_kills_and_partitions(seed):
    result = run(load(SCENARIOS / "rides_nodes.toml"), seed)
    assert result.passed, f"seed {seed}: {result.failure}"
    stats = result.stats["rides"]
    assert stats["acked"] > 10 and stats["completed"] > 0 and stats["activations"] > 0
    assert result.faults.get("kill_node", 0) >= 1 and result.faults.get("partition", 0) >= 2
    assert result.checks["rides.single_activation"]["ok"]


def test_the_check_catches_keys_placed_over_the_live_nodes_only():
    scenario = load(SCENARIOS / "rides_nodes.toml", [("systems.rides.bug", "live_placement"),
                                                    ("faults.mode", "off")])
    result = run(scenario, 1)
    assert not result.passed
    assert result.failure.check == "rides.single_activation"
    assert "is live" in result.failure.message
    assert run(load(SCENARIOS / "rides_nodes.toml", [("faults.mode", "off")]), 1).passed


def test_the_check_catches_a_gateway_that_drops_drivers_messages_for_its_rides(monkeypatch):
    keep = RideCity.handle_cast

    def drop_to_ride(self, msg):  # the bug: a claim's or trip's settling from another node is lost
        if msg[0] != "to_ride":
            keep(self, msg)
    monkeypatch.setattr(RideCity, "handle_cast", drop_to_ride)
    result = run(load(SCENARIOS / "rides_nodes.toml"), 1)
    assert not result.passed
    assert result.failure.check == "rides.drivers_let_go_of_ended_rides"
    assert "still holds its" in result.failure.message
