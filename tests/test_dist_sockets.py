"""Nodes with a distribution over real sockets (Unix and TCP), several in one event loop:
what crosses, connection life (connect on first use, the handshake, ticks, a new
incarnation), and every kind of bad peer. The separate-OS-process tests are in
test_dist_processes.py."""
from __future__ import annotations

import asyncio
import logging
import os

import msgpack
import pytest
from conftest import arun, eventually
from dist_helpers import SECRET, RawPeer, nodes

from actors import (NOCONNECTION, CallExit, Distribution, Down, Exit, GenServer, Node, NodeDown, NodeUp, NoProc,
                    NoReply, RemoteName)
from actors.handshake import NONCE, VERSION, digest
from actors.wire import CAST, NAMED, SEND, array_header, frame


class Echo(GenServer):
    def init(self, log: list | None = None) -> None:
        self.log = log if log is not None else []

    def handle_call(self, request, caller):
        return ("echo", request)

    def handle_cast(self, msg):
        self.log.append(msg)

    def handle_info(self, msg):
        self.log.append(msg)


class Silent(GenServer):
    """Takes calls and never answers them."""

    def handle_call(self, request, caller):
        return NoReply


def spawn_watcher(node: Node, seen: list, *, link=None, monitor=None, nodes_too: bool = False):
    """A trapping process on `node` that links/monitors what it is given and keeps what it gets."""
    async def body(proc):
        proc.trap_exit = True
        if nodes_too:
            proc.monitor_nodes()
        if link is not None:
            proc.link(link)
        if monitor is not None:
            proc.monitor(monitor)
        while True:
            seen.append(await proc.receive())
    return node.spawn(body)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_send_cast_call_link_and_monitor_cross_and_a_closed_connection_says_noconnection(tmp_path, transport):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h", transport=transport) as [(a, da), (b, db)]:
            log: list = []
            echo = b.spawn(Echo, log)
            b.register("echo", echo)
            await da.connect("b@h", db.address)
            a.cast(echo, ("tuple", 1))
            a.send(RemoteName("echo", "b@h"), ["list", 2])
            assert await a.call(echo, {"map": (3, b"bytes")}) == ("echo", {"map": (3, b"bytes")})
            assert log == [("tuple", 1), ["list", 2]]
            seen: list = []
            spawn_watcher(a, seen, link=echo, monitor=echo, nodes_too=True)
            silent = b.spawn(Silent)
            waiting = asyncio.ensure_future(a.call(silent, "never answered", 30.0))
            await eventually(lambda: b.get_process(echo)._links and b.get_process(silent)._mbox is not None)
            b.disconnect("a@h")  # b's side; the closed stream tells a
            await eventually(lambda: len(seen) == 3)
            with pytest.raises(CallExit, match="noconnection"):
                await asyncio.wait_for(waiting, 10)
            assert [type(m) for m in seen] == [Exit, Down, NodeDown]
            assert seen[0] == Exit(echo, NOCONNECTION) and seen[1].reason == NOCONNECTION
            assert seen[2] == NodeDown("b@h", "connection_closed") and a.nodes() == [] == b.nodes()
            assert not b.is_alive(echo)  # linked across, not trapping: noconnection killed it
    arun(main())


def test_a_node_not_connected_is_connected_on_first_use_and_what_waits_goes_in_order(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            log: list = []
            echo = b.spawn(Echo, log)
            da.discovery.learn("b@h", db.address)
            for i in range(100):
                a.cast(echo, i)  # connecting meanwhile: they wait in the connection
            assert await a.call(echo, "after") == ("echo", "after")
            assert log == list(range(100)) and a.nodes() == ["b@h"]
    arun(main())


def test_a_node_that_cannot_be_reached_gives_noconnection_to_links_monitors_calls_and_watchers(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", retry_after=60.0) as [(a, da)]:
            da.discovery.learn("gone@h", f"unix:{tmp_path}/nobody.sock")
            seen: list = []
            far = Node("gone@h", seed=1).spawn(Echo)  # a pid of that node, as a message would carry it

            async def body(proc):
                proc.trap_exit = True
                proc.monitor_node("gone@h")
                proc.link(far)
                proc.monitor(far)
                try:
                    await proc.call(far, "x", 10.0)
                except CallExit as exc:
                    seen.append(("call", exc.reason))
                while True:
                    seen.append(await proc.receive())
            a.spawn(body)
            await eventually(lambda: len(seen) == 4)
            assert sorted(repr(m) for m in seen) == sorted(repr(m) for m in [
                ("call", NOCONNECTION), Exit(far, NOCONNECTION), Down(seen[2].ref if type(seen[2]) is Down
                                                                      else seen[3].ref, far, NOCONNECTION),
                NodeDown("gone@h", "connection_setup_failed")])
            with pytest.raises(ConnectionError, match="gone@h"):
                await da.connect("gone@h")
    arun(main())


def test_three_nodes_meet_through_one_of_them(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h", "c@h") as [(_, da), (b, db), (c, dc)]:
            await db.connect("a@h", da.address)
            await dc.connect("a@h", da.address)  # c hears of b from a, and connects to it
            await eventually(lambda: c.nodes() == ["a@h", "b@h"] and b.nodes() == ["a@h", "c@h"])
            b.register("echo", b.spawn(Echo))
            assert await c.call(RemoteName("echo", "b@h"), 1) == ("echo", 1)
    arun(main())


def test_two_nodes_connecting_to_each_other_at_once_keep_one_connection(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            da.discovery.learn("b@h", db.address)
            db.discovery.learn("a@h", da.address)
            await asyncio.gather(da.connect("b@h"), db.connect("a@h"))
            await asyncio.sleep(0.1)
            assert list(da.up) == ["b@h"] and list(db.up) == ["a@h"]
            b.register("echo", b.spawn(Echo))
            a.register("echo", a.spawn(Echo))
            assert await a.call(RemoteName("echo", "b@h"), 1) == ("echo", 1)
            assert await b.call(RemoteName("echo", "a@h"), 2) == ("echo", 2)
            assert a.nodes() == ["b@h"] and b.nodes() == ["a@h"]
    arun(main())


def test_an_attempt_past_its_reply_stays_when_the_peer_connects_at_that_moment(tmp_path):
    """The acceptor counts a connection as made once it sends its ack; the initiator, past
    its reply, must not give way to a simultaneous attempt then (it would refuse on a
    connection its peer holds as up), whatever the names' order."""
    async def main():
        async with nodes(tmp_path, "a@h") as [(a, da)]:
            accepted: asyncio.Queue = asyncio.Queue()
            server = await asyncio.start_unix_server(lambda r, w: accepted.put_nowait(RawPeer(r, w)),
                                                     f"{tmp_path}/b.sock")
            da.discovery.learn("b@h", f"unix:{tmp_path}/b.sock")
            connecting = asyncio.ensure_future(da.connect("b@h"))
            first = await asyncio.wait_for(accepted.get(), 10)  # a's attempt, b@h (raw) accepting
            hello = await first.read()
            assert hello[0] == "hello" and hello[2] == "a@h"
            nonce = os.urandom(NONCE)
            first.send(["challenge", VERSION, "b@h", 7, None, 1 << 20, "ok", nonce])
            reply = await first.read()  # a is past its reply now
            assert reply[0] == "reply"
            second = await RawPeer.open(da.address)  # b's own attempt, at that moment
            second.send(["hello", VERSION, "b@h", 7, None, 1 << 20])
            assert await second.read() == ["refuse", "nok"]
            first.send(["ack", digest(SECRET, b"B", reply[1], "b@h", "a@h"), {}])
            await asyncio.wait_for(connecting, 10)
            assert a.nodes() == ["b@h"] and list(da.up) == ["b@h"]
            first.close()
            second.close()
            server.close()
    arun(main())


def test_order_per_pair_holds_under_load_from_many_senders(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            log: list = []
            echo = b.spawn(Echo, log)
            await da.connect("b@h", db.address)

            async def sender(proc, k):
                for i in range(3000):
                    proc.cast(echo, (k, i))
                    if i % 500 == 0:
                        await proc.sleep(0)
            for k in range(5):
                a.spawn(sender, k)
            await eventually(lambda: len(log) == 15000)
            for k in range(5):
                assert [i for s, i in log if s == k] == list(range(3000))
    arun(main())


def test_statistics_count_the_frames_bytes_and_deliveries_that_crossed(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            await da.connect("b@h", db.address)
            echo = b.spawn(Echo)
            log = b.get_process(echo).log
            before_a, before_b = da.statistics(), db.statistics()
            for i in range(10):
                a.cast(echo, i)                                  # ten casts in one pass: one frame
            await eventually(lambda: len(log) == 10)
            assert await a.call(echo, "x") == ("echo", "x")      # a call there, its reply back
            after_a, after_b = da.statistics(), db.statistics()
            moved = {node: {k: after[k] - before[k] for k in after}
                     for node, before, after in (("a", before_a, after_a), ("b", before_b, after_b))}
            assert moved["b"]["deliveries_in"] == 11 and moved["a"]["deliveries_in"] == 1
            assert moved["a"]["frames_out"] == moved["b"]["frames_in"] == 2
            assert moved["b"]["frames_out"] == moved["a"]["frames_in"] == 1
            assert moved["a"]["bytes_out"] == moved["b"]["bytes_in"] > 10
            assert moved["b"]["bytes_out"] == moved["a"]["bytes_in"] > 0
    arun(main())


def test_what_cannot_be_encoded_raises_in_a_caller_and_a_cast_of_it_is_dropped_with_a_log_line(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h", max_frame=1 << 20) as [(a, da), (b, db)]:
            log: list = []
            echo = b.spawn(Echo, log)
            await da.connect("b@h", db.address)
            with pytest.raises(TypeError, match="cannot go over the wire.*function"):
                await a.call(echo, lambda: 1)
            a.cast(echo, 1)
            a.cast(echo, lambda: 2)
            a.cast(echo, 3)
            assert await a.call(echo, "sync") == ("echo", "sync")
            assert log == [1, 3]
            too_big = b"x" * (2 << 20)
            with pytest.raises(ValueError, match="over the limit"):
                await a.call(echo, too_big)
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1 and "function" in drops[0].getMessage()


def test_a_wrong_secret_is_refused_with_one_log_line_and_the_node_goes_on(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:
            echo = b.spawn(Echo)
            intruder = Node("c@h", creation=3)
            async with intruder:
                dc = await Distribution(intruder, secret=b"not the secret").start()
                with pytest.raises(ConnectionError, match="not_allowed"):
                    await dc.connect("b@h", db.address)
                await dc.stop()
            await da.connect("b@h", db.address)
            assert await a.call(echo, 1) == ("echo", 1) and b.nodes() == ["a@h"]
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    refused = [r.getMessage() for r in caplog.records if r.name == "actors.dist"]
    assert len(refused) == 1 and "refused a connection from c@h" in refused[0] and "not_allowed" in refused[0]


@pytest.mark.parametrize("case", ["garbage", "version", "own name"])
def test_a_bad_handshake_is_refused_with_one_log_line(tmp_path, caplog, case):
    async def main():
        async with nodes(tmp_path, "b@h") as [(_, db)]:
            peer = await RawPeer.open(db.address)
            if case == "garbage":
                peer.write(b"\x00\x00\x00\x05hello")  # not msgpack
            elif case == "version":
                assert await peer.handshake("raw@h", 1, SECRET, 99, 1 << 20) == ["refuse", "version"]
            else:
                assert await peer.handshake("b@h", 1, SECRET, VERSION, 1 << 20) == ["refuse", "name"]
            assert await peer.closed()
            peer.close()
            assert await RawPeer.joined(db.address) is not None  # and the next one is let in
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "actors.dist"]
    assert len(lines) == 1 and "refused a connection" in lines[0], lines


def delivery(code: int, to, *fields) -> bytes:
    """One delivery as the wire's bytes (plain msgpack: no extension types)."""
    return msgpack.packb([code, to, *fields], use_bin_type=True)


def batch(*items: bytes) -> bytes:
    return frame(array_header(len(items)) + b"".join(items))


BAD_FRAMES = {
    "garbage": frame(b"\xc1\xc1\xc1"),  # 0xc1 is never used by msgpack
    "not a batch": frame(msgpack.packb({"a": 1})),
    "unknown kind": batch(delivery(15, 1, 2)),
    "undecodable term": batch(delivery(CAST | NAMED, "echo", msgpack.ExtType(99, b"?"))),
    "pid of another node": None,  # built in the test: needs the pid
    "wrong field": batch(msgpack.packb([2, 1, "not a pid", 5, True, "request"])),
    "flag not a bool": batch(msgpack.packb([2, 1, 1, 5, "yes", "request"])),  # a call's monitor flag
    "oversized": (32 << 20).to_bytes(4, "big"),  # just the length: over the 16 MiB limit
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_a_bad_frame_closes_the_connection_with_one_log_line_and_what_follows_it_is_dropped(tmp_path, caplog, case):
    async def main():
        async with nodes(tmp_path, "b@h") as [(b, db)]:
            log: list = []
            echo = b.spawn(Echo, log)
            b.register("echo", echo)
            seen: list = []
            spawn_watcher(b, seen, nodes_too=True)
            peer = await RawPeer.joined(db.address)
            await eventually(lambda: NodeUp("raw@host") in seen)
            bad = BAD_FRAMES[case]
            if bad is None:
                bad = batch(delivery(SEND | NAMED, msgpack.ExtType(1, msgpack.packb(["c@h", 5])), "x"))
            good = batch(delivery(CAST | NAMED, "echo", "before"))
            after = batch(delivery(CAST | NAMED, "echo", "after"))
            peer.write(good + bad + after)  # one write: the node reads them together
            assert await peer.closed()
            await eventually(lambda: NodeDown("raw@host", "bad_frame") in seen)
            assert log == ["before"] and b.is_alive(echo)  # nothing after the bad frame was delivered
            assert await b.call(echo, "still serving") == ("echo", "still serving")
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "actors.dist"]
    assert len(lines) == 1 and "lost the connection to raw@host: bad_frame" in lines[0], lines


def test_a_delivery_to_a_pid_that_does_not_exist_here_is_dropped_quietly(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, "b@h") as [(b, db)]:
            log: list = []
            b.register("echo", b.spawn(Echo, log))
            peer = await RawPeer.joined(db.address)
            peer.write(batch(delivery(CAST, 12345, "to nobody"), delivery(CAST | NAMED, "echo", "here")))
            await eventually(lambda: log == ["here"])
            assert b.nodes() == ["raw@host"]  # the connection stays
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    assert not [r for r in caplog.records if r.name == "actors.dist"]


def test_a_silent_peer_is_dropped_after_three_ticks(tmp_path):
    async def main():
        async with nodes(tmp_path, "b@h", ticktime=0.4) as [(b, db)]:
            seen: list = []
            spawn_watcher(b, seen, nodes_too=True)
            peer = await RawPeer.joined(db.address)  # then says nothing, and reads nothing
            await eventually(lambda: len(seen) == 2)
            assert seen == [NodeUp("raw@host"), NodeDown("raw@host", "net_tick_timeout")]
            peer.close()
    arun(main())


def test_ticks_keep_an_idle_connection_up(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h", ticktime=0.4) as [(a, da), (b, db)]:
            await da.connect("b@h", db.address)
            await asyncio.sleep(2.0)  # five tick times, nothing sent but ticks
            assert a.nodes() == ["b@h"] and b.nodes() == ["a@h"]
    arun(main())


def test_a_peer_that_stops_reading_overloads_its_connection_and_the_sender_goes_on(tmp_path, caplog):
    async def main():
        async with nodes(tmp_path, "b@h", max_buffer=1 << 20, max_frame=1 << 16) as [(b, db)]:
            seen: list = []
            spawn_watcher(b, seen, nodes_too=True)
            peer = await RawPeer.joined(db.address, max_frame=1 << 16)
            peer.writer.transport.pause_reading()  # reads nothing more: the socket's buffers fill
            far = Node("raw@host", seed=1, creation=7).spawn(Echo)  # of the incarnation connected
            sent = []

            async def flood(proc):
                for i in range(100_000):
                    proc.cast(far, ("x" * 100, i))
                    sent.append(i)
                    if i % 1000 == 0:
                        await proc.sleep(0)  # the pass ends: what waits is written
            b.spawn(flood)
            await eventually(lambda: NodeDown("raw@host", "overloaded") in seen)
            await eventually(lambda: len(sent) == 100_000)  # the sender was never blocked
            peer.close()
    with caplog.at_level(logging.WARNING, logger="actors.dist"):
        arun(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "actors.dist"]
    # one line says why; the casts that follow try to connect again (on first use), and cannot
    assert len([line for line in lines if "overloaded" in line and "reads too slowly" in line]) == 1, lines
    assert all("overloaded" in line or "could not connect to raw@host" in line for line in lines), lines


def test_below_the_bound_a_peer_that_pauses_reading_gets_everything_in_order_once_it_reads_again(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h", "b@h") as [(a, da), (b, db)]:  # max_buffer: 64 MiB
            log: list = []
            echo = b.spawn(Echo, log)
            seen: list = []
            spawn_watcher(a, seen, nodes_too=True)
            await da.connect("b@h", db.address)
            db.up["a@h"].channel.transport.pause_reading()  # b stops reading; a's socket buffers fill
            count = 20_000

            async def flood(proc):
                for i in range(count):
                    proc.cast(echo, ("y" * 200, i))
                    if i % 1000 == 0:
                        await proc.sleep(0)
            a.spawn(flood)
            await eventually(lambda: da.info("b@h")["unsent_bytes"] > 1 << 20)  # waiting on a's side
            db.up["a@h"].channel.transport.resume_reading()
            await eventually(lambda: len(log) == count)
            assert [i for _, i in log] == list(range(count))
            assert a.nodes() == ["b@h"] and not [m for m in seen if type(m) is NodeDown]
    arun(main())


def test_a_new_incarnation_replaces_the_connection_of_the_old_one(tmp_path):
    async def main():
        async with nodes(tmp_path, "b@h") as [(b, db)]:
            log: list = []
            b.register("echo", b.spawn(Echo, log))
            seen: list = []
            spawn_watcher(b, seen, nodes_too=True)
            old = await RawPeer.joined(db.address, creation=1)
            new = await RawPeer.joined(db.address, creation=2)  # the node restarted
            assert await old.closed()
            old.write(batch(delivery(CAST | NAMED, "echo", "old life")))
            new.write(batch(delivery(CAST | NAMED, "echo", "new life")))
            await eventually(lambda: log == ["new life"])
            assert seen == [NodeUp("raw@host"), NodeDown("raw@host", "connection_replaced"), NodeUp("raw@host")]
            # That incarnation connecting again says its connection is dead (Erlang's "alive"):
            again = await RawPeer.joined(db.address, creation=2)
            assert await new.closed()
            again.write(batch(delivery(CAST | NAMED, "echo", "again")))
            await eventually(lambda: log == ["new life", "again"])
            again.close()
    arun(main())


def test_pids_of_a_restarted_node_s_previous_life_are_refused(tmp_path):
    async def main():
        async with nodes(tmp_path, "a@h") as [(a, da)]:
            address = f"unix:{tmp_path}/b.sock"
            first = Node("b@h", creation=1)
            async with first:
                d1 = await Distribution(first, secret=SECRET, listen=address).start()
                old = first.spawn(Echo)
                first.register("echo", old)
                await da.connect("b@h", address)
                assert await a.call(old, 1) == ("echo", 1)
                await d1.stop()
            log: list = []
            second = Node("b@h", creation=2)
            async with second:
                d2 = await Distribution(second, secret=SECRET, listen=address).start()
                new = second.spawn(Echo, log)  # the same serial in its incarnation
                second.register("echo", new)
                await eventually(lambda: a.nodes() == [])
                await da.connect("b@h", address)
                assert new != old and new.serial & (2**40 - 1) == old.serial & (2**40 - 1)
                a.cast(old, "meant for the previous life")
                a.cast(new, "for this one")
                with pytest.raises(NoProc):
                    await a.call(old, "anyone?")
                assert await a.call(RemoteName("echo", "b@h"), 2) == ("echo", 2)
                assert log == ["for this one"]
                await d2.stop()
    arun(main())


@pytest.mark.parametrize("name, options, why", [
    ("a@h", {"secret": ""}, "non-empty secret"),
    ("a", {}, "named name@host"),
    ("a@h", {"ticktime": 0}, "must be positive"),
    ("a@h", {"max_frame": 1 << 20, "max_buffer": 1 << 10}, "at least max_frame"),
])
def test_a_distribution_with_bad_options_is_refused_naming_the_option(name, options, why):
    with pytest.raises(ValueError, match=why):
        Distribution(Node(name), **{"secret": SECRET, **options})


def test_a_simulated_node_gets_no_distribution():
    with pytest.raises(ValueError, match="real-time node"):
        Distribution(Node("a@h", seed=1), secret=SECRET)
