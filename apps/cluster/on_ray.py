"""Clusters on Ray: each node runs in a Ray actor; Ray is the control plane only.

    letitcrash cluster start --ray auto --nodes 4 apps.cluster.demo:counter

    cluster = start_on_ray(nodes=2, target="apps.cluster.demo:counter")   # ray.init() if not yet
    cluster.kill("n2@letitcrash")          # SIGKILL its host's process (on this machine)
    cluster.stop()

What Ray does: it starts the node hosts (`NodeHost`, one Ray actor each, one CPU each by
default) on the machines of its cluster, spread over them (Ray's "SPREAD" strategy: a
machine's loss takes as few nodes as it can), holds the cluster's registry (`Registry`, a
named Ray actor: "letitcrash-registry-CLUSTER" in namespace "letitcrash", on the
launcher's machine, so it goes only with the launcher) and reports an actor's death.
What it never does: carry a letitcrash message. Each host runs a real-time node
(`apps.cluster.host.run_node`) on an event loop of its own, listening on TCP at its
machine's address; it publishes that address in the registry and the nodes connect to
each other directly, over letitcrash's own streams (`actors.dist`).

Contract:
- Incarnations come from the registry: a counter it holds (from a random start), so a
  node restarted, even on another machine, never reuses a pid of its previous lives.
- A node's loss is seen from both sides, the first one acting (`Distribution.lost` is
  idempotent): its stream (EOF; silence for 3 ticks: a frozen process, which Ray never
  reports) and Ray's death report. The launcher parks a call on each host's `serve`; when
  it fails (`ActorDiedError`: the process or its machine is gone), the launcher drops the
  node from the registry and tells every other host (and every `join`ed driver-side
  distribution) to drop its connection to that incarnation ("ray_reported_dead").
- A node that dies is started again by the launcher, under the same name, as a new
  incarnation (a new Ray actor, wherever Ray places it), at most `max_restarts` times in
  `restart_window` seconds (past that it stays down, one log line). Its processes come
  back through what the application's start function starts (supervisors, stores).
- Ray's death reports: a dead actor process is reported in milliseconds; a dead machine
  once its raylet misses health checks: `RAY_health_check_period_ms` (default 3000) times
  `RAY_health_check_failure_threshold` (default 5) plus `RAY_health_check_timeout_ms`,
  about 15 s; set on the head (`ray start --head` in its environment) to 500 / 2 / 500
  it is 1 to 2.5 s. A node's ticks (`ticktime`) bound the detection of a frozen one.
- A raylet lost (its machine, or the raylet process alone): its node hosts' processes end
  with it, so the other nodes see their streams close first; the launcher restarts those
  nodes on the surviving raylets once Ray marks the lost one dead (its health checks, above).
- A start function finds the cluster's node names in `$LETITCRASH_CLUSTER_NODES`
  (comma-separated; `apps.cluster.chat` places its shards on them).
- The secret (Erlang's cookie) is made by the launcher and handed to the hosts in a Ray
  call: Ray's own RPC carries it, so a cluster on an untrusted network needs Ray's TLS.
- Without Ray installed, importing this module raises an ImportError saying how to get it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from typing import Any

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # pragma: no cover - the message is what a user without Ray sees
    raise ImportError("clusters on Ray need Ray: pip install 'letitcrash[cluster]' (or pip install 'ray>=2.60')") \
        from None

from actors import Distribution, Node, PeerTable

from .host import NODES_VARIABLE, load_target, run_node
from .launcher import ClusterError

log = logging.getLogger("apps.cluster.on_ray")

NAMESPACE = "letitcrash"
MAX_CREATION = 2**20 - 1
MAX_NODES = 1024


# -- the registry (a named Ray actor) --------------------------------------------------------------

class Registry:
    """The cluster's incarnations and stream addresses (see the module docstring)."""

    def __init__(self, first: int) -> None:
        assert 1 <= first <= MAX_CREATION
        self.next = first
        self.addresses: dict[str, str] = {}
        self.creations: dict[str, int] = {}

    def incarnation(self, name: str) -> int:
        """A creation for a node starting now: never one this registry gave before."""
        creation = self.next
        self.next = self.next % MAX_CREATION + 1
        return creation

    def publish(self, name: str, creation: int, address: str) -> None:
        assert len(self.addresses) < MAX_NODES or name in self.addresses, "registry full"
        self.addresses[name] = address
        self.creations[name] = creation

    def gone(self, name: str, creation: int) -> None:
        """Node `name`'s incarnation `creation` is gone (a later one stays)."""
        if self.creations.get(name) == creation:
            del self.addresses[name], self.creations[name]

    def lookup(self, name: str) -> str | None:
        return self.addresses.get(name)

    def members(self) -> dict[str, list]:
        """Each live node's [creation, address]."""
        return {name: [self.creations[name], address] for name, address in self.addresses.items()}


class RegistryDiscovery:
    """A distribution's discovery through the registry (see `actors.peers.Discovery`):
    the registry first (a node restarted elsewhere has a new address), then what was learned."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.learned = PeerTable()

    async def resolve(self, name: str) -> str | None:
        address = await asyncio.wrap_future(self.registry.lookup.remote(name).future())
        return address if address is not None else await self.learned.resolve(name)

    def learn(self, name: str, address: str) -> None:
        self.learned.learn(name, address)

    def known(self) -> dict[str, str]:
        return self.learned.known()


def drop_incarnation(dist: Distribution, name: str, creation: int, reason: str) -> None:
    """Close `dist`'s connection to node `name` if it is to incarnation `creation` (on its loop)."""
    peer = dist.up.get(name)
    if peer is not None and peer.creation == creation:
        dist.lost(peer, reason)


# -- a node host (a Ray actor) ---------------------------------------------------------------------

class NodeHost:
    """One letitcrash node in this Ray actor's process, on an event loop of its own."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.dist: Distribution | None = None
        self.creation = 0

    def os_pid(self) -> int:
        return os.getpid()

    def ray_node(self) -> str:
        """The id of the Ray node (the raylet) this host runs on."""
        return ray.get_runtime_context().get_node_id()

    def serve(self, name: str, names: list[str], secret: str, target: str | None, registry: Any, ticktime: float,
              connect_timeout: float) -> str:
        """Run node `name` until `stop` (the launcher parks this call: its failure is Ray's death report)."""
        os.environ[NODES_VARIABLE] = ",".join(names)  # this process's: the start function may read them
        start = load_target(target) if target else None
        self.creation = ray.get(registry.incarnation.remote(name))
        listen = f"tcp:{ray.util.get_node_ip_address()}:0"

        async def listening(dist: Distribution) -> list[str]:
            self.dist = dist
            await asyncio.wrap_future(registry.publish.remote(name, self.creation, dist.address).future())
            return list(await asyncio.wrap_future(registry.members.remote().future()))

        async def run() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            await run_node(name, secret=secret, start=start, listen=listen, ticktime=ticktime, creation=self.creation,
                           connect_timeout=connect_timeout, stop=self.stop_event,
                           discovery=RegistryDiscovery(registry), listening=listening,
                           ready=lambda node, dist: self.up.set())
        try:
            asyncio.run(run())
        except Exception as exc:  # the launcher reads it as text: Ray cannot carry every exception type
            raise RuntimeError(f"node {name}: {type(exc).__name__}: {exc}") from None
        return "stopped"

    def wait_up(self, timeout: float) -> list | None:
        """[creation, address] once the node is up, or None after `timeout` seconds."""
        if not self.up.wait(timeout):
            return None
        assert self.dist is not None
        return [self.creation, self.dist.address]

    def peer_down(self, name: str, creation: int) -> None:
        """Ray reports node `name`'s incarnation `creation` dead."""
        if self.dist is not None:
            self.on_loop(drop_incarnation, self.dist, name, creation, "ray_reported_dead")

    def stop(self) -> None:
        if self.stop_event is not None:
            self.on_loop(self.stop_event.set)

    def on_loop(self, fn: Any, *args: Any) -> None:
        """Run `fn(*args)` on the node's loop, unless it has ended."""
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the node is gone already
                self.loop.call_soon_threadsafe(fn, *args)


# -- the launcher ----------------------------------------------------------------------------------

class Host:
    """The launcher's view of one node host (one incarnation)."""

    __slots__ = ("name", "actor", "serving", "creation", "address", "os_pid", "ray_node")

    def __init__(self, name: str, actor: Any, serving: Any) -> None:
        self.name, self.actor, self.serving = name, actor, serving
        self.creation, self.address, self.os_pid, self.ray_node = 0, "", 0, ""


class RayCluster:
    """Node hosts on a Ray cluster; see the module docstring."""

    def __init__(self, names: list[str], cluster: str, *, target: str | None, ticktime: float, cpus: float,
                 max_restarts: int, restart_window: float, ready_timeout: float) -> None:
        self.names = names
        self.cluster = cluster
        self.secret = secrets.token_hex(32)
        self.target, self.ticktime, self.cpus = target, ticktime, cpus
        self.max_restarts, self.restart_window, self.ready_timeout = max_restarts, restart_window, ready_timeout
        first = int.from_bytes(os.urandom(3)) % MAX_CREATION + 1
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.registry = ray.remote(Registry).options(name=f"letitcrash-registry-{cluster}", namespace=NAMESPACE,
                                                     num_cpus=0, scheduling_strategy=here).remote(first)
        self.host_class = ray.remote(NodeHost).options(max_concurrency=8, num_cpus=cpus, scheduling_strategy="SPREAD")
        self.hosts: dict[str, Host] = {}
        self.restarts: list[float] = []
        self.members: list[Distribution] = []  # driver-side distributions told of Ray's death reports
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        self.watcher: threading.Thread | None = None

    # -- starting -----------------------------------------------------------------------------------

    def start_all(self) -> None:
        pending = [self.launch(name) for name in self.names]
        for host in pending:
            self.wait_up(host)
        self.watcher = threading.Thread(target=self.watch, name=f"letitcrash-{self.cluster}-watch", daemon=True)
        self.watcher.start()

    def launch(self, name: str) -> Host:
        actor = self.host_class.remote()
        serving = actor.serve.remote(name, self.names, self.secret, self.target, self.registry, self.ticktime,
                                     self.ready_timeout)
        host = Host(name, actor, serving)
        with self.lock:
            self.hosts[name] = host
            self.changed.notify_all()
        return host

    def wait_up(self, host: Host) -> None:
        """Wait for `host`'s node to be up; ClusterError (naming why) if it fails or times out."""
        up = host.actor.wait_up.remote(self.ready_timeout)
        done, _ = ray.wait([up, host.serving], num_returns=1, timeout=self.ready_timeout + 5)
        if not done or done[0] != up:
            why = self.ended(host.serving) if done else f"not up within {self.ready_timeout} s"
            raise ClusterError(f"node {host.name} did not come up: {why}")
        info = ray.get(up)
        if info is None:
            raise ClusterError(f"node {host.name} did not come up within {self.ready_timeout} s")
        with self.lock:
            host.creation, host.address = info
            host.os_pid, host.ray_node = ray.get([host.actor.os_pid.remote(), host.actor.ray_node.remote()])
            self.changed.notify_all()

    @staticmethod
    def ended(ref: Any) -> str:
        """Why a parked `serve` call returned."""
        try:
            return f"it returned {ray.get(ref, timeout=5)!r}"
        except RayActorError as exc:
            return f"its actor died ({type(exc).__name__})"
        except GetTimeoutError:
            return "still running"
        except Exception as exc:  # noqa: BLE001 - the application's start function failed: say how
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps what `serve` raised
            return f"{type(cause).__name__}: {cause}"

    # -- Ray's death reports, and restarts -----------------------------------------------------------

    def watch(self) -> None:
        """The launcher's watcher thread: a `serve` call that ends is a node gone."""
        while not self.stopping:
            with self.lock:
                parked = {host.serving: host for host in self.hosts.values()}
            done, _ = ray.wait(list(parked), num_returns=1, timeout=0.2)
            for ref in done:
                if not self.stopping:
                    self.node_gone(parked[ref], self.ended(ref))

    def node_gone(self, host: Host, why: str) -> None:
        """Ray says `host` ended: every other node drops it now, and it starts again."""
        log.warning("cluster %s: node %s (incarnation %d) gone: %s", self.cluster, host.name, host.creation, why)
        self.report_down(host.name, host.creation)
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.restart_window] + [now]
        if len(self.restarts) > self.max_restarts:
            log.error("cluster %s: %d restarts in %s s: node %s stays down", self.cluster, len(self.restarts),
                      self.restart_window, host.name)
            with self.lock:
                del self.hosts[host.name]
                self.changed.notify_all()
            return
        try:
            self.wait_up(self.launch(host.name))
        except ClusterError as exc:
            log.error("cluster %s: %s", self.cluster, exc)

    def report_down(self, name: str, creation: int) -> None:
        """Tell the registry, every other host and every joined distribution that node
        `name`'s incarnation `creation` is dead (what a Ray death report does)."""
        self.registry.gone.remote(name, creation)
        with self.lock:
            others = [host for host in self.hosts.values() if host.name != name]
            members = list(self.members)
        for host in others:
            host.actor.peer_down.remote(name, creation)
        for dist in members:
            if dist.loop is not None and not dist.stopping:
                dist.loop.call_soon_threadsafe(drop_incarnation, dist, name, creation, "ray_reported_dead")

    # -- using it ------------------------------------------------------------------------------------

    def discovery(self) -> RegistryDiscovery:
        """A discovery for a distribution of this process to join the cluster with."""
        return RegistryDiscovery(self.registry)

    async def join(self, node: Node, listen: str = "tcp:127.0.0.1:0") -> Distribution:
        """Make real-time `node` (of this process, running) a member: connected to every
        node, told of Ray's death reports. Stop the distribution it returns when done."""
        dist = await Distribution(node, secret=self.secret, listen=listen, discovery=self.discovery(),
                                  ticktime=self.ticktime).start()
        with self.lock:
            self.members.append(dist)
        for name in self.names:
            await dist.connect(name)
        return dist

    def creation(self, name: str) -> int:
        """Node `name`'s current incarnation (0 while it starts)."""
        with self.lock:
            return self.hosts[name].creation

    def wait_incarnation(self, name: str, other_than: int, timeout: float) -> int:
        """Wait until node `name` is up as an incarnation other than `other_than`; that
        incarnation (ClusterError past `timeout`)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                host = self.hosts.get(name)
                if host is not None and host.creation not in (0, other_than):
                    return host.creation
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClusterError(f"node {name} was not up again within {timeout} s")
                self.changed.wait(left)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to node `name`'s host process (on this machine): SIGKILL is a crash."""
        with self.lock:
            host = self.hosts[name]
        os.kill(host.os_pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (its processes shut down), then end the hosts and the registry."""
        self.stopping = True
        if self.watcher is not None:
            self.watcher.join(5.0)
        with self.lock:
            hosts = list(self.hosts.values())
        for host in hosts:
            host.actor.stop.remote()
        ray.wait([host.serving for host in hosts], num_returns=len(hosts), timeout=timeout)
        for host in hosts:
            ray.kill(host.actor)
        ray.kill(self.registry)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def connect(address: str = "auto") -> None:
    """Join the Ray cluster at `address` ("auto": the one running on this machine or at
    $RAY_ADDRESS, else a new local one; "local": a new local one); nothing if joined."""
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=True)


def start_on_ray(nodes: int | None = None, target: str | None = None, *, address: str = "auto",
                 cluster: str = "letitcrash", ticktime: float = 60.0, cpus: float = 1.0, max_restarts: int = 10,
                 restart_window: float = 60.0, ready_timeout: float = 60.0) -> RayCluster:
    """Start `nodes` node hosts (default: one per CPU of the Ray cluster) named
    n1@CLUSTER... running `target` (MODULE:FUNCTION) on each; see the module docstring."""
    if target is not None:
        load_target(target)  # a typo fails here, not in every host
    if not (ticktime > 0 and cpus >= 0 and max_restarts >= 0 and restart_window > 0 and ready_timeout > 0):
        raise ClusterError("ticktime, restart_window and ready_timeout must be positive, cpus and max_restarts "
                           "not negative")
    connect(address)
    if nodes is None:
        nodes = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1)))
    if not 1 <= nodes <= MAX_NODES:
        raise ClusterError(f"a cluster on Ray has 1 to {MAX_NODES} nodes, not {nodes}")
    names = [f"n{i}@{cluster}" for i in range(1, nodes + 1)]
    try:
        made = RayCluster(names, cluster, target=target, ticktime=ticktime, cpus=cpus, max_restarts=max_restarts,
                          restart_window=restart_window, ready_timeout=ready_timeout)
    except ValueError as exc:  # Ray's word for a name taken
        raise ClusterError(f"cluster {cluster!r} runs already on this Ray cluster: {exc}") from None
    try:
        made.start_all()
    except BaseException:
        made.stop(timeout=5.0)
        raise
    return made

