"""A laptop cluster: N node processes on this machine, over Unix sockets.

    with start(nodes=3, target="apps.cluster.demo:counter") as cluster:
        cluster.kill("n2@localhost")                 # SIGKILL, as a crash
        cluster.restart("n2@localhost")              # a new incarnation of it
    # every node is stopped: SIGTERM, then SIGKILL after `timeout`

`start` makes a directory for the sockets, a peers table (each node's name and socket)
and a random secret (handed to the nodes in their environment, never on a command
line), starts each node (`apps.cluster.host`) in the environment `start` was called in
(a node restarted later too) and in a process group of its own (a Ctrl-C
in the terminal reaches the launcher only, which stops them in order; a launcher that
dies anyway takes them with it: each stops when its standard input, a pipe from the
launcher, closes), and hands every
line a node prints to `on_line(name, line)` (by default printed as `[n1] line`). It
returns once every node has said it is up, or raises `ClusterError` naming the nodes
that did not (after `ready_timeout`), having stopped them all.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .host import SECRET_VARIABLE

ROOT = Path(__file__).resolve().parent.parent.parent  # where `apps` and `actors` are importable from


class ClusterError(Exception):
    """The cluster could not start (a node never came up), or was used wrongly."""


_OUTPUT = threading.Lock()


def say(text: str) -> None:
    """Print a line whole: the nodes' lines come from one thread each, and a line split
    by another (as `print` writes the text and its newline apart) reads as garbage."""
    with _OUTPUT:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def print_line(name: str, line: str) -> None:
    """The default `on_line`: the line, after the node's short name."""
    say(f"[{name.partition('@')[0]}] {line}")


class Cluster:
    """Node processes on this machine; see the module docstring."""

    def __init__(self, names: list[str], directory: str, *, target: str | None, ticktime: float,
                 on_line: Callable[[str, str], None], owns_directory: bool, observer: int | None = None) -> None:
        self.names = names
        self.directory = directory
        self.addresses = {name: f"unix:{os.path.join(directory, name.partition('@')[0] + '.sock')}" for name in names}
        self.secret = secrets.token_hex(32)
        self.target = target
        self.ticktime = ticktime
        self.observer = observer  # node i serves its observer page on observer + i - 1 (0: any port)
        self.on_line = on_line
        self.owns_directory = owns_directory
        self.procs: dict[str, subprocess.Popen] = {}
        self.ready: dict[str, threading.Event] = {}
        self.readers: list[threading.Thread] = []
        self.peers_file = os.path.join(directory, "peers.json")
        # taken once: a node restarted later runs in the environment the cluster started in
        self.env = {**os.environ, SECRET_VARIABLE: self.secret,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                    "PYTHONUNBUFFERED": "1"}
        with open(self.peers_file, "w") as f:
            json.dump(self.addresses, f)

    def spawn(self, name: str) -> None:
        """Start node `name` (again: a new incarnation)."""
        command = [sys.executable, "-m", "apps.cluster", "--name", name, "--listen", self.addresses[name],
                   "--peers-file", self.peers_file, "--ticktime", str(self.ticktime), "--stop-with-stdin"]
        if self.observer is not None:
            port = self.observer and self.observer + self.names.index(name)
            command += ["--observer", str(port)]
        if self.target:
            command.append(self.target)
        # stdin is a pipe only this process holds: if it dies, even by SIGKILL, the node sees
        # it close and stops, rather than living on in its own session
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.env, start_new_session=True, errors="replace")
        self.procs[name] = proc
        self.ready[name] = threading.Event()
        reader = threading.Thread(target=self.read, args=(name, proc), name=f"cluster-{name}", daemon=True)
        reader.start()
        self.readers.append(reader)

    def read(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        up = f"node {name} up at "
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(up) and self.procs.get(name) is proc:
                self.ready[name].set()
            self.on_line(name, line)
        status = proc.wait()
        if self.procs.get(name) is proc:
            self.on_line(name, f"exited with status {status}")

    def wait_ready(self, timeout: float, names: list[str] | None = None) -> None:
        """Wait until each node (of `names`) has said it is up; ClusterError past `timeout`."""
        deadline = time.monotonic() + timeout
        for name in names or self.names:
            while not self.ready[name].wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                status = self.procs[name].poll()
                if status is not None:
                    raise ClusterError(f"node {name} exited with status {status} before it was up")
                if time.monotonic() >= deadline:
                    raise ClusterError(f"node {name} did not come up within {timeout} s")

    def pid(self, name: str) -> int:
        """The OS pid of node `name`'s process."""
        return self.procs[name].pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to node `name` (SIGKILL: a crash; SIGSTOP: a freeze; SIGCONT: thawed)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start node `name` again once its process is gone (kill it first); waits until it is up."""
        if self.procs[name].poll() is None:
            raise ClusterError(f"node {name} is running: kill it before restarting it")
        self.spawn(name)
        self.wait_ready(timeout, [name])

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGTERM every node, then SIGKILL those still running after `timeout`: their statuses."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen node must hear its SIGTERM
                proc.terminate()
        deadline = time.monotonic() + timeout
        statuses = {}
        for name, proc in self.procs.items():
            try:
                statuses[name] = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                statuses[name] = proc.wait()
        for reader in self.readers:
            reader.join(5.0)
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        return statuses

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(nodes: int = 4, target: str | None = None, *, host: str = "localhost", ticktime: float = 60.0,
          directory: str | None = None, on_line: Callable[[str, str], None] = print_line,
          ready_timeout: float = 60.0, observer: int | None = None) -> Cluster:
    """Start `nodes` node processes named n1@HOST... running `target` (MODULE:FUNCTION)
    on each; see the module docstring. With `observer=PORT` node i serves its observer
    page on loopback PORT + i - 1 (0: each on a free port), and prints its URL."""
    if not 1 <= nodes <= 64:
        raise ClusterError(f"a laptop cluster has 1 to 64 nodes, not {nodes}")
    if observer is not None and not (observer == 0 or 1024 <= observer <= 65536 - nodes):
        raise ClusterError(f"the observer's first port is 0 (any) or 1024 to {65536 - nodes}, not {observer}")
    owns = directory is None
    directory = directory or tempfile.mkdtemp(prefix="letitcrash-cluster-")
    names = [f"n{i}@{host}" for i in range(1, nodes + 1)]
    cluster = Cluster(names, directory, target=target, ticktime=ticktime, on_line=on_line, owns_directory=owns,
                      observer=observer)
    try:
        for name in names:
            cluster.spawn(name)
        cluster.wait_ready(ready_timeout)
    except BaseException:
        cluster.stop(timeout=5.0)
        raise
    return cluster
