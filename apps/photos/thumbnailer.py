"""The thumbnailer: a node's durable queue of photos waiting for thumbnails, and the
supervisor of their jobs.

`("queue", user, photo)` (a call, answered once stored; queueing a queued photo again is a
no-op) adds a photo. Up to `parallel` jobs run at once, each a process linked to the
thumbnailer (which traps exits, as a supervisor does): a job that ends normally takes its
photo off the queue; one that crashes is started again after `retry_after` seconds, and
after `max_job_crashes` crashes its photo is failed with the reason. The queue is stored,
so jobs resume after a crash of the thumbnailer or of the node (the thumbnailer's death
takes its jobs with it: no job runs twice for one photo). A ready photo is never failed:
its job, which posts it, is retried until it has.

A job (`thumb_job`) asks the photo for what is left to do, reads its bytes back from the
blobs and checks their crc32, makes the missing sizes at once on three `Resizer` thread
workers, stores each thumbnail as blobs (`("photo.thumb", user, photo, size, i)`) and
reports it to the photo (a checkpoint), and
reports each failed size as an attempt; it goes round until the photo is ready or
failed. A ready photo is then posted to its owner's followers' feeds (the timeline
service, with the photo id as the client post id, so a retry posts once) and indexed by
its post id (a blob `("post", post_id)` on the post's home node holding "user/photo").
"""
from __future__ import annotations

import zlib
from typing import Any

from actors import Exit, Pid, Process
from sim.core import buggify
from storage import EventSourcedServer, Store, entity_call

from .context import BLOBS, PHOTOS, Context
from .errors import BadRequest, Unavailable
from .image import Resizer, read_header
from .photo import get_parts, put_parts

E_QUEUED, E_DONE, E_CRASHED = "q", "d", "c"
RETRY = ("$thumbnailer.retry",)


async def _ask(proc: Process, ctx: Context, router: str, key: tuple, request: tuple, node: str | None = None) -> Any:
    pid = ctx.lookup(node, router) if node is not None else ctx.local(router)
    if pid is None:
        raise Unavailable(f"{router} is not running")
    return await entity_call(proc, pid, key, request, ctx.config.call_timeout)


async def thumb_job(proc: Process, ctx: Context, user: int, photo: str) -> None:
    """Make `photo`'s missing thumbnails and post it (see the module docstring). Linked to
    its thumbnailer and its resizers, without trapping exits: a job dies with either."""
    key, part_bytes = ("photo", user, photo), ctx.config.part_bytes
    job = await _ask(proc, ctx, PHOTOS, key, ("job",))
    for _ in range(ctx.config.max_attempts):
        if job["status"] != "processing":
            break
        data = await get_parts(proc, ctx.local(BLOBS), ("photo.part", user, photo), job["size"], part_bytes,
                               ctx.config.call_timeout)
        if zlib.crc32(data) != job["crc"]:
            await _ask(proc, ctx, PHOTOS, key, ("fail", "the stored bytes fail their checksum"))
            return
        todo = [name for name in ctx.config.widths() if name not in job["thumbs"]]
        for name, outcome in (await _resize(proc, ctx, data, todo)).items():
            if isinstance(outcome, bytes):
                await put_parts(proc, ctx.local(BLOBS), ("photo.thumb", user, photo, name), outcome, part_bytes,
                                ctx.config.call_timeout)
                width, height, _, _ = read_header(outcome)
                await _ask(proc, ctx, PHOTOS, key, ("thumb", name, width, height, zlib.crc32(outcome), len(outcome)))
            else:
                await _ask(proc, ctx, PHOTOS, key, ("attempt", name, outcome))
        job = await _ask(proc, ctx, PHOTOS, key, ("job",))
    if job["status"] == "ready" and job["post"] is None:
        post = await ctx.feed.post(proc, user, f"photo {photo}", cid=f"photo:{photo}")
        await _ask(proc, ctx, BLOBS, ("post", post), ("put", f"{user}/{photo}".encode()), ctx.home(post))
        await _ask(proc, ctx, PHOTOS, key, ("posted", post))
    elif job["status"] == "processing":
        raise Unavailable(f"photo {photo!r} of {user} is still processing after {ctx.config.max_attempts} rounds")


async def _resize(proc: Process, ctx: Context, data: bytes, names: list[str]) -> dict[str, bytes | str]:
    """Each size of `names` made on its own Resizer thread, all at once: the thumbnail, or
    why it could not be made."""
    node, me, widths = proc.node, proc.pid, ctx.config.widths()
    workers: dict[str, Pid] = {}
    for name in names:
        worker = workers[name] = proc.spawn_link(Resizer)
        fail = name in ctx.config.fail or buggify("photos.resizer_fault", 0.3)
        node.call(worker, ("thumb", data, widths[name], fail), None).add_done_callback(
            lambda fut, name=name: node.send(me, ("$resized", name, fut)))
    out: dict[str, bytes | str] = {}
    while len(out) < len(names):
        msg = await proc.receive(lambda m: type(m) is tuple and len(m) == 3 and m[0] == "$resized",
                                 timeout=4 * ctx.config.call_timeout)
        _, name, fut = msg
        out[name] = fut.result()  # (a resizer that died took this job with it)
    for worker in workers.values():
        proc.unlink(worker)
        proc.exit(worker, "shutdown")
    return {name: out[name] for name in names}


class Thumbnailer(EventSourcedServer):
    """See the module docstring. Spawned as `(store, context)`."""

    snapshot_every = 1_000

    def init(self, store: Store, ctx: Context) -> None:
        self.ctx = ctx
        super().init(store, ("photos.thumbnailer", ctx.node.name))
        self.trap_exit = True
        self.running: dict[Pid, str] = {}  # job -> its photo key
        self.busy: dict[str, Pid] = {}  # photo key -> its job
        self.waiting: dict[str, float] = {}  # photo key -> not before (crashed jobs wait)
        self.retry_armed = False
        self._dispatch()

    def initial_state(self) -> dict[str, Any]:
        """`jobs`: "user/photo" -> [user, photo, crashes]."""
        return {"jobs": {}}

    def apply(self, event: list) -> None:
        jobs = self.state["jobs"]
        if event[0] == E_QUEUED:
            jobs[event[1]] = [event[2], event[3], 0]
        elif event[0] == E_CRASHED:
            jobs[event[1]][2] += 1
        else:
            assert event[0] == E_DONE, event
            jobs.pop(event[1], None)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if not (type(request) is tuple and len(request) == 3 and request[0] == "queue"):
            return BadRequest(f"the thumbnailer takes ('queue', user, photo), not {request!r:.80}")
        return self._queue(request[1], request[2])

    def handle_cast(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "queue":
            self._queue(msg[1], msg[2])
        else:
            super().handle_info(msg)  # logged and dropped

    def _queue(self, user: int, photo: str) -> Any:
        key = f"{user}/{photo}"
        jobs = self.state["jobs"]
        if key not in jobs:
            if len(jobs) >= self.ctx.config.max_jobs:
                return Unavailable(f"the thumbnailer of {self.ctx.node.name} has {len(jobs)} photos queued "
                                   "(max_jobs); retry later")
            self.persist([E_QUEUED, key, user, photo])
            self._dispatch()
        return "queued"

    def _dispatch(self) -> None:
        now = self.now()
        for key, (user, photo, _) in self.state["jobs"].items():
            if len(self.running) >= self.ctx.config.parallel:
                return
            if key in self.busy or self.waiting.get(key, now) > now:
                continue
            self.waiting.pop(key, None)
            pid = self.spawn_link(thumb_job, self.ctx, user, photo)
            self.running[pid] = key
            self.busy[key] = pid

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is Exit and msg.pid in self.running:
            return self._ended(msg.pid, msg.reason)
        if msg == RETRY:
            self.retry_armed = False
            self._dispatch()
            self._arm_retry()
            return None
        return super().handle_info(msg)

    def _ended(self, pid: Pid, reason: Any) -> Any:
        key = self.running.pop(pid)
        del self.busy[key]
        job = self.state["jobs"].get(key)
        if job is None:
            return None
        if reason == "normal":
            self.persist([E_DONE, key])
        elif job[2] + 1 >= self.ctx.config.max_job_crashes:
            return self._give_up(key, job, reason)
        else:
            self.persist([E_CRASHED, key])
            self.waiting[key] = self.now() + self.ctx.config.retry_after
            self._arm_retry()
        self._dispatch()
        return None

    async def _give_up(self, key: str, job: list, reason: Any) -> None:
        """Fail the photo whose job keeps crashing (stored before it leaves the queue). A
        ready photo cannot fail: its job, which posts it, goes on being retried."""
        user, photo, crashes = job
        try:
            status = await _ask(self, self.ctx, PHOTOS, ("photo", user, photo),
                                ("fail", f"its thumbnail job crashed {crashes + 1} times, last: {reason!r:.200}"))
        except Exception:  # noqa: BLE001 - not failed yet: the job runs again, and this is asked again
            status = None
        if status == "failed":
            self.persist([E_DONE, key])
        else:
            self.persist([E_CRASHED, key])
            self.waiting[key] = self.now() + self.ctx.config.retry_after
            self._arm_retry()
        self._dispatch()

    def _arm_retry(self) -> None:
        if not self.retry_armed and self.waiting:
            self.retry_armed = True
            self.send_after(self.ctx.config.retry_after, self.pid, RETRY)
