"""One process per upload job: chunked resumable upload, then processing and transcoding.

Status: uploading -> processing -> transcoding -> ready | failed (with a reason). The job
is a state machine (`actors.GenStateMachine`) whose state is the status: a status's work
starts from its enter call, and a restarted job resumes in its stored status.

Upload. Chunks are numbered 0..chunks-1 and carry their crc32; each is stored as a blob
and recorded in the job's stored state before it is acknowledged, so an acknowledged chunk
is never lost, a job resumes (after any crash or restart) where it stopped, and a chunk
sent twice is acknowledged twice but stored once. A chunk that differs from the one
already stored under its number is refused.

Processing. With every chunk in, the job assembles the source, hashes it (sha256) and
claims the hash at the catalogue that holds it (on another node, across nodes): content
already uploaded as another video fails this job as a duplicate; a claim that gets no
answer (that node down or cut off) is tried again `CLAIM_RETRY` seconds later. The
source header gives its resolution, which chooses the ladder.

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

from actors import (CallExit, CallTimeout, Exit, GenServer, GenStateMachine, KeepState, NextState, NoProc, Pid,
                    RemoteName, Reply, StateTimeout, Stop)
from sim.core import buggify
from storage import PersistentServer, entity_call

from . import ladder as ladders
from .transcode import Transcoder, read_source

TERMINAL = ("ready", "failed")
THUMBS = "thumbnails"
MAX_CHUNKS = 4096
MAX_CHUNK_BYTES = 1 << 20
CLAIM_RETRY = 0.5  # seconds before a hash claim that got no answer goes again
_STOP, _RESUME = ("$stop",), ("$resume",)


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


class UploadJob(PersistentServer, GenStateMachine):
    """`init(store, key, meta, config, ctx)`; `meta` = {"owner", "title", "genres", "chunks"}.
    A state machine whose state is the status: a method per status says what the job does
    in it (only an uploading job takes new chunks, only a transcoding one hears from
    workers); each status's work starts from its enter call."""

    state_enter = True

    def init(self, store: Any, key: Any, meta: dict, config: VideoConfig, ctx: Any) -> str:
        super().init(store, key, meta)
        self.id = key[1]
        self.config = config
        self.ctx = ctx
        self.trap_exit = True  # a worker's crash arrives as a message, not as our death
        self.source: bytes | None = None
        self.running: dict[str, Pid] = {}  # task -> worker
        ctx.registry.register(("job", self.id), self.pid)
        if ctx.activated is not None:
            ctx.activated(key, self.pid)
        return self.state["status"]  # a restarted job resumes in its stored status

    def initial_state(self, meta: dict) -> dict[str, Any]:
        return {"owner": meta["owner"], "title": meta["title"], "genres": meta["genres"],
                "chunks_total": meta["chunks"], "chunks": {}, "status": "uploading", "hash": None,
                "source": None, "ladder": [], "done": {}, "thumbs": None, "attempts": {},
                "reason": None}

    def status(self) -> dict[str, Any]:
        s = self.state
        return {"video": self.id, "status": s["status"], "received": len(s["chunks"]),
                "chunks": s["chunks_total"], "ladder": list(s["ladder"]), "done": sorted(s["done"]),
                "reason": s["reason"], "source": s["source"]}

    # -- the states ---------------------------------------------------------------------------

    def uploading(self, event: Any, content: Any) -> Any:
        return None if event == "enter" else self._in_any_state(event, content)

    def processing(self, event: Any, content: Any) -> Any:
        if event == "enter":
            return self._entered(content)
        if event == "state_timeout" or (event == "info" and content == _RESUME):
            return self._process()
        return self._in_any_state(event, content)

    def transcoding(self, event: Any, content: Any) -> Any:
        if event == "enter":
            return self._entered(content)
        if event == "state_timeout" or (event == "info" and content == _RESUME):
            return self._transcode()
        if event == "info" and type(content) is tuple and content[0] == "$task":
            return self._task_done(*content[1:])
        return self._in_any_state(event, content)

    def ready(self, event: Any, content: Any) -> Any:
        return self._entered(content) if event == "enter" else self._in_any_state(event, content)

    failed = ready  # a terminal status of its own name: nothing left to do but stop

    def _entered(self, old: Any) -> Any:
        """Tell the catalog, then start the status's work: at once after a transition; by a
        message when init resumed it, so that the work (which awaits other servers, the
        catalog among them) runs once the start has returned."""
        status = self.state["status"]
        self.cast(self.ctx.catalog, ("status", self.id, status))
        if status in TERMINAL:
            # Stopped from a message of its own, not here: this may run at the end of an
            # async callback, where a stop would skip saving the state (HOOK-NEEDED: storage).
            self.send_after(0, self.pid, _STOP)
            return None
        if old == status:
            self.send(self.pid, _RESUME)
            return None
        return KeepState(StateTimeout(0, "work"))

    def _to(self, status: str, *actions: Any) -> NextState:
        self.state["status"] = status
        return NextState(status, *actions)

    def _in_any_state(self, event: Any, content: Any) -> Any:
        """What a job does whatever its status: answer chunks and status requests, stop."""
        if event == "info":
            if content == _STOP:
                return Stop()
            if type(content) is Exit or (type(content) is tuple and content[0] == "$task"):
                return None  # a worker's end, or one of a status left since: its outcome is moot
            return GenServer.handle_info(self, content)  # logged, dropped
        if event == "cast":
            return GenServer.handle_cast(self, content)
        caller = event[1]
        if content[0] == "chunk":
            return self._chunk(caller, *content[1:])
        answer = (self.status() if content[0] == "status"
                  else ValueError(f"job {self.id}: unknown request {content!r:.200}"))
        return KeepState(Reply(caller, answer))

    # -- upload -------------------------------------------------------------------------

    def _chunk(self, caller: Any, n: int, data: bytes, crc: int) -> Any:
        s = self.state
        if type(n) is not int or not 0 <= n < s["chunks_total"]:
            error = UploadError(f"video {self.id}: chunk number must be in 0..{s['chunks_total'] - 1}, got {n!r}")
        elif type(data) is not bytes or not 0 < len(data) <= MAX_CHUNK_BYTES:
            error = UploadError(f"video {self.id}: chunk {n} must be 1..{MAX_CHUNK_BYTES} bytes")
        elif zlib.crc32(data) != crc:
            error = UploadError(f"video {self.id}: chunk {n} fails its checksum (sent {crc}, "
                                f"computed {zlib.crc32(data)})")
        elif (stored := s["chunks"].get(str(n))) is not None:
            if stored == crc:
                return KeepState(Reply(caller, {"chunk": n, "received": len(s["chunks"])}))  # a retry
            error = UploadError(f"video {self.id}: chunk {n} is already stored with crc {stored}; not replaced")
        elif s["status"] != "uploading":
            error = UploadError(f"video {self.id} is {s['status']}: chunk {n} is not part of it")
        else:
            return self._store_chunk(caller, n, data, crc)
        return KeepState(Reply(caller, error))

    async def _store_chunk(self, caller: Any, n: int, data: bytes, crc: int) -> Any:
        await entity_call(self, self.ctx.blobs, ("chunk", self.id, n), ("put", data))
        s = self.state
        s["chunks"][str(n)] = crc
        answer = Reply(caller, {"chunk": n, "received": len(s["chunks"])})
        if len(s["chunks"]) == s["chunks_total"]:
            return self._to("processing", answer)
        return KeepState(answer)

    # -- the pipeline ----------------------------------------------------------------------

    async def _load_source(self) -> None:
        if self.source is None:
            parts = [await entity_call(self, self.ctx.blobs, ("chunk", self.id, n), ("get",))
                     for n in range(self.state["chunks_total"])]
            self.source = b"".join(parts)

    async def _process(self) -> NextState | KeepState:
        s = self.state
        await self._load_source()
        digest = hashlib.sha256(self.source).hexdigest()
        try:
            owner = await self.call(RemoteName(self.ctx.catalog, self.ctx.hash_home(digest)),
                                    ("hash", self.id, digest))
        except (CallTimeout, CallExit, NoProc):
            return KeepState(StateTimeout(CLAIM_RETRY, "work"))
        if isinstance(owner, Exception):
            raise owner  # the catalogue refused the claim: a bug of placement, a crash
        s["hash"] = digest
        if owner != self.id:
            return self._give_up(f"duplicate content: video {owner!r} has the same sha256")
        try:
            frames, fps, (width, height) = read_source(self.source)
            s["ladder"] = [r.name for r in ladders.ladder_for(height)]
        except ValueError as exc:  # SourceError, or a size outside the ladder
            return self._give_up(f"unreadable source: {exc}")
        s["source"] = {"width": width, "height": height, "frames": frames.shape[0], "fps": fps}
        return self._to("transcoding")

    async def _transcode(self) -> NextState | None:
        await self._load_source()
        return self._dispatch()

    def _todo(self) -> list[str]:
        s = self.state
        tasks = [r for r in s["ladder"] if r not in s["done"]]
        if s["thumbs"] is None:
            tasks.append(THUMBS)
        return [t for t in tasks if t not in self.running]

    def _dispatch(self) -> NextState | None:
        """Start workers for pending tasks, `parallel` at a time; ready when none is left."""
        s = self.state
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
        return self._to("ready") if not self.running and not self._todo() else None

    async def _task_done(self, task: str, worker: Pid, fut: Any) -> NextState | None:
        if self.running.get(task) != worker:
            return None  # a worker of an earlier dispatch
        del self.running[task]
        self.unlink(worker)
        self.exit(worker, "shutdown")
        error = fut.exception()
        if error is None:
            await self._checkpoint(task, fut.result())
        else:
            reason = getattr(error, "reason", error)
            if isinstance(reason, Exception):  # the task's own failure, not a kill
                attempts = self.state["attempts"]
                n = attempts[task] = attempts.get(task, 0) + 1
                if n >= self.config.max_attempts:
                    return self._give_up(f"{task} failed {n} times: {reason}")
        return self._dispatch()

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

    def _give_up(self, reason: str) -> NextState:
        self.state["reason"] = reason
        for worker in self.running.values():
            self.unlink(worker)
            self.exit(worker, "shutdown")
        self.running.clear()
        return self._to("failed")
