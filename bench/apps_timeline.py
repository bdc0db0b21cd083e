#!/usr/bin/env python
"""Timeline benchmarks on the real-time driver (`async with Node()`), public API only.

    python bench/apps_timeline.py            # full sizes
    python bench/apps_timeline.py --quick    # smaller, < 1 min
    python bench/apps_timeline.py --json     # one JSON object per line

One node, the store in a temporary directory in mode "process" (LMDB without fsync). The
follow graph: each user's follower count drawn from a power law (Pareto, alpha 1.2,
numpy's seeded generator), capped at the user count; the followers picked at random;
the fan-out threshold is a tenth of the users, so the head of the law is celebrities
(fan-out on read) and the tail fans out on write. Every follow goes through the API;
the graph, once built, is frozen out of the garbage collector's sight, and full
collections are rarer (`apps_common.freeze`, `GC_THRESHOLDS`; why: bench/apps_chat.py);
"gc_s" gives the collector's share.

- timeline_posts_per_s: posts per wall second, from the first post until every fan-out
  job is done (each follower's timeline has stored the id), `posters` processes posting
  in a closed loop, authors drawn uniformly; `inserts_per_s` counts the timeline inserts.
- timeline_read_p99: µs per 50-id page (`read_page` from a process on the node, timed
  around the call), p99 over `reads` reads of random pages of random users who follow
  at least one celebrity, so every page merges pulled tweets; p50 and max alongside.

`WORKLOADS` maps each name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import GC_THRESHOLDS, Clocks, cli, freeze, settle, workload  # noqa: E402

# posts: a wide graph, one post per user on average; reads: a narrower one with many
# posts per user, so that timelines run to several full pages.
SIZES = {"posts": {"full": {"users": 20_000, "mean": 15, "posts": 20_000, "posters": 200},
                   "quick": {"users": 2_000, "mean": 10, "posts": 2_000, "posters": 100}},
         "reads": {"full": {"users": 5_000, "mean": 15, "posts": 100_000, "reads": 20_000},
                   "quick": {"users": 500, "mean": 10, "posts": 10_000, "reads": 3_000}}}


def _graph(users: int, mean: float, seed: int) -> list[tuple[int, int]]:
    """(follower, author) edges: follower counts from a power law scaled to `mean`."""
    gen = np.random.default_rng(seed)
    raw = gen.pareto(1.2, users) + 1.0
    counts = np.minimum(users - 1, np.floor(raw * mean / raw.mean())).astype(int)
    edges = []
    for author, count in enumerate(counts.tolist()):
        others = gen.choice(users - 1, size=count, replace=False)
        edges += [(int(f) + int(f >= author), author) for f in others.tolist()]
    gen.shuffle(edges)
    return edges


async def _world(node: Any, path: str, size: dict) -> tuple[Any, Any, list[tuple[int, int]], int]:
    from apps.timeline import TimelineConfig, TimelineService
    from storage import Store

    users = size["users"]
    threshold = max(10, users // 10)
    store = Store(path, node, mode="process")
    service = TimelineService(node, store, TimelineConfig(threshold=threshold, idle_timeout=600.0,
                                                          max_active=4 * users))
    service.start()
    edges = _graph(users, size["mean"], 7)
    for i in range(0, len(edges), 5_000):
        for f in [service.follow(node, u, a) for u, a in edges[i:i + 5_000]]:
            await f
    await settle(node)
    freeze()  # the follow graph is long-lived: out of the collector's sight, as in bench/apps_chat.py
    return service, store, edges, threshold


def _jobs_left(node: Any) -> int:
    from apps.timeline.context import FANOUT
    return len(node.get_process(node.whereis(FANOUT)).state["jobs"])


async def _posts(size: dict) -> dict:
    from actors import Node

    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            service, store, edges, threshold = await _world(node, tmp, size)
            followers = np.bincount([a for _, a in edges], minlength=size["users"])
            n, posters = size["posts"], size["posters"]
            rng = random.Random(3)
            authors = [rng.randrange(size["users"]) for _ in range(n)]
            inserts = int(sum(followers[a] for a in authors if followers[a] <= threshold))
            done = asyncio.Event()
            left = [posters]

            async def poster(proc: Any, mine: list[int]) -> None:
                for k, author in enumerate(mine):
                    await service.post(proc, author, f"tweet {k} of {author}")
                left[0] -= 1
                if not left[0]:
                    done.set()

            with Clocks() as clocks:
                for p in range(posters):
                    node.spawn(poster, authors[p::posters])
                await asyncio.wait_for(done.wait(), 900)
                while _jobs_left(node) and clocks.elapsed() < 900:
                    await asyncio.sleep(0.005)
            await node.stop()
            store.close()
    return {"value": n / clocks.wall, "unit": "posts/s", "n": n, "inserts_per_s": round(inserts / clocks.wall),
            "users": size["users"], "follows": len(edges), "threshold": threshold,
            "celebrities": int((followers > threshold).sum()), "max_followers": int(followers.max()),
            **clocks.details()}


async def _reads(size: dict) -> dict:
    from actors import Node

    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            service, store, edges, threshold = await _world(node, tmp, size)
            followers = np.bincount([a for _, a in edges], minlength=size["users"])
            celebrities = set(np.flatnonzero(followers > threshold).tolist())  # membership only
            readers = sorted({u for u, a in edges if a in celebrities})
            rng = random.Random(4)
            for i in range(0, size["posts"], 1_000):  # the timelines fill up
                for f in [service.post(node, rng.randrange(size["users"]), f"tweet {k}")
                          for k in range(i, min(size["posts"], i + 1_000))]:
                    await f
            while _jobs_left(node):
                await asyncio.sleep(0.005)
            samples: list[float] = []
            pages = [0]
            finished = asyncio.Event()

            async def reader(proc: Any) -> None:
                for _ in range(size["reads"]):
                    user = readers[rng.randrange(len(readers))]
                    cursor, depth = None, rng.randrange(4)  # page 1..4 of the timeline
                    for _ in range(depth + 1):
                        t0 = time.perf_counter()
                        page = await service.read_page(proc, user, cursor)
                        samples.append(time.perf_counter() - t0)
                        pages[0] += len(page.ids) == 50
                        if page.cursor is None:
                            break
                        cursor = page.cursor
                finished.set()

            node.spawn(reader)
            await asyncio.wait_for(finished.wait(), 900)
            await node.stop()
            store.close()
    us = np.asarray(samples) * 1e6
    p50, p99 = np.percentile(us, [50, 99])
    return {"value": float(p99), "unit": "us", "p50_us": round(float(p50), 1), "max_us": round(float(us.max()), 1),
            "n": len(samples), "full_pages": pages[0], "readers": len(readers),
            "celebrities": len(celebrities), "threshold": threshold}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "timeline_posts_per_s": workload("timeline_posts_per_s", _posts, SIZES["posts"], None, GC_THRESHOLDS),
    "timeline_read_p99": workload("timeline_read_p99", _reads, SIZES["reads"], (500.0, "<="), GC_THRESHOLDS),
}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
