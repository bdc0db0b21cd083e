"""When a node writes what it has for another: a persistent server's reply, held until its
store commits at the end of a scheduler pass, leaves with that round of the event loop,
not with the node's next pass."""
from __future__ import annotations

import asyncio

from conftest import arun
from dist_helpers import nodes
from storage_servers import Counter

from actors import GenServer
from storage import Store


class Busy(GenServer):
    """Always runnable (a cast to itself each turn), so its node never goes idle; at each
    turn it notes `reading()` when that changed."""

    def init(self, reading, seen: list):
        self.reading, self.seen = reading, seen
        self.cast(self.pid, "again")

    def handle_cast(self, msg):
        now = self.reading()
        if not self.seen or self.seen[-1] != now:
            self.seen.append(now)
        self.cast(self.pid, "again")


def test_a_reply_released_by_a_commit_leaves_before_the_node_runs_again(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            await da.connect("b@h", db.address)
            store = Store(str(tmp_path / "b-store"), b, mode="process")
            counter = b.spawn(Counter, store, "k")
            seen: list[tuple[int, int]] = []  # b's (commits, frames written), as its busy process saw them
            b.spawn(Busy, lambda: (store.commits, db.frames_out), seen)
            await asyncio.sleep(0.05)
            commits, frames = store.commits, db.frames_out
            answer = asyncio.get_running_loop().create_future()

            async def caller(proc):
                answer.set_result(await proc.call(counter, ("add", 5)))
            a.spawn(caller)
            assert await asyncio.wait_for(answer, 10) == 5
            after = [written for done, written in seen if done > commits]
            assert after and after[0] == frames + 1  # the reply went before b's next pass
            store.close()
    arun(main())
