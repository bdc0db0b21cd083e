"""The chat's edges through the real TCP server (`letitcrash serve` in a subprocess, real
clients over loopback): presence only between contacts, and a sender's quota answered
with its own error code. Timeouts are safety bounds for a loaded machine."""
from __future__ import annotations

import asyncio

import pytest
from server_harness import ServerProcess

from apps.chat import ChatConfig
from apps.chat.router import HashRing
from apps.server import Presence, ServerError

pytestmark = pytest.mark.xdist_group("chat_server_edges")  # one worker: its module fixture is made once

WAIT = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("edges")).start()
    yield srv
    assert srv.terminate() == 0, srv.log()
    assert "Traceback" not in srv.log()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def homed_together(n: int, prefix: str) -> list[str]:
    """`n` user names the server's ring places on one shard (so their order is causal)."""
    ring = HashRing(ChatConfig().shards)
    names = [f"{prefix}{i}" for i in range(50 * n)]
    shard = ring.owner(names[0])
    return [name for name in names if ring.owner(name) == shard][:n]


def test_presence_is_seen_and_pushed_between_contacts_only(server):
    alice, bob, mallory = homed_together(3, "priv")

    async def main():
        a, b, m = (await server.client(alice), await server.client(bob), await server.client(mallory))
        await a.set_contacts([bob])
        await b.set_contacts([alice])
        await m.set_contacts([alice, bob])  # listing them gives mallory nothing
        with pytest.raises(ServerError) as info:
            await m.presence_of(alice)
        assert info.value.code == "forbidden" and "contacts only" in str(info.value)
        assert await b.presence_of(alice) == ("online", None)
        await m.set_presence("away")  # neither lists mallory: pushed to nobody...
        await b.set_presence("away")  # ...so the first presence alice gets is bob's
        seen = await a.next_event(WAIT)
        while not isinstance(seen, Presence):
            seen = await a.next_event(WAIT)
        assert (seen.user, seen.status) == (bob, "away")
        for client in (a, b, m):
            await client.close()
    run(main())


def test_a_sender_past_its_quota_gets_its_own_error_code_and_others_go_on(server):
    config = ChatConfig()
    offline = homed_together(config.max_sender_offline + 1, "away")

    async def main():
        spammer, other = await server.client("spammer"), await server.client("other")
        for name in offline[:-1]:
            await spammer.send(name, b"x")
        with pytest.raises(ServerError) as info:
            await spammer.send(offline[-1], b"x")
        assert info.value.code == "quota_exceeded" and "max_sender_offline" in str(info.value)
        assert await other.send(offline[-1], b"x") > 0  # the quota is the spammer's alone
        await spammer.close()
        await other.close()
    run(main())
