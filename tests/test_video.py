"""Video: ladder, ABR, LRU, recommender maths and transcoding on real frames."""
import zlib

import numpy as np
import pytest

from apps.video import abr, ladder
from apps.video.cache import LRU
from apps.video.recommend import als, cosine, genre_matrix, hybrid_scores
from apps.video.transcode import (SourceError, Transcoder, TranscodeFault, encode_segments, read_source, resize,
                                  synthetic_source, thumbnails, transcode)
from apps.video.upload import VideoConfig


# -- ladder ---------------------------------------------------------------------------------

@pytest.mark.parametrize("height,top", [(144, "360p"), (360, "360p"), (479, "360p"), (480, "480p"),
                                        (720, "720p"), (1080, "1080p"), (1440, "1440p"), (2160, "2160p"),
                                        (4320, "2160p")])
def test_ladder_from_the_source_height(height, top):
    names = [r.name for r in ladder.ladder_for(height)]
    assert names[:3] == ["144p", "240p", "360p"] and names[-1] == top
    assert names == [r.name for r in ladder.LADDER[:len(names)]]


def test_ladder_refuses_impossible_sources():
    with pytest.raises(ValueError, match="source height"):
        ladder.ladder_for(100)
    with pytest.raises(ValueError, match="source height"):
        ladder.ladder_for(1080.0)


# -- adaptive bitrate ---------------------------------------------------------------------------

FULL = list(ladder.LADDER)


def test_abr_uses_80_percent_of_bandwidth_with_a_healthy_buffer_else_60():
    assert abr.choose(FULL, 4000, 0.5, "desktop").name == "720p"    # 3200 kbps usable
    assert abr.choose(FULL, 4000, 0.2, "desktop").name == "480p"    # 2400 kbps usable
    assert abr.choose(FULL, 100, 1.0, "desktop").name == "144p"     # nothing fits: the lowest


def test_abr_caps_by_device():
    assert abr.choose(FULL, 100_000, 1.0, "mobile").name == "1080p"
    assert abr.choose(FULL, 100_000, 1.0, "smart_tv").name == "2160p"
    with pytest.raises(ValueError, match="unknown device"):
        abr.choose(FULL, 1000, 1.0, "toaster")


def test_abr_steps_down_on_a_starving_lossy_buffer_and_up_on_a_full_clean_one():
    r720, r480, r1080 = ladder.BY_NAME["720p"], ladder.BY_NAME["480p"], ladder.BY_NAME["1080p"]
    assert abr.adjust(FULL, r720, 5000, 3.0, 0.05, "desktop") == r480
    assert abr.adjust(FULL, r720, 2000, 20.0, 0.0, "desktop") == r480       # over the bandwidth
    assert abr.adjust(FULL, r720, 9000, 40.0, 0.0, "desktop") == r1080
    assert abr.adjust(FULL, r720, 5000, 40.0, 0.0, "desktop") == r720       # 6000 does not fit
    assert abr.adjust(FULL, r1080, 50_000, 40.0, 0.0, "mobile") == r1080    # device cap
    assert abr.adjust(FULL, r720, 9000, 20.0, 0.01, "desktop") == r720


# -- LRU ------------------------------------------------------------------------------------------

def test_lru_evicts_the_least_recently_used_by_bytes():
    cache = LRU(10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    cache.put("c", b"cccc")          # evicts b
    assert "b" not in cache and cache.get("a") and cache.get("c")
    assert cache.get("b") is None
    cache.put("huge", b"x" * 11)     # larger than the cache: never kept
    assert "huge" not in cache and cache.used == 8
    assert cache.stats() == {"hits": 3, "misses": 1, "evictions": 1, "hit_ratio": 0.75, "used": 8, "items": 2}


def test_lru_capacity_is_checked():
    with pytest.raises(ValueError, match="capacity"):
        LRU(0)


# -- recommender maths --------------------------------------------------------------------------------

def test_genre_vectors_and_cosine():
    m = genre_matrix([["drama"], ["comedy", "drama"], []])
    assert m.tolist() == [[0, 1], [1, 1], [0, 0]]
    sim = cosine(m, m)
    assert sim[0, 0] == pytest.approx(1.0) and sim[0, 1] == pytest.approx(1 / np.sqrt(2)) and sim[2, 2] == 0


def test_als_fits_a_low_rank_matrix_and_is_seeded():
    rng = np.random.default_rng(0)
    r = rng.random((12, 3)) @ rng.random((3, 9))
    u, v = als(r, 3, 1e-3, 30, seed=4)
    assert np.abs(u @ v.T - r).max() < 0.05
    u2, v2 = als(r, 3, 1e-3, 30, seed=4)
    assert np.array_equal(u, u2) and np.array_equal(v, v2)


def test_hybrid_scores_prefer_what_similar_users_watched():
    # users 0 and 1 watch titles 0-1; user 1 also watched 2; title 3 is another genre
    r = np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 1.0, 0], [0, 0, 0, 1.0]])
    genres = genre_matrix([["a"], ["a"], ["a"], ["b"]])
    u, v = als(r, 2, 0.05, 20, seed=1)
    score = hybrid_scores(r, 0, genres, np.array([5.0, 5.0, 1.0, 1.0]), u, v)
    assert score[2] > score[3]
    new = hybrid_scores(r, None, genres, np.array([0.0, 9.0, 0.0, 0.0]), None, None)
    assert new.argmax() == 1  # a new user gets what is popular


# -- transcoding --------------------------------------------------------------------------------------

def test_synthetic_sources_are_deterministic_and_readable():
    a = synthetic_source(3, 1920, 1080, 2.0, 0.02)
    assert a == synthetic_source(3, 1920, 1080, 2.0, 0.02) and a != synthetic_source(4, 1920, 1080, 2.0, 0.02)
    frames, fps, nominal = read_source(a)
    assert frames.shape == (20, 22, 38, 3) and fps == 10 and nominal == (1920, 1080)


def test_bad_sources_are_named():
    good = synthetic_source(1, 640, 360, 1.0, 0.05)
    with pytest.raises(SourceError, match="shorter than"):
        read_source(b"xx")
    with pytest.raises(SourceError, match="not a raw frame stream"):
        read_source(b"NOPE!" + good[5:])
    with pytest.raises(SourceError, match="header says"):
        read_source(good[:-1])


def test_resize_averages_areas():
    a = np.full((1, 4, 4, 3), 10, np.uint8)
    a[:, :2, :2] = 50
    assert resize(a, 2, 2)[0, :, :, 0].tolist() == [[50, 10], [10, 10]]
    assert resize(a, 8, 8)[0, :4, :4, 0].tolist() == [[50] * 4] * 4  # upscaling repeats
    frames, _, _ = read_source(synthetic_source(2, 1280, 720, 1.0, 0.1))
    assert abs(resize(frames, 32, 18).mean() - frames.mean()) < 2.0


def test_a_rendition_is_scaled_segmented_and_checksummed():
    src = synthetic_source(5, 1280, 720, 3.0, 0.05)
    out = transcode(src, ladder.BY_NAME["480p"], 0.05, 1.0)
    assert (out["width"], out["height"]) == (43, 24) and len(out["segments"]) == 3
    assert out["crcs"] == [zlib.crc32(s) for s in out["segments"]]
    first = np.frombuffer(zlib.decompress(out["segments"][0]), np.uint8).reshape(10, 24, 43, 3)
    assert first.shape[0] == 10
    assert len(encode_segments(np.zeros((25, 2, 2, 3), np.uint8), 10, 1.0)) == 3


def test_thumbnails_at_five_points():
    images = thumbnails(synthetic_source(5, 1280, 720, 2.0, 0.05), 0.1)
    assert len(images) == 5 and all(img.startswith(b"P6 32 18 255\n") for img in images)
    assert len(images[0]) == len(b"P6 32 18 255\n") + 32 * 18 * 3


def test_the_transcoder_worker_and_its_injected_fault():
    worker = Transcoder()
    src = synthetic_source(5, 640, 360, 1.0, 0.05)
    assert len(worker.on_receive(("rendition", src, ladder.BY_NAME["144p"], 0.05, 1.0, False))["segments"]) == 1
    with pytest.raises(TranscodeFault, match="144p"):
        worker.on_receive(("rendition", src, ladder.BY_NAME["144p"], 0.05, 1.0, True))


def test_video_config_limits():
    with pytest.raises(ValueError, match="scale"):
        VideoConfig(scale=0)
    with pytest.raises(ValueError, match="parallel"):
        VideoConfig(parallel=0)
