"""What the web server tests share: a real server (uvicorn, gunicorn, an aiohttp program)
run as a subprocess on a loopback port the OS picks, its output in a log file.

    server = WebServer(["uvicorn", ...], tmp_path, r"Uvicorn running on http://127\\.0\\.0\\.1:(\\d+)")
    server.start(ready=r"Application startup complete")   # waits for both, bounded
    httpx.get(server.url + "/counters/x")
    status = server.terminate()                            # SIGTERM; its exit status

Every wait is bounded by BOUND (a safety net on a loaded machine, never a measurement).
The server runs in a session of its own, so `kill()` (and the fixture's cleanup) ends it
and every worker it forked.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from conftest import ROOT

EXAMPLES = ROOT / "examples"
BOUND = 30.0  # seconds


class WebServer:
    """A server command; `port` is parsed from its log by `listening` (one group)."""

    def __init__(self, command: list[str], workdir: Path, listening: str, env: dict | None = None,
                 cwd: Path = EXAMPLES) -> None:
        self.command = command
        self.workdir = workdir
        self.listening = re.compile(listening)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(workdir),
                    **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: str | None = None, count: int = 1) -> WebServer:
        """Start it and wait until it listens and `ready` appears `count` times in what it
        logged since this start."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.port = int(self.wait_for(lambda text: self.listening.search(text), offset).group(1))
        if ready is not None:
            self.wait_for(lambda text: len(re.findall(ready, text)) >= count or None, offset)
        return self

    def wait_for(self, found: Callable[[str], object], offset: int = 0) -> object:
        """What `found` returns for the log once it is truthy; fails if the server exits or
        BOUND passes first."""
        deadline = time.monotonic() + BOUND
        while True:
            result = found(self.log(offset))
            if result:
                return result
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server was not ready within {BOUND} s:\n{self.log()}")
            time.sleep(0.02)

    def log(self, offset: int = 0) -> str:
        return self.log_path.read_bytes()[offset:].decode(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, as a process manager stops a server; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(BOUND)

    def kill(self) -> None:
        """SIGKILL to the server and every process it started (its session): no cleanup
        of any kind."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # all gone already
        self.proc.wait(BOUND)

    def wait(self) -> int:
        return self.proc.wait(BOUND)


def uvicorn(workdir: Path, app: str, *flags: str, env: dict | None = None) -> WebServer:
    return WebServer([sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), app, "--host", "127.0.0.1", "--port", "0",
                      *flags], workdir, r"Uvicorn running on http://127\.0\.0\.1:(\d+)", env)


def gunicorn(workdir: Path, app: str, *flags: str, env: dict | None = None, cwd: Path = EXAMPLES) -> WebServer:
    return WebServer([sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:0", "--graceful-timeout", str(int(BOUND)), *flags, app],
                     workdir, r"Listening at: http://127\.0\.0\.1:(\d+)", env, cwd)
