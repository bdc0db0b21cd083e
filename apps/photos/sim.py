"""Photos as a simulated system (scenarios name it `photos`, or `"apps.photos.sim:PhotosSystem"`).

Server nodes "ph1".. each run a `PhotoService` on a real LMDB store (sync mode); users
and their photos are placed on them by consistent hashing. Node "clients" (spared by
random faults) runs one client per user: it uploads photos (synthetic images of seeded
sizes, each retried with the same id until it is acknowledged), follows other users,
reads its feed, and now and then sends what must be refused: a photo over the size limit
or bytes that are not an image (a clear error, and nothing stored). Buggify points make
resizer threads fail (retried; a size failing `max_attempts` times fails its photo with
the reason).

Checks:
- always: every acknowledged photo is stored: its record (processing, ready or failed),
  its bytes (the parts' crc32 is the upload's), and, once ready, all three thumbnails at
  the size the photo's dimensions give; nothing is stored for a refused upload; a feed
  shows only ready photos of users its reader follows;
- eventually: every acknowledged photo is ready or failed with a reason, and every ready
  photo is posted (its post id indexed back to it).
"""
from __future__ import annotations

import zlib
from typing import Any

from actors import Node
from sim.schema import Field
from sim.system import System, check
from storage import ActivationError

from apps.common import RETRYABLE, ServerNodes, ServerSystem, read_key, top_restarts

from .config import PhotoConfig
from .errors import BadImage, PhotoError, PhotoTooLarge, Unavailable
from .image import synthetic_photo, thumbnail_size
from .photo import part_count
from .service import PhotoService

REFUSED = {"too_large": PhotoTooLarge, "not_an_image": BadImage, "truncated": BadImage}
RETRY = (*RETRYABLE, ActivationError, Unavailable)


class PhotosSystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "servers": Field.int(2, 1, 64, "server nodes ph1.."),
        "scale": Field.float(0.1, 0.001, 1.0, "thumbnail widths (150, 640, 1080) times this"),
        "max_kb": Field.int(64, 1, 10 * 1024, "the upload limit, KiB (10 MB in production)"),
        "part_kb": Field.int(16, 1, 4 * 1024, "photos and thumbnails are stored in parts of this, KiB"),
        "idle_timeout": Field.seconds(3.0, 0.1, 3600.0, "idle photos and blobs are passivated"),
        "top_restarts": top_restarts(20),
    }
    workload_options = {
        "users": Field.int(8, 2, 10_000, "users, one client each, on node 'clients'"),
        "rate": Field.float(0.5, 0.01, 1000.0, "requests per second per client"),
        "upload": Field.float(0.5, 0.0, 1.0, "share of requests that upload"),
        "follow": Field.float(0.2, 0.0, 1.0, "share that follow someone (the rest read the feed)"),
        "bad": Field.float(0.1, 0.0, 1.0, "share of uploads that must be refused"),
        "max_side": Field.int(140, 8, 16_384, "photos are up to this many pixels wide and tall"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a client's call timeout"),
    }

    def setup(self) -> None:
        opts = self.config
        self.servers = [f"ph{i + 1}" for i in range(opts["servers"])]
        self.photo_config = PhotoConfig(nodes=tuple(self.servers), max_bytes=opts["max_kb"] << 10, scale=opts["scale"],
                                        part_bytes=opts["part_kb"] << 10,
                                        idle_timeout=opts["idle_timeout"], call_timeout=self.load["timeout"] / 2,
                                        feed_threshold=4)
        self.acked: dict[tuple[int, str], dict[str, Any]] = {}  # (user, photo) -> crc, size, width, height
        self.refused: dict[tuple[int, str], str] = {}  # (user, photo) -> what was sent
        self.follows: dict[int, dict[int, None]] = {u: {} for u in range(self.load["users"])}
        self.violations: list[str] = []
        self.counts = dict.fromkeys(("uploads", "acked", "refused", "follows", "reads", "shown", "retries",
                                     "ready", "failed"), 0)
        self.nodes = ServerNodes(self, self.servers, lambda node, store, resolve: PhotoService(
            node, store, self.photo_config, resolve=resolve, max_restarts=opts["top_restarts"]))
        self.nodes.add()
        self.sim.add_node("clients", self._start_clients, targets=False)

    def _service(self) -> PhotoService:
        return next(iter(self.nodes.services.values()))  # any: requests go to the user's home node

    # -- clients ----------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        self.spawn_clients(node, self.load["users"], self._client_loop)

    async def _client_loop(self, proc: Any, user: int) -> None:
        rng = self.sim.stream(f"workload/client-{user}")
        load = self.load
        uploaded = 0
        while True:
            await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / load["rate"]))
            if not self.workload_on:
                continue
            draw = rng.random()
            if draw < load["upload"]:
                uploaded += 1
                photo = f"u{user}-{uploaded}"
                if rng.random() < load["bad"]:
                    await self._bad_upload(proc, rng, user, photo)
                else:
                    await self._upload(proc, rng, user, photo)
            elif draw < load["upload"] + load["follow"]:
                owner = rng.below(load["users"])
                if owner != user and owner not in self.follows[user]:
                    await self._until_acked(proc, rng, lambda s, owner=owner: s.follow(proc, user, owner))
                    self.follows[user][owner] = None
                    self.counts["follows"] += 1
            else:
                await self._read(proc, rng, user)

    async def _until_acked(self, proc: Any, rng: Any, request: Any) -> Any:
        while True:
            try:
                return await request(self._service())
            except RETRY:
                self.counts["retries"] += 1
                await proc.sleep(rng.uniform(0.05, 0.5))

    async def _upload(self, proc: Any, rng: Any, user: int, photo: str) -> None:
        side = self.load["max_side"]
        width, height = 8 + rng.below(side - 7), 8 + rng.below(side - 7)
        data = synthetic_photo(self.sim.seed * 1_000_003 + zlib.crc32(photo.encode()), width, height,
                               grey=rng.random() < 0.2)
        self.counts["uploads"] += 1
        if len(data) > self.photo_config.max_bytes:
            return  # (a max_side too big for max_kb: not this client's business)
        answer = await self._until_acked(proc, rng, lambda s: s.upload(proc, user, photo, data, f"#{photo}"))
        if answer.get("photo") != photo:
            self.violations.append(f"upload of {photo} by {user} answered {answer!r:.100}")
        self.acked[(user, photo)] = {"crc": zlib.crc32(data), "size": len(data), "width": width, "height": height}
        self.counts["acked"] += 1

    async def _bad_upload(self, proc: Any, rng: Any, user: int, photo: str) -> None:
        kinds = list(REFUSED)
        kind = kinds[rng.below(len(kinds))]
        if kind == "too_large":
            data = bytes(self.photo_config.max_bytes + 1)
        elif kind == "not_an_image":
            data = b"GIF89a" + bytes(64)
        else:
            data = synthetic_photo(user, 20, 20)[:-7]
        self.refused[(user, photo)] = kind
        try:
            await self._until_acked(proc, rng, lambda s: s.upload(proc, user, photo, data))
        except REFUSED[kind]:
            self.counts["refused"] += 1
            return
        except (PhotoError, BadImage) as exc:
            self.violations.append(f"{user}'s {kind} upload {photo} was refused with {exc!r:.120}")
            return
        self.violations.append(f"{user}'s {kind} upload {photo} was acknowledged")

    async def _read(self, proc: Any, rng: Any, user: int) -> None:
        following = dict(self.follows[user])  # (a follow acknowledged later may show too)
        page = await self._until_acked(proc, rng, lambda s: s.feed_page(proc, user))
        self.counts["reads"] += 1
        for item in page["photos"]:
            self.counts["shown"] += 1
            if item["user"] not in self.follows[user] and item["user"] not in following:
                self.violations.append(f"user {user}'s feed shows {item['photo']} of {item['user']}, not followed")
            if len(item["thumbs"]) != len(self.photo_config.widths()):
                self.violations.append(f"user {user}'s feed shows {item['photo']} with thumbnails {item['thumbs']}")

    # -- checks -------------------------------------------------------------------------------------

    def _read_key(self, node: str, key: tuple) -> Any:
        """The stored state of `key` on `node`; False while its store cannot be read."""
        found = read_key(self.nodes.store(node), key)
        return found if not found else found[1]

    def _problem(self, user: int, photo: str, want: dict[str, Any]) -> str | None:
        """What is wrong with an acknowledged photo as stored (None: nothing, or its node is down)."""
        node = self._service().ctx.home(user)
        record = self._read_key(node, ("photo", user, photo))
        if record is False:
            return None
        if record is None or record["status"] not in ("processing", "ready", "failed") or record["crc"] != want["crc"]:
            return f"photo {photo} of {user} was acknowledged; its record is {record!r:.200}"
        data = self._read_parts(node, ("photo.part", user, photo), record["size"])
        if data is False:
            return None
        if data is None or zlib.crc32(data) != want["crc"]:
            return f"photo {photo} of {user} was acknowledged; its bytes are not all stored"
        if record["status"] == "ready":
            for name, width in self.photo_config.widths().items():
                thumb = record["thumbs"].get(name)
                expected = list(thumbnail_size(want["width"], want["height"], width))
                if thumb is None or thumb[:2] != expected:
                    return f"ready photo {photo} of {user}: its {name} thumbnail is {thumb}, want {expected}"
                data = self._read_parts(node, ("photo.thumb", user, photo, name), thumb[3])
                if data is not False and (data is None or zlib.crc32(data) != thumb[2]):
                    return f"ready photo {photo} of {user}: its {name} thumbnail is not all stored"
        return None

    def _read_parts(self, node: str, key: tuple, size: int) -> bytes | None | bool:
        """The bytes stored as parts under `key`: None if one is missing, False if the
        store cannot be read now."""
        parts = [self._read_key(node, (*key, i)) for i in range(part_count(size, self.photo_config.part_bytes))]
        if any(p is False for p in parts):
            return False
        if any(p is None or p["data"] is None for p in parts):
            return None
        return b"".join(p["data"] for p in parts)

    @check("always")
    def acknowledged_photos_stored(self) -> str | None:
        """Every acknowledged photo stored with its bytes (and thumbnails once ready)."""
        if self.violations:
            return self.violations[0]
        for (user, photo), want in self.acked.items():
            problem = self._problem(user, photo, want)
            if problem:
                return problem
        for (user, photo), kind in self.refused.items():
            record = self._read_key(self._service().ctx.home(user), ("photo", user, photo))
            if record and record["status"] != "new":
                return f"the refused {kind} upload {photo} of {user} is stored as {record['status']}"
        return None

    @check("eventually")
    def photos_end_ready_or_failed_and_posted(self) -> str | None:
        """Every acknowledged photo ready (and posted) or failed with a reason."""
        self.counts["ready"] = self.counts["failed"] = 0
        for user, photo in self.acked:
            node = self._service().ctx.home(user)
            record = self._read_key(node, ("photo", user, photo))
            if record is False:
                return f"node {node} cannot be read after heal"
            if record["status"] in ("ready", "failed"):
                self.counts[record["status"]] += 1
            if record["status"] == "failed":
                if not record["reason"]:
                    return f"photo {photo} of {user} failed without a reason"
                continue
            if record["status"] != "ready":
                return f"photo {photo} of {user} is {record['status']} after quiesce"
            if record["post"] is None:
                return f"ready photo {photo} of {user} was never posted"
            index = self._read_key(self._service().ctx.home(record["post"]), ("post", record["post"]))
            if not index or index["data"] != f"{user}/{photo}".encode():
                return f"ready photo {photo} of {user}: post {record['post']} is indexed as {index!r:.100}"
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

