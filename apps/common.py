"""What the case studies share: checking a config's limits and a client's ids, a service
that is one supervision tree per node, reading an event-sourced key back from its store,
and (for their simulated systems) server nodes that each run the service on a real LMDB
store.

    check_limits(config, ints=("shards",), seconds=("retention",))   # in __post_init__
    check_nodes(config)                                               # config.nodes: distinct names
    check_id(ride, "ride id")                                         # the id, or ValueError
    Bound = bind(Stock, config=config)                                # what Entities start

    class RideService(TreeService):
        name = "rides_sup"                                            # registers the top supervisor
        strategy = "rest_for_one"                                     # default: one_for_one
        def children(self) -> list[ChildSpec]: ...

    state = stored_state(store, ("chat.shard", 3), empty, apply)      # None: store down
    result = run_steps(node_or_proc, async_fn_of_proc)                # several calls as one operation
    servers = ServerNodes(system, ["chat1", "chat2"], lambda node, store, resolve: ChatService(...))
    servers.add()                                                     # they boot
    servers.serving("chat1")                                          # its service; NoProc while down
    found = read_key(store, key)                                      # False: store down
    except RETRYABLE: ...                                             # no answer, died, or not there
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar

from actors import CallExit, CallTimeout, Future, Node, NoProc, Pid, Process
from storage import StorageError, Store
from supervision import Application, ChildSpec, Flags, Supervisor
from supervision.client import request

if TYPE_CHECKING:
    from sim.system import System

RESTART_PERIOD = 5.0  # seconds over which a tree's max_restarts count (Elixir's default)
RETRYABLE = (CallTimeout, CallExit, NoProc)
"""What a caller retries (with the same client id): no answer in time, the server died
while handling the call, or nobody holds its name (it is restarting)."""
MAX_ID_LEN = 128


def check_limits(config: Any, ints: tuple[str, ...] = (), seconds: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first field of `config` that is not a positive int
    (the names in `ints`) or a positive, finite number of seconds (`seconds`)."""
    owner = type(config).__name__
    for name in ints:
        value = getattr(config, name)
        if type(value) is not int or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")
    for name in seconds:
        value = getattr(config, name)
        if type(value) not in (int, float) or not 0 < value < math.inf:
            raise ValueError(f"{owner}.{name} must be a positive number of seconds, got {value!r}")


def check_id(value: Any, what: str, max_len: int = MAX_ID_LEN) -> Any:
    """`value` if it is a non-negative int or a non-empty str of at most `max_len`
    characters (a client's id of a driver, ride, video...); else ValueError naming `what`."""
    if type(value) is int and value >= 0 or type(value) is str and 0 < len(value) <= max_len:
        return value
    raise ValueError(f"{what} must be a non-negative int or a non-empty str of at most "
                     f"{max_len} characters, got {value!r:.100}")


def bind(server: type, **shared: Any) -> type:
    """`server` with class attributes `shared`: `Entities` start an entity as `init(store,
    key)`, so what all of them share (a config, a context) comes with the class."""
    return type(server.__name__, (server,), {**shared, "__slots__": ()})


def check_nodes(config: Any, most: int = 1024) -> None:
    """Raise ValueError unless `config.nodes` is a tuple of at most `most` distinct node names."""
    owner, nodes = type(config).__name__, config.nodes
    if not isinstance(nodes, tuple) or not all(type(n) is str and n for n in nodes):
        raise ValueError(f"{owner}.nodes must be a tuple of node names, got {nodes!r:.200}")
    if len(set(nodes)) != len(nodes) or len(nodes) > most:
        raise ValueError(f"{owner}.nodes must be at most {most} distinct names, got {nodes!r:.200}")


class TreeService:
    """A case study on one node: its supervision tree (`children()` under a top supervisor
    registered as `name`, with restart `strategy`, allowed `max_restarts` in 5 s), started
    and stopped as an `Application`."""

    name: ClassVar[str]
    strategy: ClassVar[str] = "one_for_one"

    def __init__(self, node: Node, store: Store, max_restarts: int = 10) -> None:
        if type(max_restarts) is not int or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        self.node = node
        self.store = store
        self.max_restarts = max_restarts
        self.app: Application | None = None

    def children(self) -> list[ChildSpec]:
        raise NotImplementedError

    def start(self) -> Pid:
        """Start this node's tree; returns its top supervisor."""
        if self.running:
            raise RuntimeError(f"the {self.name} service is already running")
        flags = Flags(self.strategy, self.max_restarts, RESTART_PERIOD)
        self.app = Application(Supervisor, self.children(), flags, name=self.name)
        return self.app.start(self.node)

    def stop(self) -> Future:
        """Stop the tree; the Future resolves when it is down."""
        assert self.app is not None, f"the {self.name} service was never started"
        return self.app.stop()

    @property
    def running(self) -> bool:
        """Started, and its top supervisor has not given up."""
        return self.app is not None and self.app.supervisor is not None

    def pid(self, name: str) -> Pid:
        """The process registered as `name` on this node; NoProc if there is none (not
        started, or restarting).
        KERNEL-HOOK: no {Name, Node} addressing; callers on other nodes get the pid here."""
        pid = self.node.whereis(name)
        if pid is None:
            raise NoProc(name)
        return pid

    def _call(self, caller: Node | Process, name: str, message: Any, timeout: float | None = 5.0) -> Any:
        """Call the process registered as `name` (see `supervision.client.request`)."""
        return request(caller, self.pid(name), message, timeout)


def run_steps(caller: Node | Process, steps: Callable[[Process], Awaitable[Any]]) -> Any:
    """A client operation of several calls, `steps(proc)`: run as `caller` itself when it
    is a process (a coroutine to await), else in a short-lived process of the node
    `caller` (a Future of its result or exception)."""
    if isinstance(caller, Process):
        return steps(caller)
    answer = Future()

    async def run(proc: Process) -> None:
        try:
            value = await steps(proc)
        except Exception as exc:  # noqa: BLE001 - the caller outside hears of any failure
            answer.set_exception(exc)
            return
        answer.set_result(value)

    caller.spawn(run)
    return answer


def read_key(store: Store | None, key: Any) -> tuple[int, Any, list] | None | bool:
    """`store.read(key)`: (revision, stored state, events after it), or None if nothing
    is stored; False while the store is down or failing (a check looks again later)."""
    if store is None or store.closed or store.crashed:
        return False
    try:
        return store.read(key)
    except StorageError:
        return False


def stored_state(store: Store | None, key: Any, empty: Callable[[], dict],
                 apply: Callable[[dict, list], Any]) -> dict | None:
    """The state of event-sourced `key` as `store` has it (its snapshot, or `empty()`,
    with the journal after it applied), or None while the store is down or failing (a
    check looks again later)."""
    found = read_key(store, key)
    if found is False:
        return None
    if found is None:
        return empty()
    state = found[1] if found[1] is not None else empty()
    for event in found[2]:
        apply(state, event)
    return state


def top_restarts(default: int) -> Any:
    """The simulated systems' `top_restarts` option: their top supervisor's max_restarts."""
    from sim.schema import Field  # here, so that services never import the simulator

    return Field.int(default, 0, 1_000_000, f"the top supervisor's max_restarts (in {RESTART_PERIOD:g} s)")


class ServerNodes:
    """The server nodes of a simulated case study. Each boots (and reboots) by building
    its service with `make(node, store, resolve)` on a real LMDB store (sync mode) on its
    own simulated disk, and starting it; `sim.heart` reboots a node whose tree gave up.
    `on_crash(name, power_loss)`, if given, hears of each crash before the node's disk does.
    The `spared` nodes are not picked by random process and node faults (their disks
    and links still are). `add()` adds the nodes to the simulation (they boot at once)."""

    def __init__(self, system: System, names: list[str],
                 make: Callable[[Node, Store, Callable[[str, str], Pid | None]], TreeService],
                 on_crash: Callable[[str, bool], None] | None = None, spared: tuple[str, ...] = ()) -> None:
        from sim.disk import Disk  # here, so that services never import the simulator

        self.sim = system.sim
        self.data_dir = system.data_dir
        self.names = names
        self.make = make
        self.on_crash = on_crash
        self.spared = spared
        self.disks = {name: Disk(self.sim, name) for name in names}
        self.services: dict[str, TreeService] = {}

    def add(self) -> None:
        for name in self.names:
            self.sim.add_node(name, self._boot, on_crash=self._crashed, targets=name not in self.spared)
            self.sim.heart(name, lambda name=name: self.alive(name))

    def _crashed(self, name: str, power_loss: bool) -> None:
        if self.on_crash is not None:
            self.on_crash(name, power_loss)
        self.disks[name].crash(name, power_loss)

    def _boot(self, node: Node) -> None:
        store = self.disks[node.name].attach(Store(self.data_dir / node.name, node, simulated=True))
        service = self.make(node, store, self.resolve)
        service.start()
        self.services[node.name] = service

    def alive(self, name: str) -> bool:
        service = self.services.get(name)
        return service is not None and service.running

    def up(self, name: str) -> TreeService | None:
        """The service of node `name` if the node is up."""
        return self.services.get(name) if self.sim.node(name) is not None else None

    def serving(self, name: str) -> TreeService:
        """The service of node `name`; NoProc while the node is down (a client retries)."""
        service = self.up(name)
        if service is None:
            raise NoProc(name)
        return service

    def resolve(self, node_name: str, name: str) -> Pid | None:
        """`name` registered on node `node_name`, if it is up: the services' `resolve`
        hook, read from the node's current incarnation (only the messages themselves
        travel; a real cluster reads global names, `apps.cluster.chat.resolver`)."""
        node = self.sim.node(node_name)
        return node.whereis(name) if node is not None else None

    def store(self, name: str) -> Store | None:
        return self.disks[name].store

    def close(self) -> None:
        for disk in self.disks.values():
            disk.close()


class ServerSystem:
    """Mixed into a simulated `System` whose server nodes are `self.nodes`: the disks the
    fault injector works on, closing them at the end of a run, and client processes whose
    crash is recorded in `self.violations` (a client that crashes is a bug of the API)."""

    nodes: ServerNodes
    violations: list[str]

    def spawn_clients(self, node: Node, count: int, loop: Callable[[Process, int], Awaitable[None]]) -> None:
        """Start `count` clients on `node`, each running `loop(proc, i)`."""
        for i in range(count):
            node.spawn(self._client, loop, i)

    async def _client(self, proc: Process, loop: Callable[[Process, int], Awaitable[None]], i: int) -> None:
        try:
            await loop(proc, i)
        except Exception as exc:
            self.violations.append(f"client {i} crashed: {exc!r}")
            raise

    def storages(self) -> dict[str, Any]:
        return self.nodes.disks

    def close(self) -> None:
        self.nodes.close()
