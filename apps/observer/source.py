"""Where an observer's answers come from: `Local` (this node) or an attach client (another
OS process's node, `apps.observer.attach.Client`). Both have the same two methods:

    value = await source.ask("processes", {"sort": "turns", "limit": 20})
    async for kind, value in source.stream("trace", {"target": "counter", "max_events": 10}):
        ...                       # ("event", value)..., then one ("ok", value) at the end

so the web page and the attach server are each written once, against either. The ops and
their arguments are the attach protocol's (`apps.observer.protocol`). A bad op or bad
arguments raise `OpError` with a message fit to show the user.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, AsyncIterator

from .agent import Agent
from .protocol import OPS, STREAMS
from .shell import Session
from .trace import Trace

MAX_QUEUED = 1000  # events a slow reader may fall behind by; more are dropped


class OpError(Exception):
    """An op that cannot be done: unknown, bad arguments, or refused by the agent."""


class Local:
    """The ops, answered by `agent` in this process (on the node's thread). A `Local` per
    client: its remote-shell namespace is that client's."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._session: Session | None = None

    async def ask(self, op: str, args: dict[str, Any]) -> Any:
        return self.answer(op, args)

    def answer(self, op: str, args: dict[str, Any]) -> Any:
        """`ask`, at once (on the node's thread): the agent's answers never wait."""
        if op not in OPS or op in STREAMS:
            raise OpError(f"unknown op {op!r:.40}; ops: {', '.join(o for o in OPS if o not in STREAMS)}")
        method = getattr(self.agent, op)
        try:
            inspect.signature(method).bind(**_args(args))
            return method(**args)
        except (TypeError, ValueError) as exc:
            raise OpError(f"{op}: {exc}") from None

    async def stream(self, op: str, args: dict[str, Any]) -> AsyncIterator[tuple[str, Any]]:
        if op not in STREAMS:
            raise OpError(f"{op!r:.40} is not a streaming op; those are {', '.join(STREAMS)}")
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(MAX_QUEUED)

        def put(value: Any) -> None:
            if not events.full():
                events.put_nowait(("event", value))

        if op == "watch":
            self.agent.probe.on_crash(put)
            try:
                while True:
                    yield await events.get()
            finally:
                self.agent.probe.on_crash(put, remove=True)
        if op == "trace":
            try:
                trace = Trace(self.agent.probe, **_args(args), emit=put)
            except (TypeError, ValueError) as exc:
                raise OpError(f"trace: {exc}") from None
            ending = asyncio.ensure_future(_wait(trace))
        else:
            code = _args(args).get("code")
            if not isinstance(code, str) or set(args) != {"code"}:
                raise OpError("eval takes one argument, code (a string)")
            if self._session is None:
                self._session = Session(self.agent)
            ending = asyncio.ensure_future(self._session.run(code, lambda text: put({"out": text})))
        try:
            while not ending.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, ending}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            yield "ok", ending.result()
        finally:
            if op == "trace":
                trace.stop()
            ending.cancel()


async def _wait(trace: Trace) -> int:
    return len(await trace)


def _args(args: Any) -> dict[str, Any]:
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise OpError(f"args must be a map of names to values, got {type(args).__name__}")
    return args
