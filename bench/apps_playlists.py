#!/usr/bin/env python
"""Playlist benchmark on the real-time driver (`async with Node()`), public API only.

    python bench/apps_playlists.py            # full size
    python bench/apps_playlists.py --quick    # < 1 min
    python bench/apps_playlists.py --json     # one JSON object per line

One node, the store in a temporary directory in mode "process" (LMDB without fsync).

- playlist_edits_per_s: acknowledged edits per wall second. `devices` devices
  (`PlaylistDevice` processes, each its own CRDT replica) share `playlists` collaborative
  playlists that start with `start` tracks each; every device, in a closed loop, makes an
  edit on its own replica (an add in two of three, else a move or a remove) and syncs it:
  the update goes to the node's replica, is merged and stored, and the answer (what the
  device lacks) is merged back. An edit counts once the sync that carried it answered.
  `epochs` counts the compactions the edits caused (history past `compact_bytes`).

`WORKLOADS` maps the name to `(quick) -> [{"system", "workload", "value", "unit", ...}]`
(bench/apps.py runs it).
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # apps_common, after the apps package

from apps_common import Clocks, cli, workload  # noqa: E402

SIZES = {"full": {"devices": 64, "playlists": 8, "start": 500, "edits": 100},
         "quick": {"devices": 16, "playlists": 4, "start": 200, "edits": 50}}


async def _edits(size: dict) -> dict:
    from actors import Node
    from apps.playlists import Device, PlaylistConfig, PlaylistService
    from storage import Store

    names = [f"p{i}" for i in range(size["playlists"])]
    async with Node() as node:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp, node, mode="process")
            service = PlaylistService(node, store, PlaylistConfig(compact_bytes=64 << 10))
            service.start()
            for name in names:
                await service.create(node, name, f"Playlist {name}")
                for k in range(size["start"]):
                    await service.add(node, name, f"spotify:track:{k:022d}", "seed")
            devices = [Device.spawn(node, service, 1000 + i) for i in range(size["devices"])]

            async def one(i: int, device: Device) -> None:
                rng = random.Random(i)
                name = names[i % len(names)]
                await device.open(node, name)
                for _ in range(size["edits"]):
                    entries = (await device.view(node, name))["entries"]
                    draw = rng.random()
                    if draw < 0.67 or len(entries) < 2:
                        await device.add(node, name, f"spotify:track:{rng.randrange(10**9):022d}", f"d{i}",
                                         rng.randrange(len(entries) + 1))
                    elif draw < 0.84:
                        await device.move(node, name, entries[rng.randrange(len(entries))][0],
                                          rng.randrange(len(entries)))
                    else:
                        await device.remove(node, name, entries[rng.randrange(len(entries))][0])
                    await device.sync(node, name)

            with Clocks() as clocks:
                await asyncio.gather(*(one(i, d) for i, d in enumerate(devices)))
            views = [await service.view(node, name) for name in names]
            await service.stop()
            store.close()
    edits = size["devices"] * size["edits"]
    return {"value": edits / clocks.wall, "unit": "edits/s", "edits": edits, "devices": size["devices"],
            "playlists": size["playlists"], "tracks_at_end": sum(len(v["entries"]) for v in views),
            "epochs": sum(v["epoch"] for v in views), "wall_s": round(clocks.wall, 3), **clocks.details()}


WORKLOADS: dict[str, Callable[[bool], list[dict]]] = {
    "playlist_edits_per_s": workload("playlist_edits_per_s", _edits, SIZES)}


if __name__ == "__main__":
    sys.exit(cli(__doc__, WORKLOADS))
