"""The ride service: its supervision tree, the city gateway and the public API.

    store = Store(path, node)
    rides = RideService(node, store, MatchConfig(match_limit=60.0))
    rides.start()                                             # the supervision tree
    rides.driver_update(node, "d1", 37.77, -122.42, heading=90.0)
    ride = node.run_until_complete(rides.request_ride(node, "r1", "alice", (37.77, -122.42), (37.8, -122.4)))
    node.run_until_complete(rides.accept(node, "d1", "r1"))  # once the driver has the offer

Every method takes the caller first: a process (`self`/`proc`; calls return a coroutine
to await) or the `Node` from outside (calls return a kernel `Future`); casts return None.
A bad argument raises ValueError naming it; a refused request raises the server's error
(`RideError`, `OfferError`, `ValueError`, `LimitExceeded`). Messages for a driver go
straight to its process while it runs on the caller's node (`CityContext.cast`), else
through its router.

Tree (rest_for_one, so the gateway restarts whenever something it depends on did):

    rides_sup
    ├─ rides.cells     ClusterEntities of Cell   (key ("cell", geohash))
    ├─ rides.drivers   ClusterEntities of Driver (key ("driver", id))
    ├─ rides.rides     DynamicSupervisor of Ride (transient; registry key ("ride", id))
    ├─ rides.city      RideCity: validates and records requests, starts their rides, and
    │                  restarts every open ride when it (or the node) restarts
    └─ rides.mirror    CellMirror, on a city of several nodes: the other nodes' cells

Over several nodes (`nodes=`, the same list on each): every node runs this tree, and
each cell, driver and ride lives on one node of the list (`storage.cluster`, rendezvous
hashing of its key), the ride's request recorded by that node's gateway. A ride's offers
and a driver's claims cross nodes as messages (pids, the routers' and gateways' names
on the other node); a ride reads the cells around its pickup in local tables, the other
nodes' copied there by the mirror (`mirror`). While a node is down or cut off, its
cells, drivers and rides wait for it (calls fail at once, `NoProc`; retry); none moves.
`letitcrash sim scenarios/rides_nodes.toml` runs a city on three nodes under faults.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, ClassVar, Iterable

from actors import Node, NoReply, Pid, Process, Registry, RemoteName
from storage import EventSourcedServer, LimitExceeded, Store, entity_call, entity_cast
from storage.cluster import ClusterEntities, check_nodes, node_of
from supervision import Backoff, ChildSpec, DynamicFlags, DynamicSupervisor, start_child
from supervision.client import request

from apps.common import TreeService, check_id

from . import geo
from .cell import Cell
from .driver import Driver, check_heading
from .matcher import TERMINAL, MatchConfig, Ride, RideError
from .mirror import MIRROR, CellMirror

MAX_OPEN = 100_000  # rides not yet finished, per city
ENTITY_IDLE = 300.0  # seconds an unused driver or cell process lives on
_STARTED = "$started"
log = logging.getLogger("apps.rides")
RESTART_BACKOFF = Backoff(min_delay=0.05, max_delay=2.0)


class CityContext:
    """What a city's processes share on one node: the registry of the cells, drivers and
    rides running here, the registered names of the routers, and where each key lives.

    `nodes` is the city's node list, alike on every node (`storage.cluster.check_nodes`):
    cells live on `home(("cell", geohash))`, drivers on `home(("driver", id))` and rides
    (with the gateway that records them) on `home(("ride", id))`. Cells and drivers are
    `ClusterEntities`, so a key is activated on its node only; messages for one that runs
    on this node go straight to its process, the others through the router on its node.
    `activated(key, pid)`, if given, hears of every cell, driver and ride that starts (the
    simulator's check that a key runs once in the whole city)."""

    drivers = "rides.drivers"
    cells = "rides.cells"
    rides = "rides.rides"
    gateway = "rides.city"
    mirror = MIRROR

    def __init__(self, node: Node, store: Store, nodes: Iterable[str] | None = None,
                 activated: Callable[[Any, Pid], None] | None = None) -> None:
        self.registry = Registry(node, "rides")
        self.node = node
        self.store = store
        self.nodes = check_nodes((node.name,) if nodes is None else nodes)
        if node.name not in self.nodes:
            raise ValueError(f"node {node.name!r} is not in the city's node list {list(self.nodes)!r:.200}")
        self.spread = len(self.nodes) > 1
        self.activated = activated

    def home(self, key: tuple) -> str:
        """The node `key` (`("cell", geohash)`, `("driver", id)` or `("ride", id)`) lives on."""
        return node_of(key, self.nodes) if self.spread else self.node.name

    def at(self, name: str, key: tuple) -> RemoteName:
        """The process registered as `name` on `key`'s node (a `RemoteName` reaches the
        caller's own node too, as Erlang's `{Name, node()}` does)."""
        return RemoteName(name, self.home(key))

    def cast(self, caller: Node | Process, key: tuple, msg: tuple) -> None:
        """Cast to driver or cell `key`: straight to its process if it runs on this node
        (one hop instead of two through its router), or, for a cell of another node, to
        the pid the mirror learnt for it (`mirror`); else through the router on its node,
        which starts it. A message to one that is just stopping (or, on another node, gone
        and not yet known to be), or whose node is down or cut off, is lost: location
        updates come again, offers time out, reminders repeat, a lost demand is recorded
        again at the ride's next sweep, a lost `trip_over` is found by the driver's trip
        check, a driver going offline stops anyway, and a cell drops a member that left it
        without a word once it has not been heard from for `OFFLINE_AFTER` seconds."""
        pid = self.registry.lookup(key)
        if pid is None and self.spread and key[0] == "cell":
            copy = self.node.table(self.cell_table(key[1]))
            pid = None if copy is None else copy.get("pid")
        if pid is None:
            entity_cast(caller, self.at(self.drivers if key[0] == "driver" else self.cells, key), key, msg)
        else:
            caller.cast(pid, msg)

    def call(self, caller: Node | Process, key: tuple, req: tuple) -> Any:
        """Call driver or cell `key` as `cast` sends to it. A call that reaches one just as
        it stops (a driver gone offline) raises `CallExit`."""
        pid = self.registry.lookup(key)
        if pid is not None:
            return request(caller, pid, req, 5.0)
        return entity_call(caller, self.at(self.drivers if key[0] == "driver" else self.cells, key), key, req)

    def to_ride(self, caller: Process, ride: Any, msg: tuple) -> None:
        """A driver's message for ride `ride`: `("claim", driver, reply_to)`,
        `("driver_at", driver, lat, lon)` or `("check_trip", driver, reply_to)`. It goes to
        the ride's running process (through the gateway of its node when that is another),
        except a trip check, which only a ride that no longer runs answers: from its stored
        state (`settle`)."""
        if self.home(("ride", ride)) != self.node.name:
            caller.cast(self.at(self.gateway, ("ride", ride)), ("to_ride", ride, msg))
            return
        pid = self.registry.lookup(("ride", ride))
        if pid is None:
            settle(caller, self.store, ride, msg)
        elif msg[0] != "check_trip":
            caller.cast(pid, msg)

    def started(self, key: tuple, proc: Process) -> None:
        """A cell, driver or ride has started on this node (see `bind`)."""
        if self.activated is not None:
            self.activated(key, proc.pid)
        if key[0] == "cell" and self.spread:
            proc.cast(self.mirror, ("cell", key[1]))

    @staticmethod
    def cell_table(geohash: str) -> tuple[str, str]:
        """The name of the node-local table where the cell `geohash` publishes its members
        (on its own node; a copy of it on the city's other nodes, `mirror`)."""
        return ("rides.cells", geohash)


def settle(caller: Process, store: Store, ride: Any, msg: tuple) -> None:
    """Answer a driver's message for a ride that is not running, from its stored state:
    a claim on a finished ride is lost, and a trip whose ride finished, or went to
    another driver, is over. Anything else waits for the ride's next incarnation."""
    stored = store.read(("ride", ride))
    if stored is None:
        return
    st = stored[1]
    if msg[0] == "claim" and st["status"] in TERMINAL:
        caller.send(msg[2], ("claimed", ride, None, False))
    elif msg[0] == "check_trip" and (st["status"] in TERMINAL or st["driver"] != msg[1]):
        caller.cast(msg[2], ("trip_over", ride))


class _Announced:
    """Tells the city of each start (`CityContext.started`), once `init` has run."""

    __slots__ = ()
    city: CityContext

    def init(self, store: Store, key: Any, *args: Any) -> Any:
        state = super().init(store, key, *args)  # type: ignore[misc]
        self.city.started(key, self)  # type: ignore[arg-type]
        return state


def bind(server: type, city: CityContext) -> type:
    """`server` with the city attached (Entities start entities as `init(store, key)`), and
    announcing its starts to the city."""
    return type(server.__name__, (_Announced, server), {"city": city, "__slots__": ()})


class RideCity(EventSourcedServer):
    """The gateway: `init(store, key, config, city)`. The open rides' requests are records
    (`("open", ride id)`, see `storage.persistent`), so what a snapshot writes does not
    grow with the number of open rides (up to MAX_OPEN)."""

    snapshot_every = 1000

    def init(self, store: Store, key: Any, config: MatchConfig, city: CityContext) -> None:
        super().init(store, key)
        self.config = config
        self.city = city
        # Backoff: a ride that crashes on every start (a full disk) must not spin the node.
        self.ride_spec = ChildSpec("ride", bind(Ride, city), args=(store,), restart="transient",
                                   backoff=RESTART_BACKOFF)
        self.continue_with("boot")

    def initial_state(self) -> dict[str, Any]:
        return {}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        self.open: dict[Any, dict] = self.take_table("open", records)

    def apply(self, event: list) -> None:
        if event[0] == "open":
            self.open[event[1]] = event[2]
            self.put_record(("open", event[1]), event[2])
        elif self.open.pop(event[1], None) is not None:
            self.delete_record(("open", event[1]))

    def handle_continue(self, arg: str) -> None:
        assert arg == "boot"
        for ride_id, req in list(self.open.items()):
            self._launch(ride_id, req, None)

    def _launch(self, ride_id: Any, req: dict, caller: Any) -> None:
        """Start the ride's process without waiting for it (requests must not queue behind
        each other's starts); `caller` is answered once it runs."""
        if self.city.registry.lookup(("ride", ride_id)) is not None:
            if caller is not None:
                self.reply(caller, ride_id)
            return
        me, node = self.pid, self.node
        start_child(node, self.city.rides, self.ride_spec, ("ride", ride_id), req, self.config, self.city
                    ).add_done_callback(lambda fut: node.send(me, (_STARTED, ride_id, caller, fut)))

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg[0] == _STARTED:
            _, ride_id, caller, fut = msg
            if caller is not None:  # held until the request's event has committed
                running = fut.exception() is None or self.city.registry.lookup(("ride", ride_id)) is not None
                self.reply(caller, ride_id if running else fut.exception())
        else:
            super().handle_info(msg)

    def handle_cast(self, msg: tuple) -> None:
        if msg[0] == "closed" and msg[1] in self.open:
            self.persist(["close", msg[1]])
        elif msg[0] == "to_ride":  # a driver's message from another node
            if self._misplaced(msg[1]) is None:
                self.city.to_ride(self, msg[1], msg[2])

    def handle_call(self, req: tuple, caller: Any) -> Any:
        tag = req[0]
        if tag in ("request", "ride"):
            misplaced = self._misplaced(req[1])
            if misplaced is not None:
                return misplaced
        if tag == "request":
            return self._request(caller, *req[1:])
        if tag == "ride":
            return self._to_ride(req[1], req[2], caller)
        if tag == "open":
            return sorted(self.open, key=str)
        return ValueError(f"rides.city: unknown request {req!r:.200}")

    def _misplaced(self, ride_id: Any) -> RideError | None:
        """Why this gateway does not take ride `ride_id` (it lives on another node), or None."""
        home = self.city.home(("ride", ride_id))
        if home == self.node.name:
            return None
        log.error("rides.city on %s got a message for ride %r, which lives on %s", self.node.name, ride_id, home)
        return RideError(f"ride {ride_id!r} lives on node {home}, not on {self.node.name}: "
                         "the caller's node list differs")

    def _request(self, caller: Any, ride_id: Any, rider: Any, pickup: tuple, dropoff: tuple) -> Any:
        if ride_id in self.open:
            return ride_id  # a retried request: one ride per id
        stored = self.store.read(("ride", ride_id))
        if stored is not None and stored[1]["status"] in TERMINAL:
            return ride_id
        if len(self.open) >= MAX_OPEN:
            return LimitExceeded(f"rides.city has {MAX_OPEN} open rides; ride {ride_id!r} refused")
        if stored is not None:  # its ride ran, but the event that opened it was lost: reopen
            st = stored[1]
            req = {"rider": st["rider"], "pickup": st["pickup"], "dropoff": st["dropoff"],
                   "at": st["requested_at"], "deadline": st["deadline"]}
        else:
            now = self.now()
            req = {"rider": rider, "pickup": list(pickup), "dropoff": list(dropoff), "at": now,
                   "deadline": now + self.config.match_limit}
        self.persist(["open", ride_id, req])
        self._launch(ride_id, req, caller)
        return NoReply

    def _to_ride(self, ride_id: Any, request_: tuple, caller: Any) -> Any:
        pid = self.city.registry.lookup(("ride", ride_id))
        if pid is not None:
            self.node.forward(pid, request_, caller)  # the ride answers the caller itself
            return NoReply
        stored = self.store.read(("ride", ride_id))
        if stored is None:
            if ride_id in self.open:
                return RideError(f"ride {ride_id!r} is restarting; retry")
            return RideError(f"no ride {ride_id!r}")
        state = stored[1]
        done = {"pickup": "in_progress", "dropoff": "completed", "cancel": "cancelled"}
        if request_[0] == "status" or state["status"] == done.get(request_[0]):
            return state
        if state["status"] in TERMINAL:
            return RideError(f"ride {ride_id!r} is {state['status']}")
        return RideError(f"ride {ride_id!r} is restarting; retry")


class RideService(TreeService):
    """The API; see the module docstring. `nodes`: the city's node list, the same on every
    node of it (default: this node alone; see `CityContext`). `max_restarts`: what the top
    supervisor allows in 5 s before the node's city gives up. `activated`: see
    `CityContext`. Calls for a driver, cell or ride go to its node, so any node's service
    serves every key of the city; a driver's phone best connects to `driver_node`."""

    name = "rides_sup"
    strategy = "rest_for_one"
    router: ClassVar[type] = ClusterEntities  # of cells and drivers
    context: ClassVar[type] = CityContext

    def __init__(self, node: Node, store: Store, config: MatchConfig | None = None, *,
                 nodes: Iterable[str] | None = None, max_restarts: int = 100,
                 activated: Callable[[Any, Pid], None] | None = None) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or MatchConfig()
        self.city = self.context(node, store, nodes, activated)

    def children(self) -> list[ChildSpec]:
        store, city = self.store, self.city
        specs = [
            ChildSpec("cells", self.router, args=(store, bind(Cell, city), city.nodes, ENTITY_IDLE),
                      options={"name": city.cells}),
            ChildSpec("drivers", self.router, args=(store, bind(Driver, city), city.nodes, ENTITY_IDLE),
                      options={"name": city.drivers}),
            ChildSpec("rides", DynamicSupervisor, args=(DynamicFlags(max_restarts=100, max_seconds=5.0,
                                                                     max_children=MAX_OPEN),),
                      options={"name": city.rides}),
            ChildSpec("city", RideCity, args=(store, ("rides", "city"), self.config, city),
                      options={"name": city.gateway}),
        ]
        if city.spread:  # last: its restart restarts nothing else
            specs.append(ChildSpec("mirror", CellMirror, args=(city,), options={"name": city.mirror}))
        return specs

    # -- drivers -------------------------------------------------------------------------

    def driver_node(self, driver: Any) -> str:
        """The node driver `driver` lives on: where its phone best connects (its updates
        and calls then stay on that node)."""
        return self.city.home(("driver", check_id(driver, "driver id")))

    def driver_update(self, caller: Node | Process, driver: Any, lat: float, lon: float,
                      heading: float = 0.0, phone: Pid | None = None) -> None:
        """A driver's location (every ~4 s); `phone` gets its offers as messages
        `("driver", id, "offer", ride, info, expires)` and, for an offer withdrawn before the
        driver accepted or declined it, `("driver", id, "withdrawn", ride)`."""
        check_id(driver, "driver id")
        lat, lon = geo.check_point(lat, lon, f"driver {driver!r}")
        self.city.cast(caller, ("driver", driver), ("update", lat, lon, check_heading(heading), phone))

    def driver_offline(self, caller: Node | Process, driver: Any) -> None:
        self.city.cast(caller, ("driver", check_id(driver, "driver id")), ("offline",))

    def driver(self, caller: Node | Process, driver: Any) -> Any:
        """The driver's state (status, trip, claim, cell, position, rating, acceptance)."""
        return self._driver_call(caller, driver, ("state",))

    def offers(self, caller: Node | Process, driver: Any) -> Any:
        """The rides offered to the driver and still live."""
        return self._driver_call(caller, driver, ("offers",))

    def accept(self, caller: Node | Process, driver: Any, ride: Any) -> Any:
        """Accept an offer: "accepted" when this driver won the ride (else `OfferError`)."""
        return self._driver_call(caller, driver, ("accept", check_id(ride, "ride id")))

    def decline(self, caller: Node | Process, driver: Any, ride: Any) -> Any:
        return self._driver_call(caller, driver, ("decline", check_id(ride, "ride id")))

    def _driver_call(self, caller: Node | Process, driver: Any, req: tuple) -> Any:
        return self.city.call(caller, ("driver", check_id(driver, "driver id")), req)

    # -- rides -----------------------------------------------------------------------------

    def request_ride(self, caller: Node | Process, ride: Any, rider: Any, pickup: tuple, dropoff: tuple,
                     timeout: float | None = 5.0) -> Any:
        """Request ride `ride` (the client's id: retrying is safe); resolves to the id."""
        check_id(ride, "ride id")
        check_id(rider, "rider id")
        pickup = geo.check_point(*_pair(pickup, "pickup"), "pickup")
        dropoff = geo.check_point(*_pair(dropoff, "dropoff"), "dropoff")
        return self._gateway_call(caller, ride, ("request", ride, rider, pickup, dropoff), timeout)

    def status(self, caller: Node | Process, ride: Any) -> Any:
        """The ride's state (a dict; see `matcher.Ride.initial_state`)."""
        return self._ride_call(caller, ride, ("status",))

    def pickup(self, caller: Node | Process, ride: Any, driver: Any) -> Any:
        """The driver picked the rider up: the trip is in progress."""
        return self._ride_call(caller, ride, ("pickup", check_id(driver, "driver id")))

    def dropoff(self, caller: Node | Process, ride: Any, driver: Any) -> Any:
        """The trip is completed; the answer holds the fare."""
        return self._ride_call(caller, ride, ("dropoff", check_id(driver, "driver id")))

    def cancel(self, caller: Node | Process, ride: Any, who: Any, reason: str) -> Any:
        """The rider or the driver cancels before pickup."""
        return self._ride_call(caller, ride, ("cancel", who, reason))

    def _ride_call(self, caller: Node | Process, ride: Any, req: tuple) -> Any:
        return self._gateway_call(caller, check_id(ride, "ride id"), ("ride", ride, req))

    def _gateway_call(self, caller: Node | Process, ride: Any, req: tuple, timeout: float | None = 5.0) -> Any:
        """Call the gateway of the ride's node."""
        return request(caller, self.city.at(self.city.gateway, ("ride", ride)), req, timeout)

    def open_rides(self, caller: Node | Process) -> Any:
        """The open rides of this node's gateway (each node records the rides placed on it)."""
        return self._call(caller, self.city.gateway, ("open",))

    def cell(self, caller: Node | Process, lat: float, lon: float) -> Any:
        """The surge, ratio, supply and demand of the cell holding the point."""
        lat, lon = geo.check_point(lat, lon)
        gh = geo.cell_of(lat, lon)
        return entity_call(caller, self.city.at(self.city.cells, ("cell", gh)), ("cell", gh), ("surge",))


def _pair(point: Any, what: str) -> tuple:
    if not isinstance(point, (tuple, list)) or len(point) != 2:
        raise ValueError(f"{what} must be a (latitude, longitude) pair, got {point!r:.100}")
    return tuple(point)
