#!/usr/bin/env python
"""Photo pipeline benchmark on the real-time driver (`async with Node()`), public API only.

    python bench/apps_photos.py            # full size
    python bench/apps_photos.py --quick    # < 1 min
    python bench/apps_photos.py --json     # one JSON object per line

One node, the store in a temporary directory in mode "process" (LMDB without fsync).

- photos_per_s: photos per wall second end to end: `photos` uploads of real-size photos
  (1080 x 1350 RGB, Instagram's portrait size: 4.4 MB each, `uploaders` at once), each
  stored and queued, then its three thumbnails (150, 640 and 1080 pixels wide) made on
  `Resizer` thread workers (two photos at a time, three threads each: numpy releases the
  GIL, so `cpu_s / wall_s` above 1 shows more than one core busy), stored, and the photo
  posted to its owner's followers' feeds; until every photo is `ready`.

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
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import Clocks, cli, workload  # noqa: E402

SIZES = {"full": {"photos": 48, "uploaders": 8, "width": 1080, "height": 1350},
         "quick": {"photos": 12, "uploaders": 4, "width": 1080, "height": 1350}}


async def _photos(size: dict) -> dict:
    from actors import Node
    from apps.photos import PhotoService, synthetic_photo
    from storage import Store

    sources = [synthetic_photo(seed, size["width"], size["height"]) for seed in range(size["photos"])]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, node, mode="process")
            photos = PhotoService(node, store)
            photos.start()
            for follower in range(1, 11):
                await photos.follow(node, follower, 0)

            async def uploader(k: int) -> None:
                for i in range(k, len(sources), size["uploaders"]):
                    await photos.upload(node, 0, f"p{i}", sources[i])

            async def ready(i: int) -> str:
                while (status := await photos.status(node, 0, f"p{i}"))["status"] == "processing":
                    await asyncio.sleep(0.01)
                return status["status"]

            with Clocks() as clocks:
                await asyncio.gather(*(uploader(k) for k in range(size["uploaders"])))
                states = await asyncio.gather(*(ready(i) for i in range(len(sources))))
            await photos.stop()
            store.close()
    assert states == ["ready"] * len(sources), states
    megabytes = sum(map(len, sources)) / 1e6
    return {"value": len(sources) / clocks.wall, "unit": "photos/s", "photos": len(sources),
            "photo_mb": round(megabytes / len(sources), 2), "mb_per_s": round(megabytes / clocks.wall, 1),
            "wall_s": round(clocks.wall, 3), **clocks.details()}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "photos_per_s": workload("photos_per_s", _photos, SIZES)}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
