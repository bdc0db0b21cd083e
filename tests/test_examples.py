"""The embedding examples, run as real programs: each starts as a subprocess on a free
loopback port, is driven by a real HTTP client, and is stopped with SIGTERM."""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BOUND = 60  # seconds: a safety bound on a hung child, never a measurement


class Example:
    """A running example program: `request(...)` talks HTTP to it; `stop()` sends
    SIGTERM and returns (exit status, stdout, stderr)."""

    def __init__(self, script: str, data: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--data", str(data), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        ready, _, _ = select.select([self.proc.stdout], [], [], BOUND)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on http://127.0.0.1:"):
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"{script} did not start: {line!r} {out!r} {err[-2000:]}")
        self.port = int(line.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=BOUND)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes, return the whole answer (the server closes after one)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=BOUND) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=BOUND)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def run(tmp_path):
    started = []

    def start(script: str, data: Path = tmp_path / "store") -> Example:
        started.append(Example(script, data))
        return started[-1]

    yield start
    for example in started:
        example.kill()


def stop_cleanly(example: Example) -> str:
    status, out, err = example.stop()
    assert status == 0, err[-2000:]
    assert out.rstrip().endswith("stopped cleanly"), out
    return err


def counter(example: Example, method: str, name: str, body: bytes | None = None
            ) -> tuple[int, dict]:
    status, data = example.request(method, f"/counters/{name}", body)
    return status, json.loads(data)


# -- the asyncio application -------------------------------------------------------------------

def test_asyncio_app_counts_survive_a_crash_and_a_restart(run, tmp_path):
    app = run("asyncio_app.py")
    assert counter(app, "POST", "visits") == (200, {"name": "visits", "value": 1})
    assert counter(app, "POST", "visits", b"41") == (200, {"name": "visits", "value": 42})
    assert counter(app, "GET", "visits") == (200, {"name": "visits", "value": 42})

    status, data = app.request("POST", "/crash")  # the server dies during the call...
    assert status == 500 and "crash requested over HTTP" in json.loads(data)["error"]
    assert counter(app, "GET", "visits")[1]["value"] == 42  # ...and is restarted from LMDB
    assert "RuntimeError" in stop_cleanly(app)  # the crash report went to stderr

    again = run("asyncio_app.py")  # a new OS process on the same store
    assert counter(again, "GET", "visits")[1]["value"] == 42
    assert counter(again, "POST", "visits", b"-2")[1]["value"] == 40
    stop_cleanly(again)


def test_asyncio_app_answers_concurrent_requests_each_with_its_own_count(run):
    app = run("asyncio_app.py")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: counter(app, "POST", "hits"), range(80)))
    assert all(status == 200 for status, _ in answers)
    assert sorted(answer["value"] for _, answer in answers) == list(range(1, 81))
    assert counter(app, "GET", "hits")[1]["value"] == 80
    stop_cleanly(app)


def test_asyncio_app_maps_bad_requests_to_http_errors(run):
    app = run("asyncio_app.py")
    assert counter(app, "GET", "never-counted")[0] == 404
    assert counter(app, "POST", "x", b"twelve")[0] == 400
    assert counter(app, "POST", "x", b"99999999999")[0] == 400  # over MAX_DELTA
    assert counter(app, "POST", "bad!name")[0] == 400
    assert counter(app, "DELETE", "x")[0] == 405
    assert app.request("GET", "/crash")[0] == 405
    assert app.request("GET", "/elsewhere")[0] == 404
    assert app.request("POST", "/counters/x", headers={"Content-Length": "100"})[0] == 413
    assert app.raw(b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    negative = b"GET /counters/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
    assert app.raw(negative).startswith(b"HTTP/1.1 400 ")
    assert counter(app, "GET", "x")[0] == 404  # none of the bad requests stored anything
    stop_cleanly(app)


# -- the threaded WSGI server ----------------------------------------------------------------------

def test_threaded_server_answers_concurrent_workers_and_keeps_values(run):
    server = run("threaded_server.py")
    assert server.request("DELETE", "/stats")[0] == 202  # send_from_thread: a plain message

    def client(t: int) -> list[tuple[int, bytes]]:
        answers = []
        for i in range(10):
            answers.append(server.request("PUT", f"/kv/k{t}", f"{t}-{i}".encode()))
            answers.append(server.request("GET", f"/kv/k{t}"))
        return answers

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(8)))
    for t, answers in enumerate(results):
        assert answers[0::2] == [(204, b"")] * 10
        assert answers[1::2] == [(200, f"{t}-{i}".encode()) for i in range(10)]
    # Each request's cast left before its answer: all are counted before this call.
    status, data = server.request("GET", "/stats")
    assert status == 200 and json.loads(data) == {"PUT": 80, "GET": 81}
    stop_cleanly(server)

    again = run("threaded_server.py")  # values are in LMDB; the stats were in memory
    assert again.request("GET", "/kv/k7") == (200, b"7-9")
    assert json.loads(again.request("GET", "/stats")[1]) == {"GET": 2}
    stop_cleanly(again)


def test_threaded_server_maps_bad_requests_to_http_errors(run):
    server = run("threaded_server.py")
    assert server.request("GET", "/kv/missing")[0] == 404
    assert server.request("PUT", "/kv/bad!key", b"v")[0] == 400
    assert server.request("PUT", "/kv/big", headers={"Content-Length": "5000"})[0] == 413
    assert server.request("POST", "/kv/x", b"v")[0] == 405
    assert server.request("PUT", "/stats", b"v")[0] == 405
    assert server.request("GET", "/elsewhere")[0] == 404
    assert server.request("PUT", "/kv/big", b"x" * 1024)[0] == 204  # exactly at the limit
    assert server.request("GET", "/kv/bad!key")[0] == 400
    stop_cleanly(server)


@pytest.mark.parametrize("script", ["asyncio_app.py", "threaded_server.py"])
def test_an_unusable_data_path_is_a_clear_error_not_a_hang(tmp_path, script):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("not a store")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--data", str(not_a_dir), "--port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=BOUND,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "listening" not in proc.stdout
    assert f"cannot open the store at {not_a_dir}" in proc.stderr
    assert not_a_dir.read_text() == "not a store"  # nothing was written over it
