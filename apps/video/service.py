"""The video service: its supervision tree, the catalogue gateway, playback and the API.

    store = Store(path, node)
    videos = VideoService(node, store, VideoConfig(scale=0.02), regions=("eu", "us"))
    videos.start()
    node.run_until_complete(videos.start_upload(node, "v1", "ann", "Cats", ["pets"], chunks=3))
    node.run_until_complete(videos.upload_chunk(node, "v1", 0, data0))      # ... 1, 2
    videos.status(node, "v1") / videos.manifest(node, "v1")
    report = node.run_until_complete(videos.play(node, "bob", "v1", "laptop", "eu", 4000.0))
    node.run_until_complete(videos.recommend(node, "bob", 5))

Every method takes the caller first: a process (calls return a coroutine) or the `Node`
from outside (calls return a kernel `Future`); refusals raise the server's error.

Across nodes (`nodes=`, the cluster's media node list, the same on every node; each runs
this tree on its own store): a video lives on `node_of(video, nodes)` (`storage.cluster`,
rendezvous hashing): its catalogue record, its upload job and its blobs are there, and
every call about it goes there (a catalogue refuses a video of another node). A content
hash is claimed at the catalogue of `node_of(("hash", digest), nodes)`, so a duplicate is
found whichever node holds the first upload. The recommender and the view counter each
live on one node (`node_of(their name, nodes)`): every node's playback feeds them and
every node's callers ask them; each catalogue announces its ready titles again when it
boots, since an announcement cast while the recommender's node was cut off is lost. Edge
caches stay per node and region: a region's viewers are served by the node they reach,
and a segment is fetched once per node from its video's node. While a node is down or
cut off, its videos (and the hashes, or the recommender, it holds) wait for it, as
`storage.cluster` keys do: calls fail at once (`NoProc`, `CallExit`), a job's hash claim
is retried. The node list is fixed for the life of the videos' data: unlike
`ClusterEntities`, the video service moves nothing when it changes. `videos()` lists the
videos of the service's own node.

Tree (rest_for_one: the catalogue, last, restarts whenever something it uses did):

    video_sup
    ├─ video.blobs        Entities of Blob (chunks, segments, thumbnails)
    ├─ video.views        ViewCounter (asynchronous, batched view counts)
    ├─ video.recommender  Recommender (hybrid; fed by playback sessions)
    ├─ video.edges        Supervisor of one EdgeCache per region ("video.edge.REGION")
    ├─ video.jobs         DynamicSupervisor of UploadJob (transient)
    ├─ video.sessions     DynamicSupervisor of playback sessions (temporary)
    └─ video.catalog      VideoCatalog: videos, content hashes, manifests; restarts
                          every unfinished job when it (or the node) restarts
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any, Callable

from actors import GenServer, Node, NoReply, Pid, Process, Registry, RemoteName
from actors.requests import request
from storage import Entities, EventSourcedServer, LimitExceeded, Store, entity_call
from storage.cluster import check_nodes, node_of
from supervision import Backoff, ChildSpec, DynamicFlags, DynamicSupervisor, Flags, Supervisor, start_child

from apps.common import TreeService, check_id

from . import abr
from .blobs import Blob
from .cache import EdgeCache
from .ladder import BY_NAME, Rendition
from .recommend import Recommender, ViewCounter
from .upload import MAX_CHUNKS, TERMINAL, UploadError, UploadJob, VideoConfig

MAX_VIDEOS = 100_000
PREFETCH_SEGMENTS = 2  # segments of each of the two lowest renditions of a popular title
MAX_BUFFER_S = 60.0
SESSION_TIMEOUT = 3600.0


class VideoContext:
    """Registered names, the job registry and where things live (see the module
    docstring), shared by the service's processes. `activated(key, pid)`, if given, hears
    of every upload job that starts (key `("video", id)`; the simulator's check)."""

    blobs = "video.blobs"
    views = "video.views"
    recommender = "video.recommender"
    jobs = "video.jobs"
    sessions = "video.sessions"
    catalog = "video.catalog"

    def __init__(self, node: Node, regions: tuple[str, ...], nodes: Iterable[str] | None = None,
                 activated: Callable[[Any, Pid], None] | None = None) -> None:
        self.registry = Registry(node, "video")
        self.regions = regions
        self.nodes = check_nodes(nodes if nodes is not None else [node.name])
        if node.name not in self.nodes:
            raise ValueError(f"node {node.name!r} is not in the video node list {list(self.nodes)!r:.200}")
        self.activated = activated

    @staticmethod
    def edge(region: str) -> str:
        return f"video.edge.{region}"

    def home(self, video: Any) -> str:
        """The node of `video`: its catalogue record, upload job and blobs."""
        return node_of(video, self.nodes)

    def hash_home(self, digest: str) -> str:
        """The node whose catalogue holds content hash `digest`."""
        return node_of(("hash", digest), self.nodes)

    def model_home(self, name: str) -> str:
        """The node of the recommender or the view counter (`name`)."""
        return node_of(name, self.nodes)

    def model(self, name: str) -> RemoteName:
        """The recommender or the view counter (`name`), on its node."""
        return RemoteName(name, self.model_home(name))


def manifest_of(video: Any, job: dict, segment_seconds: float) -> dict[str, Any]:
    """The playback manifest of a ready video (HLS-like: one entry per rendition)."""
    return {"video": video, "segment_seconds": segment_seconds, "thumbnails": job["thumbs"],
            "renditions": [{"name": name, "kbps": BY_NAME[name].kbps, "width": job["done"][name]["width"],
                            "height": job["done"][name]["height"], "segments": job["done"][name]["segments"]}
                           for name in job["ladder"]]}


class VideoCatalog(EventSourcedServer):
    """The gateway: `init(store, key, config, ctx)`. Every video's metadata and status
    (`("videos", id)`) and the content hashes (`("hashes", sha256)` -> video) are records
    (see `storage.persistent`): a snapshot writes those that changed, however many."""

    snapshot_every = 1000

    def init(self, store: Store, key: Any, config: VideoConfig, ctx: VideoContext) -> None:
        super().init(store, key)
        self.config = config
        self.ctx = ctx
        # Backoff: a job that crashes on every start (a full disk) must not spin the node.
        self.job_spec = ChildSpec("job", UploadJob, args=(store,), restart="transient",
                                  backoff=Backoff(min_delay=0.05, max_delay=2.0))
        self.continue_with("boot")

    def initial_state(self) -> dict[str, Any]:
        return {}

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        self.videos: dict[Any, dict] = self.take_table("videos", records)
        self.hashes: dict[str, Any] = self.take_table("hashes", records)

    def apply(self, event: list) -> None:
        if event[0] == "new":
            self.videos[event[1]] = dict(event[2], status="uploading")
        elif event[0] == "status":
            self.videos[event[1]]["status"] = event[2]
        else:
            self.hashes[event[1]] = event[2]
            self.put_record(("hashes", event[1]), event[2])
            return
        self.put_record(("videos", event[1]), self.videos[event[1]])

    async def handle_continue(self, arg: str) -> None:
        assert arg == "boot"
        for video, meta in list(self.videos.items()):
            if meta["status"] not in TERMINAL and self.ctx.registry.lookup(("job", video)) is None:
                await self._launch(video, meta)
            elif meta["status"] == "ready" and len(self.ctx.nodes) > 1:
                self._announce(video, meta)

    async def _launch(self, video: Any, meta: dict) -> None:
        await start_child(self, self.ctx.jobs, self.job_spec, ("video", video), meta, self.config, self.ctx)

    def handle_cast(self, msg: tuple) -> None:
        video, status = msg[1], msg[2]
        meta = self.videos.get(video)
        if msg[0] == "status" and meta is not None and meta["status"] != status:
            self.persist(["status", video, status])
            if status == "ready":
                self._announce(video, meta)

    def _announce(self, video: Any, meta: dict) -> None:
        """Tell the recommender that `video` is in the catalogue."""
        self.cast(self.ctx.model(self.ctx.recommender), ("title", video, meta["genres"]))

    def handle_call(self, req: tuple, caller: Any) -> Any:
        tag = req[0]
        if tag == "start":
            return self._start_upload(req[1], req[2])
        if tag == "job":
            return self._to_job(req[1], req[2], caller)
        if tag == "manifest":
            return self._manifest(req[1])
        if tag == "hash":
            if (home := self.ctx.hash_home(req[2])) != self.node.name:
                return UploadError(f"content hash {req[2]} lives on node {home}, not on {self.node.name}")
            owner = self.hashes.get(req[2])
            if owner is None:
                self.persist(["hash", req[2], req[1]])
                return req[1]
            return owner
        if tag == "videos":
            return {v: m["status"] for v, m in self.videos.items()}
        if tag == "prefetch":
            return self._prefetch_keys(req[1])
        return ValueError(f"video.catalog: unknown request {req!r:.200}")

    def _start_upload(self, video: Any, meta: dict) -> Any:
        known = self.videos.get(video)
        if known is not None:
            if {k: known[k] for k in meta} != meta:
                return UploadError(f"video {video!r} exists with other metadata")
            return video  # a retried start
        if (home := self.ctx.home(video)) != self.node.name:
            return UploadError(f"video {video!r} lives on node {home}, not on {self.node.name}: "
                               "the caller's node list differs")
        if len(self.videos) >= MAX_VIDEOS:
            return LimitExceeded(f"video.catalog holds {MAX_VIDEOS} videos; {video!r} refused")
        self.persist(["new", video, meta])
        return self._started(video, meta)

    async def _started(self, video: Any, meta: dict) -> Any:
        await self._launch(video, meta)
        return video

    def _job_state(self, video: Any) -> dict | None:
        stored = self.store.read(("video", video))
        return None if stored is None else stored[1]

    def _to_job(self, video: Any, req: tuple, caller: Any) -> Any:
        pid = self.ctx.registry.lookup(("job", video))
        if pid is not None:
            self.node.forward(pid, req, caller)  # the job answers the caller itself
            return NoReply
        meta = self.videos.get(video)
        if meta is None:
            return UploadError(f"no video {video!r}")
        job = self._job_state(video)
        if job is None or job["status"] not in TERMINAL:
            return UploadError(f"video {video!r}: its job is restarting; retry")
        if req[0] == "status":
            return {"video": video, "status": job["status"], "received": len(job["chunks"]),
                    "chunks": job["chunks_total"], "ladder": job["ladder"], "done": sorted(job["done"]),
                    "reason": job["reason"], "source": job["source"]}
        if req[0] == "chunk" and job["chunks"].get(str(req[1])) == req[3]:
            return {"chunk": req[1], "received": len(job["chunks"])}  # a late retry of a stored chunk
        return UploadError(f"video {video!r} is {job['status']}")

    def _manifest(self, video: Any) -> Any:
        job = self._job_state(video)
        if job is None or job["status"] != "ready":
            return UploadError(f"video {video!r} is not ready "
                               f"({job['status'] if job else 'unknown'})")
        return manifest_of(video, job, self.config.segment_seconds)

    def _prefetch_keys(self, videos: list) -> list:
        keys = []
        for video in videos:
            job = self._job_state(video)
            if job is not None and job["status"] == "ready":
                for name in job["ladder"][:2]:
                    keys += [("seg", video, name, i) for i in range(min(PREFETCH_SEGMENTS, job["done"][name]["segments"]))]
        return keys


class Origin:
    """Where edge caches fetch from: the store's blobs, and what is popular."""

    def __init__(self, ctx: VideoContext) -> None:
        self.ctx = ctx

    async def fetch(self, proc: Process, key: tuple) -> bytes:
        """Blob `key` (`(kind, video, ...)`), from its video's node."""
        return await entity_call(proc, RemoteName(self.ctx.blobs, self.ctx.home(key[1])), key, ("get",))

    async def popular_segments(self, proc: Process, n: int) -> list:
        top = await proc.call(self.ctx.model(self.ctx.views), ("top", n))
        keys = []
        for node in sorted({self.ctx.home(video) for video in top}):
            mine = [video for video in top if self.ctx.home(video) == node]
            keys += await proc.call(RemoteName(self.ctx.catalog, node), ("prefetch", mine))
        return keys


async def session(proc: Process, ctx: VideoContext, caller: Any, user: Any, video: Any, device: str,
                  region: str, bandwidth: list[float], loss: float) -> None:
    """One playback: segment by segment through the regional edge, each rendition chosen
    by `abr`; the download of a segment takes its nominal size over the bandwidth of that
    moment (virtual time). Ends by sending the viewing event and answering `caller`."""
    try:
        manifest = await proc.call(RemoteName(ctx.catalog, ctx.home(video)), ("manifest", video))
        if isinstance(manifest, Exception):
            raise manifest
        seg_s = manifest["segment_seconds"]
        renditions = [Rendition(r["name"], r["width"], r["height"], r["kbps"]) for r in manifest["renditions"]]
        count = min(r["segments"] for r in manifest["renditions"])
        edge = VideoContext.edge(region)
        current = abr.choose(renditions, bandwidth[0], 0.0, device)
        buffer = stalled = 0.0
        chosen, rebuffers, nbytes = [], 0, 0
        for i in range(count):
            kbps = bandwidth[min(i, len(bandwidth) - 1)]
            data = await proc.call(edge, ("get", ("seg", video, current.name, i)))
            if isinstance(data, Exception):
                raise data
            nbytes += len(data)
            took = current.kbps * seg_s / max(kbps, 1.0)
            await proc.sleep(took)
            if i and took > buffer:
                rebuffers += 1
                stalled += took - buffer
            buffer = max(0.0, buffer - took) + seg_s
            chosen.append(current.name)
            if buffer > MAX_BUFFER_S:  # a full buffer: wait while it plays
                await proc.sleep(buffer - MAX_BUFFER_S)
                buffer = MAX_BUFFER_S
            current = abr.adjust(renditions, current, kbps, buffer, loss, device)
        proc.cast(ctx.model(ctx.recommender), ("viewed", user, video, 1.0))
        proc.cast(ctx.model(ctx.views), ("view", video))
        proc.reply(caller, {"video": video, "renditions": chosen, "rebuffers": rebuffers,
                            "stalled_s": round(stalled, 3), "bytes": nbytes})
    except Exception as exc:  # noqa: BLE001 - the player hears why its session failed
        proc.reply(caller, exc)


class Player(GenServer):
    """Starts playback sessions: `("play", user, video, device, region, bandwidth, loss)`;
    the session itself answers the caller when it ends."""

    def init(self, ctx: VideoContext) -> None:
        self.ctx = ctx
        self.spec = ChildSpec("session", session, args=(ctx,), restart="temporary")

    async def handle_call(self, req: tuple, caller: Any) -> Any:
        assert req[0] == "play", req
        await start_child(self, self.ctx.sessions, self.spec, caller, *req[1:])
        return NoReply


class VideoService(TreeService):
    """The API; see the module docstring. `max_restarts`: what the top supervisor allows
    in 5 s before the node's video service gives up; `nodes`: the media node list (this
    node among them; default: this node alone); `activated`: see `VideoContext`."""

    name = "video_sup"
    strategy = "rest_for_one"

    def __init__(self, node: Node, store: Store, config: VideoConfig | None = None, *,
                 regions: tuple[str, ...] = ("eu", "us"), seed: int = 0, cache_bytes: int = 4 << 20,
                 prefetch_every: float = 30.0, prefetch_top: int = 5, max_restarts: int = 100,
                 nodes: Iterable[str] | None = None, activated: Callable[[Any, Pid], None] | None = None) -> None:
        if not regions or len(set(regions)) != len(regions) or not all(type(r) is str and r for r in regions):
            raise ValueError(f"regions must be distinct non-empty names, got {regions!r}")
        super().__init__(node, store, max_restarts)
        self.config = config or VideoConfig()
        self.ctx = VideoContext(node, tuple(regions), nodes, activated)
        self.seed = seed
        self.cache_bytes = cache_bytes
        self.prefetch = (prefetch_every, prefetch_top)

    def children(self) -> list[ChildSpec]:
        store, ctx = self.store, self.ctx
        origin = Origin(ctx)
        edges = [ChildSpec(region, EdgeCache, args=(region, self.cache_bytes, origin, *self.prefetch),
                           options={"name": ctx.edge(region)}) for region in ctx.regions]
        return [
            ChildSpec("blobs", Entities, args=(store, Blob, 60.0), options={"name": ctx.blobs}),
            ChildSpec("views", ViewCounter, args=(store, ("video", "views")), options={"name": ctx.views}),
            ChildSpec("recommender", Recommender, args=(store, ("video", "recommender"), self.seed),
                      options={"name": ctx.recommender}),
            ChildSpec("edges", Supervisor, args=(edges, Flags("one_for_one", 100, 5.0))),
            ChildSpec("jobs", DynamicSupervisor, args=(DynamicFlags(max_restarts=100, max_seconds=5.0,
                                                                    max_children=MAX_VIDEOS),),
                      options={"name": ctx.jobs}),
            ChildSpec("sessions", DynamicSupervisor, args=(DynamicFlags(max_children=1_000_000),),
                      options={"name": ctx.sessions}),
            ChildSpec("player", Player, args=(ctx,), options={"name": "video.player"}),
            ChildSpec("catalog", VideoCatalog, args=(store, ("video", "catalog"), self.config, ctx),
                      options={"name": ctx.catalog}),
        ]

    # -- uploads ------------------------------------------------------------------------------

    def start_upload(self, caller: Node | Process, video: Any, owner: Any, title: str, genres: list[str],
                     chunks: int) -> Any:
        """Open an upload of `chunks` chunks (retrying is safe); resolves to the video id."""
        check_id(video, "video id")
        check_id(owner, "owner id")
        if type(title) is not str or not 0 < len(title) <= 500:
            raise ValueError(f"title must be a non-empty str of at most 500 characters, got {title!r:.100}")
        if not isinstance(genres, (list, tuple)) or not all(type(g) is str and g for g in genres) or len(genres) > 20:
            raise ValueError(f"genres must be a list of at most 20 non-empty names, got {genres!r:.100}")
        if type(chunks) is not int or not 1 <= chunks <= MAX_CHUNKS:
            raise ValueError(f"chunks must be an int in 1..{MAX_CHUNKS}, got {chunks!r}")
        meta = {"owner": owner, "title": title, "genres": sorted(set(genres)), "chunks": chunks}
        return self._at_home(caller, video, ("start", video, meta))

    def upload_chunk(self, caller: Node | Process, video: Any, n: int, data: bytes, crc: int | None = None) -> Any:
        """Send chunk `n` (its crc32, computed here if not given); resolves once it is stored."""
        if type(data) is not bytes:
            raise ValueError(f"chunk data must be bytes, got {type(data).__name__}")
        crc = zlib.crc32(data) if crc is None else crc
        return self._at_home(caller, check_id(video, "video id"), ("job", video, ("chunk", n, data, crc)))

    def status(self, caller: Node | Process, video: Any) -> Any:
        """`{"video", "status", "received", "chunks", "ladder", "done", "reason", "source"}`."""
        return self._at_home(caller, check_id(video, "video id"), ("job", video, ("status",)))

    def manifest(self, caller: Node | Process, video: Any) -> Any:
        return self._at_home(caller, check_id(video, "video id"), ("manifest", video))

    def videos(self, caller: Node | Process) -> Any:
        """`{video: status}` of the videos of this service's node."""
        return self._call(caller, self.ctx.catalog, ("videos",))

    def _at_home(self, caller: Node | Process, video: Any, message: tuple) -> Any:
        """Call the catalogue of `video`'s node."""
        return self._call_on(caller, self.ctx.catalog, self.ctx.home(video), message)

    def _call_on(self, caller: Node | Process, name: str, node: str, message: tuple) -> Any:
        """Call `name` on node `node` (on this service's node, as `_call` does)."""
        if node == self.node.name:
            return self._call(caller, name, message)
        return request(caller, RemoteName(name, node), message, 5.0)

    # -- playback and recommendations -------------------------------------------------------

    def play(self, caller: Node | Process, user: Any, video: Any, device: str, region: str,
             bandwidth: float | list[float], loss: float = 0.0) -> Any:
        """Play the whole video; resolves to the session's report (renditions chosen,
        rebuffers, bytes). `bandwidth` is kbps, or one kbps value per segment."""
        check_id(user, "user id")
        check_id(video, "video id")
        abr.check_device(device)
        if region not in self.ctx.regions:
            raise ValueError(f"unknown region {region!r}; known: {', '.join(self.ctx.regions)}")
        trace = [bandwidth] if type(bandwidth) in (int, float) else list(bandwidth)
        if not trace or not all(type(b) in (int, float) and 0 < b < 1e7 for b in trace):
            raise ValueError(f"bandwidth must be kbps > 0 (or a list of them), got {bandwidth!r:.100}")
        if type(loss) not in (int, float) or not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be a fraction in [0, 1], got {loss!r}")
        return self._call(caller, "video.player", ("play", user, video, device, region,
                                                   [float(b) for b in trace], float(loss)), SESSION_TIMEOUT)

    def recommend(self, caller: Node | Process, user: Any, n: int = 10) -> Any:
        recommender = self.ctx.recommender
        return self._call_on(caller, recommender, self.ctx.model_home(recommender),
                             ("recommend", check_id(user, "user id"), n))

    def views(self, caller: Node | Process, video: Any) -> Any:
        views = self.ctx.views
        return self._call_on(caller, views, self.ctx.model_home(views), ("count", check_id(video, "video id")))

    def cache_stats(self, caller: Node | Process, region: str) -> Any:
        return self._call(caller, self.ctx.edge(region), ("stats",))
