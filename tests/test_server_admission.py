"""Admission control by time (`apps.server.connection.Load`): a server whose admitted work
has waited over `max_delay` answers new requests `overloaded` at once, stores nothing of
them, and takes them again once that work has drained; a send retried with the same
`cid` is stored once.

The server runs in the test's process (a real node, store and loopback sockets, real
clients) so that a test can hold its work still: the recipient's chat shard is
suspended (`actors.system.suspend`), so a send handed on stays in flight for as long as
the test wants, whatever the machine's speed. Waits are bounds, not measurements."""
from __future__ import annotations

import asyncio
import math

from conftest import arun

from actors import Node
from actors.system import resume, suspend
from apps.chat import ChatConfig
from apps.server import Client, Message, ServerError
from apps.server import protocol as P
from apps.server.auth import token_for
from apps.server.connection import Limits, Load
from apps.server.server import ChatServer
from storage import Store

SECRET = bytes(range(1, 33))
MAX_DELAY = 0.2
HELD = 1.0  # seconds a send is left in flight: well over MAX_DELAY
TRIES = 50  # a bound on sends shed by a busy machine before one is taken


async def connect(port: int, user: str) -> Client:
    client = await Client.connect("127.0.0.1", port, user, token_for(SECRET, user))
    client.shed_retries = 0  # each `overloaded` is seen by the test
    return client


async def send_until_taken(client: Client, to: str, cid: str) -> int:
    """The msg_id of a send of `cid`, sent again while the server sheds it."""
    for _ in range(TRIES):
        try:
            return await client.send(to, cid.encode(), cid=cid)
        except ServerError as exc:
            assert exc.code == P.OVERLOADED, exc
            await asyncio.sleep(0.1)
    raise AssertionError(f"{cid} was shed {TRIES} times")


async def send_held(client: Client, to: str, cid: str) -> asyncio.Task:
    """A send of `cid` the server took and holds (its recipient's shard is suspended):
    still unanswered after HELD seconds. One shed by a busy machine is sent again."""
    for _ in range(TRIES):
        task = asyncio.create_task(client.send(to, cid.encode(), cid=cid))
        done, _ = await asyncio.wait({task}, timeout=HELD)
        if not done:
            return task
        exc = task.exception()
        assert isinstance(exc, ServerError) and exc.code == P.OVERLOADED, exc
    raise AssertionError(f"{cid} was shed {TRIES} times")


def test_requests_behind_work_older_than_max_delay_are_shed_and_store_nothing(tmp_path):
    async def main():
        async with Node() as node:
            store = Store(str(tmp_path / "store"), node)
            server = ChatServer(node, store, SECRET, Limits(max_delay=MAX_DELAY),
                                chat_config=ChatConfig(call_timeout=60.0))
            _, port = await server.start("127.0.0.1", 0)
            try:
                alice, bob = await connect(port, "alice"), await connect(port, "bob")
                shard = server.chat.router.locate("bob")
                await suspend(node, shard)
                held = await send_held(alice, "bob", "held")
                # Everything that makes work is now behind a request older than the bound.
                shed = []
                for i in range(5):
                    try:
                        await asyncio.wait_for(alice.send("bob", b"shed", cid=f"shed{i}"), 10.0)
                    except ServerError as exc:
                        shed.append(exc.code)
                assert shed == [P.OVERLOADED] * 5
                await alice.request("ping")  # never shed: the server still answers it
                await resume(node, shard)
                taken = {"held": await held}
                taken["after"] = await send_until_taken(alice, "bob", "after")
                for i in range(5):  # sent again, same cids: stored now, once
                    taken[f"shed{i}"] = await send_until_taken(alice, "bob", f"shed{i}")
                assert await send_until_taken(alice, "bob", "shed0") == taken["shed0"]
                got = []
                while len(got) < len(taken):
                    event = await bob.next_event(15.0)
                    if type(event) is Message:
                        got.append((event.body.decode(), event.msg_id))
                assert sorted(got) == sorted(taken.items())  # each stored once, none while shed
                marker = await send_until_taken(alice, "bob", "marker")
                event = await bob.next_event(15.0)
                while type(event) is not Message:
                    event = await bob.next_event(15.0)
                assert (event.body, event.msg_id) == (b"marker", marker)  # nothing else came
                await alice.close()
                await bob.close()
            finally:
                await server.stop()
                store.close()
    arun(main(), 120.0)


def test_the_bound_rises_for_a_slow_store_and_only_so_far():
    load = Load(max_delay=0.1, max_inflight=100)
    assert load.bound() == 0.1 and not load.overloaded(0.0, 0.0)
    slow = load.admit(0.0)
    assert not load.overloaded(0.09, 0.09) and load.overloaded(0.11, 0.0)  # its own wait
    assert load.overloaded(0.0, 0.11)  # or the oldest's in flight
    load.answered(slow, 0.3)  # the quickest answer took 0.3 s: a slow commit, not a queue
    assert load.bound() == 0.6 and load.inflight == 0 and load.oldest(1.0) == 0.0
    load.admit(1.0)
    assert not load.overloaded(0.0, 1.5) and load.overloaded(0.0, 1.7)
    stuck = Load(max_delay=0.1, max_inflight=100)
    stuck.answered(stuck.admit(0.0), 5.0)  # a backlog cannot stretch the bound past 10x
    assert stuck.bound() == 1.0


def test_the_count_bound_sheds_whatever_the_ages():
    load = Load(max_delay=math.inf, max_inflight=2)
    first = load.admit(0.0)
    load.admit(0.0)
    assert load.overloaded(0.0, 0.0)
    load.answered(first, 0.0)
    assert not load.overloaded(0.0, 0.0) and load.inflight == 1
