"""The video service's processes on the deterministic driver: uploads, transcoding,
restarts, playback through edge caches, recommendations."""
import zlib

import pytest
from conftest import arun

from actors import Node
from apps.video import BlobError, UploadError, VideoConfig, VideoService
from apps.video.ladder import ladder_for
from apps.video.transcode import synthetic_source
from storage import Store

pytestmark = pytest.mark.usefixtures("quiet_crash_reports")  # jobs and workers crash on purpose
SCALE = 0.02


def make(path, seed=3, creation=0, clock=0.0, **config):
    node = Node(seed=seed, creation=creation)
    node.advance(clock)
    store = Store(path, node)
    videos = VideoService(node, store, VideoConfig(scale=SCALE, segment_seconds=1.0, **config),
                          regions=("eu", "us"), cache_bytes=64 << 10, prefetch_every=5.0, prefetch_top=2)
    videos.start()
    return node, videos, store


@pytest.fixture
def service(tmp_path):
    node, videos, store = make(tmp_path / "video")
    yield node, videos, store
    store.close()


def call(node, fut):
    return node.run_until_complete(fut)


def chunks_of(source, n=4):
    size = -(-len(source) // n)
    return [source[i * size:(i + 1) * size] for i in range(n)]


def upload(node, videos, video, source, genres=("drama",), n=4, send=None):
    parts = chunks_of(source, n)
    call(node, videos.start_upload(node, video, "ann", f"title {video}", list(genres), len(parts)))
    for i in (range(len(parts)) if send is None else send):
        call(node, videos.upload_chunk(node, video, i, parts[i]))
    return parts


def test_an_upload_ends_ready_with_exactly_its_ladder(service):
    node, videos, store = service
    upload(node, videos, "v1", synthetic_source(1, 1280, 720, 3.0, SCALE))
    node.run_for(10.0)
    st = call(node, videos.status(node, "v1"))
    want = [r.name for r in ladder_for(720)]
    assert st["status"] == "ready" and st["ladder"] == want and sorted(st["done"]) == sorted(want)
    manifest = call(node, videos.manifest(node, "v1"))
    assert [r["name"] for r in manifest["renditions"]] == want and manifest["thumbnails"] == 5
    assert all(r["segments"] == 3 for r in manifest["renditions"])
    assert store.read(("seg", "v1", "720p", 2))[1]["crc"] == store.read(("video", "v1"))[1]["done"]["720p"]["crcs"][2]


def test_a_resumed_upload_keeps_every_acknowledged_chunk_and_refuses_bad_ones(service):
    node, videos, store = service
    parts = upload(node, videos, "v1", synthetic_source(2, 640, 360, 2.0, SCALE), send=[0, 2])
    job = videos.ctx.registry.lookup(("job", "v1"))
    node.exit(job, "kill")  # the job dies between chunks
    node.run_for(0.5)
    st = call(node, videos.status(node, "v1"))
    assert st["status"] == "uploading" and st["received"] == 2
    assert call(node, videos.upload_chunk(node, "v1", 2, parts[2]))["received"] == 2  # a retry
    with pytest.raises(UploadError, match="fails its checksum"):
        call(node, videos.upload_chunk(node, "v1", 1, parts[1], crc=zlib.crc32(parts[1]) + 1))
    with pytest.raises(UploadError, match="already stored"):
        call(node, videos.upload_chunk(node, "v1", 0, parts[1]))
    with pytest.raises(UploadError, match="chunk number"):
        call(node, videos.upload_chunk(node, "v1", 9, parts[1]))
    with pytest.raises(ValueError, match="chunks must be"):
        videos.start_upload(node, "v2", "ann", "t", [], 0)
    assert store.read(("video", "v1"))[1]["chunks"] == {"0": zlib.crc32(parts[0]), "2": zlib.crc32(parts[2])}
    for i in (1, 3):
        call(node, videos.upload_chunk(node, "v1", i, parts[i]))
    node.run_for(10.0)
    assert call(node, videos.status(node, "v1"))["status"] == "ready"


def test_blobs_are_never_overwritten(service):
    node, videos, _ = service
    from storage import entity_call
    blobs = node.whereis(videos.ctx.blobs)
    assert call(node, entity_call(node, blobs, ("x", 1), ("put", b"abc"))) == zlib.crc32(b"abc")
    assert call(node, entity_call(node, blobs, ("x", 1), ("put", b"abc"))) == zlib.crc32(b"abc")
    with pytest.raises(BlobError, match="not overwritten"):
        call(node, entity_call(node, blobs, ("x", 1), ("put", b"abd")))
    assert call(node, entity_call(node, blobs, ("x", 1), ("get",))) == b"abc"


def test_duplicate_content_fails_with_the_original_named(service):
    node, videos, _ = service
    source = synthetic_source(3, 640, 360, 2.0, SCALE)
    upload(node, videos, "v1", source)
    node.run_for(10.0)
    upload(node, videos, "v2", source, n=3)
    node.run_for(10.0)
    st = call(node, videos.status(node, "v2"))
    assert st["status"] == "failed" and "duplicate content: video 'v1'" in st["reason"]
    assert call(node, videos.status(node, "v1"))["status"] == "ready"


def test_a_rendition_that_keeps_failing_fails_the_job_with_a_reason(tmp_path):
    node, videos, store = make(tmp_path, fail=("480p",))
    upload(node, videos, "v1", synthetic_source(4, 854, 480, 2.0, SCALE))
    node.run_for(20.0)
    st = call(node, videos.status(node, "v1"))
    assert st["status"] == "failed" and st["reason"].startswith("480p failed 3 times: injected transcoder failure")
    assert store.read(("video", "v1"))[1]["attempts"] == {"480p": 3}
    store.close()


def test_killed_workers_and_jobs_redo_only_unfinished_renditions(service):
    node, videos, store = service
    upload(node, videos, "v1", synthetic_source(5, 1920, 1080, 2.0, SCALE))
    node.run_for(0.3)  # the first two tasks are done, the next two are running
    first = dict(store.read(("video", "v1"))[1]["done"])
    assert len(first) == 2
    job = node.get_process(videos.ctx.registry.lookup(("job", "v1")))
    for worker in list(job.running.values()):
        node.exit(worker, "kill")  # a killed transcoder thread is not the task's fault
    node.run_for(0.1)
    node.exit(videos.ctx.registry.lookup(("job", "v1")), "kill")
    node.run_for(10.0)
    done = store.read(("video", "v1"))[1]
    assert done["status"] == "ready" and done["attempts"] == {}
    for name, checkpoint in first.items():
        assert done["done"][name] == checkpoint  # not redone


def test_a_jobs_state_machine_state_is_its_status_and_a_restarted_job_resumes_in_it(service):
    node, videos, store = service
    parts = upload(node, videos, "v1", synthetic_source(6, 1280, 720, 2.0, SCALE), send=[0, 1, 2])
    job = lambda: node.get_process(videos.ctx.registry.lookup(("job", "v1")))  # noqa: E731
    assert job().current_state == "uploading"
    call(node, videos.upload_chunk(node, "v1", 3, parts[3]))
    node.run_for(0.1)
    first = job()
    assert first.current_state == "transcoding" == store.read(("video", "v1"))[1]["status"]
    node.exit(first.pid, "kill")
    for _ in range(100):  # restarted after its supervisor's backoff
        node.run_for(0.05)
        if videos.ctx.registry.lookup(("job", "v1")) is not None:
            break
    assert job() is not first and job().current_state == "transcoding"  # not processed again
    node.run_for(10.0)
    assert call(node, videos.status(node, "v1"))["status"] == "ready"
    assert videos.ctx.registry.lookup(("job", "v1")) is None  # a job that ended has stopped


def test_a_node_restart_resumes_unfinished_jobs(tmp_path):
    node, videos, store = make(tmp_path)
    parts = upload(node, videos, "v1", synthetic_source(6, 640, 360, 2.0, SCALE), send=[0, 1])
    upload(node, videos, "v2", synthetic_source(7, 1280, 720, 2.0, SCALE))
    node.run_for(0.3)
    store.crash()
    node, videos, store = make(tmp_path, creation=1, clock=node.now() + 1.0)
    node.run_for(0.5)
    assert call(node, videos.status(node, "v1"))["received"] == 2
    for i in (2, 3):
        call(node, videos.upload_chunk(node, "v1", i, parts[i]))
    node.run_for(10.0)
    assert call(node, videos.videos(node)) == {"v1": "ready", "v2": "ready"}
    store.close()


def test_playback_adapts_caches_and_feeds_the_recommender(service):
    node, videos, _ = service
    for i, genres in enumerate((["drama"], ["drama", "crime"], ["comedy"])):
        upload(node, videos, f"v{i}", synthetic_source(10 + i, 1920, 1080, 4.0, SCALE), genres)
    node.run_for(15.0)
    slow = call(node, videos.play(node, "ann", "v0", "laptop", "eu", [2000.0, 150.0, 150.0, 150.0]))
    assert slow["renditions"] == ["360p", "360p", "240p", "144p"] and slow["rebuffers"] == 2
    fast = call(node, videos.play(node, "bob", "v0", "mobile", "eu", 50_000.0))
    assert set(fast["renditions"]) == {"1080p"} and fast["rebuffers"] == 0
    again = call(node, videos.play(node, "cat", "v0", "mobile", "eu", 50_000.0))
    assert again["bytes"] == fast["bytes"]
    stats = call(node, videos.cache_stats(node, "eu"))
    assert stats["hits"] >= 4 and stats["misses"] >= 8 and 0 < stats["hit_ratio"] < 1
    with pytest.raises(ValueError, match="unknown region"):
        videos.play(node, "ann", "v0", "laptop", "mars", 1000.0)
    node.run_for(11.0)  # the views are flushed, the recommender refitted
    assert call(node, videos.views(node, "v0")) == 3
    assert call(node, videos.recommend(node, "ann", 2)) == ["v1", "v2"]  # drama fans get the drama first
    assert call(node, videos.recommend(node, "newcomer", 1)) == ["v0"]  # the popular title
    node.run_for(6.0)  # a prefetch round loads the popular title into the other region
    assert call(node, videos.cache_stats(node, "us"))["prefetched"] > 0


def test_transcoder_threads_killed_mid_job_on_the_real_time_driver(tmp_path):
    """Real pykka threads: every worker busy on a rendition is killed (its thread is
    stopped, its result dropped); the job redoes those renditions and ends ready."""
    import asyncio

    async def body():
        async with Node() as node:
            store = Store(tmp_path / "rt", node, mode="process")
            videos = VideoService(node, store, VideoConfig(scale=0.1, segment_seconds=1.0))
            videos.start()
            upload_parts = chunks_of(synthetic_source(9, 1920, 1080, 3.0, 0.1))
            await videos.start_upload(node, "v1", "ann", "title", ["drama"], len(upload_parts))
            for i, part in enumerate(upload_parts):
                await videos.upload_chunk(node, "v1", i, part)
            killed = []
            for _ in range(5000):  # bounded: the job starts its workers within a few passes
                pid = videos.ctx.registry.lookup(("job", "v1"))
                job = node.get_process(pid) if pid is not None else None
                if job is not None and job.running:
                    killed = list(job.running.values())
                    break
                await asyncio.sleep(0.001)
            assert killed, "the job never ran a worker"
            for worker in killed:
                assert node.get_process(worker) is not None
                node.exit(worker, "kill")
            for _ in range(3000):  # bounded wait, no timing assertion
                st = await videos.status(node, "v1")
                if st["status"] in ("ready", "failed"):
                    break
                await asyncio.sleep(0.01)
            assert all(node.get_process(worker) is None for worker in killed)
            await node.stop()
            stored = store.read(("video", "v1"))[1]
            store.close()
        return st, stored

    st, stored = arun(body())
    want = [r.name for r in ladder_for(1080)]
    assert st["status"] == "ready" and sorted(st["done"]) == sorted(want)
    assert stored["attempts"] == {}  # a killed worker is not its task's fault
