"""Supervision on the real-time driver, inside asyncio: the same code as under the simulator."""
from conftest import arun, eventually

from actors import Node
from supervision import (Application, ChildSpec, DynamicSupervisor, Flags, Supervisor, start_child,
                         terminate_child, which_children)
from test_supervision import Worker, stubborn, watch, worker


def test_restarts_and_application_stop_in_asyncio():
    events = []

    async def main():
        async with Node("rt") as node:
            app = Application(Supervisor, [worker("a", events, trap=True), worker("b", events, trap=True),
                                           ChildSpec("sessions", DynamicSupervisor)],
                              Flags(strategy="rest_for_one"))
            top = app.start(node)
            before = {c.id: c.pid for c in await which_children(node, top)}
            gone = watch(node, before["a"])
            node.cast(before["a"], ("raise", "boom"))
            await eventually(lambda: gone)
            after = {c.id: c.pid for c in await which_children(node, top)}
            assert all(after[k] != before[k] for k in after)  # a and everything after it
            session = await start_child(node, after["sessions"], worker("s", events))
            assert await node.call(session, "name") == "s"
            await app.stop()
            assert len(node) == 0
            return [e[:2] for e in events]

    assert arun(main()) == [
        ("start", "a"), ("start", "b"), ("stop", "a"), ("stop", "b"), ("start", "a"), ("start", "b"),
        ("start", "s"), ("stop", "b"), ("stop", "a")]


def test_a_stubborn_child_is_killed_after_its_real_shutdown_time():
    events = []

    async def main():
        async with Node("rt") as node:
            sup = node.spawn(Supervisor, [ChildSpec("s", stubborn, args=(events,), shutdown=0.05,
                                                    options={"trap_exit": True})])
            (child,) = [c.pid for c in await which_children(node, sup)]
            gone = watch(node, child)
            await terminate_child(node, sup, "s")
            return gone[0][0], node.is_alive(sup)

    assert arun(main()) == ("killed", True)


def test_calls_from_a_process_in_real_time():
    events, seen = [], []

    async def manager(proc, sup):
        seen.append(await start_child(proc, sup, ChildSpec("w", Worker, args=("w", events))))
        seen.append(await proc.call(seen[0], "hi"))

    async def main():
        async with Node("rt") as node:
            sup = node.spawn(Supervisor, [])
            node.spawn(manager, sup)
            await eventually(lambda: len(seen) == 2)

    arun(main())
    assert seen[1] == "w"
