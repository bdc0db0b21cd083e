"""The node the full-disk test runs: `python storage_full_child.py DIR MODE`.

DIR is an almost empty small file system. The child writes a 5 MiB ballast file, opens a
store (mode MODE, a 256 KiB map) on DIR in a real-time node, and stores one 40 KiB state
per key until a write fails; it checks the node still serves reads, removes the ballast,
writes again, closes, reopens the store and reads every write back. It prints one line
per step (`acked N`, `failed REASON`, `read N`, `freed`, `after WHAT`, `reopened N`),
then `ok`. A SIGBUS would kill it before `failed`.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # storage_servers

from actors import CallExit, NoProc, Node  # noqa: E402
from storage import Store  # noqa: E402
from storage_servers import Counter  # noqa: E402

BALLAST = 5 << 20
VALUE = 40 << 10
MOST = 400  # keys: far more than the file system holds


def value(i: int) -> str:
    return f"{i:06d}" + "v" * VALUE


async def write(node: Node, store: Store, i: int) -> str:
    """Store key i's value: "ok", or the name of the error its writer died with."""
    pid = node.spawn(Counter, store, ("k", i))
    try:
        await node.call(pid, ("set", value(i)))
        await node.call(pid, "state")  # in mode "none" a failed commit shows after the reply
    except CallExit as exc:
        return type(exc.reason).__name__
    except NoProc:
        return "exited"
    return "ok"


async def main(root: str, mode: str) -> None:
    out = sys.stdout
    with open(os.path.join(root, "ballast"), "wb") as f:
        f.write(b"\0" * BALLAST)
    path = os.path.join(root, "store")
    async with Node() as node:
        store = Store(path, node, mode=mode, map_size=256 << 10)
        acked = []
        for i in range(MOST):
            outcome = await write(node, store, i)
            if outcome != "ok":
                print(f"failed {outcome}", file=out, flush=True)
                break
            acked.append(i)
        print(f"acked {len(acked)}", file=out, flush=True)
        reads = [i for i in acked if store.read(("k", i))[1] == value(i)]
        print(f"read {len(reads)}", file=out, flush=True)
        os.remove(os.path.join(root, "ballast"))
        print("freed", file=out, flush=True)
        outcome = await write(node, store, len(acked))  # the write that failed, again
        print(f"after {outcome}", file=out, flush=True)
        if outcome == "ok":
            acked.append(len(acked))
        store.close()
    node = Node(seed=1)
    with Store(path, node, mode=mode) as store:
        back = [i for i in acked if store.read(("k", i))[1] == value(i)]
    print(f"reopened {len(back)}", file=out, flush=True)
    print("ok", file=out, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
