"""An asyncio HTTP service with a letitcrash node inside its event loop.

    python examples/asyncio_app.py --data /tmp/counters --port 8080
    curl -X POST localhost:8080/counters/visits          # {"name": "visits", "value": 1}
    curl -X POST -d 5 localhost:8080/counters/visits     # {"name": "visits", "value": 6}
    curl localhost:8080/counters/visits                  # {"name": "visits", "value": 6}
    curl -X POST localhost:8080/crash                    # 500; the supervisor restarts it

The counters live in one `PersistentServer` under a supervisor, on a real LMDB `Store`
(mode "sync"): a 200 answer to a POST means the new count is on disk. Request handlers
are plain asyncio coroutines that `await node.call(...)`; the node's scheduler shares
their loop. Failed calls become HTTP statuses (`common.STATUS`). SIGTERM or Ctrl-C: stop
accepting, stop the tree, close the store, exit 0.

The HTTP layer is deliberately tiny (one request per connection, hand-parsed request
line and headers, bounded sizes and read time); it stands for any existing asyncio app.
"""
from __future__ import annotations

import asyncio
import json
import re
import signal
from http import HTTPStatus
from typing import Any

from actors import Node
from storage import PersistentServer, Store
from supervision import Application, ChildSpec, Supervisor

from common import STATUS, command_line  # examples/common.py

MAX_COUNTERS = 1000
MAX_DELTA = 10**9
MAX_HEAD = 8192  # bytes of request line and headers
MAX_BODY = 64
READ_TIMEOUT = 10.0  # seconds a client may take to send its request
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Counters(PersistentServer):
    """Named counters, `{name: count}`, saved after every turn that changed them."""

    def initial_state(self) -> dict:
        return {}

    def handle_call(self, request: tuple, caller: Any) -> int | None:
        """("get", name): the count or None; ("add", name, delta): the new count, or None
        when a new name would pass MAX_COUNTERS; ("crash",): let it crash."""
        if request[0] == "get":
            return self.state.get(request[1])
        if request[0] == "add":
            _, name, delta = request
            if name not in self.state and len(self.state) >= MAX_COUNTERS:
                return None
            self.state[name] = self.state.get(name, 0) + delta
            return self.state[name]
        if request[0] == "crash":
            raise RuntimeError("crash requested over HTTP")
        raise ValueError(f"unknown request {request!r:.100}")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """(method, path, body) of one HTTP/1.x request; HttpError for anything malformed or
    not complete within READ_TIMEOUT."""
    try:
        return await asyncio.wait_for(parse_request(reader), READ_TIMEOUT)
    except TimeoutError:
        raise HttpError(408, f"no complete request within {READ_TIMEOUT} s") from None


async def parse_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head over {MAX_HEAD} bytes") from None
    line, *headers = head.decode("latin-1").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise HttpError(400, f"bad request line {line[:100]!r}")
    length = 0
    for header in headers:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            if not value.strip().isdigit():
                raise HttpError(400, f"bad Content-Length {value.strip()[:20]!r}")
            length = int(value)
    if length > MAX_BODY:
        raise HttpError(413, f"body of {length} bytes, the limit is {MAX_BODY}")
    return parts[0], parts[1], await reader.readexactly(length)


async def route(node: Node, method: str, path: str, body: bytes) -> tuple[int, dict]:
    """The application: every call goes to the server registered as "counters"."""
    if path == "/crash":
        if method != "POST":
            raise HttpError(405, "use POST /crash")
        return 200, {"reply": await node.call("counters", ("crash",))}  # raises CallExit
    prefix, _, name = path.partition("/counters/")
    if prefix or not name:
        raise HttpError(404, f"no such resource {path[:100]!r}")
    if not NAME.fullmatch(name):
        raise HttpError(400, f"counter names are 1-64 of A-Z a-z 0-9 _ . -, not {name[:100]!r}")
    if method == "GET":
        value = await node.call("counters", ("get", name))
        if value is None:
            raise HttpError(404, f"no counter {name!r}")
        return 200, {"name": name, "value": value}
    if method == "POST":
        text = body.decode("ascii", "replace").strip() or "1"
        if not re.fullmatch(r"-?\d{1,10}", text) or abs(int(text)) > MAX_DELTA:
            raise HttpError(400, f"the body must be an integer in -{MAX_DELTA}..{MAX_DELTA}, "
                                 f"not {text[:20]!r}")
        value = await node.call("counters", ("add", name, int(text)))
        if value is None:
            raise HttpError(507, f"at the limit of {MAX_COUNTERS} counters")
        return 200, {"name": name, "value": value}
    raise HttpError(405, f"{method[:20]} is not allowed on a counter; use GET or POST")


async def handle(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            status, answer = await route(node, *await read_request(reader))
        except HttpError as exc:
            status, answer = exc.status, {"error": str(exc)}
        except tuple(STATUS) as exc:
            status, answer = STATUS[type(exc)], {"error": str(exc)}
        data = json.dumps(answer).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n")
        writer.write(head.encode() + data)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client went away: nothing to answer
    finally:
        writer.close()


async def main(data: str, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Node() as node:  # the node's scheduler now runs on this loop
        store = Store(data, node)
        try:
            app = Application(Supervisor, [ChildSpec("counters", Counters, args=(store, "counters"),
                                                     options={"name": "counters"})])
            app.start(node)
            server = await asyncio.start_server(lambda r, w: handle(node, r, w), host, port,
                                                limit=MAX_HEAD)
            async with server:
                port = server.sockets[0].getsockname()[1]  # the one picked when 0 was asked
                print(f"listening on http://{host}:{port}", flush=True)
                await stop.wait()
            await app.stop()  # the tree stops in order; the counters' last writes commit
        finally:
            await node.stop()  # whatever else still runs (a no-op after a clean app.stop)
            store.close()
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    args = command_line(__doc__, 8080)
    asyncio.run(main(args.data, args.host, args.port))
