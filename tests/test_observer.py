"""The observer against real nodes: bounded tracing, the page's API and its token, the
Prometheus endpoint read by the client library's own parser, and the attach protocol over
a real Unix socket (handshake, a wrong secret, a bad frame, the remote shell's answers)."""
from __future__ import annotations

import asyncio
import contextlib
import struct

import aiohttp
import pytest
from conftest import arun
from prometheus_client.parser import text_string_to_metric_families

from observer_harness import Cart, Worker

from actors import Node
from apps import observer
from apps.observer.protocol import VERSION, ProtocolError, encode, read
from storage import Store
from supervision import ChildSpec, DynamicFlags, DynamicSupervisor, Supervisor

SECRET = bytes(range(32))
TIMEOUT = 10.0  # a bound on every wait, never a measurement


def tree(store):
    return [ChildSpec("worker", Worker, options={"name": "worker"}),
            ChildSpec("cart", Cart, args=(store, ("cart", 1)), options={"name": "cart"}),
            ChildSpec("sessions", DynamicSupervisor, args=(DynamicFlags(),), options={"name": "sessions"})]


@contextlib.asynccontextmanager
async def watched(tmp_path, **options):
    """A real-time node with a tree and a store, observed."""
    async with Node() as node:
        store = Store(tmp_path / "store", node, mode="process")
        node.spawn(Supervisor, tree(store))
        obs = await observer.start(node, store=store, **options)
        try:
            yield node, store, obs
        finally:
            await obs.stop()
            store.close()


async def until(predicate, what: str):
    """Poll `predicate()` until true, at most TIMEOUT seconds."""
    for _ in range(int(TIMEOUT / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- tracing ---------------------------------------------------------------------------------


def test_a_trace_stops_after_max_events():
    node = Node(seed=1)
    pid = node.spawn(Worker, name="w")
    seen = []
    t = observer.trace(node, "w", max_events=3, seconds=60, emit=seen.append)
    for i in range(10):
        node.cast(pid, i)
        node.run()
    assert t.done.done() and seen == t.events
    assert [(e["event"], e["detail"]) for e in t.events] == [("receive", "0"), ("run", None), ("receive", "1")]
    assert all(e["pid"] == repr(pid) for e in t.events)
    assert node.tracer is None  # the probe is gone with the last trace
    assert node.process_info(pid)["traced"] is False  # and so is the process's own trace


def test_a_trace_stops_after_its_seconds_on_the_nodes_clock():
    node = Node(seed=1)
    pid = node.spawn(Worker)
    t = observer.trace(node, pid, max_events=100, seconds=1.0, events={"run"})
    node.cast(pid, 1)
    node.run_for(0.5)
    node.run_for(1.0)
    node.cast(pid, 2)  # after the deadline: ends the trace, not recorded
    node.run()
    assert t.done.done() and len(t.events) == 1


def test_a_real_time_trace_ends_at_its_deadline_without_any_event():
    async def main():
        async with Node() as node:
            node.spawn(Worker, name="quiet")
            t = observer.trace(node, "quiet", seconds=0.2)
            return await asyncio.wait_for(t, TIMEOUT)
    assert arun(main()) == []


def test_a_trace_by_name_follows_the_restarted_process():
    node = Node(seed=1)
    node.spawn(Supervisor, [ChildSpec("worker", Worker, options={"name": "worker"})])
    node.run()
    first = node.whereis("worker")
    t = observer.trace(node, "worker", max_events=7, seconds=60)
    node.cast("worker", "boom")
    node.run()
    node.cast("worker", 1)
    node.run()
    second = node.whereis("worker")
    assert second != first
    assert [(e["event"], e["pid"]) for e in t.events] == [
        ("receive", repr(first)), ("run", repr(first)), ("crash", repr(first)), ("exit", repr(first)),
        ("spawn", repr(second)), ("receive", repr(second)), ("run", repr(second))]
    assert "let it crash" in t.events[2]["detail"]
    assert node.process_info(second)["traced"] is False  # the trace ended with max_events


def test_a_trace_sees_the_sends_and_receives_of_a_call_on_both_sides():
    node = Node(seed=1)
    server = node.spawn(Worker, name="w")
    answers = []

    async def client(proc):
        answers.append(await proc.call("w", "ping"))

    pid = node.spawn(client)
    t_client = observer.trace(node, pid, max_events=10, seconds=60, events={"send", "receive"})
    t_server = observer.trace(node, "w", max_events=10, seconds=60, events={"send", "receive"})
    node.run()
    t_client.stop()
    t_server.stop()
    assert answers == [0]
    assert [e["event"] for e in t_client.events] == ["send", "receive"]
    assert "request='ping'" in t_client.events[0]["detail"] and t_client.events[1]["detail"].endswith(", 0)")
    assert [e["event"] for e in t_server.events] == ["receive", "send"]
    assert t_server.events[0]["detail"].startswith("Call(request='ping'")
    assert node.process_info(server)["traced"] is False


@pytest.mark.parametrize("target, options, message", [
    ("nobody", {}, "no process is registered as 'nobody'"),
    ("<nonode@nohost.999>", {}, "no live process"),
    ("w", {"max_events": 0}, "max_events must be an int in 1..10000"),
    ("w", {"seconds": -1}, "seconds must be in (0, 3600.0]"),
])
def test_a_trace_refuses_a_bad_target_or_bound(target, options, message):
    node = Node(seed=1)
    node.spawn(Worker, name="w")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)")
                       .replace("]", r"\]")):
        observer.trace(node, target, **options)
    assert node.tracer is None


def test_the_probe_chains_a_tracer_installed_before_it():
    node = Node(seed=1)
    events = []
    node.tracer = lambda event, pid, detail: events.append(event)
    pid = node.spawn(Worker)
    t = observer.trace(node, pid, max_events=1)
    node.cast(pid, 1)
    node.run()
    assert t.done.done() and events == ["spawn", "run"]
    assert node.tracer is not None and node.tracer.__name__ == "<lambda>"  # given back


# -- the agent and the page's API --------------------------------------------------------------


def test_an_observer_refuses_what_it_cannot_watch_safely():
    async def main():
        async with Node() as node:
            with pytest.raises(ValueError, match="needs a token chosen by you"):
                await observer.start(node, host="0.0.0.0")
            with pytest.raises(ValueError, match="needs a secret"):
                await observer.start(node, port=None, attach="x.sock")
            assert node.tracer is None
    arun(main())
    with pytest.raises(ValueError, match="watches a real-time node"):
        observer.Agent(Node(seed=1))


def test_every_observer_of_a_node_shares_one_agent_until_the_last_lets_go():
    """A node with its page and the agent other nodes ask (a cluster node started with
    --observer) samples once a second, not once per observer."""
    from apps.observer.remote import serve_agent

    async def main():
        async with Node() as node:
            page = await observer.start(node, port=None)
            server = serve_agent(node)
            await asyncio.sleep(0)
            agent = page.agent
            assert observer.Agent.of(node) is agent and agent.users == 3
            agent.release()
            node.exit(server, "shutdown")
            await node.wait_exit(server, timeout=5)
            assert agent.users == 1 and not agent.probe.closed  # the page still watches
            await page.stop()
            assert agent.users == 0 and agent.probe.closed and agent._sampler.cancelled()
            assert observer.Agent.of(node) is not agent  # a new observer gets a new agent
            observer.Agent.of(node).release()
    arun(main())


def test_the_api_shows_the_tree_processes_a_detail_and_a_kill_seen_as_a_restart(tmp_path):
    async def main():
        async with watched(tmp_path) as (node, store, obs):
            base, auth = f"http://127.0.0.1:{obs.port}", {"Authorization": f"Bearer {obs.token}"}
            await node.call("cart", "apple")
            async with aiohttp.ClientSession(headers=auth) as http:
                async def get(path):
                    async with http.get(base + path) as r:
                        assert r.status == 200, await r.text()
                        return await r.json()

                (root,) = await get("/api/tree")
                assert [c["id"] for c in root["children"]] == ["worker", "cart", "sessions"]
                assert root["strategy"] == "one_for_one" and root["children"][2]["strategy"] == "dynamic"
                worker = root["children"][0]
                assert worker["restarts"] == 0 and worker["pid"] == repr(node.whereis("worker"))

                top = await get("/api/processes?sort=turns&limit=2")
                assert top[0]["name"] == "cart" and top[0]["turns"] >= 1
                assert [r["name"] for r in await get("/api/processes?query=sess")] == ["sessions"]

                detail = await get(f"/api/process?pid={worker['pid']}")
                assert detail["links"] == [root["pid"]] and detail["state"] == "{'seen': 0}"

                old = node.whereis("worker")
                async with http.post(base + "/api/kill", json={"pid": worker["pid"]}) as r:
                    assert r.status == 200 and await r.json() == {"killed": True}
                await until(lambda: node.whereis("worker") not in (None, old), "the restart")
                await asyncio.sleep(1.1)  # the scan is reused for a second
                (root,) = await get("/api/tree")
                assert root["children"][0]["restarts"] == 1 and root["children"][0]["pid"] != worker["pid"]
                async with http.get(f"{base}/api/process?pid={worker['pid']}") as r:
                    assert r.status == 404  # the killed one is gone
                async with http.post(base + "/api/kill", json={"pid": worker["pid"]}) as r:
                    assert r.status == 404 and await r.json() == {"killed": False}
    arun(main())


@contextlib.asynccontextmanager
async def opened(obs, path: str):
    """An event stream of the page, `path` with the observer's token."""
    url = f"http://127.0.0.1:{obs.port}{path}{'&' if '?' in path else '?'}token={obs.token}"
    async with aiohttp.ClientSession() as http, http.get(url) as stream:
        yield stream


def test_a_crash_report_reaches_the_event_stream_and_the_detail(tmp_path):
    async def main():
        async with watched(tmp_path) as (node, store, obs):
            async with opened(obs, "/api/events") as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                node.cast("worker", "boom")
                async with asyncio.timeout(TIMEOUT):
                    events = []
                    async for line in stream.content:
                        events.append(line.decode())
                        if line.startswith(b"event: crash"):
                            break
                    data = (await stream.content.readline()).decode()
            assert "let it crash" in data and "'boom'" in data
            assert any(e.startswith("event: overview") for e in events)
            await until(lambda: node.whereis("worker") is not None, "the restart")
            detail = obs.agent.process(repr(node.whereis("worker")))
            assert detail["last_crash"]["reason"] == "RuntimeError('let it crash')"  # of the one it replaced
    arun(main())


def test_a_wrong_token_is_refused_everywhere_on_the_page(tmp_path):
    async def main():
        async with watched(tmp_path, token="right-token-0123456789") as (node, store, obs):
            base = f"http://127.0.0.1:{obs.port}"
            pid = repr(node.whereis("worker"))
            async with aiohttp.ClientSession() as http:
                for path in ("/api/tree", "/api/events", "/api/trace?target=worker", "/metrics",
                             "/api/tree?token=wrong-token-0123456789"):
                    async with http.get(base + path) as r:
                        assert r.status == 401, path
                async with http.get(base + "/api/tree", headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401
                # The kill action takes the token from the header only: a link cannot carry it.
                async with http.post(f"{base}/api/kill?token=right-token-0123456789", json={"pid": pid}) as r:
                    assert r.status == 401
                async with http.get(base + "/") as r:
                    assert r.status == 200 and "letitcrash observer" in await r.text()  # no data in it
            assert repr(node.whereis("worker")) == pid  # nothing was killed
    arun(main())


def test_a_trace_streams_from_the_page_and_ends_at_its_bound(tmp_path):
    async def main():
        async with watched(tmp_path) as (node, store, obs):
            async with opened(obs, "/api/trace?target=worker&max_events=2&seconds=30") as stream:
                for i in range(3):
                    node.cast("worker", i)
                    await asyncio.sleep(0.05)
                async with asyncio.timeout(TIMEOUT):
                    body = (await stream.read()).decode()  # the server ends the stream
            assert body.count("event: trace") == 2 and "event: end\ndata: 2" in body
    arun(main())


def test_metrics_parse_with_the_client_librarys_own_parser(tmp_path):
    async def main():
        async with watched(tmp_path) as (node, store, obs):
            for i in range(3):
                await node.call("cart", i)
            node.exit(node.whereis("worker"), "kill")
            await until(lambda: obs.agent.probe.totals["restarts"] == 1, "the restart")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {obs.token}"}) as http:
                async with http.get(f"http://127.0.0.1:{obs.port}/metrics") as r:
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = await r.text()
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}

    samples = arun(main())
    assert samples["letitcrash_processes"] == 4  # the supervisor and its three children
    assert samples["letitcrash_restarts_total"] == 1 and samples["letitcrash_exits_total"] == 1
    assert samples["letitcrash_turns_total"] >= 3 and samples["letitcrash_mailbox_messages"] == 0
    assert samples["letitcrash_store_commits_total"] >= 3
    assert samples["letitcrash_store_commit_seconds_count"] >= 3
    assert samples["letitcrash_store_bytes"] > 0


# -- the attach protocol -----------------------------------------------------------------------


def test_the_attach_socket_answers_ops_and_runs_shell_code(tmp_path):
    sock = tmp_path / "attach.sock"

    async def main():
        async with watched(tmp_path, port=None, attach=sock, secret=SECRET) as (node, store, obs):
            assert sock.stat().st_mode & 0o777 == 0o600
            client = await observer.Client.connect_unix(sock, SECRET)
            try:
                assert client.node == node.name
                rows = await client.ask("processes", {"sort": "pid", "limit": 2})
                assert [r["kind"] for r in rows] == ["Supervisor", "Worker"]
                with pytest.raises(observer.OpError, match="sort must be one of"):
                    await client.ask("processes", {"sort": "size"})
                with pytest.raises(observer.OpError, match="unknown op 'rm'"):
                    await client.ask("rm", {})
                out = [v async for v in client.stream("eval", {"code": "print('hi')\nn = await node.call('cart', 'pear')\nn * 42"})]
                assert out == [("event", {"out": "hi\n"}), ("ok", {"value": "42", "error": None})]
                (kind, result), = [v async for v in client.stream("eval", {"code": "n"})]  # the namespace stays
                assert result["value"] == "1"
                (kind, result), = [v async for v in client.stream("eval", {"code": "1/0"})]
                assert result["error"].startswith("Traceback") and "ZeroDivisionError" in result["error"]
                assert "shell.py" not in result["error"]  # only the user's own frames
            finally:
                await client.close()
            other = await observer.Client.connect_unix(sock, SECRET)
            try:  # a second client has its own namespace
                (kind, result), = [v async for v in other.stream("eval", {"code": "n"})]
                assert "NameError" in result["error"]
            finally:
                await other.close()
    arun(main())


def test_the_attach_socket_refuses_a_wrong_secret_and_a_bad_frame(tmp_path):
    sock = tmp_path / "attach.sock"

    async def main():
        async with watched(tmp_path, port=None, attach=sock, secret=SECRET) as (node, store, obs):
            with pytest.raises(ProtocolError, match="authentication failed"):
                await observer.Client.connect_unix(sock, bytes(32))
            reader, writer = await asyncio.open_unix_connection(str(sock))
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            await reader.readexactly(size)  # the hello
            writer.write(struct.pack(">I", 1 << 30))  # a frame far over the limit
            async with asyncio.timeout(TIMEOUT):
                assert await reader.read() == b""  # closed, nothing answered
            writer.close()
            client = await observer.Client.connect_unix(sock, SECRET)  # the node still serves
            assert len(await client.ask("processes", {})) == 4
            await client.close()
    arun(main())


def test_a_client_refuses_a_node_that_cannot_prove_the_secret(tmp_path):
    """An impostor at the socket (it never held the secret) gets the client's proof, which
    is worthless to it, and the client stops before sending any request."""
    sock = tmp_path / "fake.sock"
    requests = []

    async def impostor(reader, writer):
        writer.write(encode({"t": "hello", "v": VERSION, "node": "fake", "nonce": bytes(16)}))
        await read(reader)
        writer.write(encode({"t": "welcome", "proof": bytes(32)}))
        with contextlib.suppress(EOFError, ProtocolError):
            requests.append(await read(reader))
        writer.close()

    async def main():
        server = await asyncio.start_unix_server(impostor, str(sock))
        async with server:
            with pytest.raises(ProtocolError, match="did not prove it holds the secret"):
                await observer.Client.connect_unix(sock, SECRET)
            await asyncio.sleep(0.05)
    arun(main())
    assert requests == []
