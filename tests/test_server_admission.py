"""Admission control by time (`apps.server.connection.Load`): a server with a backlog of
admitted work older than `max_delay` answers new requests `overloaded` at once, stores
nothing of them, and takes them again once that work has drained; a few slow requests
are not a backlog; a send retried with the same `cid` is stored once.

The server runs in the test's process (a real node, store and loopback sockets, real
clients) so that a test can hold its work still: a recipient's chat shard is
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


async def send_held(client: Client, to: str, cids: list[str]) -> list[asyncio.Task]:
    """Sends of `cids` the server took and holds (their recipient's shard is suspended):
    all still unanswered HELD seconds after the last was sent. Those shed by a busy
    machine are sent again."""
    tasks = {cid: asyncio.create_task(client.send(to, cid.encode(), cid=cid)) for cid in cids}
    for _ in range(TRIES):
        await asyncio.sleep(HELD)
        shed = [cid for cid, task in tasks.items() if task.done()]
        if not shed:
            return list(tasks.values())
        for cid in shed:
            exc = tasks[cid].exception()
            assert isinstance(exc, ServerError) and exc.code == P.OVERLOADED, exc
            tasks[cid] = asyncio.create_task(client.send(to, cid.encode(), cid=cid))
    raise AssertionError(f"sends were shed {TRIES} times")


async def next_message(client: Client) -> Message:
    event = await client.next_event(15.0)
    while type(event) is not Message:
        event = await client.next_event(15.0)
    return event


def test_a_backlog_older_than_max_delay_sheds_new_requests_and_a_few_slow_ones_do_not(tmp_path):
    async def main():
        async with Node() as node:
            store = Store(str(tmp_path / "store"), node)
            server = ChatServer(node, store, SECRET, Limits(max_delay=MAX_DELAY),
                                chat_config=ChatConfig(call_timeout=60.0))
            _, port = await server.start("127.0.0.1", 0)
            try:
                shard = server.chat.router.locate("bob")
                carol = next(f"carol{i}" for i in range(100) if server.chat.router.locate(f"carol{i}") != shard)
                alice, bob, other = (await connect(port, "alice"), await connect(port, "bob"),
                                     await connect(port, carol))
                await suspend(node, shard)
                held = await send_held(alice, "bob", [f"held{i}" for i in range(Load.BACKLOG - 1)])
                # A few requests slower than the bound are not a backlog: others' go on.
                taken = {"to carol": await send_until_taken(alice, carol, "to carol")}
                held += await send_held(alice, "bob", [f"held{Load.BACKLOG - 1}"])
                # Now BACKLOG requests are older than the bound: what makes work is shed.
                shed = []
                for i, to in enumerate(("bob", carol) * 3):
                    try:
                        await asyncio.wait_for(alice.send(to, b"shed", cid=f"shed{i}"), 10.0)
                    except ServerError as exc:
                        shed.append(exc.code)
                assert shed == [P.OVERLOADED] * 6
                await alice.request("ping")  # never shed: the server still answers it
                await resume(node, shard)
                for i, task in enumerate(held):
                    taken[f"held{i}"] = await task
                taken["after"] = await send_until_taken(alice, "bob", "after")
                for i, to in enumerate(("bob", carol) * 3):  # sent again, same cids: stored now, once
                    taken[f"shed{i}"] = await send_until_taken(alice, to, f"shed{i}")
                assert await send_until_taken(alice, "bob", "shed0") == taken["shed0"]
                for client, name in ((bob, "bob"), (other, carol)):
                    mine = {cid: msg_id for cid, msg_id in taken.items()
                            if (cid == "to carol" or cid.startswith("shed") and int(cid[4:]) % 2) == (name == carol)}
                    got = [await next_message(client) for _ in mine]
                    assert sorted((m.body.decode(), m.msg_id) for m in got) == sorted(mine.items())  # once each
                    marker = await send_until_taken(alice, name, f"marker {name}")
                    last = await next_message(client)
                    assert (last.body.decode(), last.msg_id) == (f"marker {name}", marker)  # nothing else came
                for client in (alice, bob, other):
                    await client.close()
            finally:
                await server.stop()
                store.close()
    arun(main(), 120.0)


def late(load: Load, n: int, since: float) -> list[list]:
    """`n` requests admitted at `since`."""
    return [load.admit(since) for _ in range(n)]


def test_a_backlog_is_counted_past_the_bound_which_rises_for_a_slow_store_and_only_so_far():
    load = Load(max_delay=0.1, max_inflight=100)
    assert load.bound() == 0.1 and not load.overloaded(0.0, 0.0)
    assert not load.overloaded(0.09, 0.0) and load.overloaded(0.11, 0.0)  # its own wait
    slow = late(load, Load.BACKLOG - 1, 0.0)
    assert not load.overloaded(0.0, 5.0) and load.late == Load.BACKLOG - 1  # slow ones, not a backlog
    one_more = load.admit(5.0)
    assert not load.overloaded(0.0, 5.09) and load.overloaded(0.0, 5.11)  # now it is one
    for entry in slow:
        load.answered(entry, 5.25)
    load.answered(one_more, 5.25)  # the quickest answer took 0.25 s: a slow commit, not a queue
    assert load.late == 0 and load.inflight == 0 and load.bound() == 0.5
    late(load, Load.BACKLOG, 6.0)
    assert not load.overloaded(0.0, 6.49) and load.overloaded(0.0, 6.51)
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


def test_answered_entries_leave_even_when_no_request_is_ever_tested_for_shedding():
    load = Load(max_delay=0.1, max_inflight=100)  # pings and confirms are admitted, never tested
    for i in range(10_000):
        load.answered(load.admit(i * 0.001), i * 0.001)
    assert len(load.entries) == 1 and load.inflight == 0 and load.late == 0
