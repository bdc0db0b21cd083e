#!/usr/bin/env python
"""Scale-out benchmark: the chat (and the rides) on 1 node process and on N, over the nodes' own streams.

    python bench/dist_scale.py                      # 1 and 2 nodes, full sizes
    python bench/dist_scale.py --quick --repeat 3   # smaller, 3 interleaved runs of each
    python bench/dist_scale.py --nodes 1,2,4 --json
    python bench/dist_scale.py --quick --profile    # + the CPU's shares by layer
    python bench/dist_scale.py --quick --workload chat,rides

- chat_sends_per_s: acknowledged sends (stored by the recipient's home shard) per wall
  second across the cluster. The work is the same whatever the node count: `sessions`
  connected devices (users u0, u1...) and `senders` of them sending `messages` in all,
  each sender one message at a time (a closed loop) to random users of the whole
  cluster. The `shards` (`--shards`) are spread over the nodes (shard i on node i mod
  N, `apps.cluster.chat`); each device connects on its user's home node
  (`ChatService.home_node`; `--placement spread`: on node k mod N for user uk, whatever
  its shard, as before), so with N nodes about 1 - 1/N of the sends cross. Stores are
  LMDB in mode "process" (no fsync). The span runs from the start signal to the last
  node's last acknowledgement. `--recipients local`: each sender writes only to users
  of its own node, so nothing crosses (the cost of splitting the work alone).
- the cost of a send, on the same line, per acknowledged send over the whole cluster
  (the counters run from the start signal until every node is done):
  `cpu_us_per_msg` (user + system CPU of all node processes; `node_cpu_us_per_msg`
  each), `crossings_per_msg` (deliveries that went between node processes: messages,
  calls, replies, signals), `frames_per_msg` and `wire_bytes_per_msg` (written),
  `kernel_msgs_per_msg` (messages taken by processes), `items_per_msg` (items the
  devices took: the message and its sender's receipt), `passes_per_msg` (scheduler
  passes) and `commits_per_msg` (LMDB commits); with `--profile`, `cpu_share_by_layer`
  (cProfile's own time by source folder: chat or rides, kernel, storage, dist = wire encoding,
  decoding and the node boundary, socket, loop = asyncio, load = this benchmark's
  devices and senders; the profiler slows everything, so only the shares mean something).
- where each node process's wall time went, from the start signal to its own senders'
  end (`node_span_s`): `node_busy` its CPU (user + system, all threads), `node_idle`
  blocked in the event loop's select with nothing to run, `node_queued` runnable but
  waiting for a core that other processes had (/proc schedstat; these three add up to
  about 1 for a process whose other threads sleep); with `waits_per_msg`
  (selects that blocked) and what ended them (`woken`: "peer" a socket, "thread" another
  thread calling in, "timer" nothing came before a timer). The chat's senders also say
  how long a send waited for its answer (`ack_ms_local`, `ack_ms_cross`: recipient homed
  on the sender's node, or on another).
- rides_updates_per_s (`--workload rides`): drivers' location updates taken per wall
  second across the cluster, the steady load of a ride service (every driver, every
  ~4 s). One city over the N nodes (`RideService(nodes=...)`): `sessions` drivers, each
  driver's phone on its home node (`RideService.driver_node`), `senders` of them per
  cluster moving their drivers in turn (~40 m per update, in a square of some 60
  cells), `messages` updates in all (five times the chat's, but for the tests' tiny
  run), each sender calling the driver it moved every `SYNC_EVERY` updates (a closed
  loop with a window). An update is a cast to the driver, which tells its cell (on
  the cell's node: about 1 - 1/N of them cross), and each
  node's mirror copies its cells to the others twice a second. The span starts with the
  city running (every driver and cell started, and known to the other nodes: see
  `rides_load`). The cost line is the same as the chat's, per update.
- scale (system "N/1 nodes"): the best N-node rate over the best 1-node one, from this
  run. On a machine that other work shares, the wall rates say little about scaling:
  the CPU per send is the figure to project from.

Each line has `others_cpu` (cores other processes kept busy meanwhile, from /proc) and
`load_avg` (the machine's 1-minute load average as the run started).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from actors import GenServer, Node  # noqa: E402

sys.path.insert(1, str(ROOT / "bench"))
from kernel import cpu_busy, sig  # noqa: E402
from profile_layers import cpu_by_layer  # noqa: E402

# Shards: a few per node. A node runs its shards on one thread, so more of them buy no
# CPU; they split the batches (confirms, receipts between shards: one cast per pair of
# shards per flush; their acknowledgements, one per pair per tick), and a message's
# receipts cross as casts of their own (measured on 2 nodes, before acknowledgements
# waited for the tick: 1.02 crossings per send with 2 shards, 1.10 with 4, 1.36 with 8,
# 1.93 with 32; 1.06 with 4 since).
SIZES = {"full": {"sessions": 20_000, "senders": 400, "messages": 100_000, "shards": 8},
         "quick": {"sessions": 4_000, "senders": 200, "messages": 20_000, "shards": 4},
         "tiny": {"sessions": 40, "senders": 4, "messages": 200, "shards": 4}}
# A location update costs a fifth of a chat send: the rides send five times as many, so
# that a quick run's span (~2 s) holds several of the mirrors' pushes, as a steady city does.
RIDES_MESSAGES = 5
SECRET = "bench"
HOUR = 3600.0
MAX_SECONDS = 600.0  # a node whose senders are not done by then fails the run instead of hanging it


class Device(GenServer):
    """Takes its items in order and confirms them (one confirm per frame); counts them."""

    def init(self, service: Any) -> None:
        self.service, self.session, self.last, self.taken = service, None, 0, 0

    def handle_info(self, msg: Any) -> None:
        if msg[0] == "items" and self.session is not None:
            for item in msg[1]:
                if item[0] == self.last + 1:
                    self.last = item[0]
                    self.taken += 1
            self.service.confirm(self, self.session, self.last)


def users_here(router: Any, index: int, size: dict, placement: str) -> list[str]:
    """The users whose devices connect to node `index`: on their home shard's node
    ("home"), or every N-th user whatever its shard ("spread", the placement before)."""
    count = len(router.nodes)
    everyone = [f"u{k}" for k in range(size["sessions"])]
    if placement == "spread":
        return everyone[index::count]
    here = router.nodes[index]
    return [user for user in everyone if router.home_node(user) == here]


class WatchedSelector(selectors.DefaultSelector):
    """The event loop's selector, timing the loop's waits: `idle` seconds blocked with
    nothing to run (less the time it then waited for a core once woken), `waits` such
    blocks, and what ended them (`woken`: "peer" a node's stream or another socket,
    "thread" the loop's self-pipe (an executor or another thread calling in), "timer"
    nothing ready: a timer's deadline came)."""

    def __init__(self) -> None:
        super().__init__()
        self.idle, self.waits, self.woken = 0.0, 0, {"peer": 0, "thread": 0, "timer": 0}
        self.self_pipe = -1

    def select(self, timeout: float | None = None) -> list:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)
        t, queued = time.perf_counter(), queued_seconds("thread-self")
        events = super().select(timeout)
        self.idle += time.perf_counter() - t - (queued_seconds("thread-self") - queued)
        self.waits += 1
        woken = self.woken
        if not events:
            woken["timer"] += 1
        elif any(key.fd == self.self_pipe for key, _ in events):
            woken["thread"] += 1
        else:
            woken["peer"] += 1
        return events


def queued_seconds(which: str = "self") -> float:
    """Seconds this process's threads ("self"), or the calling thread ("thread-self"),
    spent runnable but waiting for a core (Linux's /proc schedstat; 0 elsewhere): the time
    other processes took the cores from it."""
    try:
        if which == "thread-self":
            with open("/proc/thread-self/schedstat") as f:
                return int(f.read().split()[1]) / 1e9
        total = 0
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return total / 1e9


class Meter:
    """This node process's counters between two readings: CPU seconds (user + system),
    the distribution's counters, the kernel's messages and scheduler passes, the store's
    commits, and with `profile` the CPU by layer (cProfile: it slows the run, so only its
    shares mean something), its whole profile saved in `profile_dir` if given."""

    def __init__(self, node: Node, dist: Any, store: Any, profile: bool, profile_dir: str | None,
                 selector: WatchedSelector) -> None:
        self.node, self.dist, self.store, self.profile_dir = node, dist, store, profile_dir
        self.selector = selector
        self.profiler = cProfile.Profile(time.process_time) if profile else None
        self.passes = 0
        node.add_pass_hook(self.count_pass)

    def count_pass(self) -> None:
        self.passes += 1

    def reading(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        selector = self.selector
        return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter(), "idle_s": selector.idle,
                "queued_s": queued_seconds(), "waits": selector.waits,
                **{f"woken_{k}": v for k, v in selector.woken.items()},
                "messages": self.node.statistics()["messages"],
                "passes": self.passes, "commits": self.store.commits, **self.dist.statistics()}

    def start(self) -> None:
        self.first = self.reading()
        if self.profiler is not None:
            self.profiler.enable()

    def stop(self) -> dict:
        if self.profiler is not None:
            self.profiler.disable()
        last = self.reading()
        moved = {k: last[k] - self.first[k] for k in last}
        if self.profiler is not None:
            moved["layers"] = layers(self.profiler)
            if self.profile_dir:  # for `python -m pstats FILE`
                name = f"{len(self.node.nodes()) + 1}-{self.node.name}.prof"
                self.profiler.dump_stats(os.path.join(self.profile_dir, name))
        return moved


LAYERS = (("apps/chat/", "chat"), ("apps/rides/", "rides"), ("apps/", "apps"), ("actors/dist.py", "dist"),
          ("actors/wire.py", "dist"), ("actors/boundary.py", "dist"), ("actors/", "kernel"), ("supervision/", "kernel"),
          ("storage/", "storage"), ("bench/", "load"), ("asyncio/", "loop"), ("selectors.py", "loop"),
          ("socket.py", "socket"))
BUILTINS = (("socket", "socket"), ("epoll", "socket"), ("msgpack", "dist"), ("Packer", "dist"),
            ("unpack", "dist"), ("lmdb", "storage"), ("Transaction", "storage"), ("Cursor", "storage"))


def layer_of(filename: str, function: str) -> str | None:
    """The layer a profiled function belongs to (None: a builtin of no layer of its own)."""
    if filename == "~":
        return next((layer for word, layer in BUILTINS if word in function), None)
    path = filename.replace(os.sep, "/")
    return next((layer for part, layer in LAYERS if f"/{part}" in path or path.startswith(part)), "other")


def layers(profiler: cProfile.Profile) -> dict[str, float]:
    """CPU seconds by layer, from a profile's own time; a builtin of no layer counts for
    the layer of its caller."""
    return cpu_by_layer(pstats.Stats(profiler).stats, layer_of)  # type: ignore[attr-defined]


async def chat_load(node: Node, service: Any, spec: dict) -> tuple[Callable, int, Callable[[], int]]:
    """The chat's part on a node: its devices connected; (sender, senders, items taken)."""
    from apps.chat import Unavailable
    from apps.common import RETRYABLE

    size, index = spec["size"], spec["index"]
    router = service.router
    while any(router.shard(i) is None for i in range(router.ring.n)):  # every shard reachable
        await asyncio.sleep(0.02)
    mine = users_here(router, index, size, spec["placement"])
    everyone = mine if spec["recipients"] == "local" else [f"u{k}" for k in range(size["sessions"])]
    devices = [node.spawn(Device, service) for _ in mine]
    sessions = [await service.connect(node, user, "phone", device) for user, device in zip(mine, devices, strict=True)]
    for device, session in zip(devices, sessions, strict=True):
        node.get_process(device).session = session
    senders = size["senders"] // len(router.nodes)
    per_sender = size["messages"] // size["senders"]

    async def sender(proc: Any, me: int) -> None:
        first = me * (len(mine) // senders)  # its device
        rng = random.Random(index * 1_000_003 + first)
        session = sessions[first]
        k = 0
        while k < per_sender:
            to = everyone[rng.randrange(len(everyone))]
            try:
                t = time.perf_counter()
                await service.send(proc, session, to, k, b"x" * 64, "hi")
                took = ACKS["cross" if router.home_node(to) != node.name else "local"]
                took[0] += 1
                took[1] += time.perf_counter() - t
                k += 1
            except (Unavailable, *RETRYABLE):  # a shard restarting, or slow (profiled): the same client id again
                await proc.sleep(0.01)
    return sender, senders, lambda: sum(node.get_process(device).taken for device in devices)


ACKS = {"local": [0, 0.0], "cross": [0, 0.0]}  # this node's chat sends: count and seconds to their answer


CITY = (37.7749, -122.4194)
CITY_DEG = 0.05  # the drivers' square: about 5.5 km a side, some 60 cells
STEP_DEG = 0.0004  # a driver moves about 40 m between two updates (every ~4 s at 36 km/h)
SYNC_EVERY = 10  # updates a sender casts before it calls a driver (its window)


async def rides_load(node: Node, service: Any, spec: dict) -> tuple[Callable, int, Callable[[], int]]:
    """The rides' part on a node: the drivers homed here (`RideService.driver_node`, where
    their phones connect); (sender, senders, items: none). A sender moves its drivers in
    turn, one location update each (a cast), and every `SYNC_EVERY` updates calls the
    driver it just moved (its mailbox is in order, so the answer says the updates before
    it were taken: a closed loop with a window).

    Before "ready" the city is warmed up, as a ride service runs: every driver has sent
    its first update from where it starts (its process is running, in its cell, and the
    cell is running) and the mirrors have had two pushes, so the other nodes know every
    cell's pid. Without it the measured span is mostly the city's start: with 5 updates
    per driver (`--quick`) the first of each started its driver, and an update for a
    cell whose pid had not reached the other node yet went through that node's router."""
    from apps.common import RETRYABLE
    from apps.rides.mirror import PUSH_EVERY

    size, index, names = spec["size"], spec["index"], spec["names"]
    while len(set(node.nodes()) & set(names)) < len(names) - 1:  # connected to every other node
        await asyncio.sleep(0.02)
    mine = [f"d{k}" for k in range(size["sessions"]) if service.driver_node(f"d{k}") == node.name]
    senders = size["senders"] // len(names)
    per_sender = size["messages"] // size["senders"]
    rngs = [random.Random(index * 1_000_003 + me) for me in range(senders)]
    places = [{d: [CITY[0] + rng.uniform(0, CITY_DEG), CITY[1] + rng.uniform(0, CITY_DEG)]
               for d in mine[me::senders]} for me, rng in enumerate(rngs)]
    for at in places:
        for driver, (lat, lon) in at.items():
            service.driver_update(node, driver, lat, lon, 0.0)
    for start in range(0, len(mine), 256):
        await asyncio.gather(*(service.driver(node, d) for d in mine[start:start + 256]))
    await asyncio.sleep(2 * PUSH_EVERY)

    async def sender(proc: Any, me: int) -> None:
        rng, drivers = rngs[me], mine[me::senders]
        at = places[me]
        k = 0
        while k < per_sender:
            driver = drivers[k % len(drivers)]
            p = at[driver]
            p[0] = min(CITY[0] + CITY_DEG, max(CITY[0], p[0] + rng.uniform(-STEP_DEG, STEP_DEG)))
            p[1] = min(CITY[1] + CITY_DEG, max(CITY[1], p[1] + rng.uniform(-STEP_DEG, STEP_DEG)))
            service.driver_update(proc, driver, p[0], p[1], rng.uniform(0.0, 360.0))
            k += 1
            if k % SYNC_EVERY == 0 or k == per_sender:
                try:
                    await service.driver(proc, driver)
                except RETRYABLE:  # slow (profiled): the next window waits again
                    await proc.sleep(0.01)
    return sender, senders, lambda: 0


async def load(node: Node, service: Any, spec: dict, meter: Callable[[], Meter]) -> None:
    """A node's part: set its workload up, say "ready", run its senders on "go", say
    what they did, its counters on "stats", stop on EOF."""
    prepare = rides_load if spec["workload"] == "rides" else chat_load
    sender, senders, items = await prepare(node, service, spec)
    loop = asyncio.get_running_loop()
    counters = meter()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    counters.start()
    per_sender = spec["size"]["messages"] // spec["size"]["senders"]
    finished: list[float] = []
    all_done = asyncio.Event()  # (not a poll: the loop's waits then say what the nodes waited for)

    async def timed(proc: Any, me: int) -> None:
        await sender(proc, me)
        finished.append(time.perf_counter())
        if len(finished) == senders:
            all_done.set()
    start = time.perf_counter()
    for s in range(senders):
        node.spawn(timed, s)
    try:
        await asyncio.wait_for(all_done.wait(), MAX_SECONDS)
    except asyncio.TimeoutError:
        left = senders - len(finished)
        raise SystemExit(f"node {spec['index']}: {left} senders not done after {MAX_SECONDS:g} s") from None
    done = counters.reading()
    print(json.dumps({"sent": senders * per_sender, "seconds": max(finished) - start}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "stats": every node is done
    moved = counters.stop()
    moved["own"] = {k: done[k] - counters.first[k] for k in ("wall_s", "cpu_s", "idle_s", "queued_s")}
    moved["acks"] = ACKS
    moved["items"] = items()
    print(json.dumps(moved), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the end


def node_main(spec: dict) -> int:
    from apps.chat import ChatConfig
    from apps.cluster import chat
    from apps.cluster.host import run_node
    from apps.rides import RideService
    from storage import Store

    names, directory = spec["names"], spec["directory"]
    name = names[spec["index"]]
    peers = {n: f"unix:{directory}/{n.partition('@')[0]}.sock" for n in names}
    stop = asyncio.Event()
    dists: list[Any] = []

    async def keep(dist: Any) -> list[str]:
        dists.append(dist)
        return []

    async def start(node: Node) -> None:
        store = Store(os.path.join(directory, name.partition("@")[0]), node, mode="process")
        if spec["workload"] == "rides":
            service: Any = RideService(node, store, nodes=names)
            service.start()
        else:
            service = chat.serve(node, store, ChatConfig(shards=spec["size"]["shards"], heartbeat_timeout=HOUR,
                                                         nodes=tuple(names)))
        def meter() -> Meter:
            return Meter(node, dists[0], store, spec["profile"], spec["profile_dir"], selector)
        await load(node, service, spec, meter)
        stop.set()

    selector = WatchedSelector()
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector)) as runner:
        selector.self_pipe = runner.get_loop()._ssock.fileno()  # type: ignore[attr-defined]
        runner.run(run_node(name, secret=SECRET, start=start, listen=peers[name], peers=peers, stop=stop,
                            listening=keep, ready=lambda node, dist: None))
    return 0


def answer(proc: subprocess.Popen, what: str) -> dict:
    """A node process's next line, which says `what` (JSON)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a node process ended before it said {what} (its error is above)")
    return json.loads(line)


def run(count: int, size: dict, directory: str, placement: str, recipients: str,
        profile: bool, profile_dir: str | None, workload: str = "chat") -> tuple[int, float, list[dict]]:
    """`count` node processes running the load: (acknowledged sends, span in seconds,
    each node's counters)."""
    names = [f"s{i}@bench" for i in range(count)]
    procs = []

    def tell(line: str) -> None:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
    try:
        for index in range(count):
            spec = json.dumps({"names": names, "index": index, "directory": directory, "size": size,
                               "placement": placement, "recipients": recipients, "profile": profile,
                               "workload": workload,
                               "profile_dir": profile_dir})
            procs.append(subprocess.Popen([sys.executable, __file__, "--node", spec], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "a node did not start"
        tell("go\n")
        results = [answer(proc, "its sends") for proc in procs]
        tell("stats\n")
        counters = [answer(proc, "its counters") for proc in procs]
        return sum(r["sent"] for r in results), max(r["seconds"] for r in results), counters
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cost(sent: int, counters: list[dict]) -> dict:
    """Per acknowledged send, summed over the node processes: CPU µs, deliveries that
    crossed between nodes, frames and bytes written, local deliveries, items the devices
    took, scheduler passes, store commits; with a profile, the CPU's shares by layer."""
    total = {k: sum(c[k] for c in counters) for k in counters[0] if k not in ("layers", "own", "acks")}
    line = {"cpu_us_per_msg": sig(total["cpu_s"] * 1e6 / sent),
            "node_cpu_us_per_msg": [sig(c["cpu_s"] * 1e6 / sent) for c in counters],
            "crossings_per_msg": sig(total["deliveries_in"] / sent), "frames_per_msg": sig(total["frames_out"] / sent),
            "wire_bytes_per_msg": sig(total["bytes_out"] / sent), "kernel_msgs_per_msg": sig(total["messages"] / sent),
            "items_per_msg": sig(total["items"] / sent),
            "passes_per_msg": sig(total["passes"] / sent), "commits_per_msg": sig(total["commits"] / sent),
            "node_span_s": [sig(c["own"]["wall_s"]) for c in counters],
            "node_busy": [sig(c["own"]["cpu_s"] / c["own"]["wall_s"]) for c in counters],
            "node_idle": [sig(c["own"]["idle_s"] / c["own"]["wall_s"]) for c in counters],
            "node_queued": [sig(c["own"]["queued_s"] / c["own"]["wall_s"]) for c in counters],
            "waits_per_msg": sig(total["waits"] / sent),
            "woken": {k: total[f"woken_{k}"] for k in ("peer", "thread", "timer")}}
    for where in ("local", "cross"):
        count = sum(c["acks"][where][0] for c in counters)
        if count:
            line[f"ack_ms_{where}"] = sig(sum(c["acks"][where][1] for c in counters) * 1e3 / count)
    if "layers" in counters[0]:
        shares: dict[str, float] = {}
        for c in counters:
            for layer, seconds in c["layers"].items():
                shares[layer] = shares.get(layer, 0.0) + seconds
        whole = sum(shares.values()) or 1.0
        line["cpu_share_by_layer"] = {k: round(v / whole, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}
    return line


WORKLOADS = {"chat": ("chat_sends_per_s", "msgs/s"), "rides": ("rides_updates_per_s", "updates/s")}


def measure(counts: list[int], size: dict, emit: Callable[[dict], None], *, placement: str = "home",
            recipients: str = "any", repeat: int = 1, profile: bool = False, profile_dir: str | None = None,
            workload: str = "chat") -> None:
    metric, unit = WORKLOADS[workload]
    rates: dict[int, list[float]] = {count: [] for count in counts}
    for _ in range(repeat):
        for count in counts:  # interleaved: the machine's other load falls on both alike
            load_avg = os.getloadavg()[0]
            busy, wall = cpu_busy(), time.monotonic()
            with tempfile.TemporaryDirectory(prefix="lic-scale-") as tmp:
                sent, seconds, counters = run(count, size, tmp, placement, recipients, profile, profile_dir, workload)
            elapsed = max(time.monotonic() - wall, 1e-9)
            others = sig(max(0.0, (cpu_busy() - busy) / elapsed - min(count, os.cpu_count() or 1)))
            rates[count].append(sent / seconds)
            emit({"system": f"letitcrash {count} node{'s' if count > 1 else ''}", "workload": metric,
                  "value": sig(sent / seconds), "unit": unit, "nodes": count, "placement": placement,
                  "recipients": recipients, **size,
                  **cost(sent, counters), "others_cpu": others, "load_avg": round(load_avg, 2)})
    for count in counts:
        if count != 1 and 1 in rates:
            best = max(rates[count]) / max(rates[1])
            emit({"system": f"{count}/1 nodes", "workload": "scale", "metric": metric,
                  "value": sig(best), "unit": "x", "of": f"best of {repeat}"})


def main(argv: list[str] | None = None) -> int:
    from dist import show

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--node", help=argparse.SUPPRESS)  # a child: one node, its spec in JSON
    ap.add_argument("--nodes", default="1,2", help="comma-separated node counts (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--placement", choices=("home", "spread"), default="home",
                    help="where a user's device connects: its home shard's node (default), or any")
    ap.add_argument("--recipients", choices=("any", "local"), default="any",
                    help="whom a sender writes to: any user (default), or only users of its own node")
    ap.add_argument("--shards", type=int, help="chat shards in the cluster (default: the size's, 4 quick, 8 full)")
    ap.add_argument("--senders", type=int, help="senders in the cluster, each with one send (or one window of "
                                                "updates) in flight (default: the size's, 200 quick, 400 full)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each node count, interleaved")
    ap.add_argument("--profile", action="store_true", help="CPU shares by layer (cProfile: slower)")
    ap.add_argument("--profile-dir", help="with --profile, save each node's profile there (N-NAME.prof)")
    ap.add_argument("--workload", default="chat",
                    help=f"comma-separated workloads of {','.join(WORKLOADS)} (default: %(default)s)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if args.node:
        return node_main(json.loads(args.node))
    counts = [int(n) for n in args.nodes.split(",")]
    if not all(1 <= n <= 16 for n in counts):
        ap.error(f"node counts are 1 to 16, not {args.nodes}")
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    size = {**size, "shards": size["shards"] if args.shards is None else args.shards,
            "senders": size["senders"] if args.senders is None else args.senders}
    senders = size["senders"]
    if not (1 <= senders <= size["sessions"] // 2 and size["messages"] % senders == 0
            and all(senders % n == 0 for n in counts)):
        ap.error(f"--senders is 1 to {size['sessions'] // 2} (half the devices), a divisor of the "
                 f"{size['messages']} messages and a multiple of each node count, not {senders}")
    if not max(counts) <= size["shards"] <= 1024:
        ap.error(f"--shards is {max(counts)} (a shard per node at least) to 1024, not {size['shards']}")
    emit = (lambda line: print(json.dumps({**line, "cores": os.cpu_count()}), flush=True)) if args.json else show
    if not 1 <= args.repeat <= 20:
        ap.error(f"--repeat is 1 to 20, not {args.repeat}")
    if args.profile_dir is not None:
        if not args.profile:
            ap.error("--profile-dir needs --profile")
        try:  # made now: the node processes would each fail to write their profile only at the end
            os.makedirs(args.profile_dir, exist_ok=True)
        except OSError as e:
            ap.error(f"--profile-dir {args.profile_dir!r} is not a directory that can be made: {e.strerror}")
    workloads = args.workload.split(",")
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"--workload is a comma list of {', '.join(WORKLOADS)}, not {unknown[0]!r}")
    for workload in workloads:
        more = RIDES_MESSAGES if workload == "rides" and not args.tiny else 1
        sized = {**size, "messages": size["messages"] * more}
        measure(counts, sized, emit, placement=args.placement, recipients=args.recipients, repeat=args.repeat,
                profile=args.profile, profile_dir=args.profile_dir and os.path.abspath(args.profile_dir),
                workload=workload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
