"""Nodes in separate OS processes (started by the laptop launcher, `apps.cluster`), with
this test process as one more node of the cluster: what crosses between them, and what a
crash (SIGKILL), a freeze (SIGSTOP) and a restart do to links, monitors, calls,
supervisors, global names (and a `via` of one) and pids. The nodes run `dist_app.start`."""
from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, AsyncIterator

import pytest
from conftest import BOUND, arun, eventually

from actors import (NOCONNECTION, Distribution, Down, Exit, Node, NodeDown, NoProc, PeerTable, RemoteName,
                    global_names, new_creation)
from apps.cluster import Cluster
from dist_helpers import cluster

ME = "t@localhost"


@contextlib.asynccontextmanager
async def member(of: Cluster) -> AsyncIterator[Node]:
    """This process as node t@localhost of cluster `of`, connected to each of its nodes."""
    node = Node(ME, creation=new_creation())
    await node.__aenter__()
    dist = await Distribution(node, secret=of.secret, listen=f"unix:{of.directory}/t.sock",
                              discovery=PeerTable(of.addresses), ticktime=of.ticktime).start()
    try:
        global_names.start(node)  # the cluster's names are read here too
        for name in of.names:
            await dist.connect(name)
        yield node
    finally:
        await dist.stop()
        await node.stop(timeout=0.1)  # the reporter traps exits and never stops on its own


def reporter(node: Node) -> tuple[Any, list]:
    """A trapping process on `node` that keeps every message it gets."""
    seen: list = []

    async def body(proc: Any) -> None:
        proc.trap_exit = True
        while True:
            seen.append(await proc.receive())
    return node.spawn(body), seen


def test_calls_casts_exits_links_and_monitors_cross_between_node_processes_in_order():
    with cluster(2) as c:
        n1, n2 = c.names

        async def main() -> None:
            async with member(c) as t:
                for name in (n1, n2):
                    assert await t.call(RemoteName("echo", name), "hi") == ("echo", name, "hi")
                echo = await t.call(RemoteName("echo", n1), "pid")
                count = 3000

                async def sender(proc: Any) -> None:  # casts in order, interleaved with the other sender
                    for i in range(count):
                        proc.cast(echo, (proc.pid, i))
                        if i % 100 == 0:
                            await proc.sleep(0)
                    await proc.call(echo, "stats")  # its casts were all handled before this answer
                senders = [t.spawn(sender), t.spawn(sender)]
                await eventually(lambda: not any(t.is_alive(s) for s in senders), BOUND, 0.01)
                assert await t.call(echo, "stats") == (2 * count, 0)  # (handled, out of order)

                watcher, seen = reporter(t)
                t.get_process(watcher).link(echo)
                ref = t.get_process(watcher).monitor(echo)
                assert await t.call(echo, "still there") == ("echo", n1, "still there")  # the link is set
                t.exit(echo, "told to go")  # an exit signal across: echo does not trap it
                await eventually(lambda: len(seen) == 2, BOUND, 0.01)
                assert seen == [Exit(echo, "told to go"), Down(ref, echo, "told to go")]
                assert await t.call(RemoteName("echo", n2), "n2 unharmed") == ("echo", n2, "n2 unharmed")
        arun(main())


def test_a_killed_node_gives_noconnection_everywhere_a_supervisor_restarts_and_its_old_pids_are_refused():
    with cluster(2) as c:
        n1, n2 = c.names

        async def main() -> None:
            async with member(c) as t:
                to, seen = reporter(t)
                assert await t.call(RemoteName("lab", n2), ("partner",)) is True  # n2's echo, global "partner"
                echo2 = await t.call(RemoteName("echo", n2), "pid")
                await eventually(lambda: global_names.whereis_name(t, "partner") == echo2, BOUND, 0.01)
                assert await t.call(global_names.via(t, "partner"), "via") == ("echo", n2, "via")
                await t.call(RemoteName("lab", n1), ("supervise", to))
                await t.call(RemoteName("lab", n1), ("sentinel", echo2, RemoteName("silent", n2), to))
                await eventually(lambda: ("sentinel ready", n1) in seen, BOUND, 0.01)
                started = [m for m in seen if m[0] == "worker started"]
                assert [m[3] for m in started] == [echo2]  # linked to n2's echo
                proc = t.get_process(to)
                ref = proc.monitor(echo2)
                proc.monitor_node(n2)

                c.kill(n2)  # SIGKILL: the socket closes, nothing is said
                want = {("heard", n1, "Exit", NOCONNECTION), ("heard", n1, "Down", NOCONNECTION),
                        ("heard", n1, "NodeDown", "connection_closed"), ("call failed", n1, NOCONNECTION),
                        Down(ref, echo2, NOCONNECTION), NodeDown(n2, "connection_closed")}
                await eventually(lambda: want <= set(seen) and len([m for m in seen if m[0] == "worker started"]) == 2,
                                 BOUND, 0.01)
                await eventually(lambda: global_names.whereis_name(t, "partner") is None, BOUND, 0.01)  # its node went
                restarted = [m for m in seen if m[0] == "worker started"][1]
                assert restarted[1] == n1 and restarted[2] != started[0][2] and restarted[3] is None

                await asyncio.to_thread(c.restart, n2)  # a new incarnation (this node's loop runs meanwhile)
                echo2_again = await t.call(RemoteName("echo", n2), "pid")
                assert echo2_again.node_name == echo2.node_name and echo2_again != echo2
                t.cast(echo2, ("t", 0))  # for the previous life: goes nowhere
                with pytest.raises(NoProc):
                    await t.call(echo2, "stats", BOUND)
                assert await t.call(echo2_again, "stats") == (0, 0)
        arun(main())


def test_a_frozen_node_is_noticed_by_its_silence():
    with cluster(1, ticktime=2.0) as c:
        [n1] = c.names

        async def main() -> None:
            async with member(c) as t:
                to, seen = reporter(t)
                echo = await t.call(RemoteName("echo", n1), "pid")
                proc = t.get_process(to)
                proc.link(echo)
                proc.monitor_node(n1)
                assert await t.call(echo, "linked") == ("echo", n1, "linked")
                c.kill(n1, signal.SIGSTOP)  # alive, its socket open, silent
                await eventually(lambda: len(seen) == 2, BOUND, 0.01)
                assert sorted(seen, key=repr) == [Exit(echo, NOCONNECTION), NodeDown(n1, "net_tick_timeout")]
                assert t.nodes() == []
        arun(main())


def test_a_node_stops_when_its_launcher_goes():
    """The launcher's pipe closing (as when it is SIGKILLed) stops the node: no orphans."""
    with cluster(1) as c:
        [n1] = c.names
        proc = c.procs[n1]
        assert proc.poll() is None
        proc.stdin.close()  # what the OS does to the launcher's end when it dies
        assert proc.wait(BOUND) == 0
