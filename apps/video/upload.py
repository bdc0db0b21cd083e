"""One process per upload job: chunked resumable upload, then processing and transcoding.

Status: uploading -> processing -> transcoding -> ready | failed (with a reason).

Upload. Chunks are numbered 0..chunks-1 and carry their crc32; each is stored as a blob
and recorded in the job's stored state before it is acknowledged, so an acknowledged chunk
is never lost, a job resumes (after any crash or restart) where it stopped, and a chunk
sent twice is acknowledged twice but stored once. A chunk that differs from the one
already stored under its number is refused.

Processing. With every chunk in, the job assembles the source, hashes it (sha256) and
claims the hash at the catalogue: content already uploaded as another video fails this
job as a duplicate. The source header gives its resolution, which chooses the ladder.

Transcoding. Each rendition, and the thumbnails, is one task for a `Transcoder` thread
worker linked to the job (`parallel` at a time). A finished task's segments are stored as
blobs and the rendition is checkpointed in the job's state; after a crash only unfinished
tasks run again. A task whose worker raises is retried; after `max_attempts` failures of
the same task (counted in the stored state, so across restarts too) the job fails with
the reason. A worker killed from outside is not the task's fault and is not counted.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

from actors import Exit, Pid
from sim.core import buggify
from storage import PersistentServer, entity_call

from . import ladder as ladders
from .transcode import Transcoder, read_source

TERMINAL = ("ready", "failed")
THUMBS = "thumbnails"
MAX_CHUNKS = 4096
MAX_CHUNK_BYTES = 1 << 20
_STOP = ("$stop",)


@dataclass(frozen=True)
class VideoConfig:
    """The pipeline's knobs. `scale` multiplies every rendition size (tests: small);
    `fail` names tasks whose worker always raises (fault injection)."""

    scale: float = 0.05
    segment_seconds: float = 2.0
    parallel: int = 2
    max_attempts: int = 3
    fail: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.001 <= self.scale <= 1.0:
            raise ValueError(f"scale must be in [0.001, 1], got {self.scale!r}")
        if not 0.1 <= self.segment_seconds <= 60.0:
            raise ValueError(f"segment_seconds must be in [0.1, 60], got {self.segment_seconds!r}")
        if not 1 <= self.parallel <= 16 or not 1 <= self.max_attempts <= 100:
            raise ValueError(f"parallel must be 1..16 and max_attempts 1..100, got "
                             f"{self.parallel!r} and {self.max_attempts!r}")


class UploadError(ValueError):
    """A chunk or request the job refuses; the message says why. Nothing stored changes."""


class UploadJob(PersistentServer):
    """`init(store, key, meta, config, ctx)`; `meta` = {"owner", "title", "genres", "chunks"}."""

    def init(self, store: Any, key: Any, meta: dict, config: VideoConfig, ctx: Any) -> None:
        super().init(store, key, meta)
        self.id = key[1]
        self.config = config
        self.ctx = ctx
        self.trap_exit = True  # a worker's crash arrives as a message, not as our death
        self.source: bytes | None = None
        self.running: dict[str, Pid] = {}  # task -> worker
        ctx.registry.register(("job", self.id), self.pid)
        self.continue_with("resume")

    def initial_state(self, meta: dict) -> dict[str, Any]:
        return {"owner": meta["owner"], "title": meta["title"], "genres": meta["genres"],
                "chunks_total": meta["chunks"], "chunks": {}, "status": "uploading", "hash": None,
                "source": None, "ladder": [], "done": {}, "thumbs": None, "attempts": {},
                "reason": None}

    # -- upload -------------------------------------------------------------------------

    def handle_call(self, request: tuple, caller: Any) -> Any:
        if request[0] == "chunk":
            return self._chunk(*request[1:])
        if request[0] == "status":
            return self.status()
        return ValueError(f"job {self.id}: unknown request {request!r:.200}")

    def status(self) -> dict[str, Any]:
        s = self.state
        return {"video": self.id, "status": s["status"], "received": len(s["chunks"]),
                "chunks": s["chunks_total"], "ladder": list(s["ladder"]), "done": sorted(s["done"]),
                "reason": s["reason"], "source": s["source"]}

    def _chunk(self, n: int, data: bytes, crc: int) -> Any:
        s = self.state
        if type(n) is not int or not 0 <= n < s["chunks_total"]:
            return UploadError(f"video {self.id}: chunk number must be in 0..{s['chunks_total'] - 1}, got {n!r}")
        if type(data) is not bytes or not 0 < len(data) <= MAX_CHUNK_BYTES:
            return UploadError(f"video {self.id}: chunk {n} must be 1..{MAX_CHUNK_BYTES} bytes")
        if zlib.crc32(data) != crc:
            return UploadError(f"video {self.id}: chunk {n} fails its checksum (sent {crc}, "
                               f"computed {zlib.crc32(data)})")
        stored = s["chunks"].get(str(n))
        if stored is not None:
            if stored != crc:
                return UploadError(f"video {self.id}: chunk {n} is already stored with crc {stored}; not replaced")
            return {"chunk": n, "received": len(s["chunks"])}  # a retry
        if s["status"] != "uploading":
            return UploadError(f"video {self.id} is {s['status']}: chunk {n} is not part of it")
        return self._store_chunk(n, data, crc)

    async def _store_chunk(self, n: int, data: bytes, crc: int) -> Any:
        await entity_call(self, self.ctx.blobs, ("chunk", self.id, n), ("put", data))
        s = self.state
        if str(n) not in s["chunks"]:  # another call for the same chunk may have won meanwhile
            s["chunks"][str(n)] = crc
        if len(s["chunks"]) == s["chunks_total"] and s["status"] == "uploading":
            s["status"] = "processing"
            self._status_changed()
            self.continue_with("resume")
        return {"chunk": n, "received": len(s["chunks"])}

    # -- the pipeline ----------------------------------------------------------------------

    async def handle_continue(self, arg: str) -> None:
        assert arg == "resume", arg
        s = self.state
        if s["status"] in TERMINAL:
            self._status_changed()
            return
        if s["status"] == "processing":
            await self._process()
        if s["status"] == "transcoding":
            await self._load_source()
            self._dispatch()

    async def _load_source(self) -> None:
        if self.source is None:
            parts = [await entity_call(self, self.ctx.blobs, ("chunk", self.id, n), ("get",))
                     for n in range(self.state["chunks_total"])]
            self.source = b"".join(parts)

    async def _process(self) -> None:
        s = self.state
        await self._load_source()
        digest = hashlib.sha256(self.source).hexdigest()
        owner = await self.call(self.ctx.catalog, ("hash", self.id, digest))
        s["hash"] = digest
        if owner != self.id:
            self._give_up(f"duplicate content: video {owner!r} has the same sha256")
            return
        try:
            frames, fps, (width, height) = read_source(self.source)
            s["ladder"] = [r.name for r in ladders.ladder_for(height)]
        except ValueError as exc:  # SourceError, or a size outside the ladder
            self._give_up(f"unreadable source: {exc}")
            return
        s["source"] = {"width": width, "height": height, "frames": frames.shape[0], "fps": fps}
        s["status"] = "transcoding"
        self._status_changed()

    def _todo(self) -> list[str]:
        s = self.state
        tasks = [r for r in s["ladder"] if r not in s["done"]]
        if s["thumbs"] is None:
            tasks.append(THUMBS)
        return [t for t in tasks if t not in self.running]

    def _dispatch(self) -> None:
        """Start workers for pending tasks, `parallel` at a time; finish when none is left."""
        s = self.state
        if s["status"] != "transcoding":
            return
        for task in self._todo()[:max(0, self.config.parallel - len(self.running))]:
            assert task not in s["done"], f"rendition {task} of {self.id} is already checkpointed"
            worker = self.spawn_link(Transcoder)
            self.running[task] = worker
            fail = task in self.config.fail or buggify("video.transcoder_fault", 0.3)
            req = (("thumbnails", self.source, self.config.scale, fail) if task == THUMBS else
                   ("rendition", self.source, ladders.BY_NAME[task], self.config.scale,
                    self.config.segment_seconds, fail))
            me, node = self.pid, self.node
            node.call(worker, req, None).add_done_callback(
                lambda fut, task=task, worker=worker: node.send(me, ("$task", task, worker, fut)))
        if not self.running and not self._todo():
            s["status"] = "ready"
            self._status_changed()

    async def handle_info(self, msg: Any) -> None:
        if type(msg) is Exit:
            return None  # a worker's end; its call's outcome says what happened
        if msg == _STOP:
            self.stop()
            return None
        if type(msg) is not tuple or msg[0] != "$task":
            return super().handle_info(msg)
        _, task, worker, fut = msg
        if self.running.get(task) != worker:
            return None  # a worker of an earlier dispatch
        del self.running[task]
        self.unlink(worker)
        self.exit(worker, "shutdown")
        error = fut.exception()
        s = self.state
        if error is not None:
            reason = getattr(error, "reason", error)
            if isinstance(reason, Exception):  # the task's own failure, not a kill
                n = s["attempts"][task] = s["attempts"].get(task, 0) + 1
                if n >= self.config.max_attempts:
                    self._give_up(f"{task} failed {n} times: {reason}")
                    return None
        elif s["status"] == "transcoding":
            await self._checkpoint(task, fut.result())
        self._dispatch()
        return None

    async def _checkpoint(self, task: str, result: Any) -> None:
        """Store a finished task's output as blobs, then record it as done."""
        if task == THUMBS:
            for i, image in enumerate(result):
                await entity_call(self, self.ctx.blobs, ("thumb", self.id, i), ("put", image))
            self.state["thumbs"] = len(result)
            return
        for i, segment in enumerate(result["segments"]):
            await entity_call(self, self.ctx.blobs, ("seg", self.id, task, i), ("put", segment))
        assert task not in self.state["done"], f"rendition {task} of {self.id} checkpointed twice"
        self.state["done"][task] = {"width": result["width"], "height": result["height"],
                                    "segments": len(result["segments"]), "crcs": result["crcs"],
                                    "bytes": sum(map(len, result["segments"])), "at": self.now()}

    def _give_up(self, reason: str) -> None:
        s = self.state
        s["status"], s["reason"] = "failed", reason
        for worker in self.running.values():
            self.unlink(worker)
            self.exit(worker, "shutdown")
        self.running.clear()
        self._status_changed()

    def _status_changed(self) -> None:
        s = self.state
        self.cast(self.ctx.catalog, ("status", self.id, s["status"]))
        if s["status"] in TERMINAL:
            # Stopped from a message of its own, not here: this may run at the end of an
            # async callback, where a stop would skip saving the state (HOOK-NEEDED: storage).
            self.send_after(0, self.pid, _STOP)
