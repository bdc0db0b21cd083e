"""PhotoService: Instagram-style photos as one supervision tree per node.

    photos = PhotoService(node, store)                     # PhotoConfig() by default
    photos.start()
    run = node.run_until_complete
    run(photos.upload(node, 7, "p1", data, caption="sunset"))   # {"photo", "status": "processing"}
    run(photos.status(node, 7, "p1"))                      # ... "ready", "thumbs": {"thumbnail": [150, 84], ...}
    run(photos.thumbnail(node, 7, "p1", "medium"))         # the image bytes
    run(photos.follow(node, 8, 7)); run(photos.feed(node, 8))   # {"photos": [...], "cursor": None}

    photos_sup (one_for_one)
    ├─ blobs        Entities of Blob: photo parts, thumbnails, post index entries
    ├─ photos       Entities of Photo: one record per photo, on its owner's home node
    ├─ feed         the timeline service's tree: follows, fan-out on write (on read for
    │               owners above `feed_threshold` followers), feed pages
    └─ thumbnailer  Thumbnailer: the durable queue of photos waiting for thumbnails, and
                    the supervisor of their jobs (each on three Resizer threads)

Every API function takes `caller`, the calling process (it returns a coroutine) or the
`Node` (a `Future`); errors are raised: `PhotoTooLarge` (over 10 MB), `BadImage` (not a
PPM or PGM image), `PhotoExists`, `BadRequest`, `UnknownPhoto` (nothing stored by any of
these), `Unavailable` (retry: an upload with the same id and bytes is stored once), and
the kernel's call errors.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable

from actors import Node, Pid, Process
from storage import Entities, Store, entity_call
from supervision import ChildSpec, Flags, Supervisor

from apps.common import TreeService, run_steps
from apps.timeline import TimelineConfig, TimelineService
from apps.timeline import BadRequest as FeedBadRequest, Unavailable as FeedUnavailable
from apps.timeline.context import bind
from apps.video.blobs import Blob, BlobError

from .config import PhotoConfig
from .context import BLOBS, PHOTOS, THUMBNAILER, Context, check_caption, check_photo_id, check_user
from .errors import BadRequest, PhotoTooLarge, UnknownPhoto, Unavailable
from .photo import Photo, get_parts
from .thumbnailer import Thumbnailer


class PhotoService(TreeService):
    """The photo application on one node; see the module docstring. `max_restarts`: what
    the top supervisor allows in 5 s before the node's photos give up."""

    name = "photos_sup"

    def __init__(self, node: Node, store: Store, config: PhotoConfig | None = None, *,
                 resolve: Callable[[str, str], Pid | None] | None = None, max_restarts: int = 10) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or PhotoConfig()
        self.feed = TimelineService(node, store, TimelineConfig(
            nodes=self.config.nodes, threshold=self.config.feed_threshold, idle_timeout=self.config.idle_timeout,
            call_timeout=self.config.call_timeout), resolve=resolve)
        self.ctx = Context(node, self.config, self.feed, resolve)

    def children(self) -> list[ChildSpec]:
        ctx, config, store = self.ctx, self.config, self.store
        entities = (config.idle_timeout, config.max_active)
        return [
            ChildSpec("blobs", Entities, args=(store, Blob, *entities), options={"name": BLOBS}),
            ChildSpec("photos", Entities, args=(store, bind(Photo, ctx), *entities), options={"name": PHOTOS}),
            ChildSpec("feed", Supervisor, args=(self.feed.children(), Flags("one_for_one", 10, 5.0)),
                      type="supervisor"),
            ChildSpec("thumbnailer", Thumbnailer, args=(store, ctx), options={"name": THUMBNAILER}),
        ]

    # -- photos ---------------------------------------------------------------------------------

    def upload(self, caller: Node | Process, user: int, photo: str, data: bytes, caption: str = "") -> Any:
        """Upload photo `photo` of `user` (a PPM or PGM image of at most 10 MB):
        {"photo", "status": "processing"} once its bytes are stored and its thumbnails
        queued. Uploading the same bytes again answers the same."""
        check_user(user)
        check_photo_id(photo)
        if type(data) is not bytes:
            raise BadRequest(f"a photo is bytes, not {type(data).__name__}")
        if len(data) > self.config.max_bytes:  # refused here: 10 MB need not travel to be refused
            raise PhotoTooLarge(f"a photo is at most {self.config.max_bytes} bytes, this one has {len(data)}")
        check_caption(caption, self.config.max_caption)
        return self._photo(caller, user, photo, ("upload", data, zlib.crc32(data), caption))

    def status(self, caller: Node | Process, user: int, photo: str) -> Any:
        """{"status": processing | ready | failed, "thumbs": {size: [width, height]},
        "reason", "post", "width", "height", "size", "caption", ...}."""
        return self._photo(caller, check_user(user), check_photo_id(photo), ("status",))

    def thumbnail(self, caller: Node | Process, user: int, photo: str, size: str) -> Any:
        """The image bytes of `photo`'s `size` thumbnail ("thumbnail", "medium", "large");
        `UnknownPhoto` if it is not made (yet)."""
        if size not in self.config.widths():
            raise BadRequest(f"a thumbnail size is one of {', '.join(self.config.widths())}, got {size!r:.40}")
        check_user(user), check_photo_id(photo)
        return run_steps(caller, lambda proc: self._thumbnail(proc, user, photo, size))

    async def _thumbnail(self, proc: Process, user: int, photo: str, size: str) -> bytes:
        made = (await self._photo(proc, user, photo, ("job",)))["thumbs"].get(size)
        if made is None:
            raise UnknownPhoto(f"the {size} thumbnail of photo {photo!r} of {user} is not made")
        blobs = self.ctx.lookup(self.ctx.home(user), BLOBS)
        if blobs is None:
            raise Unavailable(f"the blobs of node {self.ctx.home(user)} are not running")
        data = await get_parts(proc, blobs, ("photo.thumb", user, photo, size), made[3], self.config.part_bytes,
                               self.config.call_timeout)
        assert zlib.crc32(data) == made[2], (user, photo, size)  # blobs are write-once
        return data

    # -- the feed -----------------------------------------------------------------------------------

    def follow(self, caller: Node | Process, user: int, owner: int) -> Any:
        """`user` follows `owner`: `owner`'s photos posted from now on reach `user`'s feed."""
        check_user(user), check_user(owner)
        return run_steps(caller, lambda proc: _feed_errors(lambda: self.feed.follow(proc, user, owner)))

    def unfollow(self, caller: Node | Process, user: int, owner: int) -> Any:
        check_user(user), check_user(owner)
        return run_steps(caller, lambda proc: _feed_errors(lambda: self.feed.unfollow(proc, user, owner)))

    def feed_page(self, caller: Node | Process, user: int, cursor: int | None = None) -> Any:
        """A page of `user`'s feed older than `cursor`: {"photos": [{"post", "user", "photo",
        "thumbs", "caption"}], "cursor": the next page's cursor or None}, newest first."""
        check_user(user)
        return run_steps(caller, lambda proc: self._feed_page(proc, user, cursor))

    async def _feed_page(self, proc: Process, user: int, cursor: int | None) -> dict[str, Any]:
        page = await _feed_errors(lambda: self.feed.read_page(proc, user, cursor))
        photos = []
        for post in page.ids:
            try:
                info = await self._photo(proc, *await self._indexed(proc, post), ("status",))
            except UnknownPhoto:
                continue  # posted, not yet indexed: it shows once it is
            photos.append({"post": post, "user": info["user"], "photo": info["photo"], "thumbs": info["thumbs"],
                           "caption": info["caption"]})
        return {"photos": photos, "cursor": page.cursor}

    # -- plumbing -------------------------------------------------------------------------------------

    def _photo(self, caller: Node | Process, user: int, photo: str, request: tuple) -> Any:
        router = self.ctx.lookup(self.ctx.home(user), PHOTOS)
        if router is None:
            raise Unavailable(f"the photo processes of user {user} (node {self.ctx.home(user)}) are not running")
        return entity_call(caller, router, ("photo", user, photo), request, self.config.call_timeout)

    async def _indexed(self, proc: Process, post: int) -> tuple[int, str]:
        """(owner, photo) of feed post `post`, from its index entry; UnknownPhoto if none yet."""
        router = self.ctx.lookup(self.ctx.home(post), BLOBS)
        if router is None:
            raise Unavailable(f"the blobs of node {self.ctx.home(post)} are not running")
        try:
            owner, photo = (await entity_call(proc, router, ("post", post), ("get",), self.config.call_timeout)
                            ).decode().split("/", 1)
        except BlobError:  # posted, not indexed yet
            raise UnknownPhoto(f"post {post} is not indexed yet") from None
        return int(owner), photo


async def _feed_errors(request: Callable[[], Any]) -> Any:
    """The answer of the feed (the timeline service) to `request()`, its errors raised as
    the photo service's."""
    try:
        return await request()
    except FeedUnavailable as exc:
        raise Unavailable(f"the feed: {exc}") from None
    except FeedBadRequest as exc:
        raise BadRequest(f"the feed: {exc}") from None
