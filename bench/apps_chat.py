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
  "writes_per_msg": values (events, snapshots) written to LMDB per message taken.
  The line also breaks the cost of a message down ("cost"), see below.
- chat_sessions: idle sessions one node holds: seconds to connect `idle` sessions (from
  outside the node, 2,000 at a time) and bytes per session (RSS growth of the process
  over the connected sessions; bench/apps.py runs each workload in a fresh process), so
  everything a session costs: its process, its supervisor entry, its link to its shard,
  its heartbeat-table entry, its ring entry.
  The heartbeat timeout is an hour here: a million sessions take longer than 30 s to
  connect, and a heartbeat changes no memory.

Garbage collection: sessions and the shards' state are long-lived objects, and every
full collection of CPython's cyclic collector traverses them all (at 100k sessions one
takes ~0.4 s; with the default thresholds, near 1M sessions one outlasts the 5 s call
timeout and connecting 1M does not finish). As servers holding many long-lived objects
do, the workloads run with rarer full collections (`apps_common.GC_THRESHOLDS`), and the
connect loop freezes what it connected out of the collector's sight every FREEZE_EVERY
sessions (`apps_common.freeze`). The lines say so ("gc_thresholds", "gc_freeze_every")
and give the collector's share of the measured span ("gc_s", wall seconds).

The cost breakdown of chat_msgs_per_s ("cost" in its line, printed as a table too):
- CPU µs per message taken: "cpu" (the process), "node_thread" (the thread running the
  node, asyncio and the benchmark's devices), "store_thread" (the rest: the store's
  writer thread committing to LMDB), "gc" (the cyclic collector's CPU, on the node thread),
  all measured on the run above, without any profiler.
- The node thread's µs outside the collector, by layer: a second pass of PROFILED
  messages runs under cProfile, whose own time per layer (files under actors/ = kernel,
  apps/chat = chat, storage/ and the codec = storage, supervision/, asyncio = loop,
  bench/ = the benchmark's devices and senders; a C function counts for the layer of its
  caller) gives each layer's share, applied to the unprofiled figure. cProfile's own cost
  per call inflates layers of many small calls a little: shares, not exact times.
- Counts per message taken: "turns" and "taken" (messages processes took from their
  mailboxes), from the node's own counters (`node.statistics()`) over the measured run;
  from the profiled pass: "deliveries" (messages put in a mailbox), "held" (outputs held until storage's commit,
  then released), "encodes" (msgpack packs by the codec), "writes" (values the store wrote).

`WORKLOADS` maps each name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`.
"""
from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import GC_THRESHOLDS, Clocks, cli, freeze, settle, workload  # noqa: E402
from profile_layers import cpu_by_layer, kernel_counts, layer_by  # noqa: E402

SIZES = {"full": {"sessions": 100_000, "senders": 2_000, "messages": 200_000, "idle": 1_000_000},
         "quick": {"sessions": 10_000, "senders": 500, "messages": 20_000, "idle": 50_000}}
GOALS = {"chat_msgs_per_s": (300_000.0, ">="), "chat_sessions": (2048.0, "<=")}
SHARDS = 64
HOUR = 3600.0
FREEZE_EVERY = 20_000  # connected sessions between gc.freeze() calls (see the docstring)
PROFILED = 0.25  # the profiled pass sends this share of the measured pass's messages
LAYERS = (("/actors/codec.py", "storage"), ("/actors/", "kernel"), ("/apps/chat/", "chat"),
          ("/storage/", "storage"), ("/supervision/", "supervision"), ("/asyncio/", "loop"),
          ("selectors.py", "loop"), ("/bench/", "bench"))
"""(part of a file's path, its layer), first match wins; else "other"."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def _service(node: Any, path: str, heartbeat_timeout: float = 30.0) -> Any:
    from apps.chat import ChatConfig, ChatService
    from storage import Store

    store = Store(path, node, mode="process")
    service = ChatService(node, store, ChatConfig(shards=SHARDS, heartbeat_timeout=heartbeat_timeout))
    service.start()
    return service, store


async def _connect_all(node: Any, service: Any, users: list[str], outlets: list, batch: int = 2_000) -> list:
    """Connect every user, `batch` at a time, freezing the connected ones out of the
    garbage collector every FREEZE_EVERY."""
    assert FREEZE_EVERY % batch == 0, (FREEZE_EVERY, batch)
    sessions = []
    for i in range(0, len(users), batch):
        futures = [service.connect(node, u, "phone", outlets[j % len(outlets)])
                   for j, u in enumerate(users[i:i + batch], i)]
        sessions += [await f for f in futures]
        if len(sessions) % FREEZE_EVERY == 0:
            freeze()
    await settle(node)
    freeze()
    return sessions


async def _messages(size: dict) -> dict:
    from actors import GenServer, Node

    class Device(GenServer):
        """Takes items in order and confirms them (one confirm per frame)."""

        def init(self, service: Any, taken: list) -> None:
            self.service, self.taken, self.session, self.last = service, taken, None, 0

        def handle_info(self, msg: tuple) -> None:
            if msg[0] != "items":
                return
            took = 0
            for item in msg[1]:
                if item[0] == self.last + 1:
                    self.last = item[0]
                    took += item[1] == "m"
            self.taken[0] += took
            self.service.confirm(self, self.session, self.last)  # a cast: nothing to wait for

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

            async def send_all(per_sender: int, first_cid: int) -> int:
                """Every sender sends `per_sender` messages; the messages taken meanwhile."""
                done, finished, before = asyncio.Event(), [0], taken[0]

                async def sender(proc: Any, me: int, seed: int) -> None:
                    rng = random.Random(seed)
                    for k in range(first_cid, first_cid + per_sender):
                        await service.send(proc, sessions[me], users[rng.randrange(n)], k, b"x" * 64, "hi")
                    finished[0] += 1
                    if finished[0] == senders:
                        done.set()

                started = time.perf_counter()
                for s in range(senders):
                    node.spawn(sender, s * (n // senders), s + first_cid)
                await asyncio.wait_for(done.wait(), 600)
                while taken[0] - before < per_sender * senders and time.perf_counter() - started < 600:
                    await asyncio.sleep(0.005)
                return taken[0] - before

            per_sender = total // senders
            writes, commits, thread0 = store.writes, store.commits, time.thread_time()
            counted = node.statistics()
            with Clocks() as clocks:
                got = await send_all(per_sender, 0)
            node_thread = time.thread_time() - thread0
            counted = {key: node.statistics()[key] - counted[key] for key in ("turns", "messages")}
            writes, commits = store.writes - writes, store.commits - commits
            profiled_writes = store.writes
            profile = cProfile.Profile()
            profile.enable()
            profiled = await send_all(max(1, int(per_sender * PROFILED)), per_sender)
            profile.disable()
            profiled_writes = store.writes - profiled_writes
            await node.stop()
            store.close()
    cost = breakdown(clocks, node_thread, got, counted, pstats.Stats(profile).stats, profiled, profiled_writes)
    print_cost(cost)
    return {"value": got / clocks.wall, "unit": "msgs/s", "n": got, "sessions": n,
            "senders": senders, "shards": SHARDS, "commits": commits,
            "writes_per_msg": round(writes / max(got, 1), 2), **clocks.details(),
            "gc_freeze_every": FREEZE_EVERY, "cost": cost}


layer_of = layer_by(LAYERS)


def breakdown(clocks: Clocks, node_thread: float, taken: int, counted: dict[str, int], stats: dict,
              profiled: int, profiled_writes: int) -> dict[str, Any]:
    """The cost of a message (see the module docstring): µs measured, split by the shares
    of the profile `stats` (pstats' table) of a pass that took `profiled` messages;
    `counted`: the node's turns and messages taken over the measured run."""
    own = cpu_by_layer(stats, layer_of)
    counts = kernel_counts(stats)
    per = 1e6 / max(taken, 1)
    gc_us = clocks.gc_cpu * per
    rest = max(node_thread * per - gc_us, 0.0)
    total = sum(own.values()) or 1.0
    per_profiled = 1 / max(profiled, 1)
    return {"cpu": round(clocks.cpu * per, 1), "node_thread": round(node_thread * per, 1),
            "store_thread": round(max(clocks.cpu - node_thread, 0.0) * per, 1), "gc": round(gc_us, 1),
            "layers_us": {k: round(rest * v / total, 1) for k, v in sorted(own.items(), key=lambda kv: -kv[1])},
            "turns": round(counted["turns"] / max(taken, 1), 2), "taken": round(counted["messages"] / max(taken, 1), 2),
            "deliveries": round(counts["deliveries"] * per_profiled, 2),
            "held": round(counts["held"] * per_profiled, 2), "encodes": round(counts["encodes"] * per_profiled, 2),
            "writes": round(profiled_writes * per_profiled, 2), "profiled_msgs": profiled}


def print_cost(cost: dict[str, Any]) -> None:
    """The breakdown as a few lines on stderr (the JSON line has it as "cost")."""
    out = sys.stderr
    print(f"chat message cost, CPU µs per message taken: {cost['cpu']} in all = node thread "
          f"{cost['node_thread']} (of which gc {cost['gc']}) + store thread {cost['store_thread']}", file=out)
    print("  node thread outside gc, by layer (µs): " + ", ".join(f"{k} {v}" for k, v in cost["layers_us"].items()),
          file=out)
    print(f"  per message: {cost['turns']} turns taking {cost['taken']} messages, {cost['deliveries']} "
          f"deliveries ({cost['held']} held until "
          f"a commit), {cost['encodes']} msgpack encodes, {cost['writes']} store writes", file=out, flush=True)


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
            with Clocks() as clocks:
                sessions = await _connect_all(node, service, users, [sink])
            gc.collect()
            per_session = (_rss_bytes() - before) / n
            live = sum(1 for s in sessions if node.is_alive(s))
            await node.stop(timeout=60.0)
            store.close()
    return {"value": per_session, "unit": "B/session", "connect_s": round(clocks.wall, 2),
            "connects_per_s": round(n / clocks.wall), "n": live, "shards": SHARDS, **clocks.details(),
            "gc_freeze_every": FREEZE_EVERY}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "chat_msgs_per_s": workload("chat_msgs_per_s", _messages, SIZES, GOALS["chat_msgs_per_s"], GC_THRESHOLDS),
    "chat_sessions": workload("chat_sessions", _idle_sessions, SIZES, GOALS["chat_sessions"], GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
