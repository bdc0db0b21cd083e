#!/usr/bin/env python
"""Distribution benchmark: two letitcrash node processes beside a bare asyncio relay.

Two letitcrash nodes in two OS processes over a Unix socket, side by side in one run
with the floor: a bare asyncio stream relay with msgpack batches between two processes
(no actors, no kernel).

    python bench/dist.py            # full sizes
    python bench/dist.py --quick    # smaller, about a minute
    python bench/dist.py --json     # one JSON object per line

Workloads (each line says the sizes it ran with):
- tell_msgs_per_s: a process on node A casts `("say", "alice", "room-7", "hello there",
  i)` to a GenServer on node B, in chunks of `chunk` messages, each chunk followed by a
  send that B answers once it has handled the chunk; the sender keeps `window` chunks in
  flight. The floor sends the same messages (as lists) in msgpack batches of `batch`
  per frame, with the same chunks, answers and window.
- call_rtt_us: a process on A calls an echo GenServer on B, one call at a time, `calls`
  times; the floor sends one msgpack frame and waits for its echo, as many times.
- ratio (system "letitcrash/floor", one line per `metric` above): letitcrash's value over
  the floor's, from the best of `repeat` interleaved runs of each.
- kill_detect_ms: node B is SIGKILLed; the time until A's monitor of a process on B
  fires (`Down(..., "noconnection")`), from just before the kill.
- freeze_detect_ticks: node B is SIGSTOPped (alive, silent); the time until A's
  `NodeDown`, in ticks (a tick is net_ticktime / 4; `ticktime` says the one used).

The machine's other work shares its cores: each line has `others_cpu` (cores other
processes kept busy meanwhile, from /proc). `goal` keys are the issue's targets (for a
quiet machine); `met` says whether this run reached them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from actors import Distribution, Down, GenServer, Node, NodeDown, RemoteName, new_creation  # noqa: E402

sys.path.insert(1, str(ROOT / "bench"))
from kernel import check, cpu_busy, sig  # noqa: E402

WORKLOADS = ("tell", "call", "kill", "freeze")
SIZES = {
    "full": {"messages": 1_000_000, "chunk": 20_000, "window": 2, "batch": 1000, "calls": 20_000, "ticktime": 1.0,
             "repeat": 3},
    "quick": {"messages": 300_000, "chunk": 20_000, "window": 2, "batch": 1000, "calls": 5_000, "ticktime": 1.0,
              "repeat": 2},
    "tiny": {"messages": 2_000, "chunk": 500, "window": 2, "batch": 100, "calls": 50, "ticktime": 0.4,
             "repeat": 1},
}
SECRET = "bench"
MESSAGE = ("say", "alice", "room-7", "hello there")
GOALS = {"tell_msgs_per_s": (">=", 400_000.0), "tell_ratio": (">=", 0.5), "call_rtt_us": ("<=", 100.0),
         "kill_detect_ms": ("<=", 50.0), "freeze_detect_ticks": ("<=", 4.0)}


# -- node B and the floor's server (child processes) ---------------------------------------------

class Sink(GenServer):
    """Counts casts; answers ("done", k) to the sender of ("chunk", k, pid) once it has them."""

    def init(self) -> None:
        self.count = 0

    def handle_cast(self, msg: Any) -> None:
        self.count += 1

    def handle_info(self, msg: Any) -> None:
        self.send(msg[2], ("done", msg[1], self.count))


class Echo(GenServer):
    def handle_call(self, request: Any, caller: Any) -> Any:
        return request


async def node_main(address: str, ticktime: float) -> None:
    node = Node("b@bench", creation=new_creation())
    async with node:
        await Distribution(node, secret=SECRET, listen=address, ticktime=ticktime).start()
        node.register("sink", node.spawn(Sink))
        node.register("echo", node.spawn(Echo))
        print("ready", flush=True)
        await asyncio.Event().wait()


async def floor_main(path: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = 0
        while not reader.at_eof():
            try:
                size = int.from_bytes(await reader.readexactly(4), "big")
            except asyncio.IncompleteReadError:
                return
            frame = msgpack.unpackb(await reader.readexactly(size))
            if frame[0] == 0:  # a batch
                for _ in frame[1]:
                    count += 1
            else:  # a chunk's end, or a ping: answered
                data = msgpack.packb([frame[0], frame[1], count])
                writer.write(len(data).to_bytes(4, "big") + data)
    await asyncio.start_unix_server(serve, path)
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the measurements ---------------------------------------------------------------------------

def child(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "the child did not start"
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(10)


async def floor_tell(path: str, size: dict) -> float:
    reader, writer = await asyncio.open_unix_connection(path)
    pack = msgpack.Packer().pack
    chunk, batch, n = size["chunk"], size["batch"], size["messages"]
    start = time.perf_counter()
    for k, first in enumerate(range(0, n, chunk)):
        for lo in range(first, first + chunk, batch):
            data = pack([0, [[1, 7, [*MESSAGE, i]] for i in range(lo, lo + batch)]])
            writer.write(len(data).to_bytes(4, "big") + data)
        data = pack([1, k])
        writer.write(len(data).to_bytes(4, "big") + data)
        if k + 1 >= size["window"]:
            await read_frame(reader)
        await writer.drain()
    for _ in range(min(size["window"] - 1, n // chunk)):
        await read_frame(reader)
    elapsed = time.perf_counter() - start
    writer.close()
    return n / elapsed


async def floor_rtt(path: str, size: dict) -> float:
    reader, writer = await asyncio.open_unix_connection(path)
    data = msgpack.packb([2, "ping"])
    start = time.perf_counter()
    for _ in range(size["calls"]):
        writer.write(len(data).to_bytes(4, "big") + data)
        await read_frame(reader)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed / size["calls"] * 1e6


async def read_frame(reader: asyncio.StreamReader) -> Any:
    size = int.from_bytes(await reader.readexactly(4), "big")
    return msgpack.unpackb(await reader.readexactly(size))


async def with_node(address: str, body: Callable[[Node, Distribution], Any], ticktime: float = 60.0) -> Any:
    node = Node("a@bench", creation=new_creation())
    async with node:
        dist = await Distribution(node, secret=SECRET, ticktime=ticktime).start()
        await dist.connect("b@bench", address)
        try:
            return await body(node, dist)
        finally:
            await dist.stop()


async def tell(node: Node, dist: Distribution, size: dict) -> float:
    done = asyncio.get_running_loop().create_future()
    sink = RemoteName("sink", "b@bench")
    chunk, n, window = size["chunk"], size["messages"], size["window"]

    async def sender(proc: Any) -> None:
        start = time.perf_counter()
        chunks = n // chunk
        for k in range(chunks):
            for i in range(k * chunk, (k + 1) * chunk):
                proc.cast(sink, (*MESSAGE, i))
            proc.send(sink, ("chunk", k, proc.pid))
            if k + 1 >= window:
                await proc.receive()
        for _ in range(min(window - 1, chunks)):
            await proc.receive()
        done.set_result(n / (time.perf_counter() - start))
    node.spawn(sender)
    return await done


async def call_rtt(node: Node, dist: Distribution, size: dict) -> float:
    done = asyncio.get_running_loop().create_future()
    echo = RemoteName("echo", "b@bench")

    async def caller(proc: Any) -> None:
        await proc.call(echo, "warm up")
        start = time.perf_counter()
        for _ in range(size["calls"]):
            await proc.call(echo, "ping")
        done.set_result((time.perf_counter() - start) / size["calls"] * 1e6)
    node.spawn(caller)
    return await done


async def detect(node: Node, dist: Distribution, b: subprocess.Popen, how: int) -> float:
    """Seconds from signalling node B (`how`) until node A hears of it."""
    heard = asyncio.get_running_loop().create_future()

    async def watcher(proc: Any) -> None:
        proc.monitor_node("b@bench")
        proc.monitor(RemoteName("echo", "b@bench"))
        await proc.call(RemoteName("echo", "b@bench"), "connected")
        ready.set_result(None)
        msg = await proc.receive(lambda m: type(m) in (Down, NodeDown))
        heard.set_result((time.perf_counter(), msg))
    ready = asyncio.get_running_loop().create_future()
    node.spawn(watcher)
    await ready
    start = time.perf_counter()
    os.kill(b.pid, how)
    at, _msg = await asyncio.wait_for(heard, 60)
    return at - start


def measure(workload: str, size: dict, path: str, emit: Callable[[dict], None]) -> None:
    busy, wall = cpu_busy(), time.monotonic()
    if workload in ("tell", "call"):
        floor = child("--floor", path + ".floor")
        b = child("--node", f"unix:{path}", "--ticktime", "60")
        try:
            ours_fn = tell if workload == "tell" else call_rtt
            floor_fn = floor_tell if workload == "tell" else floor_rtt
            ours, base = [], []
            for _ in range(size["repeat"]):  # interleaved, the best of each
                base.append(asyncio.run(floor_fn(path + ".floor", size)))
                ours.append(asyncio.run(with_node(f"unix:{path}", lambda n, d: ours_fn(n, d, size))))
        finally:
            stop(floor)
            stop(b)
        others = others_cpu(busy, wall, 2.0)
        pick = max if workload == "tell" else min
        name, unit = ("tell_msgs_per_s", "msgs/s") if workload == "tell" else ("call_rtt_us", "us")
        shape = {k: size[k] for k in (("messages", "chunk", "window", "batch") if workload == "tell" else ("calls",))}
        emit({"system": "letitcrash", "workload": name, "value": sig(pick(ours)), "unit": unit, **shape,
              "others_cpu": others, **check(GOALS[name], pick(ours))})
        emit({"system": "floor", "workload": name, "value": sig(pick(base)), "unit": unit, **shape,
              "others_cpu": others})
        ratio = pick(ours) / pick(base)
        emit({"system": "letitcrash/floor", "workload": "ratio", "metric": name, "value": sig(ratio), "unit": "x",
              **({} if workload == "call" else check(GOALS["tell_ratio"], ratio))})
        return
    ticktime = size["ticktime"]
    b = child("--node", f"unix:{path}", "--ticktime", str(ticktime))
    try:
        how = signal.SIGKILL if workload == "kill" else signal.SIGSTOP
        seconds = asyncio.run(with_node(f"unix:{path}", lambda n, d: detect(n, d, b, how), ticktime=ticktime))
    finally:
        stop(b)
    others = others_cpu(busy, wall, 1.0)
    if workload == "kill":
        emit({"system": "letitcrash", "workload": "kill_detect_ms", "value": sig(seconds * 1000), "unit": "ms",
              "others_cpu": others, **check(GOALS["kill_detect_ms"], seconds * 1000)})
    else:
        ticks = seconds / (ticktime / 4)
        emit({"system": "letitcrash", "workload": "freeze_detect_ticks", "value": sig(ticks), "unit": "ticks",
              "seconds": sig(seconds), "ticktime": ticktime, "others_cpu": others,
              **check(GOALS["freeze_detect_ticks"], ticks)})


def others_cpu(busy: float, wall: float, ours: float) -> float:
    """Cores other processes kept busy since (`busy`, `wall`), ours counted as `ours` cores at
    most (the two processes of a run): a rough figure of the machine's load."""
    elapsed = max(time.monotonic() - wall, 1e-9)
    return sig(max(0.0, (cpu_busy() - busy) / elapsed - ours))


def show(line: dict) -> None:
    extra = " ".join(f"{k}={v}" for k, v in line.items() if k not in ("system", "workload", "value", "unit"))
    print(f"{line['system']:>16} {line['workload']:<22} {line['value']:>12} {line['unit']:<8} {extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # the children's roles: node B, or the floor's server, at an address
    ap.add_argument("--node", help=argparse.SUPPRESS)
    ap.add_argument("--floor", help=argparse.SUPPRESS)
    ap.add_argument("--ticktime", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    ap.add_argument("--only", help=f"comma-separated workloads of {','.join(WORKLOADS)}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if args.node:
        asyncio.run(node_main(args.node, args.ticktime))
        return 0
    if args.floor:
        asyncio.run(floor_main(args.floor))
        return 0
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workload: {', '.join(sorted(unknown))}; known: {', '.join(WORKLOADS)}")
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    emit = (lambda line: print(json.dumps({**line, "cores": os.cpu_count()}), flush=True)) if args.json else show
    with tempfile.TemporaryDirectory(prefix="lic-dist-") as tmp:
        for workload in workloads:
            measure(workload, size, os.path.join(tmp, workload), emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
