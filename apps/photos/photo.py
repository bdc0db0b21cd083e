"""A photo: one activated entity per photo (`("photo", user, photo_id)`) on its owner's
home node, a persistent record (no pixels: those are blobs).

Upload (`("upload", data, crc, caption)`): the header is checked (`image.read_header`),
the bytes are stored as blobs of `part_bytes` (`("photo.part", user, photo, i)`), the
record becomes "processing", and the node's thumbnailer queues the photo; the answer
leaves once all of it is stored. Uploading the same bytes under the same id again answers
the same (a retry); other bytes under a stored id are refused (`PhotoExists`).

Status: new -> processing -> ready (all thumbnails made) | failed (with the reason). The
thumbnail job reports each size as it is stored (`("thumb", name, width, height, crc,
bytes)`, a checkpoint: a restarted job makes only the missing sizes), each failed attempt
(`("attempt", name, reason)`: the photo fails after `max_attempts` of one size), and the
post in the owners' followers' feeds (`("posted", post_id)`). A photo found "processing"
(or ready and not posted) when it starts, or uploaded again, asks the thumbnailer to queue
it (queueing is idempotent), so no photo is left behind by a crash between storing its
record and queueing it, or of the thumbnailer before its queue was stored.
"""
from __future__ import annotations

import zlib
from typing import Any

from storage import PersistentServer, Store, entity_call

from .context import BLOBS, THUMBNAILER, Context, check_caption
from .errors import BadRequest, PhotoError, PhotoExists, PhotoTooLarge, UnknownPhoto, Unavailable
from .image import BadImage, read_header

TERMINAL = ("ready", "failed")


def part_count(size: int, part_bytes: int) -> int:
    """The blobs `size` bytes are stored as (one, for nothing)."""
    return max(1, -(-size // part_bytes))


async def put_parts(proc: Any, blobs: Any, key: tuple, data: bytes, part_bytes: int, timeout: float) -> None:
    """Store `data` as the blobs `(*key, 0)`, `(*key, 1)`... (each answered once stored)."""
    for i in range(part_count(len(data), part_bytes)):
        await entity_call(proc, blobs, (*key, i), ("put", data[i * part_bytes:(i + 1) * part_bytes]), timeout)


async def get_parts(proc: Any, blobs: Any, key: tuple, size: int, part_bytes: int, timeout: float) -> bytes:
    """The bytes `put_parts` stored under `key`."""
    return b"".join([await entity_call(proc, blobs, (*key, i), ("get",), timeout)
                     for i in range(part_count(size, part_bytes))])


class Photo(PersistentServer):
    """See the module docstring."""

    ctx: Context

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        _, self.user, self.photo = key
        if self._unfinished():
            self.continue_with("queue")

    def initial_state(self) -> dict[str, Any]:
        return {"status": "new", "size": 0, "crc": None, "width": 0, "height": 0, "caption": "",
                "thumbs": {}, "attempts": {}, "reason": None, "post": None, "at": None}

    def handle_continue(self, arg: Any) -> Any:
        assert arg == "queue", arg
        thumbnailer = self.ctx.local(THUMBNAILER)
        if thumbnailer is not None:
            self.cast(thumbnailer, ("queue", self.user, self.photo))

    def handle_call(self, request: Any, caller: Any) -> Any:
        try:
            return self._answer(request)
        except PhotoError as exc:
            return exc
        except BadImage as exc:
            return exc

    def _answer(self, request: Any) -> Any:
        kind = request[0] if type(request) is tuple and request else None
        s = self.state
        if kind == "upload" and len(request) == 4:
            return self._upload(*request[1:])
        if kind == "status":
            if s["status"] == "new":
                raise UnknownPhoto(f"user {self.user} has no photo {self.photo!r}")
            return self.status()
        if kind == "job":
            return {k: s[k] for k in ("status", "size", "crc", "width", "height", "thumbs", "post")}
        if kind == "thumb" and len(request) == 6:
            return self._thumb(*request[1:])
        if kind == "attempt" and len(request) == 3:
            return self._attempt(request[1], request[2])
        if kind == "fail" and len(request) == 2:
            return self._give_up(str(request[1]))
        if kind == "posted" and len(request) == 2:
            if s["status"] != "ready":
                raise BadRequest(f"photo {self.photo!r} of {self.user} is {s['status']}, not ready to post")
            s["post"] = s["post"] if s["post"] is not None else request[1]
            return s["post"]
        raise BadRequest(f"photo {self.photo!r} of {self.user} cannot take {request!r:.80}")

    def status(self) -> dict[str, Any]:
        s = self.state
        return {"user": self.user, "photo": self.photo, "status": s["status"], "width": s["width"],
                "height": s["height"], "size": s["size"], "caption": s["caption"],
                "thumbs": {name: t[:2] for name, t in s["thumbs"].items()}, "reason": s["reason"], "post": s["post"]}

    # -- upload ------------------------------------------------------------------------------

    def _upload(self, data: Any, crc: Any, caption: Any) -> Any:
        config = self.ctx.config
        if type(data) is not bytes:
            raise BadRequest(f"a photo is bytes, not {type(data).__name__}")
        if len(data) > config.max_bytes:
            raise PhotoTooLarge(f"a photo is at most {config.max_bytes} bytes, this one has {len(data)}")
        if crc != zlib.crc32(data):
            raise BadRequest(f"photo {self.photo!r}: the bytes fail their checksum (sent {crc!r:.20}, "
                             f"computed {zlib.crc32(data)})")
        check_caption(caption, config.max_caption)
        s = self.state
        if s["status"] != "new":
            if s["crc"] != crc or s["size"] != len(data):
                raise PhotoExists(f"user {self.user} already has a photo {self.photo!r} with other bytes; "
                                  "it is kept")
            return self._enqueue()  # a retry: the first upload was stored
        width, height, _, _ = read_header(data)  # BadImage: nothing stored
        return self._store(data, crc, caption, width, height)

    async def _store(self, data: bytes, crc: int, caption: str, width: int, height: int) -> Any:
        config = self.ctx.config
        try:
            await put_parts(self, self.ctx.local(BLOBS), ("photo.part", self.user, self.photo), data,
                            config.part_bytes, config.call_timeout)
        except Exception as exc:  # noqa: BLE001 - a blob that cannot be stored now: the client retries
            return Unavailable(f"photo {self.photo!r}: its bytes could not be stored ({exc!r:.80})")
        s = self.state
        if s["status"] == "new":  # (a concurrent retry of the same upload may have won)
            s.update(status="processing", size=len(data), crc=crc, width=width, height=height,
                     caption=caption, at=self.now())
        return await self._enqueue()

    def _unfinished(self) -> bool:
        """Waiting for thumbnails, or ready and not yet posted: its job has work to do."""
        s = self.state
        return s["status"] == "processing" or (s["status"] == "ready" and s["post"] is None)

    async def _enqueue(self) -> Any:
        """Have the thumbnailer queue this photo (stored before it answers)."""
        if self._unfinished():
            thumbnailer = self.ctx.local(THUMBNAILER)
            try:
                if thumbnailer is None:
                    raise Unavailable("the thumbnailer is restarting")
                answer = await self.call(thumbnailer, ("queue", self.user, self.photo), self.ctx.config.call_timeout)
            except Exception as exc:  # noqa: BLE001 - stored as processing: queued on a retry or a restart
                return Unavailable(f"photo {self.photo!r} is stored but not yet queued ({exc!r:.80}); retry")
            if isinstance(answer, Exception):
                return answer
        return {"photo": self.photo, "status": self.state["status"]}

    # -- the thumbnail job's reports ------------------------------------------------------------

    def _thumb(self, name: str, width: int, height: int, crc: int, size: int) -> str:
        s = self.state
        if s["status"] != "processing":
            return s["status"]  # a late report of a job that was already ended
        s["thumbs"].setdefault(name, [width, height, crc, size])
        if len(s["thumbs"]) == len(self.ctx.config.widths()):
            s["status"] = "ready"
        return s["status"]

    def _attempt(self, name: str, reason: str) -> str:
        s = self.state
        if s["status"] != "processing":
            return s["status"]
        n = s["attempts"][name] = s["attempts"].get(name, 0) + 1
        if n >= self.ctx.config.max_attempts:
            return self._give_up(f"the {name} thumbnail failed {n} times: {reason}")
        return s["status"]

    def _give_up(self, reason: str) -> str:
        s = self.state
        if s["status"] == "processing":
            s["status"], s["reason"] = "failed", reason[:500]
        return s["status"]
