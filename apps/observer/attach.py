"""The attach server (inside a node) and its client (`letitcrash observe`, `letitcrash remsh`).

    server = AttachServer(agent, secret)
    await server.start_unix("data/attach.sock")          # or start_tcp("127.0.0.1", 0)
    ...
    client = await Client.connect_unix("data/attach.sock", secret)
    await client.ask("processes", {"limit": 5})
    async for kind, value in client.stream("eval", {"code": "1 + 1"}): ...
    await client.close()
    await server.stop()

The protocol (frames, handshake, ops) is `apps.observer.protocol`. The server answers each
connection with its own `Local` source (so each remote shell has its own namespace); a
client that fails the handshake, or does not finish it within `HANDSHAKE_TIMEOUT`
seconds, is closed; nothing it sent is run. The Unix socket is made readable and writable
by its owner only, and the secret is needed anyway. TCP listens where it is told; for
anything but loopback put it behind a tunnel: the protocol authenticates, it does not
encrypt.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from typing import Any, AsyncIterator

from .agent import Agent
from .protocol import (MAX_FRAME, MAX_INFLIGHT, NODE, CLIENT, STREAMS, VERSION, ProtocolError, check,
                       encode, new_nonce, proof, read)
from .source import Local, OpError

log = logging.getLogger("apps.observer")
HANDSHAKE_TIMEOUT = 5.0
MAX_CONNECTIONS = 64


class AttachServer:
    """Serves `agent` to authenticated clients; see the module docstring."""

    def __init__(self, agent: Agent, secret: bytes) -> None:
        assert len(secret) >= 16, "an attach secret has at least 16 bytes"
        self.agent = agent
        self._secret = secret
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self.address: Any = None

    async def start_unix(self, path: str | os.PathLike) -> str:
        """Listen on a Unix socket at `path` (a stale socket file there is replaced)."""
        path = os.fspath(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old = os.umask(0o177)  # the socket is born owner-only, never briefly open to others
        try:
            self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_FRAME)
        finally:
            os.umask(old)
        self.address = path
        return path

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on TCP (loopback by default; port 0 picks one); returns the address."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_FRAME)
        self.address = self._server.sockets[0].getsockname()[:2]
        if not is_loopback(host):
            log.warning("the attach server listens on %s: authenticated, not encrypted", host)
        return self.address

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._conns.values()):
            writer.close()  # its reader sees the end; cancelling the task would upset asyncio's streams
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=HANDSHAKE_TIMEOUT)
        if isinstance(self.address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.write(encode({"t": "refused", "error": f"at most {MAX_CONNECTIONS} attached clients"}))
            writer.close()
            return
        self._conns[task] = writer
        try:
            if await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT):
                await _Connection(Local(self.agent), reader, writer).run()
        except EOFError:
            pass  # the client left
        except (TimeoutError, ProtocolError, ConnectionError) as exc:
            log.info("attach: a client was closed: %s", exc or type(exc).__name__)
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonce = new_nonce()
        writer.write(encode({"t": "hello", "v": VERSION, "node": self.agent.node.name, "nonce": nonce}))
        msg = await read(reader)
        cnonce = msg.get("nonce")
        if msg["t"] != "auth" or not isinstance(cnonce, bytes) or len(cnonce) < 16 or not check(
                self._secret, CLIENT, nonce, cnonce, msg.get("proof")):
            log.warning("attach: a client failed authentication")
            writer.write(encode({"t": "refused", "error": "authentication failed (wrong secret)"}))
            await writer.drain()
            return False
        writer.write(encode({"t": "welcome", "proof": proof(self._secret, NODE, cnonce, nonce)}))
        return True


class _Connection:
    """One authenticated client: its requests run concurrently, their replies interleave."""

    def __init__(self, source: Local, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.source = source
        self.reader = reader
        self.writer = writer
        self.requests: dict[Any, asyncio.Task] = {}
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            while True:
                msg = await read(self.reader, node=self.source.agent.node)
                if msg["t"] == "cancel":
                    task = self.requests.get(msg.get("id"))
                    if task is not None:
                        task.cancel()
                elif msg["t"] != "req" or not isinstance(msg.get("op"), str):
                    raise ProtocolError(f"expected a request, got a {msg['t']!r:.40} message")
                elif len(self.requests) >= MAX_INFLIGHT or msg.get("id") in self.requests:
                    await self.send({"t": "err", "id": msg.get("id"),
                                     "error": f"at most {MAX_INFLIGHT} requests in flight, with distinct ids"})
                else:
                    rid = msg.get("id")
                    self.requests[rid] = asyncio.ensure_future(self.answer(rid, msg["op"], msg.get("args", {})))
        finally:
            for task in self.requests.values():
                task.cancel()

    async def answer(self, rid: Any, op: str, args: Any) -> None:
        try:
            if op in STREAMS:
                async for kind, value in self.source.stream(op, args):
                    await self.send({"t": kind, "id": rid, "value": value})
            else:
                await self.send({"t": "ok", "id": rid, "value": await self.source.ask(op, args)})
        except OpError as exc:
            await self.send({"t": "err", "id": rid, "error": str(exc)})
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.send({"t": "err", "id": rid, "error": "cancelled"})
        except (ConnectionError, ProtocolError):
            pass
        finally:
            self.requests.pop(rid, None)

    async def send(self, msg: dict[str, Any]) -> None:
        try:
            data = encode(msg)
        except (ProtocolError, TypeError) as exc:  # an answer too large, or not encodable
            data = encode({"t": "err", "id": msg.get("id"), "error": f"the answer cannot be sent: {exc}"})
        async with self.lock:
            self.writer.write(data)
            await self.writer.drain()


class Client:
    """An attached client: `ask` and `stream`, as a `Local` source but across a socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node: str) -> None:
        self.reader = reader
        self.writer = writer
        self.node = node
        self._next = 0
        self._waiting: dict[int, asyncio.Queue] = {}
        self._pump = asyncio.ensure_future(self._read_replies())
        self.closed: BaseException | None = None

    @classmethod
    async def connect_unix(cls, path: str | os.PathLike, secret: bytes) -> Client:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path), limit=MAX_FRAME)
        return await cls._authenticate(reader, writer, secret)

    @classmethod
    async def connect_tcp(cls, host: str, port: int, secret: bytes) -> Client:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_FRAME)
        return await cls._authenticate(reader, writer, secret)

    @classmethod
    async def _authenticate(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            secret: bytes) -> Client:
        try:
            hello = await asyncio.wait_for(read(reader), HANDSHAKE_TIMEOUT)
            if hello["t"] == "refused":
                raise ProtocolError(f"the node refused: {hello.get('error')}")
            if hello["t"] != "hello" or hello.get("v") != VERSION or not isinstance(hello.get("nonce"), bytes):
                raise ProtocolError(f"not a letitcrash node of protocol version {VERSION}: {hello!r:.100}")
            cnonce = new_nonce()
            writer.write(encode({"t": "auth", "nonce": cnonce, "proof": proof(secret, CLIENT, hello["nonce"], cnonce)}))
            answer = await asyncio.wait_for(read(reader), HANDSHAKE_TIMEOUT)
            if answer["t"] == "refused":
                raise ProtocolError(f"the node refused: {answer.get('error')}")
            if answer["t"] != "welcome" or not check(secret, NODE, cnonce, hello["nonce"], answer.get("proof")):
                raise ProtocolError("the node did not prove it holds the secret")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, hello.get("node"))

    async def _read_replies(self) -> None:
        try:
            while True:
                msg = await read(self.reader)
                queue = self._waiting.get(msg.get("id"))
                if queue is not None:
                    queue.put_nowait(msg)
        except (EOFError, ProtocolError, ConnectionError) as exc:
            self.closed = exc
        finally:
            for queue in self._waiting.values():
                queue.put_nowait({"t": "err", "error": f"the connection to {self.node} ended"})

    def _request(self, op: str, args: dict[str, Any]) -> tuple[int, asyncio.Queue]:
        if self.closed is not None or self._pump.done():
            raise ConnectionError(f"the connection to {self.node} has ended: {self.closed}")
        self._next += 1
        queue: asyncio.Queue = asyncio.Queue()
        self._waiting[self._next] = queue
        self.writer.write(encode({"t": "req", "id": self._next, "op": op, "args": args}))
        return self._next, queue

    async def ask(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """One request's answer; `OpError` if the node refused it."""
        rid, queue = self._request(op, args or {})
        try:
            msg = await queue.get()
        finally:
            del self._waiting[rid]
        if msg["t"] != "ok":
            raise OpError(msg.get("error", f"unexpected {msg['t']!r} answer"))
        return msg["value"]

    async def stream(self, op: str, args: dict[str, Any] | None = None) -> AsyncIterator[tuple[str, Any]]:
        """A streaming request's ("event", value)s, then its ("ok", value). Leaving the loop
        early cancels it on the node."""
        rid, queue = self._request(op, args or {})
        msg: dict[str, Any] = {"t": None}
        try:
            while True:
                msg = await queue.get()
                if msg["t"] == "err":
                    raise OpError(msg.get("error"))
                yield msg["t"], msg.get("value")
                if msg["t"] == "ok":
                    return
        finally:
            if self._waiting.pop(rid, None) is not None and msg["t"] not in ("ok", "err"):
                with contextlib.suppress(Exception):
                    self.writer.write(encode({"t": "cancel", "id": rid}))

    async def close(self) -> None:
        self._pump.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
