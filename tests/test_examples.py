"""The embedding examples on the real servers: uvicorn (FastAPI), aiohttp's web server and
gunicorn (Flask), each a subprocess on a loopback port the OS picks, driven by real
clients (httpx; aiohttp's websocket client)."""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest
from web_harness import BOUND, EXAMPLES, WebServer, gunicorn, uvicorn

from actors import Node
from storage import Store

TESTS = Path(__file__).resolve().parent
UVICORN_STOPPED = -signal.SIGTERM
"""uvicorn's exit status after a SIGTERM: it shuts down cleanly, then raises the signal it
caught again, so whoever sent it sees the process ended by it."""


@pytest.fixture
def servers():
    """Start servers with `servers(server)`; every one is killed at the end, whatever happened."""
    started: list[WebServer] = []

    def track(server: WebServer) -> WebServer:
        started.append(server)
        return server

    yield track
    for server in started:
        server.kill()


def client(server: WebServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=BOUND)


def until(check, what: str):
    """Poll `check()` until it is truthy (bounded by BOUND); its value."""
    deadline = time.monotonic() + BOUND
    while not (value := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)
    return value


def in_background(fn) -> dict:
    """Run `fn()` on a thread; the dict gets its "result" (or "error") when it ends."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def finished(box: dict):
    box["thread"].join(BOUND)
    assert not box["thread"].is_alive(), "the request never finished"
    if "error" in box:
        raise box["error"]
    return box["result"]


def stored_state(directory: Path, key: str) -> dict:
    """The state a PersistentServer stored under `key`, read from its LMDB directory
    (empty when nothing was stored there: a worker that took no request)."""
    node = Node(seed=1)
    with Store(directory, node) as store:
        found = store.read(key)
    return {} if found is None else found[1]


# -- FastAPI on uvicorn ------------------------------------------------------------------------

def fastapi_app(tmp_path: Path, *flags: str) -> WebServer:
    return uvicorn(tmp_path, "fastapi_app:app", *flags, env={"LETITCRASH_DATA": str(tmp_path / "data")})


def test_fastapi_counts_a_crash_is_a_restart_and_sigkill_loses_nothing_acknowledged(servers, tmp_path):
    server = servers(fastapi_app(tmp_path)).start(ready="Application startup complete")
    with client(server) as http:
        assert http.post("/counters/visits").json() == {"name": "visits", "value": 1}
        assert http.post("/counters/visits", params={"delta": 41}).json()["value"] == 42
        assert http.get("/counters/visits").json() == {"name": "visits", "value": 42}
        assert http.get("/counters/never").status_code == 404
        assert http.get("/counters/bad!name").status_code == 422
        with ThreadPoolExecutor(8) as pool:  # concurrent requests, one process: each its own count
            counts = pool.map(lambda _: http.post("/counters/hits").json()["value"], range(40))
        assert sorted(counts) == list(range(1, 41))

        crash = http.post("/crash")  # the process dies during the call...
        assert crash.status_code == 500
        assert crash.json() == {"error": "internal error"}  # no traceback, no reason
        assert http.get("/counters/visits").json()["value"] == 42  # ...restarted from LMDB
        assert http.post("/counters/visits").json()["value"] == 43
        http.post("/rooms/lobby", json={"user": "ann", "text": "kept"}).raise_for_status()
    assert "RuntimeError: crash requested over HTTP" in server.log()  # the report: server side only
    server.kill()  # no shutdown of any kind: only what LMDB committed is left

    again = servers(fastapi_app(tmp_path)).start(ready="Application startup complete")
    with client(again) as http:
        assert http.get("/counters/visits").json()["value"] == 43
        assert http.get("/counters/hits").json()["value"] == 40
        assert http.get("/rooms/lobby").json()["messages"][0]["text"] == "kept"
    assert again.terminate() == UVICORN_STOPPED
    assert "Application shutdown complete" in again.log()


def test_fastapi_room_long_poll_is_answered_and_sigterm_drains_a_waiting_reader(servers, tmp_path):
    server = servers(fastapi_app(tmp_path)).start(ready="Application startup complete")
    with client(server) as http:
        assert http.post("/rooms/lobby", json={"user": "ann", "text": "hello"}).json() == {"seq": 1}
        read = http.get("/rooms/lobby", params={"after": 0}).json()
        assert read == {"messages": [{"seq": 1, "user": "ann", "text": "hello"}], "readers": 0}
        assert http.post("/rooms/lobby", json={"user": "bad name", "text": "x"}).status_code == 422

        # A reader waiting for the next message gets it when it is posted.
        waiting = in_background(lambda: http.get("/rooms/lobby", params={"after": 1, "wait": 20}))
        until(lambda: http.get("/rooms/lobby", params={"after": 1}).json()["readers"] == 1, "a reader waits")
        http.post("/rooms/lobby", json={"user": "bob", "text": "hi ann"})
        assert finished(waiting).json()["messages"] == [{"seq": 2, "user": "bob", "text": "hi ann"}]

        # A reader waiting when SIGTERM comes is answered (its wait ends) before the node stops.
        waiting = in_background(lambda: http.get("/rooms/lobby", params={"after": 2, "wait": 1.0}))
        until(lambda: http.get("/rooms/lobby", params={"after": 2}).json()["readers"] == 1, "a reader waits")
        server.proc.send_signal(signal.SIGTERM)
        answer = finished(waiting)
        assert answer.status_code == 200 and answer.json()["messages"] == []
    assert server.wait() == UVICORN_STOPPED
    assert "Application shutdown complete" in server.log()


def test_uvicorn_workers_each_run_a_node_on_a_store_of_their_own(servers, tmp_path):
    server = servers(fastapi_app(tmp_path, "--workers", "2")).start(
        ready="Application startup complete", count=2)
    with client(server) as http:
        answers = [http.post("/counters/hits", headers={"Connection": "close"}) for _ in range(20)]
    assert all(answer.status_code == 200 for answer in answers)
    assert server.terminate() == 0  # the workers' parent exits 0 once they have stopped
    assert server.log().count("Application shutdown complete") == 2
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == ["worker-0", "worker-1"]
    # Each worker counted the requests it took, in its own store; none was lost.
    counts = [stored_state(data / name, "counters").get("hits", 0) for name in ("worker-0", "worker-1")]
    assert sum(counts) == 20


def test_uvicorn_refuses_to_start_on_an_unusable_store_and_says_why(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a store")
    server = uvicorn(tmp_path, "fastapi_app:app", env={"LETITCRASH_DATA": str(not_a_dir)})
    try:
        with pytest.raises(AssertionError, match="exited with"):
            server.start()
        assert server.proc.returncode != 0
        assert f"cannot open the store at {not_a_dir}" in server.log()
        assert not_a_dir.read_text() == "not a store"  # nothing written over it
    finally:
        server.kill()


# -- aiohttp: a websocket per user -----------------------------------------------------------------

def aiohttp_chat(tmp_path: Path) -> WebServer:
    return WebServer([sys.executable, str(EXAMPLES / "aiohttp_chat.py"), "--port", "0"], tmp_path,
                     r"listening on http://127\.0\.0\.1:(\d+)", {"LETITCRASH_DATA": str(tmp_path / "data")})


def talk(server: WebServer, conversation) -> None:
    """Run `conversation(session, url)` in an aiohttp client session, bounded."""

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as session:
            await asyncio.wait_for(conversation(session, server.url), BOUND)

    asyncio.run(run())


def test_aiohttp_chat_a_conversation_over_websockets_messages_kept_across_sigkill(servers, tmp_path):
    server = servers(aiohttp_chat(tmp_path)).start()

    async def conversation(session: aiohttp.ClientSession, url: str) -> None:
        async with session.ws_connect(f"{url}/ws/alice") as alice, session.ws_connect(f"{url}/ws/bob") as bob:
            await alice.send_json({"to": "bob", "text": "hi bob", "id": "c1"})
            sent = await alice.receive_json()
            assert sent["sent"] == "c1"
            assert await bob.receive_json() == {"from": "alice", "text": "hi bob", "msg": sent["msg"]}
            assert await alice.receive_json() == {"receipt": sent["msg"], "status": "delivered"}
            await bob.send_json({"read": [sent["msg"]]})
            assert await alice.receive_json() == {"receipt": sent["msg"], "status": "read"}

            await alice.send_json({"to": "", "text": "x", "id": "c2"})  # refused, the socket stays
            refused = await alice.receive_json()
            assert refused["status"] == 400 and refused["id"] == "c2"
            await alice.send_str("not json")
            assert (await alice.receive_json())["status"] == 400

            presence = await session.get(f"{url}/presence/bob?viewer=bob")
            assert (await presence.json())["status"] == "online"
            assert (await session.get(f"{url}/presence/bob?viewer=alice")).status == 403  # not bob's contact
            assert (await session.get(f"{url}/presence/{'x' * 100}?viewer=bob")).status == 400  # over HTTP too

            await alice.send_json({"to": "carol", "text": "while you were out", "id": "c3"})
            assert (await alice.receive_json())["sent"] == "c3"  # acknowledged: stored

    talk(server, conversation)
    server.kill()  # no shutdown of any kind

    again = servers(aiohttp_chat(tmp_path)).start()

    async def carol_connects(session: aiohttp.ClientSession, url: str) -> None:
        async with session.ws_connect(f"{url}/ws/carol") as carol:
            message = await carol.receive_json()
            assert (message["from"], message["text"]) == ("alice", "while you were out")
            again.proc.send_signal(signal.SIGTERM)  # with a socket open: it goes away
            closing = await carol.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY

    talk(again, carol_connects)
    assert again.wait() == 0
    assert again.log().rstrip().endswith("stopped cleanly")


# -- Flask on gunicorn ------------------------------------------------------------------------------

def test_flask_on_gunicorn_values_stats_a_crash_and_sigterm_drains_a_watch(servers, tmp_path):
    server = servers(gunicorn(tmp_path, "flask_app:app", "--threads", "8", "--preload",
                              env={"LETITCRASH_DATA": str(tmp_path / "data")})).start()
    with client(server) as http:
        assert http.delete("/stats").status_code == 202  # send_from_thread: a plain message
        assert http.put("/kv/greeting", content=b"hello").json() == {"key": "greeting", "version": 1}
        read = http.get("/kv/greeting")
        assert (read.content, read.headers["ETag"]) == (b"hello", '"1"')
        assert http.get("/kv/missing").status_code == 404
        assert http.put("/kv/bad!key", content=b"v").status_code == 400
        assert http.put("/kv/big", content=b"x" * 1025).status_code == 413
        assert http.put("/kv/edge", content=b"x" * 1024).status_code == 200  # at the limit

        crash = http.post("/crash")
        assert crash.status_code == 500 and crash.json() == {"error": "internal error"}
        assert http.get("/kv/greeting").content == b"hello"  # restarted from LMDB

        # A watch waiting for version 2 is answered by the PUT that makes it.
        in_flight = one_more_get(http)
        watch = in_background(lambda: http.get("/kv/greeting", params={"newer_than": 1, "wait": 20}))
        until(in_flight, "the watch is in flight")
        http.put("/kv/greeting", content=b"hello again")
        answer = finished(watch)
        assert (answer.content, answer.headers["ETag"]) == (b"hello again", '"2"')

        # A watch in flight when SIGTERM comes finishes (its wait ends) before the worker exits.
        in_flight = one_more_get(http)
        watch = in_background(lambda: http.get("/kv/greeting", params={"newer_than": 2, "wait": 1.0}))
        until(in_flight, "the watch is in flight")
        server.proc.send_signal(signal.SIGTERM)
        answer = finished(watch)
        assert answer.status_code == 200 and answer.content == b"hello again"
    assert server.wait() == 0
    assert "RuntimeError: crash requested over HTTP" in server.log()
    # --preload imported the app in the master: the node started after the fork, in the
    # worker, which took the one store directory.
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir()) == ["worker-0"]


def one_more_get(http: httpx.Client):
    """A check that is true once one GET started after this call (a watch) has reached
    the app: the count of GETs went one above those this check made itself (each is
    counted before it reads the count)."""
    before = http.get("/stats").json()["GET"]
    polls = 0

    def check() -> bool:
        nonlocal polls
        polls += 1
        return http.get("/stats").json()["GET"] >= before + polls + 1

    return check


def test_gunicorn_prefork_workers_each_start_their_own_node_even_if_the_master_did(servers, tmp_path):
    """With --preload the app is imported in the master before the fork, and this one
    starts its node there. That node is the master's alone: each worker forgets it and
    starts its own on first use, on a store directory of its own."""
    env = {"LETITCRASH_DATA": str(tmp_path / "data"), "START_IN_MASTER": "1"}
    server = servers(gunicorn(tmp_path, "wsgi_fork_app:app", "-w", "2", "--threads", "2", "--preload",
                              env=env, cwd=TESTS)).start(ready="Booting worker", count=2)
    with client(server) as http:
        answers = [http.get("/", headers={"Connection": "close"}).json() for _ in range(12)]
    assert server.terminate() == 0
    workers: dict[int, set[str]] = {}  # pid -> the store directories it answered from
    counts: dict[int, list[int]] = {}
    for answer in answers:
        workers.setdefault(answer["pid"], set()).add(answer["store"])
        counts.setdefault(answer["pid"], []).append(answer["count"])
    assert server.proc.pid not in workers  # the master never answers
    stores = [store for owned in workers.values() for store in owned]
    assert all(len(owned) == 1 for owned in workers.values()) and len(set(stores)) == len(stores)
    # Each worker's node counted its own requests, from 1: a node of its own, running.
    assert all(seen == list(range(1, len(seen) + 1)) for seen in counts.values())
    claimed = sorted(p.name for p in (tmp_path / "data").iterdir() if p.is_dir())
    assert "worker-0" not in stores and len(claimed) == len(stores) + 1  # worker-0: the master's

