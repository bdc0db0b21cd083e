#!/usr/bin/env python
"""Video pipeline benchmark on the real-time driver (`async with Node()`), public API only.

    python bench/apps_video.py            # full size
    python bench/apps_video.py --quick    # < 1 min
    python bench/apps_video.py --json     # one JSON object per line

Workload video_jobs_per_min: small synthetic 1080p uploads (4 s at 10 fps, frames at
`scale` of their size, in 64 KiB chunks) end to end: upload, hash, 6 renditions and the
thumbnails on `Transcoder` thread workers (2 per job, several jobs at once, so both
cores work: numpy, zlib and crc32 release the GIL), segments stored, until every job is
`ready`. The store (mode "process": no fsync) is in a temporary directory. `cpu_s / wall_s`
above 1 shows more than one core busy.

`WORKLOADS` maps the name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`
(bench/apps.py runs it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

SIZES = {"full": {"jobs": 24, "scale": 0.15}, "quick": {"jobs": 8, "scale": 0.15}}
CHUNK = 64 << 10


async def _jobs(size: dict) -> dict:
    from actors import Node
    from apps.video import VideoConfig, VideoService
    from apps.video.transcode import synthetic_source
    from storage import Store

    sources = [synthetic_source(seed, 1920, 1080, 4.0, size["scale"]) for seed in range(size["jobs"])]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, node, mode="process")
            videos = VideoService(node, store, VideoConfig(scale=size["scale"], segment_seconds=1.0))
            videos.start()
            wall, cpu = time.perf_counter(), time.process_time()

            async def one(i: int, source: bytes) -> None:
                chunks = [source[j:j + CHUNK] for j in range(0, len(source), CHUNK)]
                await videos.start_upload(node, f"v{i}", "bench", f"video {i}", ["bench"], len(chunks))
                for n, data in enumerate(chunks):
                    await videos.upload_chunk(node, f"v{i}", n, data)
                while (await videos.status(node, f"v{i}"))["status"] not in ("ready", "failed"):
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            states = await videos.videos(node)
            await node.stop()
            store.close()
    ready = sum(1 for s in states.values() if s == "ready")
    assert ready == size["jobs"], states
    return {"value": 60.0 * ready / wall, "n": ready, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "source_bytes": len(sources[0])}


def video_jobs_per_min(quick: bool) -> list[dict]:
    logging.getLogger("actors").setLevel(logging.CRITICAL)
    logging.getLogger("supervision").setLevel(logging.CRITICAL)
    out = asyncio.run(_jobs(SIZES["quick" if quick else "full"]))
    return [{"system": "letitcrash", "workload": "video_jobs_per_min", "unit": "jobs/min", **out,
             "value": round(out["value"], 1)}]


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {"video_jobs_per_min": video_jobs_per_min}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name, workload in WORKLOADS.items():
        for line in workload(args.quick):
            print(json.dumps(line) if args.json else
                  f"{name:24} {line['value']:>10,.1f} {line['unit']}  (n={line['n']}, wall {line['wall_s']} s, "
                  f"cpu {line['cpu_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
