"""`letitcrash remsh` and `letitcrash observe` against a running `letitcrash serve --attach
--observer`: real subprocesses, the real attach socket, the real page."""
from __future__ import annotations

import json
import select
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from server_harness import ROOT, START_TIMEOUT, ServerProcess

pytestmark = pytest.mark.xdist_group("observer_cli")  # one worker: its module fixture is made once


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("observed"), "--durability", "process",
                           "--attach", "--observer", "0").start()
    lines = [server.proc.stdout.readline() for _ in range(2)]
    assert lines[0].startswith("letitcrash: observer on http://127.0.0.1:"), lines
    assert lines[1].strip() == f"letitcrash: attach socket {server.data / 'attach.sock'}", lines
    server.url = lines[0].split(" on ", 1)[1].strip()
    yield server
    assert server.terminate() == 0


def remsh(served, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apps.cli", "remsh", str(served.data), *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_remsh_runs_code_inside_the_running_node(served):
    done = remsh(served, "-c", "print(node.whereis('chat.shard.0') is not None)\nlen(node) > 20")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\nTrue\n"


def test_remsh_is_an_interactive_shell_with_the_nodes_api(served):
    lines = ["x = 6 * 7", "x", "for i in range(2):", "    print('line', i)", "", "1/0",
             "node.cast(node.whereis('chat.shard.0'), ('confirm', 'nobody', 1))",  # a turn, whatever the uptime
             "processes(2, 'turns')"]
    done = remsh(served, stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert "42\n" in done.stdout and "line 0\nline 1\n" in done.stdout
    assert "ZeroDivisionError: division by zero" in done.stderr
    rows = [line for line in done.stdout.splitlines() if "turns=" in line]
    turns = [int(row.split("turns=")[1].split()[0]) for row in rows]
    assert len(rows) == 2 and turns == sorted(turns, reverse=True), done.stdout  # the busiest first


def test_remsh_traces_a_process_for_a_bounded_number_of_events(served):
    code = ("import asyncio\nfrom actors import GenServer\n"
            "class Echo(GenServer):\n    def handle_cast(self, m): pass\n"
            "p = node.spawn(Echo, name='echo')\n"
            "async def poke():\n    for i in range(10):\n        node.cast(p, i)\n        await asyncio.sleep(0.02)\n"
            "asyncio.ensure_future(poke())\n"
            "trace('echo', max_events=3, seconds=30)")
    done = remsh(served, "-c", code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[2:] for line in lines[:3]] == [["receive", "0"], ["run"], ["receive", "1"]]
    assert lines[3].startswith("3 events traced from echo (<nonode@nohost.")


def test_remsh_with_a_wrong_secret_is_refused(served, tmp_path):
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(bytes(32))
    wrong.chmod(0o600)
    done = remsh(served, "--secret-file", str(wrong), "-c", "print('ran')")
    assert done.returncode == 1 and "authentication failed" in done.stderr and "ran" not in done.stdout


def test_remsh_names_a_node_that_is_not_there(tmp_path):
    done = subprocess.run([sys.executable, "-m", "apps.cli", "remsh", str(tmp_path), "-c", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "observer.secret" in done.stderr and "Traceback" not in done.stderr


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_observer_page_needs_its_token(served):
    base, token = served.url.split("/?token=")
    status, body = get(base + "/api/tree", token)
    assert status == 200 and {t["id"] for t in json.loads(body)} >= {"timeline", "chat"}
    assert get(base + "/api/tree")[0] == 401


def test_observe_serves_the_page_of_another_process(served):
    proc = subprocess.Popen([sys.executable, "-m", "apps.cli", "observe", str(served.data), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("letitcrash: observing nonode@nohost on http://127.0.0.1:"), line
        base, token = line.split(" on ", 1)[1].strip().split("/?token=")
        status, body = get(base + "/api/processes?query=chat.shard&limit=100", token)
        assert status == 200 and len(json.loads(body)) == 16  # the chat's shards, from the other process
        status, body = get(base + "/api/process?pid=<nonode@nohost.1>", token)
        assert status == 200 and json.loads(body)["pid"] == "<nonode@nohost.1>"
        assert get(base + "/metrics", token)[1].count("letitcrash_processes{") == 1
        assert get(base + "/api/tree", "wrong-token")[0] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=START_TIMEOUT)
