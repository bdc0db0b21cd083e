"""The video service as a simulated system (scenarios name it `video`, or `"apps.video.sim:VideoSystem"`).

Node "media" runs the video service on a real LMDB store (with `servers` > 1, nodes
"media1".. each run it on its own store, and each video lives on one of them: see
`apps.video.service`); node "clients" (spared by random faults) runs uploaders and
viewers, whose calls enter through any media node that is up. An uploader makes
synthetic sources (seeded sizes and lengths; some repeat an earlier upload's content),
opens an upload, sends every chunk until it is acknowledged, then waits for the job to
end. A viewer plays ready videos from a region with a device and a bandwidth trace, and
asks for recommendations. Buggify points make transcoder workers fail (retried; a task
failing `max_attempts` times fails its job with the reason).

Checks:
- always: no acknowledged chunk is lost (the job's stored state and the chunk's blob, on
  the video's node, hold it); a finished rendition is never redone (its stored
  checkpoint never changes); at most one live upload job per video in the whole
  cluster, checked as each starts (`sim.systems.entities.Ledger`);
- eventually: every upload whose chunks were all acknowledged ended `ready` with exactly
  its ladder and 5 thumbnails, or `failed` with a reason (a duplicate, or a rendition that
  kept failing); content uploaded as several videos is ready as one at most, the others
  failed as its duplicates (their content hash is claimed on the hash's node).
Cache hit ratios and the bitrates chosen are reported in the stats.
"""
from __future__ import annotations

import zlib
from typing import Any

from actors import Node, NoProc
from apps.common import RETRYABLE, ServerNodes, ServerSystem, top_restarts
from sim.schema import Field
from sim.system import System, check
from sim.systems.entities import Ledger
from storage.cluster import check_nodes, node_of

from .abr import DEVICE_MAX_HEIGHT
from .ladder import LADDER, ladder_for
from .service import VideoContext, VideoService
from .transcode import synthetic_source
from .upload import UploadError, VideoConfig

HEIGHTS = (360, 480, 720, 1080)
DEVICES = tuple(DEVICE_MAX_HEIGHT)
REGIONS = ("eu", "us", "asia")


class VideoSystem(ServerSystem, System):
    """See the module docstring."""

    name = "video"
    options = {
        "servers": Field.int(1, 1, 64, "media nodes: 'media' alone, or media1.. over which videos are placed"),
        "scale": Field.float(0.02, 0.001, 1.0, "rendition size knob (see apps/video/transcode.py)"),
        "segment_seconds": Field.seconds(1.0, 0.1, 60.0, "segment length"),
        "cache_kb": Field.int(256, 1, 1_000_000, "edge cache capacity per region, KiB"),
        "top_restarts": top_restarts(50),
    }
    workload_options = {
        "uploaders": Field.int(3, 1, 1000, "uploader processes"),
        "viewers": Field.int(6, 1, 10_000, "viewer processes"),
        "uploads": Field.int(3, 1, 1000, "videos per uploader"),
        "duplicates": Field.float(0.2, 0.0, 1.0, "probability an upload repeats earlier content"),
        "chunk_kb": Field.int(8, 1, 1024, "chunk size, KiB"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a client's call timeout"),
    }

    def setup(self) -> None:
        cfg = self.config
        self.video_config = VideoConfig(scale=cfg["scale"], segment_seconds=cfg["segment_seconds"])
        self.acked: dict[tuple, int] = {}  # (video, n) -> crc
        self.uploads: dict[str, dict] = {}  # video -> {"height", "complete", "seed"}
        self.ready: list[str] = []
        self.checkpoints: dict[tuple, Any] = {}  # (video, rendition) -> first stored checkpoint
        self.bitrates: dict[str, int] = {r.name: 0 for r in LADDER}
        self.counts = dict.fromkeys(("uploads", "chunks_acked", "ready", "failed", "duplicates", "plays",
                                     "rebuffers", "recommendations", "retries"), 0)
        self.cache_seen: dict[tuple, tuple[int, int]] = {}  # (region, edge pid) -> (hits, misses)
        servers = cfg["servers"]
        self.media = check_nodes(["media"] if servers == 1 else [f"media{i + 1}" for i in range(servers)])
        self.ledger = Ledger(self.sim)
        self.nodes = ServerNodes(self, list(self.media), lambda node, store, resolve: VideoService(
            node, store, self.video_config, regions=REGIONS, seed=self.sim.seed,
            cache_bytes=self.config["cache_kb"] << 10, prefetch_every=5.0, max_restarts=self.config["top_restarts"],
            nodes=self.media, activated=self.ledger.activated))
        self.nodes.add()
        self.sim.add_node("clients", self._start_clients, targets=False)
        self.sim.call_after(1.0, self._sample_caches)

    def _svc(self) -> VideoService:
        """The service of a media node that is up (calls go on from there to a video's
        node); NoProc while none is."""
        for name in self.media:
            service = self.nodes.up(name)
            if service is not None:
                return service  # type: ignore[return-value]
        raise NoProc("media")

    def _store(self, video: str) -> Any:
        """The store of `video`'s node, or None while it is down or closed."""
        store = self.nodes.store(node_of(video, self.media))
        return None if store is None or store.closed else store

    # -- clients ------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        for i in range(self.load["uploaders"]):
            node.spawn(self._uploader, i)
        for i in range(self.load["viewers"]):
            node.spawn(self._viewer, i)

    async def _retry(self, proc: Any, rng: Any, call: Any, *args: Any) -> Any:
        """Call until answered (timeouts, crashes and a down node are retried)."""
        while True:
            try:
                return await call(proc, *args)
            except RETRYABLE:
                self.counts["retries"] += 1
                await proc.sleep(rng.uniform(0.1, 0.6))

    async def _uploader(self, proc: Any, i: int) -> None:
        rng = self.sim.stream(f"workload/uploader-{i}")
        for k in range(self.load["uploads"]):
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0))
            video = f"v{i}-{k}"
            earlier = [v for v in self.uploads if v.startswith(f"v{i}-")]
            if earlier and rng.random() < self.load["duplicates"]:
                seed, height, seconds = self.uploads[earlier[0]]["content"]  # the same bytes
                self.counts["duplicates"] += 1
            else:
                seed, height = self.sim.seed * 1000 + i * 100 + k, HEIGHTS[rng.below(len(HEIGHTS))]
                seconds = rng.uniform(2.0, 4.0)
            source = synthetic_source(seed, height * 16 // 9, height, seconds, self.config["scale"])
            size = self.load["chunk_kb"] << 10
            chunks = [source[j:j + size] for j in range(0, len(source), size)]
            self.uploads[video] = {"content": (seed, height, seconds), "height": height, "complete": False,
                                   "chunks": len(chunks)}
            self.counts["uploads"] += 1
            await self._retry(proc, rng, self._svc_call("start_upload"), video, f"user{i}", f"title {video}",
                              ["g%d" % (seed % 3), "g%d" % (seed % 5 + 3)], len(chunks))
            for n, data in enumerate(chunks):
                try:
                    await self._retry(proc, rng, self._svc_call("upload_chunk"), video, n, data)
                except UploadError:
                    break  # the video ended (e.g. its job failed); nothing more to send
                self.acked[(video, n)] = zlib.crc32(data)
                self.counts["chunks_acked"] += 1
            else:
                self.uploads[video]["complete"] = True
            while True:
                await proc.sleep(1.0)
                try:
                    st = await self._svc().status(proc, video)
                except (UploadError, *RETRYABLE):
                    continue
                if st["status"] in ("ready", "failed"):
                    self.counts[st["status"]] += 1
                    if st["status"] == "ready":
                        self.ready.append(video)
                    break

    def _svc_call(self, method: str) -> Any:
        return lambda proc, *args: getattr(self._svc(), method)(proc, *args)

    async def _viewer(self, proc: Any, i: int) -> None:
        rng = self.sim.stream(f"workload/viewer-{i}")
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.5, 3.0))
            if not self.ready or not self.workload_on:
                continue
            video = self.ready[rng.below(len(self.ready))]
            trace = [rng.uniform(200.0, 12000.0) for _ in range(4)]
            try:
                report = await self._svc().play(proc, f"viewer{i}", video, DEVICES[rng.below(len(DEVICES))],
                                                REGIONS[rng.below(len(REGIONS))], trace)
                self.counts["plays"] += 1
                self.counts["rebuffers"] += report["rebuffers"]
                for name in report["renditions"]:
                    self.bitrates[name] += 1
                if rng.random() < 0.3:
                    await self._svc().recommend(proc, f"viewer{i}", 5)
                    self.counts["recommendations"] += 1
            except Exception:  # noqa: BLE001 - a failed playback is retried by the next one
                self.counts["retries"] += 1

    # -- checks ---------------------------------------------------------------------------------

    def _job(self, video: str, store: Any) -> dict | None:
        """`video`'s stored job state in `store` (None: not stored, or no store)."""
        found = store.read(("video", video)) if store is not None else None
        return None if found is None else found[1]

    @check("always")
    def no_acked_chunk_lost(self) -> str | None:
        """Every acknowledged chunk is in its job's stored state and in its blob."""
        jobs: dict[str, dict | None] = {}
        for (video, n), crc in self.acked.items():
            store = self._store(video)
            if store is None:
                continue  # its node is down: looked at again once it is back
            job = jobs[video] if video in jobs else jobs.setdefault(video, self._job(video, store))
            blob = store.read(("chunk", video, n))
            if job is None or job["chunks"].get(str(n)) != crc or blob is None or blob[1]["crc"] != crc:
                return f"video {video}: chunk {n} (crc {crc}) was acknowledged but is not stored"
        return None

    @check("always")
    def renditions_never_redone(self) -> str | None:
        """A rendition's stored checkpoint, once there, never changes."""
        for video in self.uploads:
            job = self._job(video, self._store(video))
            for name, done in (job or {}).get("done", {}).items():
                first = self.checkpoints.setdefault((video, name), done)
                if first != done:
                    return f"video {video}: rendition {name} was redone (checkpoint at {first['at']}, then {done['at']})"
        return None

    @check("always")
    def single_activation(self) -> str | None:
        """No upload job is live on two nodes (or twice on one) at any instant."""
        return self.ledger.violation()

    @check("eventually")
    def uploads_end_ready_or_failed(self) -> str | None:
        """A fully acknowledged upload is ready with exactly its ladder, or failed with a reason."""
        down = [name for name in self.media if self.sim.node(name) is None]
        if down:
            return f"media node {down[0]} is down after heal"
        for video, up in self.uploads.items():
            if not up["complete"]:
                continue
            job = self._job(video, self._store(video))
            if job is None or job["status"] not in ("ready", "failed"):
                return f"video {video} is {job['status'] if job else 'not stored'} after quiesce"
            if job["status"] == "failed":
                if not job["reason"]:
                    return f"video {video} failed without a reason"
                continue
            want = [r.name for r in ladder_for(up["height"])]
            if job["ladder"] != want or sorted(job["done"]) != sorted(want) or job["thumbs"] != 5:
                return f"video {video}: renditions {sorted(job['done'])}, thumbs {job['thumbs']}; its ladder is {want}"
        return None

    @check("eventually")
    def duplicates_found(self) -> str | None:
        """Content uploaded completely as several videos is ready as one of them at most;
        each other one failed as a duplicate of one of them (wherever each video lives)."""
        by_content: dict[tuple, list[str]] = {}
        for video, up in self.uploads.items():
            if up["complete"]:
                by_content.setdefault(up["content"], []).append(video)
        for videos in by_content.values():
            jobs = {video: self._job(video, self._store(video)) or {} for video in videos}
            ready = [video for video in videos if jobs[video].get("status") == "ready"]
            if len(ready) > 1:
                return f"videos {ready[0]} and {ready[1]} have the same content and are both ready"
            for video in videos:
                reason = jobs[video].get("reason") or ""
                if ready and video not in ready and not any(f"video {other!r} has" in reason for other in videos):
                    return f"video {video} has the content of {ready[0]} but is not a duplicate of it: {reason!r}"
        return None

    def stats(self) -> dict[str, int]:
        out = dict(self.counts, activations=self.ledger.activations)
        out.update({f"bitrate_{name}": n for name, n in self.bitrates.items() if n})
        for region in REGIONS:
            hits = sum(h for (r, _), (h, _) in self.cache_seen.items() if r == region)
            asked = hits + sum(m for (r, _), (_, m) in self.cache_seen.items() if r == region)
            out[f"cache_{region}_hits"], out[f"cache_{region}_asked"] = hits, asked
            if asked:
                out[f"cache_{region}_hit_permille"] = round(1000 * hits / asked)
        return out

    def _sample_caches(self) -> None:
        """Keep each edge cache incarnation's latest counters (a restarted cache starts at 0)."""
        for name in self.media:
            node = self.sim.node(name)
            for region in REGIONS if node is not None else ():
                pid = node.whereis(VideoContext.edge(region))
                edge = node.get_process(pid) if pid is not None else None
                if edge is not None:
                    self.cache_seen[(region, (pid.node_name, pid.serial))] = (edge.lru.hits, edge.lru.misses)
        self.sim.call_after(1.0, self._sample_caches)
