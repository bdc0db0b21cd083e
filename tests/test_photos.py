"""Instagram-style photos through the public API: reading images and making thumbnails
with numpy, then the service on a real LMDB store (uploads, thumbnails, failures recorded,
jobs resumed after a crash and a node restart, the follower feed, bad input), and once on
the real-time driver, where the resizers run on real threads."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from actors import Node
from apps.photos import (BadImage, BadRequest, PhotoConfig, PhotoExists, PhotoService, PhotoTooLarge,
                         UnknownPhoto, synthetic_photo)
from apps.photos.image import read_header, read_image, thumbnail, thumbnail_size, write_image
from storage import Store, StorageIOError
from supervision import restart_child, terminate_child

# -- images ------------------------------------------------------------------------------------


def test_a_header_is_checked_before_anything_is_stored():
    good = synthetic_photo(1, 30, 20)
    assert read_header(good)[:3] == (30, 20, 3)
    assert read_header(b"P5\n# a comment\n4 2\n255\n" + bytes(8))[:3] == (4, 2, 1)
    for data, message in [(b"\x89PNG\r\n\x1a\n", "not a PPM"), (b"P6\n30 20\n", "cut short"),
                          (b"P6\n3 2\n65535\n" + bytes(36), "maxval 65535"),
                          (b"P6\n99999 2\n255\n", "1..16384 pixels a side"),
                          (good[:-1], "is 1813 bytes, this one has 1812"), (good + b"x", "this one has 1814"),
                          (b"P6 3 2 255", "single blank before the pixels")]:
        with pytest.raises(BadImage, match=message):
            read_header(data)


def test_thumbnails_keep_the_aspect_ratio_and_never_upscale():
    assert thumbnail_size(1600, 900, 640) == (640, 360)
    assert thumbnail_size(1080, 1350, 150) == (150, 188)  # a 4:5 portrait
    assert thumbnail_size(500, 300, 1080) == (500, 300)  # narrower than the size: kept as it is
    assert thumbnail_size(5000, 1, 150) == (150, 1)


def test_a_thumbnail_averages_the_pixels_it_covers():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:2, :2] = 200  # the top-left quarter is bright
    pixels[2:, 2:] = [10, 20, 30]
    small = read_image(thumbnail(write_image(pixels), 2))
    assert small.shape == (2, 2, 3)
    assert small[0, 0].tolist() == [200, 200, 200] and small[1, 1].tolist() == [10, 20, 30]
    assert small[0, 1].tolist() == [0, 0, 0]
    grey = read_image(thumbnail(synthetic_photo(3, 300, 200, grey=True), 150))
    assert grey.shape == (100, 150, 1)


# -- the service on one node ------------------------------------------------------------------------


def one_node(path, seed=1, **config):
    node = Node(seed=seed)
    store = Store(path, node, mode="process")
    photos = PhotoService(node, store, PhotoConfig(**{"scale": 0.1, **config}))
    photos.start()
    return node, store, photos


def test_an_upload_is_acknowledged_then_gets_three_thumbnails(tmp_path):
    node, _, photos = one_node(tmp_path / "store")
    run = node.run_until_complete
    data = synthetic_photo(1, 320, 180)
    assert run(photos.upload(node, 7, "p1", data, caption="sunset")) == {"photo": "p1", "status": "processing"}
    node.run_for(2.0)
    status = run(photos.status(node, 7, "p1"))
    assert status["status"] == "ready" and status["reason"] is None
    assert status["thumbs"] == {"thumbnail": [15, 8], "medium": [64, 36], "large": [108, 61]}
    assert (status["width"], status["height"], status["size"], status["caption"]) == (320, 180, len(data), "sunset")
    assert read_image(run(photos.thumbnail(node, 7, "p1", "large"))).shape == (61, 108, 3)
    assert run(photos.upload(node, 7, "p1", data, caption="sunset"))["status"] == "ready"  # a retry


def test_bad_uploads_are_refused_by_name_and_nothing_is_stored(tmp_path):
    node, _, photos = one_node(tmp_path / "store", max_bytes=4096)
    run = node.run_until_complete
    with pytest.raises(PhotoTooLarge, match="at most 4096 bytes, this one has 4097"):
        photos.upload(node, 7, "big", bytes(4097))
    with pytest.raises(BadImage, match="not a PPM"):
        run(photos.upload(node, 7, "gif", b"GIF89a" + bytes(100)))
    with pytest.raises(BadImage, match="this one has"):
        run(photos.upload(node, 7, "cut", synthetic_photo(1, 20, 20)[:-5]))
    with pytest.raises(BadRequest, match="user id is an int"):
        photos.upload(node, "seven", "p", synthetic_photo(1, 4, 4))
    with pytest.raises(BadRequest, match="photo id is a str of 1..48"):
        photos.upload(node, 7, "x" * 49, synthetic_photo(1, 4, 4))
    with pytest.raises(BadRequest, match="caption is a str of at most 2200"):
        photos.upload(node, 7, "p", synthetic_photo(1, 4, 4), caption="x" * 2201)
    for photo in ("big", "gif", "cut", "p"):
        with pytest.raises(UnknownPhoto):
            run(photos.status(node, 7, photo))
    run(photos.upload(node, 7, "p", synthetic_photo(1, 4, 4)))
    with pytest.raises(PhotoExists, match="with other bytes; it is kept"):
        run(photos.upload(node, 7, "p", synthetic_photo(2, 4, 4)))
    with pytest.raises(BadRequest, match="thumbnail size is one of"):
        photos.thumbnail(node, 7, "p", "huge")
    node.run_for(2.0)
    assert run(photos.status(node, 7, "p"))["status"] == "ready"


def test_photos_and_thumbnails_larger_than_a_part_are_stored_in_parts(tmp_path):
    node, store, photos = one_node(tmp_path / "store", part_bytes=4096)
    run = node.run_until_complete
    data = synthetic_photo(4, 400, 300)  # 360 KB: 88 parts
    run(photos.upload(node, 7, "p", data))
    node.run_for(2.0)
    large = run(photos.thumbnail(node, 7, "p", "large"))  # 108 x 81 x 3: 7 parts
    assert read_image(large).shape == (81, 108, 3) and len(large) > 4 * 4096
    assert store.read(("photo.thumb", 7, "p", "large", 6)) is not None
    assert store.read(("photo.part", 7, "p", 87))[1]["data"] == data[87 * 4096:]
    with pytest.raises(ValueError, match="part_bytes must be at most 4194304"):
        PhotoConfig(part_bytes=8 << 20)


def test_the_real_limit_is_ten_megabytes(tmp_path):
    node, _, photos = one_node(tmp_path / "store")
    assert PhotoConfig().max_bytes == 10 * 1024 * 1024
    with pytest.raises(PhotoTooLarge, match="at most 10485760 bytes"):
        photos.upload(node, 1, "huge", bytes(10 * 1024 * 1024 + 1))


def test_a_size_that_keeps_failing_fails_the_photo_with_the_reason(tmp_path):
    node, _, photos = one_node(tmp_path / "store", fail=("medium",), max_attempts=3)
    run = node.run_until_complete
    run(photos.upload(node, 7, "p", synthetic_photo(1, 200, 100)))
    node.run_for(5.0)
    status = run(photos.status(node, 7, "p"))
    assert status["status"] == "failed" and "medium thumbnail failed 3 times" in status["reason"]
    assert "injected resizer failure" in status["reason"]
    assert set(status["thumbs"]) == {"thumbnail", "large"}  # the others were made and kept


def test_jobs_resume_after_a_node_restart_and_acknowledged_photos_are_kept(tmp_path):
    node, store, photos = one_node(tmp_path / "store")
    run = node.run_until_complete
    sources = {f"p{i}": synthetic_photo(i, 100 + i, 80) for i in range(6)}
    for photo, data in sources.items():
        run(photos.upload(node, 7, photo, data))
    waiting = [p for p in sources if store.read(("photo", 7, p))[1]["status"] == "processing"]
    assert len(waiting) >= 4  # (the thumbnailer runs two jobs at a time)
    store.close()  # the node stops with those still waiting for thumbnails
    node2, store2, again = one_node(tmp_path / "store", seed=2)
    node2.run_for(5.0)
    for photo, data in sources.items():
        status = node2.run_until_complete(again.status(node2, 7, photo))
        assert status["status"] == "ready" and status["size"] == len(data)


def test_a_killed_job_is_started_again_and_finishes(tmp_path):
    node, _, photos = one_node(tmp_path / "store")
    run = node.run_until_complete
    run(photos.upload(node, 7, "p", synthetic_photo(1, 150, 90)))
    node.run_for(0.01)
    thumbnailer = node.whereis("photos.thumbnailer")
    jobs = [pid for pid in node.processes() if node.process_info(pid)["parent"] == thumbnailer]
    assert jobs, "the job should be running"
    node.exit(jobs[0], "kill")
    node.run_for(3.0)
    assert run(photos.status(node, 7, "p"))["status"] == "ready"


def test_a_ready_photo_is_posted_once_the_feed_is_back_however_long_it_was_away(tmp_path):
    node, _, photos = one_node(tmp_path / "store", max_job_crashes=2, retry_after=0.5, call_timeout=0.5)
    run = node.run_until_complete
    run(photos.follow(node, 2, 7))
    sup = node.whereis("photos_sup")
    run(terminate_child(node, sup, "feed"))  # the timeline processes are gone
    run(photos.upload(node, 7, "p", synthetic_photo(1, 64, 64)))
    node.run_for(10.0)  # many more failed posts than max_job_crashes
    status = run(photos.status(node, 7, "p"))
    assert (status["status"], status["post"]) == ("ready", None)  # made, not failed, not posted
    run(restart_child(node, sup, "feed"))
    node.run_for(3.0)
    assert run(photos.status(node, 7, "p"))["post"] is not None
    assert [p["photo"] for p in run(photos.feed_page(node, 2))["photos"]] == ["p"]


def test_followers_see_ready_photos_in_their_feed(tmp_path):
    node, _, photos = one_node(tmp_path / "store")
    run = node.run_until_complete
    run(photos.follow(node, 2, 7))
    run(photos.upload(node, 7, "mine", synthetic_photo(1, 64, 64), caption="hello"))
    run(photos.upload(node, 3, "other", synthetic_photo(2, 64, 64)))  # not followed by 2
    assert run(photos.feed_page(node, 2))["photos"] == []  # not ready yet: not posted
    node.run_for(2.0)
    page = run(photos.feed_page(node, 2))
    assert [(p["user"], p["photo"], p["caption"]) for p in page["photos"]] == [(7, "mine", "hello")]
    assert page["cursor"] is None and set(page["photos"][0]["thumbs"]) == {"thumbnail", "medium", "large"}
    assert run(photos.status(node, 7, "mine"))["post"] == page["photos"][0]["post"]
    with pytest.raises(BadRequest, match="cannot follow themselves"):
        run(photos.follow(node, 2, 2))


def test_an_unusable_store_path_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a store")
    with pytest.raises(StorageIOError, match="cannot open the store"):
        one_node(tmp_path / "file" / "store")


# -- real threads ------------------------------------------------------------------------------------


def test_real_size_thumbnails_on_resizer_threads(tmp_path):
    data = synthetic_photo(5, 1600, 1200)  # 5.8 MB, in two stored parts

    async def main() -> dict:
        async with Node() as node:
            store = Store(tmp_path / "store", node, mode="process")
            photos = PhotoService(node, store)
            photos.start()
            await photos.upload(node, 1, "big", data)
            deadline = time.monotonic() + 60  # a bound on a hang, not a measurement
            while (status := await photos.status(node, 1, "big"))["status"] == "processing":
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.05)
            await photos.stop()
            store.close()
            return status

    status = asyncio.run(main())
    assert status["status"] == "ready", status
    assert status["thumbs"] == {"thumbnail": [150, 112], "medium": [640, 480], "large": [1080, 810]}
    assert status["size"] == len(data)
