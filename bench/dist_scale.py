#!/usr/bin/env python
"""Scale-out benchmark: the chat on 1 node process and on N, over the nodes' own streams.

    python bench/dist_scale.py              # 1 and 2 nodes, full sizes
    python bench/dist_scale.py --quick      # smaller
    python bench/dist_scale.py --nodes 1,2,4 --json

- chat_sends_per_s: acknowledged sends (stored by the recipient's home shard) per wall
  second across the cluster. The work is the same whatever the node count: `sessions`
  connected devices and `senders` of them sending `messages` in all, each sender one
  message at a time (a closed loop) to random users of the whole cluster; with N nodes
  each node process holds 1/N of the devices and senders, and the `shards` are spread
  over the nodes (shard i on node i mod N, `apps.cluster.chat`), so most sends and
  deliveries cross between node processes. Stores are LMDB in mode "process" (no fsync).
  The span runs from the start signal to the last node's last acknowledgement.
- scale (system "N/1 nodes"): the N-node figure over the 1-node one, from this run.

The machine's other work shares its cores: each line has `others_cpu` (cores other
processes kept busy meanwhile, from /proc).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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

SIZES = {"full": {"sessions": 20_000, "senders": 400, "messages": 100_000, "shards": 64},
         "quick": {"sessions": 4_000, "senders": 200, "messages": 20_000, "shards": 32},
         "tiny": {"sessions": 40, "senders": 4, "messages": 200, "shards": 4}}
SECRET = "bench"
HOUR = 3600.0


class Device(GenServer):
    """Takes its items in order and confirms them (one confirm per frame)."""

    def init(self, service: Any) -> None:
        self.service, self.session, self.last = service, None, 0

    def handle_info(self, msg: Any) -> None:
        if msg[0] == "items" and self.session is not None:
            for item in msg[1]:
                if item[0] == self.last + 1:
                    self.last = item[0]
            self.service.confirm(self, self.session, self.last)


def users_of(index: int, size: dict, nodes: int) -> list[str]:
    return [f"u{index}-{j}" for j in range(size["sessions"] // nodes)]


async def load(node: Node, service: Any, spec: dict) -> None:
    """A node's part: connect its devices, say "ready", send on "go", say what it sent, stop on EOF."""
    from apps.chat import Unavailable

    size, count, index = spec["size"], len(spec["names"]), spec["index"]
    router = service.router
    while any(router.shard(i) is None for i in range(router.ring.n)):  # every shard reachable
        await asyncio.sleep(0.02)
    mine = users_of(index, size, count)
    everyone = [u for i in range(count) for u in users_of(i, size, count)]
    devices = [node.spawn(Device, service) for _ in mine]
    sessions = [await service.connect(node, user, "phone", device) for user, device in zip(mine, devices, strict=True)]
    for device, session in zip(devices, sessions, strict=True):
        node.get_process(device).session = session
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    senders = size["senders"] // count
    per_sender = size["messages"] // size["senders"]
    finished: list[float] = []

    async def sender(proc: Any, me: int) -> None:
        rng = random.Random(index * 1_000_003 + me)
        k = 0
        while k < per_sender:
            try:
                await service.send(proc, sessions[me], everyone[rng.randrange(len(everyone))], k, b"x" * 64, "hi")
                k += 1
            except Unavailable:  # a shard restarting under load: the same client id again
                await proc.sleep(0.01)
        finished.append(time.perf_counter())
    start = time.perf_counter()
    for s in range(senders):
        node.spawn(sender, s * (len(mine) // senders))
    while len(finished) < senders:
        await asyncio.sleep(0.002)
    print(json.dumps({"sent": senders * per_sender, "seconds": max(finished) - start}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # the end: the others may still send here


def node_main(spec: dict) -> int:
    from apps.chat import ChatConfig
    from apps.cluster import chat
    from apps.cluster.host import run_node
    from storage import Store

    names, directory = spec["names"], spec["directory"]
    name = names[spec["index"]]
    peers = {n: f"unix:{directory}/{n.partition('@')[0]}.sock" for n in names}
    stop = asyncio.Event()

    async def start(node: Node) -> None:
        store = Store(os.path.join(directory, name.partition("@")[0]), node, mode="process")
        config = ChatConfig(shards=spec["size"]["shards"], heartbeat_timeout=HOUR, nodes=tuple(names))
        await load(node, chat.serve(node, store, config), spec)
        stop.set()

    asyncio.run(run_node(name, secret=SECRET, start=start, listen=peers[name], peers=peers, stop=stop,
                         ready=lambda node, dist: None))
    return 0


def run(count: int, size: dict, directory: str) -> tuple[int, float]:
    """`count` node processes running the load: (acknowledged sends, span in seconds)."""
    names = [f"s{i}@bench" for i in range(count)]
    procs = []
    try:
        for index in range(count):
            spec = json.dumps({"names": names, "index": index, "directory": directory, "size": size})
            procs.append(subprocess.Popen([sys.executable, __file__, "--node", spec], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "a node did not start"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
        return sum(r["sent"] for r in results), max(r["seconds"] for r in results)
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


def measure(counts: list[int], size: dict, emit: Callable[[dict], None]) -> None:
    rates = {}
    for count in counts:
        busy, wall = cpu_busy(), time.monotonic()
        with tempfile.TemporaryDirectory(prefix="lic-scale-") as tmp:
            sent, seconds = run(count, size, tmp)
        elapsed = max(time.monotonic() - wall, 1e-9)
        others = sig(max(0.0, (cpu_busy() - busy) / elapsed - min(count, os.cpu_count() or 1)))
        rates[count] = sent / seconds
        emit({"system": f"letitcrash {count} node{'s' if count > 1 else ''}", "workload": "chat_sends_per_s",
              "value": sig(rates[count]), "unit": "msgs/s", "nodes": count, **size, "others_cpu": others})
    for count in counts:
        if count != 1 and 1 in rates:
            emit({"system": f"{count}/1 nodes", "workload": "scale", "metric": "chat_sends_per_s",
                  "value": sig(rates[count] / rates[1]), "unit": "x"})


def main(argv: list[str] | None = None) -> int:
    from dist import show

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--node", help=argparse.SUPPRESS)  # a child: one node, its spec in JSON
    ap.add_argument("--nodes", default="1,2", help="comma-separated node counts (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if args.node:
        return node_main(json.loads(args.node))
    counts = [int(n) for n in args.nodes.split(",")]
    if not all(1 <= n <= 16 for n in counts):
        ap.error(f"node counts are 1 to 16, not {args.nodes}")
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    emit = (lambda line: print(json.dumps({**line, "cores": os.cpu_count()}), flush=True)) if args.json else show
    measure(counts, size, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
