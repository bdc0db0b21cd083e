"""What the chat server tests share: the server as a real subprocess (`letitcrash serve`),
and a raw blocking socket for saying exactly the bytes a bad client would.

The clients under test (`apps.server.client`) run in the test process: every test talks
to the server across a real loopback socket and a process boundary.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import msgpack
from conftest import ROOT

from apps.server import Client
from apps.server import protocol as P
from apps.server.auth import prove, token_for

SECRET = bytes(range(1, 33))
START_TIMEOUT = 30.0  # a safety bound on a loaded machine, not a measurement
LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")
"""`python -c LIMITED N COMMAND...`: COMMAND with a descriptor limit of N."""
WAIT = 15.0  # a safety bound for one expected event


async def take(client: Client, kind: type | tuple[type, ...], n: int = 1) -> list:
    """The next `n` events of type `kind`, skipping others (presence, tweets...)."""
    got = []
    while len(got) < n:
        event = await client.next_event(WAIT)
        if isinstance(event, kind):
            got.append(event)
    return got


class ServerProcess:
    """`python -m apps.cli serve --data DIR --port 0 FLAGS...` with a known secret (and
    `nofile` as its descriptor limit, RLIMIT_NOFILE, if given). Shedding by time waited is
    off unless FLAGS set `--max-delay`: a test must not depend on how busy the machine is
    (the overload tests shed by count, with `--max-inflight`)."""

    def __init__(self, data: Path, *flags: str, nofile: int | None = None) -> None:
        self.data = data
        self.flags = flags if "--max-delay" in flags else ("--max-delay", "3600", *flags)
        self.nofile = nofile
        self.proc: subprocess.Popen | None = None
        self.port = 0
        data.mkdir(parents=True, exist_ok=True)
        secret = data / "secret"
        if not secret.exists():
            secret.write_bytes(SECRET)
            secret.chmod(0o600)

    def start(self) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.data / "server.log", "ab")
        command = [sys.executable, "-m", "apps.cli", "serve", "--data", str(self.data), "--port", "0", *self.flags]
        if self.nofile is not None:  # set in the child, then the server runs in its place
            command = [sys.executable, "-c", LIMITED, str(self.nofile), *command]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("letitcrash: serving on "), f"server did not start: {line!r}\n{self.log()}"
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=START_TIMEOUT)

    def terminate(self) -> int:
        """SIGTERM, and the exit status once it has stopped in order."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=START_TIMEOUT)

    def log(self) -> str:
        return (self.data / "server.log").read_text(errors="replace")

    async def client(self, user: str, **options: Any) -> Client:
        return await Client.connect("127.0.0.1", self.port, user, token_for(SECRET, user), **options)

    def raw(self, **options: Any) -> RawConnection:
        return RawConnection(self.port, **options)


@contextmanager
def running_server(data: Path, *flags: str) -> Iterator[ServerProcess]:
    """A started server; at the end it must stop cleanly, having logged no traceback."""
    srv = ServerProcess(data, *flags).start()
    yield srv
    assert srv.terminate() == 0, srv.log()
    assert "Traceback" not in srv.log()


class RawConnection:
    """A blocking socket speaking frames by hand (or not speaking them properly)."""

    def __init__(self, port: int, rcvbuf: int | None = None, timeout: float = 15.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.hello = self.recv()
        assert self.hello["t"] == "hello", self.hello

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(len(body).to_bytes(P.HEADER, "big") + body)

    def send(self, **frame: Any) -> None:
        self.send_body(msgpack.packb({"v": P.VERSION, **frame}))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the server closed the connection")
            data += chunk
        return data

    def recv(self) -> dict[str, Any]:
        size = int.from_bytes(self._exactly(P.HEADER), "big")
        return msgpack.unpackb(self._exactly(size), raw=False)

    def auth(self, user: str, token: bytes | None = None, req_id: int = 1) -> dict[str, Any]:
        token = token_for(SECRET, user) if token is None else token
        self.send(t="auth", id=req_id, user=user, device="raw", proof=prove(token, self.hello["nonce"]))
        return self.recv()

    def closed(self) -> bool:
        """True once the server has closed the connection (reads to EOF)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def acked(frame: dict[str, Any]) -> dict[int, int]:
    """`{request id: msg_id}` of the sends `frame` answers: an `ok`, or an `acks` of several."""
    if frame["t"] == "ok":
        return {frame["id"]: frame["msg_id"]}
    assert frame["t"] == "acks" and len(frame["ids"]) == len(frame["msg_ids"]) > 1, frame
    return dict(zip(frame["ids"], frame["msg_ids"]))


def error(frame: dict[str, Any], code: str, req_id: int | None = None) -> str:
    """The message of `frame`, which must be an error `code` answering `req_id`."""
    assert frame["t"] == "error" and frame["code"] == code, frame
    assert frame["id"] == req_id, frame
    return frame["message"]


class ChatProcess:
    """`letitcrash chat` in a subprocess, its output read line by line without buffering
    (a buffered reader could hold a line that select() then never reports)."""

    def __init__(self, server: ServerProcess, user: str, *flags: str, **popen: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "chat", "--user", user, "--port", str(server.port),
             "--secret-file", str(server.data / "secret"), *flags],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
        self.seen: list[str] = []
        self.pending = b""

    def type(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def _line(self, wait: float) -> str | None:
        """The next output line, or None if none came within `wait` seconds."""
        if b"\n" not in self.pending:
            fd = self.proc.stdout.fileno()
            if select.select([fd], [], [], wait)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"the client ended; saw {self.seen} {self.proc.stderr.read()!r}"
                self.pending += chunk
            if b"\n" not in self.pending:
                return None
        line, self.pending = self.pending.split(b"\n", 1)
        self.seen.append(line.decode())
        return self.seen[-1]

    def expect(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = self._line(0.2)
            if line is not None and text in line:
                return line
        raise AssertionError(f"{text!r} never came; saw {self.seen}")

    def quit(self) -> int:
        self.type("/quit")
        return self.proc.wait(timeout=WAIT)

    def rest(self) -> list[str]:
        """Every line printed after those seen, once the client has exited."""
        self.proc.wait(timeout=WAIT)
        self.pending += self.proc.stdout.read()
        self.seen += self.pending.decode().splitlines()
        self.pending = b""
        return self.seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
