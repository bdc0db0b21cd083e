"""Observing a cluster over distribution: the agent behind a registered process on every
node, and a source (`Remote`) that asks it from another node.

    serve_agent(node, store)                       # on each node (apps.cluster.host does)
    node, dist = await join("unix:/tmp/c/n1.sock", secret)    # an observing node
    source = Cluster(node)                         # the page's source: every node of it
    await source.at("n2@localhost").ask("processes", {"limit": 5})

Contract:
- `AgentServer`, registered as `SERVER` ("letitcrash.observer"), answers calls
  `("ask", op, args)` with `("ok", value)` or `("err", text)`: the ops and the checks of
  `Local.ask` (`apps.observer.protocol`), so a page reads the same over either path.
- Streams: `("stream", op, args, subscriber)` starts `watch` (crash reports as they
  happen) or `trace` (bounded, as `apps.observer.trace`); the server sends the
  subscriber `("event", value)` messages, then `("ok", value)` at a trace's end, and
  stops when the subscriber exits (it monitors it). At most `MAX_STREAMS` at once per
  node; events pile up to `MAX_QUEUED` per stream between two turns of the loop, more are
  dropped. `eval` is refused: the remote shell stays on the attach socket (the
  distribution's secret admits a node, not a person at a prompt).
- `join` makes a node that connects to a cluster (any one address; the others through
  it, as every node does: the distribution has no hidden nodes, so the observing node is
  listed in the cluster's `nodes()` while it watches). It runs no application and no
  agent of its own. A wrong secret is a `ConnectionError` saying so.
"""
from __future__ import annotations

import asyncio
import os
from collections import deque
from functools import partial
from typing import Any, AsyncIterator, Callable

from actors import ActorError, Distribution, Down, GenServer, Node, Pid, RemoteName, new_creation

from .agent import Agent
from .source import MAX_QUEUED, Local, OpError
from .trace import Trace

SERVER = "letitcrash.observer"
MAX_STREAMS = 32
ASK_TIMEOUT = 10.0  # seconds a remote answer may take (a scan of a large node is not instant)


class AgentServer(GenServer):
    """The node's observer agent, asked by other nodes; see the module docstring."""

    def init(self, store: Any = None) -> None:
        self.trap_exit = True  # so that `terminate` closes the agent when the node stops
        self.local = Local(Agent.of(self.node, store))
        self.streams: dict[Any, Callable[[], None]] = {}  # the subscriber's monitor -> stop it

    def handle_call(self, request: Any, caller: Any) -> Any:
        try:
            if type(request) is tuple and len(request) == 3 and request[0] == "ask":
                return "ok", self.local.answer(request[1], request[2])
            if type(request) is tuple and len(request) == 4 and request[0] == "stream" and type(request[3]) is Pid:
                self.subscribe(*request[1:])
                return "ok", None
            raise OpError(f"not an observer request: {request!r:.80}")
        except OpError as exc:
            return "err", str(exc)

    def subscribe(self, op: str, args: Any, subscriber: Pid) -> None:
        if len(self.streams) >= MAX_STREAMS:
            raise OpError(f"at most {MAX_STREAMS} observer streams at once on {self.node.name}")
        out = _Outlet(self.node, subscriber)
        probe = self.local.agent.probe
        if op == "watch":
            probe.on_crash(out.event)
            stop: Callable[[], None] = partial(probe.on_crash, out.event, remove=True)
        elif op == "trace":
            if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
                raise OpError("trace takes a map of arguments: target, max_events, seconds")
            try:
                trace = Trace(probe, **args, emit=out.event)
            except (TypeError, ValueError) as exc:
                raise OpError(f"trace: {exc}") from None
            stop = trace.stop
        elif op == "eval":
            raise OpError("eval is not served over distribution: use letitcrash remsh (the attach socket)")
        else:
            raise OpError(f"{op!r:.40} is not a streaming op; those are watch, trace")
        ref = self.monitor(subscriber)
        self.streams[ref] = stop
        if op == "trace":
            trace.done.add_done_callback(lambda done: self.ended(ref, out, len(done.result())))

    def ended(self, ref: Any, out: _Outlet, count: int) -> None:
        """A trace is over (called wherever it ended: this server hears it as a message)."""
        if ref in self.streams:
            out.last(("ok", count))
            asyncio.get_running_loop().call_soon(self.node.send, self.pid, ("ended", ref))

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Down:
            stop = self.streams.pop(msg.ref, None)
            if stop is not None:
                stop()
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == "ended" and msg[1] in self.streams:
            del self.streams[msg[1]]
            self.demonitor(msg[1], flush=True)

    def terminate(self, reason: Any) -> None:
        for stop in self.streams.values():
            stop()
        self.streams.clear()
        self.local.agent.release()


class _Outlet:
    """A stream's events on their way to the subscriber: queued (bounded) as they happen,
    sent on the loop's next turn, outside any process (a trace's event happens inside
    the traced process's turn, and a send made there would be traced itself)."""

    def __init__(self, node: Node, subscriber: Pid) -> None:
        self.node = node
        self.subscriber = subscriber
        self.queue: deque[tuple[str, Any]] = deque()
        self.dropped = 0

    def event(self, value: Any) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.last(("event", value))

    def last(self, msg: tuple[str, Any]) -> None:
        if not self.queue:
            asyncio.get_running_loop().call_soon(self.flush)
        self.queue.append(msg)

    def flush(self) -> None:
        while self.queue:
            self.node.send(self.subscriber, self.queue.popleft())


def serve_agent(node: Node, store: Any = None) -> Pid:
    """Start `node`'s `AgentServer` under `SERVER` (on the node's running loop)."""
    return node.spawn(AgentServer, store, name=SERVER)


class _Subscriber(GenServer):
    """The observing node's end of a stream: what the agent sends, into an asyncio queue."""

    def init(self, queue: asyncio.Queue, server: RemoteName) -> None:
        self.queue = queue
        self.server = server
        self.monitor(server)

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Down:
            self.queue.put_nowait(("err", f"the observer of {self.server.node} went away: {msg.reason}"))
        elif type(msg) is tuple and len(msg) == 2 and msg[0] in ("event", "ok"):
            if msg[0] == "ok" or self.queue.qsize() < MAX_QUEUED:
                self.queue.put_nowait(msg)


class Remote:
    """A source (`ask`, `stream`, as `Local`) for node `target`'s agent, asked from `node`."""

    def __init__(self, node: Node, target: str) -> None:
        self.node = node
        self.target = target
        self.server = RemoteName(SERVER, target)

    async def ask(self, op: str, args: dict[str, Any]) -> Any:
        return _answer(await self._call(("ask", op, args)))

    async def stream(self, op: str, args: dict[str, Any]) -> AsyncIterator[tuple[str, Any]]:
        queue: asyncio.Queue = asyncio.Queue()
        subscriber = self.node.spawn(_Subscriber, queue, self.server)
        try:
            _answer(await self._call(("stream", op, args, subscriber)))
            while True:
                kind, value = await queue.get()
                if kind == "err":
                    raise OpError(value)
                yield kind, value
                if kind == "ok":
                    return
        finally:
            self.node.exit(subscriber, "kill")  # the agent's monitor of it ends the stream there

    async def _call(self, request: tuple) -> Any:
        try:
            return await self.node.call(self.server, request, timeout=ASK_TIMEOUT)
        except ActorError as exc:
            raise OpError(f"node {self.target} did not answer: {exc}") from None


def _answer(reply: Any) -> Any:
    status, value = reply
    if status != "ok":
        raise OpError(value)
    return value


class Cluster:
    """The page's source for a cluster: `nodes()` and `at(name)`, a `Remote` (the first
    node when `name` is None)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def nodes(self) -> list[str]:
        return self.node.nodes()

    def at(self, name: str | None) -> Remote:
        nodes = self.nodes()
        if not nodes:
            raise OpError("connected to no node of the cluster (they went away)")
        if name is None:
            name = nodes[0]
        if name not in nodes:
            raise OpError(f"no node {name!r:.80} in the cluster; its nodes: {', '.join(nodes)}")
        return Remote(self.node, name)


async def join(address: str, secret: bytes | str, *, name: str | None = None,
               ticktime: float = 60.0) -> tuple[Node, Distribution]:
    """A node (`name`, by default observe-OSPID@localhost) connected to the cluster whose
    node listens at `address`, and to every node that one knows; its distribution listens
    nowhere. Stop it with `await dist.stop()`, then `await node.stop()`."""
    node = Node(name or f"observe-{os.getpid()}@localhost", creation=new_creation())
    await node.__aenter__()
    try:
        dist = await Distribution(node, secret=secret, ticktime=ticktime).start()
        try:
            first = await dist.connect_address(address)
            for other in sorted(dist.discovery.known()):
                if other not in (first, node.name):
                    await dist.connect(other)
        except BaseException as exc:
            await dist.stop()
            if isinstance(exc, ConnectionError) and "not_allowed" in str(exc):
                raise ConnectionError(f"the cluster at {address} refused this node: the secret is wrong") from None
            raise
    except BaseException:
        await node.stop()
        raise
    return node, dist
