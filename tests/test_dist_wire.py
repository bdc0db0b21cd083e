"""The wire's batches without a socket: what an `Outbox` seals is what an `Inbox` decodes,
in order, in frames within the limit, whatever mix of runs and other deliveries it holds."""
from __future__ import annotations

import random

import pytest

from actors import Node, Pid, Ref
from actors.boundary import Cast, Link, Reply, Send
from actors.wire import Inbox, Outbox, Run, WireError, frame

A, B = "a@h", "b@h"


def sealed(deliveries: list, limit: int) -> tuple[list[bytes], list[str]]:
    """The frames (whole, length included) an outbox of node A for node B makes of
    `deliveries`, and what it said it dropped."""
    dropped: list[str] = []
    out = Outbox(A, B, limit, dropped.append, lambda: None)
    for delivery in deliveries:
        out.add(delivery)
    return out.take(), dropped


def decoded(frames: list[bytes]) -> list:
    """What node B takes from `frames`: one (kind, to, message or fields) per delivery."""
    inbox = Inbox(Node(B), A)
    got: list = []
    for data in frames:
        assert int.from_bytes(data[:4], "big") == len(data) - 4
        for item in inbox.decode(memoryview(data)[4:]):
            if type(item) is Run:
                got.extend((item.kind, item.to, msg) for msg in item.msgs)
            else:
                got.append((type(item), item.to, tuple(item[1:])))
    return got


def as_taken(deliveries: list) -> list:
    return [(type(d), d.to, d.msg) if type(d) in (Send, Cast) else (type(d), d.to, tuple(d[1:]))
            for d in deliveries]


def mixed(count: int, seed: int) -> list:
    """Sends and casts to a few pids and names (runs of one to many), tuples and other
    messages, with links and replies between them."""
    rng = random.Random(seed)
    pids = [Pid(B, 100 + i) for i in range(5)]
    out: list = []
    for i in range(count):
        r = rng.random()
        to = rng.choice(pids) if rng.random() < 0.8 else "registered"
        if r < 0.05:
            out.append(Link(pids[0], Pid(A, 7)))
        elif r < 0.1:
            out.append(Reply(pids[1], Ref(B, 900 + i), False, ("ok", i)))
        else:
            msg = ("at", f"d{i}", 37.7 + i / 1e6, True) if rng.random() < 0.7 else {"n": i, "pad": "x" * rng.randrange(300)}
            out.append((Send if r < 0.5 else Cast)(to, msg))
        if rng.random() < 0.3:  # the same address again: a run
            out.append(Cast(to, ("again", i)))
    return out


@pytest.mark.parametrize("limit", [1 << 20, 2048])
def test_a_mix_of_runs_and_deliveries_comes_out_whole_and_in_order(limit):
    deliveries = mixed(600, seed=limit)
    frames, dropped = sealed(deliveries, limit)
    assert dropped == []
    assert all(len(data) - 4 <= limit for data in frames)
    assert (len(frames) > 1) == (limit == 2048)  # the small limit cuts the batch
    assert decoded(frames) == as_taken(deliveries)


def test_a_message_that_cannot_be_encoded_is_dropped_alone_and_the_rest_of_its_run_goes():
    to = Pid(B, 100)
    deliveries = [Cast(to, ("a", 1)), Cast(to, ("b", object())), Cast(to, ("c", 3)), Send(to, "plain"),
                  Cast(Pid(B, 101), ("d", 4))]
    frames, dropped = sealed(deliveries, 1 << 20)
    assert len(dropped) == 1 and "cannot go over the wire" in dropped[0]
    assert decoded(frames) == as_taken([d for i, d in enumerate(deliveries) if i != 1])


def test_a_run_whose_message_is_not_an_array_is_refused_whole():
    bad = frame(b"\x91" + b"\x94" + bytes((32 | 1,)) + b"\x05" + b"\x91\x01" + b"\xa1x")  # [[CAST|TUPLE, 5, [1], "x"]]
    with pytest.raises(WireError, match="whose message is not an array"):
        decoded([bad])
