"""`letitcrash observe --cluster`: a node that joins a cluster of real node processes over
distribution and shows any of its nodes (each runs the observer's agent), through the
page's own HTTP API, in-process through `apps.observer.remote`, and in a real browser
(the node picker)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Iterator

import pytest
from conftest import BOUND, arun
from dist_helpers import cluster
from server_harness import ROOT, START_TIMEOUT
from test_observer_cli import get

from actors import RemoteName
from apps.observer import OpError
from apps.observer.remote import Cluster, join

pytestmark = pytest.mark.xdist_group("observer_cluster")  # one worker: its module fixture is made once

N1, N2 = "n1@localhost", "n2@localhost"


@pytest.fixture(scope="module")
def two_nodes():
    with cluster(2, target="dist_app:observed") as made:
        yield made


def observe(two_nodes) -> subprocess.Popen:
    env = {**os.environ, "LETITCRASH_SECRET": two_nodes.secret}
    return subprocess.Popen([sys.executable, "-m", "apps.cli", "observe", "--cluster", two_nodes.addresses[N1],
                             "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kept(base: str, token: str, node: str) -> str:
    """The pid of node `node`'s supervised "kept" process, as the page lists it."""
    status, body = get(f"{base}/api/processes?query=kept&node={node}", token)
    assert status == 200, body
    (row,) = json.loads(body)
    return row["pid"]


def kept_restarts(base: str, token: str) -> int:
    """How often node n2's supervisor has restarted "kept", from the page's tree."""
    status, body = get(f"{base}/api/tree?node={N2}", token)
    (supervisor,) = json.loads(body)
    (child,) = supervisor["children"]
    return child["restarts"]


def test_the_page_shows_every_node_and_a_kill_there_is_a_restart(two_nodes):
    proc = observe(two_nodes)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith(f"letitcrash: observing {N1}, {N2} on http://127.0.0.1:"), (line, proc.poll())
        base, token = line.split(" on ", 1)[1].strip().split("/?token=")
        assert json.loads(get(base + "/api/nodes", token)[1]) == {"nodes": [N1, N2]}
        for node in (N1, N2):
            status, body = get(f"{base}/api/overview?history=0&node={node}", token)
            assert status == 200 and json.loads(body)["node"] == node and json.loads(body)["processes"] >= 5
            assert kept(base, token, node).startswith(f"<{node}.")
        status, body = get(base + "/api/overview?history=0", token)
        assert json.loads(body)["node"] == N1  # no node named: the first
        status, body = get(base + "/api/overview?node=n9@localhost", token)
        assert status == 400 and "no node 'n9@localhost'" in json.loads(body)["error"]

        before, other, restarts = kept(base, token, N2), kept(base, token, N1), kept_restarts(base, token)
        kill = urllib.request.Request(f"{base}/api/kill?node={N2}", data=json.dumps({"pid": before}).encode(),
                                      headers={"Authorization": f"Bearer {token}"}, method="POST")
        with urllib.request.urlopen(kill, timeout=BOUND) as response:
            assert json.loads(response.read()) == {"killed": True}
        deadline = time.monotonic() + BOUND
        while kept(base, token, N2) == before and time.monotonic() < deadline:  # a scan is reused for 1 s
            time.sleep(0.05)
        restarted = kept(base, token, N2)
        assert restarted != before and restarted.startswith(f"<{N2}.")  # its supervisor started a new one
        assert kept(base, token, N1) == other
        assert kept_restarts(base, token) == restarts + 1
    finally:
        proc.terminate()
        proc.wait(timeout=START_TIMEOUT)


def test_crashes_and_a_trace_stream_over_distribution_and_eval_and_a_wrong_secret_are_refused(two_nodes):
    async def scenario() -> None:
        with pytest.raises(ConnectionError, match=f"the cluster at {two_nodes.addresses[N2]} refused this node: "
                           "the secret is wrong"):
            await join(two_nodes.addresses[N2], "not the cluster's secret")
        node, dist = await join(two_nodes.addresses[N2], two_nodes.secret)
        try:
            assert Cluster(node).nodes() == [N1, N2]
            source = Cluster(node).at(N2)
            got: list = []

            async def read() -> None:
                async for kind, value in source.stream("trace", {"target": "kept", "max_events": 2,
                                                                 "seconds": BOUND}):
                    got.append((kind, value))
            reading = asyncio.ensure_future(read())
            i = 0
            while not reading.done():  # sent until the trace has taken its 2 events
                node.cast(RemoteName("kept", N2), ("observer test", i))
                i += 1
                await asyncio.wait({reading}, timeout=0.02)
            reading.result()
            assert [kind for kind, _ in got] == ["event", "event", "ok"] and got[-1][1] == 2
            assert got[0][1]["event"] == "receive" and got[0][1]["pid"].startswith(f"<{N2}.")
            # A crash on n2 (a cast "kept" cannot take) reaches the crash stream as it happens.
            reports = source.stream("watch", {})
            first = asyncio.ensure_future(reports.__anext__())
            for _ in range(5):  # the stream is subscribed within a round trip: a few tries, bounded
                node.cast(RemoteName("kept", N2), "not a (sender, i) pair")
                await asyncio.wait({first}, timeout=0.5)
                if first.done():
                    break
            kind, report = first.result()
            assert kind == "event" and report["pid"].startswith(f"<{N2}.") and "unpack" in report["reason"]
            await reports.aclose()
            with pytest.raises(OpError, match="letitcrash remsh"):
                async for _ in source.stream("eval", {"code": "1"}):
                    pass
            with pytest.raises(OpError, match="sort must be one of"):
                await source.ask("processes", {"sort": "size"})
        finally:
            await dist.stop()
            await node.stop()
    arun(scenario())


@contextlib.contextmanager
def cluster_page(two_nodes) -> Iterator[str]:
    """The page of `two_nodes` (`Cluster` source) served by a joined node on a thread of its
    own (a browser driven from this thread must not share its loop): yields its URL."""
    from apps.observer.web import serve_web

    url: list[str] = []
    up, stop = threading.Event(), []

    async def serve() -> None:
        node, dist = await join(two_nodes.addresses[N1], two_nodes.secret)
        runner, port = await serve_web(Cluster(node), node.name, host="127.0.0.1", port=0, token="t" * 16)
        done, loop = asyncio.Event(), asyncio.get_running_loop()
        stop.append(lambda: loop.call_soon_threadsafe(done.set))
        url.append(f"http://127.0.0.1:{port}/?token={'t' * 16}")
        up.set()
        try:
            await done.wait()
        finally:
            await runner.cleanup()
            await dist.stop()
            await node.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert up.wait(BOUND), "the page did not start"
    try:
        yield url[0]
    finally:
        stop[0]()
        thread.join(BOUND)


def test_the_page_picks_a_node_of_the_cluster_in_a_real_browser(two_nodes):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    from test_observer_browser import CHROMIUM, FLAGS, TIMEOUT_MS

    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs it)")
    with cluster_page(two_nodes) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            errors: list = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url, timeout=TIMEOUT_MS)
            kept = page.locator("#tree li[data-id='kept']")
            sync_api.expect(page.locator("#node")).to_have_text(N1, timeout=TIMEOUT_MS)
            sync_api.expect(kept).to_have_attribute("data-pid", re.compile(f"^<{N1}\\."), timeout=TIMEOUT_MS)
            page.select_option("#nodes", N2)
            sync_api.expect(page.locator("#node")).to_have_text(N2, timeout=TIMEOUT_MS)
            sync_api.expect(kept).to_have_attribute("data-pid", re.compile(f"^<{N2}\\."), timeout=TIMEOUT_MS)
            page.locator("#processes tbody tr", has_text="kept").first.click()
            sync_api.expect(page.locator("#d-title")).to_contain_text(f"<{N2}.", timeout=TIMEOUT_MS)
            sync_api.expect(page.locator("dd[data-field='status']")).not_to_have_text("–", timeout=TIMEOUT_MS)
            assert errors == []
        finally:
            browser.close()
