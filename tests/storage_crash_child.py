"""The node the SIGKILL crash test kills: `python storage_crash_child.py PATH COUNTERS LEDGERS`.

It prints what it recovered, then `ready`, then one line per acknowledged write, forever:
    recovered counter I N CHECK PADLEN     recovered ledger I ITEMS...
    ack counter I N                        ack ledger I LENGTH
Each round it calls every counter and every ledger at once (one group commit per pass).
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # storage_servers

from actors import Node  # noqa: E402
from storage import Store  # noqa: E402
from storage_servers import Counter, Ledger  # noqa: E402


async def main(path: str, counters: int, ledgers: int) -> None:
    out = sys.stdout
    async with Node() as node:
        store = Store(path, node, mode="sync")
        cs = [node.spawn(Counter, store, ("counter", i)) for i in range(counters)]
        ls = [node.spawn(Ledger, store, ("ledger", i)) for i in range(ledgers)]
        for i, pid in enumerate(cs):
            state = await node.call(pid, "state")
            out.write(f"recovered counter {i} {state['n']} {state['check']} {len(state['pad'])}\n")
        for i, pid in enumerate(ls):
            items = await node.call(pid, "get")
            out.write(f"recovered ledger {i} {' '.join(map(str, items))}\n")
        out.write("ready\n")
        out.flush()
        round_ = 0
        while True:
            round_ += 1

            async def bump(i: int) -> None:
                n = await node.call(cs[i], ("add", 1))
                out.write(f"ack counter {i} {n}\n")
                out.flush()

            async def append(i: int) -> None:
                length = await node.call(ls[i], ("append", round_, round_))
                out.write(f"ack ledger {i} {length}\n")
                out.flush()

            await asyncio.gather(*(bump(i) for i in range(counters)),
                                 *(append(i) for i in range(ledgers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
