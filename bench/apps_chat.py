#!/usr/bin/env python
"""Chat benchmarks on the real-time driver (`async with Node()`), public API only.

    python bench/apps_chat.py            # full sizes
    python bench/apps_chat.py --quick    # smaller, < 1 min
    python bench/apps_chat.py --json     # one JSON object per line

The store is a temporary directory in mode "process" (LMDB without fsync: the figures are
the actors and the store's group commit, not the disk's flush latency).

- chat_msgs_per_s: messages taken by their recipients' devices per wall second, with
  `sessions` connected devices (one session and one device process each) on one node.
  `senders` device processes send in a closed loop, each to random recipients, one
  message at a time (send answers once stored); every device confirms what it takes and
  so produces delivered receipts, which the senders' devices take and confirm too. The
  devices send no heartbeats (the timeout is an hour here), so only messages are measured.
- chat_sessions: idle sessions one node holds: seconds to connect `idle` sessions (from
  outside the node, 2,000 at a time) and bytes per session (RSS growth of the process
  over the connected sessions; bench/apps.py runs each workload in a fresh process, so everything a session costs: its process, its
  supervisor entry, its link to its shard, its heartbeat-table entry, its ring entry).
  The heartbeat timeout is an hour here: a million sessions take longer than 30 s to
  connect, and a heartbeat changes no memory.

`WORKLOADS` maps each name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

SIZES = {"full": {"sessions": 100_000, "senders": 2_000, "messages": 200_000, "idle": 1_000_000},
         "quick": {"sessions": 10_000, "senders": 500, "messages": 20_000, "idle": 50_000}}
GOALS = {"chat_msgs_per_s": (300_000.0, ">="), "chat_sessions": (2048.0, "<=")}
SHARDS = 64
HOUR = 3600.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def _settle(node: Any) -> None:
    while node.runnable():
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    while node.runnable():
        await asyncio.sleep(0)


async def _service(node: Any, path: str, heartbeat_timeout: float = 30.0) -> Any:
    from apps.chat import ChatConfig, ChatService
    from storage import Store

    store = Store(path, node, mode="process")
    service = ChatService(node, store, ChatConfig(shards=SHARDS, heartbeat_timeout=heartbeat_timeout))
    service.start()
    return service, store


async def _connect_all(node: Any, service: Any, users: list[str], outlets: list, batch: int = 2_000) -> list:
    sessions = []
    for i in range(0, len(users), batch):
        futures = [service.connect(node, u, "phone", outlets[j % len(outlets)])
                   for j, u in enumerate(users[i:i + batch], i)]
        sessions += [await f for f in futures]
    await _settle(node)
    return sessions


async def _messages(size: dict) -> dict:
    from actors import GenServer, Node

    class Device(GenServer):
        """Takes items in order and confirms them (one confirm per frame)."""

        def init(self, service: Any, taken: list) -> None:
            self.service, self.taken, self.session, self.last = service, taken, None, 0

        async def handle_info(self, msg: tuple) -> None:
            if msg[0] != "items":
                return
            took = 0
            for item in msg[1]:
                if item[0] == self.last + 1:
                    self.last = item[0]
                    took += item[1] == "m"
            self.taken[0] += took
            await self.service.confirm(self, self.session, self.last)

    n, senders, total = size["sessions"], size["senders"], size["messages"]
    users = [f"user{i}" for i in range(n)]
    taken = [0]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            service, store = await _service(node, tmp, HOUR)  # the devices do not heartbeat
            devices = [node.spawn(Device, service, taken) for _ in range(n)]
            sessions = await _connect_all(node, service, users, devices)
            for pid, session in zip(devices, sessions):
                node.get_process(pid).session = session
            per_sender = total // senders
            done = asyncio.Event()
            finished = [0]

            async def sender(proc: Any, me: int, seed: int) -> None:
                rng = random.Random(seed)
                for k in range(per_sender):
                    await service.send(proc, sessions[me], users[rng.randrange(n)], k, b"x" * 64, "hi")
                finished[0] += 1
                if finished[0] == senders:
                    done.set()

            wall, cpu = time.perf_counter(), time.process_time()
            for s in range(senders):
                node.spawn(sender, s * (n // senders), s)
            await asyncio.wait_for(done.wait(), 600)
            while taken[0] < per_sender * senders and time.perf_counter() - wall < 600:
                await asyncio.sleep(0.005)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            await node.stop()
            store.close()
    return {"value": taken[0] / wall, "unit": "msgs/s", "n": taken[0], "sessions": n,
            "senders": senders, "shards": SHARDS, "commits": store.commits, "cpu_s": round(cpu, 3)}


async def _idle_sessions(size: dict) -> dict:
    from actors import GenServer, Node

    class Sink(GenServer):
        def handle_info(self, msg: Any) -> None:
            pass

    n = size["idle"]
    users = [f"user{i}" for i in range(n)]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            service, store = await _service(node, tmp, HOUR)  # held, not heartbeating
            sink = node.spawn(Sink)
            gc.collect()
            before = _rss_bytes()
            wall = time.perf_counter()
            sessions = await _connect_all(node, service, users, [sink])
            wall = time.perf_counter() - wall
            gc.collect()
            per_session = (_rss_bytes() - before) / n
            live = sum(1 for s in sessions if node.is_alive(s))
            await node.stop(timeout=60.0)
            store.close()
    return {"value": per_session, "unit": "B/session", "connect_s": round(wall, 2),
            "connects_per_s": round(n / wall), "n": live, "shards": SHARDS}


def _run(name: str, body: Callable[[dict], Any]) -> Callable[[bool], list[dict]]:
    def workload(quick: bool) -> list[dict]:
        for logger in ("actors", "supervision", "storage", "apps.chat"):
            logging.getLogger(logger).setLevel(logging.CRITICAL)
        out = asyncio.run(body(SIZES["quick" if quick else "full"]))
        value = out.pop("value")
        goal, sense = GOALS[name]
        met = value >= goal if sense == ">=" else value <= goal
        return [{"system": "letitcrash", "workload": name, "value": round(value, 1), "unit": out.pop("unit"),
                 "goal": f"{sense} {goal:g}", "met": met, **out}]
    return workload


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "chat_msgs_per_s": _run("chat_msgs_per_s", _messages),
    "chat_sessions": _run("chat_sessions", _idle_sessions),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=sorted(WORKLOADS))
    args = parser.parse_args(argv)
    for name, workload in WORKLOADS.items():
        if args.only is None or name == args.only:
            for line in workload(args.quick):
                print(json.dumps(line) if args.json else line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
