"""The case studies' persistent processes hold more than one stored value can: every
value that grew with traffic (a city's open rides, a cell's demand, an author's
followers, a fan-out job's followers, the video catalogue, the recommender's history,
the view counts) is a record of its own now. Each test gives the store a small
`max_value_bytes` and pushes one process past it: it keeps working, and a restart
brings everything back. (Before, the process crashed on its next save, again and again.)"""
from __future__ import annotations

import logging

import pytest

from actors import Node
from apps.rides import MatchConfig, RideService, matcher
from apps.rides.service import RideCity
from apps.timeline import TimelineConfig, TimelineService
from apps.video import VideoConfig, VideoService
from apps.video.recommend import Recommender, ViewCounter
from apps.video.service import VideoCatalog
from storage import Store

SMALL = 16 << 10  # the store's value limit in these tests
FAR = (37.70, -122.45)  # a pickup with no driver near: rides stay open


def call(node, fut):
    return node.run_until_complete(fut)


@pytest.fixture(autouse=True)
def quiet_crashes(caplog):
    caplog.set_level(logging.CRITICAL, logger="actors")  # restored after each test


def boot(path, seed=1, creation=0, clock=0.0):
    node = Node(seed=seed, creation=creation)
    node.advance(clock)
    return node, Store(path, node, mode="process", max_value_bytes=SMALL)


def test_a_city_and_a_cell_hold_more_open_rides_than_one_value_can(tmp_path, monkeypatch):
    monkeypatch.setattr(RideCity, "snapshot_every", 20)  # snapshots come often: the city's too
    node, store = boot(tmp_path / "rides")
    rides = RideService(node, store, MatchConfig(match_limit=600.0))
    rides.start()
    ids = [f"{i:03d}-" + "r" * 120 for i in range(200)]  # 200 x ~140 bytes: past 16 KiB twice
    for ride in ids:
        assert call(node, rides.request_ride(node, ride, "alice", FAR, (37.80, -122.41))) == ride
    node.run_for(1.0)
    assert call(node, rides.cell(node, *FAR))["demand"] == 200
    store.crash()
    node, store = boot(tmp_path / "rides", seed=2, creation=1, clock=node.now() + 1.0)
    rides = RideService(node, store, MatchConfig(match_limit=600.0))
    rides.start()
    node.run_for(0.5)
    assert call(node, rides.open_rides(node)) == sorted(ids)
    assert call(node, rides.cell(node, *FAR))["demand"] == 200
    store.close()


def test_a_ride_remembers_only_the_newest_drivers_who_declined(tmp_path, monkeypatch):
    monkeypatch.setattr(matcher, "MAX_DECLINED", 2)
    node = Node(seed=1)
    store = Store(tmp_path / "rides", node, mode="process")
    rides = RideService(node, store, MatchConfig(match_limit=600.0))
    rides.start()
    drivers = [f"d{i}" for i in range(6)]
    for i, name in enumerate(drivers):
        rides.driver_update(node, name, 37.7749 + 0.0009 * (i + 1), -122.4194)
    node.run_for(0.5)
    call(node, rides.request_ride(node, "r1", "alice", (37.7749, -122.4194), (37.80, -122.41)))
    node.run_for(1.0)
    for _ in range(2):  # two batches of three, each declined by all
        for name in drivers:
            if call(node, rides.offers(node, name)):
                call(node, rides.decline(node, name, "r1"))
        node.run_for(0.1)
    declined = store.read(("ride", "r1"))[1]["declined"]
    assert len(declined) == 2 and set(declined) < set(drivers)
    store.close()


def timeline_node(path, threshold, seed=1, creation=0):
    node, store = boot(path, seed, creation)
    timelines = TimelineService(node, store, TimelineConfig(threshold=threshold))
    timelines.start()
    return node, store, timelines


def test_an_author_holds_more_followers_than_one_value_can(tmp_path):
    path = tmp_path / "timeline"
    node, store, timelines = timeline_node(path, 10)
    followers = [10**12 + i for i in range(2_000)]  # 2,000 x ~18 bytes in the author's dict
    for user in followers:
        call(node, timelines.follow(node, user, 7))
    store.close()
    node, store, timelines = timeline_node(path, 10, seed=2, creation=1)
    assert len(store.read_records(("author", 7))) == 2_000
    call(node, timelines.unfollow(node, followers[0], 7))
    tweet = call(node, timelines.post(node, 7, "to the many", "c1"))  # pulled: marks go to 1,999
    node.run_for(2.0)
    assert call(node, timelines.read_page(node, followers[1])).ids == [tweet]
    assert call(node, timelines.read_page(node, followers[0])).ids == []
    store.close()


def test_a_fan_out_job_larger_than_one_value_is_stored_in_parts_and_resumes(tmp_path):
    path = tmp_path / "timeline"
    node, store, timelines = timeline_node(path, 5_000)
    followers = [10**12 + i for i in range(2_500)]  # 2,500 x 9-byte ids: one job past 16 KiB
    fanout = node.whereis("timeline.fanout")
    assert call(node, node.call(fanout, ("job", 99, "i", 7, followers))) == "ok"
    parts = [event for event in store.read(("timeline.fanout", node.name))[2] if event[0] == "j"]
    assert len(parts) >= 2  # one stored event (and later record) per part, each within the limit
    store.crash()  # before the inserts are acknowledged: the job resumes from its parts
    node, store, timelines = timeline_node(path, 5_000, seed=2, creation=1)
    node.run_for(3.0)
    assert all(call(node, timelines.read_page(node, user)).ids == [99] for user in followers[::250])
    assert node.get_process(node.whereis("timeline.fanout")).jobs == {}
    store.close()


def test_the_video_catalogue_recommender_and_counter_outgrow_no_value(tmp_path, monkeypatch):
    monkeypatch.setattr(VideoCatalog, "snapshot_every", 20)
    path = tmp_path / "video"
    node, store = boot(path)
    videos = VideoService(node, store, VideoConfig(scale=0.02), regions=("eu",))
    videos.start()
    names = [f"video-{i:03d}-" + "v" * 60 for i in range(200)]  # 200 catalogue entries of ~150 bytes
    for video in names:
        call(node, videos.start_upload(node, video, "ann", "t" * 40, ["drama"], 2))
    recommender = node.spawn(Recommender, store, ("recommender", "test"), 1)
    counter = node.spawn(ViewCounter, store, ("views", "test"), 10)
    for i, video in enumerate(names):
        node.cast(recommender, ("title", video, ["drama", "news"]))
        node.cast(recommender, ("viewed", f"user-{i}", video, 1.0))
        node.cast(counter, ("view", video))
    node.run_for(0.1)
    store.close()
    node, store = boot(path, seed=2, creation=1)
    videos = VideoService(node, store, VideoConfig(scale=0.02), regions=("eu",))
    videos.start()
    node.run_for(0.1)
    assert sorted(call(node, videos.videos(node))) == names
    recommender = node.spawn(Recommender, store, ("recommender", "test"), 1)
    counter = node.spawn(ViewCounter, store, ("views", "test"), 10)
    stats = call(node, node.call(recommender, ("stats",)))
    assert (stats["titles"], stats["users"]) == (200, 200)
    picks = call(node, node.call(recommender, ("recommend", "user-0", 3)))
    assert len(picks) == 3 and names[0] not in picks and set(picks) < set(names)
    assert call(node, node.call(counter, ("count", names[5]))) == 1
    store.close()
