"""The cluster demo (`apps.cluster.demo`): the same code under the simulator (its network
is the transport) and on node processes started by `letitcrash cluster start`, or by
hand with `letitcrash node --connect` over TCP."""
from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable

import httpx
from conftest import BOUND, ROOT

from actors import global_names, pg
from apps.cluster import demo
from sim.core import Simulation

NODES = ("a", "b", "c")
CLICKED = re.compile(r"clicked: the counter on (\S+) is at (\d+)")
OBSERVER = re.compile(r"node (\S+) observer at (http://\S+)")


def simulated(start: Callable, said: list) -> Simulation:
    """Three simulated nodes, each running the name server, a pg scope and `start`."""
    sim = Simulation(1)
    for name in NODES:
        sim.add_node(name, lambda node: (global_names.start(node), pg.start(node),
                                         start(node, 0.5, lambda line, n=node.name: said.append((n, line)))))
    return sim


def test_one_counter_for_the_cluster_and_a_new_one_when_its_node_crashes():
    said: list = []
    sim = simulated(demo.counter, said)
    sim.run(5.0)
    clicks = [CLICKED.fullmatch(line) for _, line in said]
    assert all(clicks) and {m[1] for m in clicks} == {"a"}  # one counter, on a node, for all
    assert {n for n, _ in said} == set(NODES) and max(int(m[2]) for m in clicks) >= 20
    sim.crash_node("a")
    del said[:]
    sim.run(10.0)
    after = [CLICKED.fullmatch(line) for _, line in said if CLICKED.fullmatch(line)]
    assert {m[1] for m in after} == {"b"} and {n for n, _ in said} == {"b", "c"}
    assert int(after[0][2]) == 1  # the count lived on the node that crashed


def test_every_member_hears_the_others_in_the_lobby():
    said: list = []
    sim = simulated(demo.chat, said)
    sim.run(3.0)
    heard = {(n, line.split()[0]) for n, line in said}
    assert heard == {(n, f"<{o}>") for n in NODES for o in NODES if o != n}


class Output:
    """The lines a process prints, read on a thread: `wait` for one, with a bound."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def wait(self, predicate: Callable[[str], object], bound: float = BOUND) -> str:
        """The first line (from now) for which `predicate` is true."""
        while True:
            line = self.queue.get(timeout=bound)
            assert line is not None, "the process ended; it said:\n" + "\n".join(self.lines)
            self.lines.append(line)
            if predicate(line):
                return line


def command(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "apps.cli", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "LETITCRASH_DEMO_INTERVAL": "0.1", **env})


def test_cluster_start_runs_the_counter_on_node_processes_and_ctrl_c_stops_them_all():
    launcher = command("cluster", "start", "--nodes", "2", "--observer", "0", "apps.cluster.demo:counter")
    out = Output(launcher)
    try:
        out.wait(lambda line: line.startswith("letitcrash: 2 nodes up"))
        # Each node serves its own observer page, its URL (with the token) printed.
        pages = {m[1]: m[2] for line in out.lines if (m := OBSERVER.search(line))}
        assert sorted(pages) == ["n1@localhost", "n2@localhost"], out.lines
        for name, url in pages.items():
            base, token = url.split("/?token=")
            overview = httpx.get(f"{base}/api/overview", params={"token": token}, timeout=BOUND).json()
            assert overview["node"] == name and overview["processes"] > 0
            assert httpx.get(f"{base}/api/overview", timeout=BOUND).status_code == 401  # no token, no page
        clicked = set()
        while clicked != {"n1", "n2"}:
            line = out.wait(lambda line: "clicked: the counter on" in line)
            clicked.add(line[1:line.index("]")])
        launcher.send_signal(signal.SIGINT)
        out.wait(lambda line: line == "letitcrash: stopped 2 nodes")
        assert launcher.wait(BOUND) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert not [line for line in out.lines if "Traceback" in line], "\n".join(out.lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_started_by_hand_meet_over_tcp_and_chat():
    """b starts with a's address before a listens: it retries until a is up."""
    address = f"127.0.0.1:{free_port()}"
    secret = {"LETITCRASH_SECRET": "by hand"}
    procs = [command("node", "--name", "a@127.0.0.1", "--listen", address, "apps.cluster.demo:chat", **secret),
             command("node", "--name", "b@127.0.0.1", "--connect", address, "apps.cluster.demo:chat", **secret)]
    try:
        a_out, b_out = map(Output, procs)
        a_out.wait(lambda line: line.startswith("<b@127.0.0.1> hello"))
        b_out.wait(lambda line: line.startswith("<a@127.0.0.1> hello"))
        assert f"node a@127.0.0.1 up at tcp:{address}" in a_out.lines
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(BOUND) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
