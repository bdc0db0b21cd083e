"""The client library's confirmations (`apps.server.Client`): the items frames of a burst
are confirmed by one `confirm` frame, and a pending confirmation goes out before the
next request, so a `read` never overtakes the confirmation of the messages it reads.

The server here is a scripted peer on a real loopback socket, so the test knows exactly
which frames the client was sent and sees every frame it writes back. Its three items
frames leave in one write, which the client reads and takes in one go."""
from __future__ import annotations

import asyncio

import msgpack
from conftest import arun

from apps.server import Client, Message
from apps.server import protocol as P

WAIT = 15.0  # a bound for one expected frame on a loaded machine


async def read_frame(reader: asyncio.StreamReader) -> dict:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(P.HEADER), WAIT), "big")
    return msgpack.unpackb(await asyncio.wait_for(reader.readexactly(size), WAIT))


def items(seq: int) -> bytes:
    return P.encode({"t": "items", "items": [[seq, "m", 100 + seq, "bob", b"x%d" % seq]], "acked": 0})


def test_a_burst_of_items_frames_is_confirmed_once_and_before_the_next_request():
    written: list[dict] = []  # the frames the client wrote, in order, after its auth
    done = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(P.encode({"t": "hello", "nonce": b"n" * 16, "max_frame": P.MAX_FRAME, "idle_timeout": 60.0}))
        auth = await read_frame(reader)
        writer.write(P.encode({"t": "ok", "id": auth["id"], "device": "primary", "linked": False})
                     + items(1) + items(2) + items(3))
        while True:
            frame = await read_frame(reader)
            written.append(frame)
            if frame["t"] == "read":
                writer.write(P.encode({"t": "ok", "id": frame["id"]}) + items(4))
            elif frame["t"] == "bye":
                writer.write(P.encode({"t": "ok", "id": frame["id"]}))
                done.set()
                return

    async def main():
        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await Client.connect("127.0.0.1", port, "alice", b"token")
        got = [await client.next_event(WAIT) for _ in range(3)]
        assert [(m.seq, m.body) for m in got if type(m) is Message] == [(1, b"x1"), (2, b"x2"), (3, b"x3")]
        while not written:  # the one confirmation, after CONFIRM_DELAY
            await asyncio.sleep(0.01)
        await client.read([101])
        await client.next_event(WAIT)  # item 4: its confirmation is pending...
        await client.close()  # ...and goes before the bye
        await asyncio.wait_for(done.wait(), WAIT)
        server.close()
        return [(f["t"], f.get("upto", f.get("ids"))) for f in written]

    frames = arun(main(), 60.0)
    assert frames == [("confirm", 3), ("read", [101]), ("confirm", 4), ("bye", None)]
