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

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from apps_common import Clocks, cli, workload  # noqa: E402 - bench/ is on the path (bench/apps.py, or run here)

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

            async def one(i: int, source: bytes) -> None:
                chunks = [source[j:j + CHUNK] for j in range(0, len(source), CHUNK)]
                await videos.start_upload(node, f"v{i}", "bench", f"video {i}", ["bench"], len(chunks))
                for n, data in enumerate(chunks):
                    await videos.upload_chunk(node, f"v{i}", n, data)
                while (await videos.status(node, f"v{i}"))["status"] not in ("ready", "failed"):
                    await asyncio.sleep(0.02)

            with Clocks() as clocks:
                await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)))
            states = await videos.videos(node)
            await node.stop()
            store.close()
    ready = sum(1 for s in states.values() if s == "ready")
    assert ready == size["jobs"], states
    return {"value": 60.0 * ready / clocks.wall, "unit": "jobs/min", "n": ready, "wall_s": round(clocks.wall, 3),
            **clocks.details(), "source_bytes": len(sources[0])}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "video_jobs_per_min": workload("video_jobs_per_min", _jobs, SIZES)}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
