"""A counter and a chat room spread over a cluster's nodes: the same code runs under the
simulator (tests/test_dist_demo.py) and on node processes.

    letitcrash cluster start --nodes 3 apps.cluster.demo:counter
    letitcrash node --name a@127.0.0.1 --listen 127.0.0.1:4370 apps.cluster.demo:chat

- `counter`: one `Counter` in the cluster, under the global name "counter"; a `Clicker`
  on every node adds 1 to it every `interval` seconds and says the total. When the node
  holding the counter goes, the next click registers a new counter (its count starts
  again: it lived on that node).
- `chat`: a `Member` per node in the process group "lobby"; what a member says (a line
  typed in the node's terminal, or "hello N" every `interval` seconds) reaches every
  other member, which says it as `<node> text`.

`interval` is `$LETITCRASH_DEMO_INTERVAL` (seconds, default 1); `say` prints the line.
"""
from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Callable

from actors import ActorError, GenServer, Node, Pid, global_names, pg

LOBBY = "lobby"
Say = Callable[[str], None]


def _interval(interval: float | None) -> float:
    return interval if interval is not None else float(os.environ.get("LETITCRASH_DEMO_INTERVAL", "1"))


def _print(text: str) -> None:
    print(text, flush=True)


class Counter(GenServer):
    """Adds what it is asked to add; answers the total."""

    def init(self) -> None:
        self.total = 0

    def handle_call(self, request: Any, caller: Any) -> int:
        self.total += request[1]
        return self.total


class Clicker(GenServer):
    """Adds 1 to the cluster's counter every `interval` seconds."""

    def init(self, interval: float, say: Say) -> None:
        self.interval = interval
        self.say = say
        self.send_after(interval, self.pid, "click")

    async def handle_info(self, msg: Any) -> None:
        if msg != "click":
            return
        self.send_after(self.interval, self.pid, "click")
        pid = await self.counter()
        if pid is None:
            return
        try:
            total = await self.call(pid, ("add", 1), self.interval)
        except ActorError as exc:
            self.say(f"the counter on {pid.node_name} is gone ({type(exc).__name__})")
            return
        self.say(f"clicked: the counter on {pid.node_name} is at {total}")

    async def counter(self) -> Pid | None:
        """The cluster's counter: this node starts one if there is none."""
        pid = global_names.whereis_name(self.node, "counter")
        if pid is not None:
            return pid
        mine = self.node.spawn(Counter)
        if await global_names.register_name(self, "counter", mine):
            return mine
        self.exit(mine, "kill")  # another node's got the name first
        return global_names.whereis_name(self.node, "counter")


def counter(node: Node, interval: float | None = None, say: Say = _print) -> Pid:
    """Start this node's part of the counter demo."""
    return node.spawn(Clicker, _interval(interval), say)


class Member(GenServer):
    """One node's member of the chat room."""

    def init(self, interval: float, say: Say) -> None:
        self.interval = interval
        self.say = say
        self.said = 0
        self.continue_with("join")

    async def handle_continue(self, arg: Any) -> None:
        await pg.join(self, LOBBY, self.pid)
        self.send_after(self.interval, self.pid, "speak")

    def handle_info(self, msg: Any) -> None:
        if msg == "speak":
            self.said += 1
            self.post(f"hello {self.said}")
            self.send_after(self.interval, self.pid, "speak")

    def handle_cast(self, msg: Any) -> None:
        if msg[0] == "said":
            self.say(f"<{msg[1]}> {msg[2]}")
        elif msg[0] == "type":
            self.post(msg[1])

    def post(self, text: str) -> None:
        for pid in pg.members(self.node, LOBBY):
            if pid != self.pid:
                self.cast(pid, ("said", self.node.name, text))


def chat(node: Node, interval: float | None = None, say: Say = _print) -> Pid:
    """Start this node's member of the chat room; on a real-time node whose input is a
    terminal, each line typed is said too."""
    member = node.spawn(Member, _interval(interval), say)
    if node.seed is None and sys.stdin.isatty():
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: _typed(node, member))
    return member


def _typed(node: Node, member: Pid) -> None:
    line = sys.stdin.readline()
    if line.strip():
        node.cast(member, ("type", line.strip()))
