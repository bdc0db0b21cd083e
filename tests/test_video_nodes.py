"""The video service across media nodes, in the simulator: a video lives on its node
(`storage.cluster` placement) whichever node its calls enter, a duplicate is found by
its content hash whichever node holds the first upload, a catalogue refuses a video of
another node, recommendations and playback work from every node; and
`scenarios/video_nodes.toml` (three nodes, node kills, power cuts, partitions) keeps
every video check and at most one upload job per video, while a service that ignores
placement, or keeps a content hash index per node, is caught.

CI runs a few seeds; set LETITCRASH_SIM_SEEDS=N to run seeds 1..N instead."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SCENARIOS, SIM_SEEDS

from actors import Node
from actors.requests import request
from apps.video import UploadError, VideoConfig, VideoService
from apps.video.service import VideoContext
from apps.video.transcode import synthetic_source
from sim.core import Simulation
from sim.runner import run
from sim.scenario import load
from storage import Store
from storage.cluster import node_of

pytestmark = pytest.mark.usefixtures("quiet_crash_reports")  # transcoder workers crash on purpose
NODES = ("m1", "m2", "m3")
SCALE = 0.02


def three_media_nodes(data: Path) -> tuple[Simulation, dict[str, VideoService]]:
    sim = Simulation(seed=1)
    services: dict[str, VideoService] = {}

    def boot(node: Node) -> None:
        store = Store(data / node.name, node, simulated=True)
        services[node.name] = VideoService(node, store, VideoConfig(scale=SCALE, segment_seconds=1.0),
                                           regions=("eu",), prefetch_every=5.0, nodes=NODES)
        services[node.name].start()
    for name in NODES:
        sim.add_node(name, boot)
    sim.run(sim.now + 0.5)
    return sim, services


def upload(sim: Simulation, entry: VideoService, video: str, source: bytes) -> None:
    """Upload `source` as `video` through `entry`'s node, in 4 chunks, each acknowledged."""
    size = -(-len(source) // 4)
    parts = [source[i * size:(i + 1) * size] for i in range(4)]
    node = entry.node
    started = entry.start_upload(node, video, "ann", f"title {video}", ["drama"], len(parts))
    sim.run(sim.now + 1.0)
    assert started.result() == video
    for i, part in enumerate(parts):
        sent = entry.upload_chunk(node, video, i, part)
        sim.run(sim.now + 0.5)
        assert sent.result()["chunk"] == i


def answer(sim: Simulation, future: object, seconds: float = 1.0) -> object:
    sim.run(sim.now + seconds)
    return future.result()  # type: ignore[attr-defined]


def test_a_video_lives_on_its_node_and_a_duplicate_is_found_across_nodes(tmp_path):
    sim, services = three_media_nodes(tmp_path)
    video = next(f"v{i}" for i in range(50) if node_of(f"v{i}", NODES) == "m2")
    twin = next(f"w{i}" for i in range(50) if node_of(f"w{i}", NODES) == "m3")
    entry = services["m1"]  # neither video's node: every call is routed
    source = synthetic_source(1, 640, 360, 2.0, SCALE)
    upload(sim, entry, video, source)
    sim.run(sim.now + 15.0)
    assert answer(sim, entry.status(entry.node, video))["status"] == "ready"
    assert services["m2"].store.read(("video", video)) is not None  # its record, job state and blobs: m2's disk
    assert all(services[n].store.read(("video", video)) is None for n in ("m1", "m3"))
    assert answer(sim, services["m3"].videos(services["m3"].node)) == {}

    upload(sim, services["m2"], twin, source)  # the same bytes: its hash is claimed where the first one's is
    sim.run(sim.now + 10.0)
    st = answer(sim, entry.status(entry.node, twin))
    assert st["status"] == "failed" and f"video {video!r} has the same sha256" in st["reason"]

    played = entry.play(entry.node, "bob", video, "laptop", "eu", 4000.0)  # segments fetched from m2
    assert answer(sim, played, 30.0)["video"] == video
    sim.run(sim.now + 15.0)  # the recommender (on its node) has the title and bob's view
    assert video in answer(sim, services["m3"].recommend(services["m3"].node, "carol", 5))  # a new title
    assert video not in answer(sim, services["m1"].recommend(services["m1"].node, "bob", 5))  # watched
    assert answer(sim, services["m2"].views(services["m2"].node, video)) == 1


def test_a_catalogue_refuses_a_video_of_another_node_naming_both(tmp_path):
    sim, services = three_media_nodes(tmp_path)
    video = next(f"v{i}" for i in range(50) if node_of(f"v{i}", NODES) == "m2")
    node = services["m1"].node
    meta = {"owner": "ann", "title": "t", "genres": ["drama"], "chunks": 1}
    refused = request(node, VideoContext.catalog, ("start", video, meta))  # m1's own catalogue, not v's
    sim.run(sim.now + 1.0)
    with pytest.raises(UploadError, match=f"video '{video}' lives on node m2, not on m1"):
        refused.result()
    assert services["m1"].store.read(("video", video)) is None


def test_a_service_outside_its_node_list_is_refused(tmp_path):
    node = Node(seed=1)
    with pytest.raises(ValueError, match="is not in the video node list"):
        VideoService(node, Store(tmp_path / "s", node), nodes=("m1", "m2"))


@pytest.mark.parametrize("seed", range(1, SIM_SEEDS + 1))
def test_video_over_three_nodes_keeps_its_checks_under_node_kills_and_partitions(seed):
    result = run(load(SCENARIOS / "video_nodes.toml"), seed)
    assert result.passed, f"seed {seed}: {result.failure}"
    stats = result.stats["video"]
    assert stats["ready"] > 0 and stats["plays"] > 0 and stats["activations"] >= stats["uploads"] - stats["duplicates"]
    assert result.faults.get("kill_node", 0) >= 1 and result.checks["video.single_activation"]["ok"]


def on_own_node(monkeypatch: pytest.MonkeyPatch, placement: str) -> None:
    """The bug of the next tests: every node's `VideoContext.<placement>` answers that
    node itself, whatever the key."""
    original = VideoContext.__init__

    def init(self, node, *args):
        original(self, node, *args)
        setattr(self, placement, lambda key: node.name)
    monkeypatch.setattr(VideoContext, "__init__", init)


def test_a_service_that_ignores_placement_is_caught(monkeypatch):
    """The bug: every node takes every video its callers bring (no placement), so a
    video's chunks land on whichever node the client entered through."""
    on_own_node(monkeypatch, "home")
    failures = [run(load(SCENARIOS / "video_nodes.toml"), seed).failure for seed in (1, 2)]
    assert all(failures), "two seeds and no check noticed videos off their nodes"
    assert {f.check for f in failures} <= {"video.no_acked_chunk_lost", "video.single_activation"}, failures


def test_a_content_hash_index_kept_per_node_is_caught(monkeypatch):
    """The bug: each node claims hashes in its own catalogue, so content uploaded again
    as a video of another node is not found to be a duplicate."""
    on_own_node(monkeypatch, "hash_home")
    failures = [run(load(SCENARIOS / "video_nodes.toml"), seed).failure for seed in (3, 4)]
    assert all(f is not None and f.check == "video.duplicates_found" for f in failures), failures
