"""What the distribution tests share: nodes with a distribution on one event loop, a
hand-written peer that speaks the wire byte by byte (to be a bad one), and a cluster of
node processes (the laptop launcher)."""
from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import msgpack
import pytest
from conftest import BOUND

from actors import Distribution, Node
from actors.handshake import NONCE, VERSION, digest
from actors.wire import frame
from apps.cluster import Cluster, start

SECRET = b"test secret"
TESTS = Path(__file__).resolve().parent


@contextlib.asynccontextmanager
async def nodes(tmp, *names: str, transport: str = "unix", **options: Any) -> AsyncIterator[list]:
    """Real-time nodes on this loop, each with a started distribution listening on a
    socket (Unix in `tmp`, or TCP on 127.0.0.1): yields [(node, dist), ...]."""
    made = []
    try:
        for i, name in enumerate(names):
            node = Node(name, creation=i + 1)
            await node.__aenter__()
            listen = f"unix:{tmp}/{name.partition('@')[0]}.sock" if transport == "unix" else "tcp:127.0.0.1:0"
            dist = await Distribution(node, secret=SECRET, listen=listen, **options).start()
            made.append((node, dist))
        yield made
    finally:
        for node, dist in reversed(made):
            await dist.stop()
            await node.stop(timeout=0.1)  # the tests' watchers trap exits and never stop on their own


class RawPeer:
    """A peer written by hand: the handshake, then whatever bytes a test sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: str) -> RawPeer:
        if address.startswith("unix:"):
            reader, writer = await asyncio.open_unix_connection(address[5:])
        else:
            host, _, port = address[4:].rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    @classmethod
    async def joined(cls, address: str, name: str = "raw@host", creation: int = 7, secret: bytes = SECRET,
                     version: int = VERSION, max_frame: int = 1 << 20) -> RawPeer:
        """A peer that has done the handshake as node `name`."""
        peer = await cls.open(address)
        await peer.handshake(name, creation, secret, version, max_frame)
        return peer

    async def handshake(self, name: str, creation: int, secret: bytes, version: int, max_frame: int) -> list:
        self.send(["hello", version, name, creation, None, max_frame])
        challenge = await self.read()
        if challenge[0] != "challenge":
            return challenge
        other, nonce = challenge[2], challenge[7]
        mine = os.urandom(NONCE)
        self.send(["reply", mine, digest(secret, b"A", nonce, name, other), {}])
        return await self.read()

    def send(self, message: Any) -> None:
        self.write(frame(msgpack.packb(message, use_bin_type=True)))

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self) -> Any:
        """The next frame that is not a tick, decoded (no extension types)."""
        while True:
            size = int.from_bytes(await self.reader.readexactly(4), "big")
            if size:
                return msgpack.unpackb(await self.reader.readexactly(size), raw=False, strict_map_key=False)

    async def closed(self, bound: float = 10.0) -> bool:
        """True once the far end has closed the stream (what it still sends is read and dropped)."""
        async def drained() -> None:
            while await self.reader.read(65536):
                pass
        await asyncio.wait_for(drained(), bound)
        return True

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def cluster(nodes: int, ticktime: float = 60.0, target: str = "dist_app:start") -> Iterator[Cluster]:
    """`nodes` node processes running `target` (of `dist_app`); their output is kept in `cluster.lines`."""
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        made = start(nodes, target, ticktime=ticktime, ready_timeout=BOUND,
                     on_line=lambda name, line: lines.append(f"[{name}] {line}"))
    made.lines = lines  # type: ignore[attr-defined]
    try:
        yield made
    except BaseException:
        print("\n".join(lines))  # shown with the failure
        raise
    finally:
        made.stop(timeout=5.0)
