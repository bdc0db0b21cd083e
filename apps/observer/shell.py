"""The remote shell: Python typed in `letitcrash remsh` runs inside the node (`iex --remsh`).

    session = Session(agent)                          # one per attached shell
    result = await session.run("x = 6 * 7\\nx", out)   # out(text) for what it prints
    result == {"value": "42", "error": None}

Code runs on the node's thread, between process turns, in a namespace kept for the
session: `node`, `store`, and helpers `processes(n)`, `info(pid)`, `tree()`, `kill(pid)`,
`pid("<node.3>")` and `trace(target, max_events, seconds)` (the shell prints each event
as it comes and returns at the trace's end). Top-level `await` works (`await node.call(pid,
"get")`). The value of a last expression comes back as its repr, as in a REPL; `print`
writes to the session's output, not the node's stdout. An exception comes back as its
traceback; the node is not disturbed.

Code from the shell is trusted as the node's own: whoever holds the attach secret can
run anything as the node's OS user. That is what the secret guards.
"""
from __future__ import annotations

import ast
import asyncio
import code
import inspect
import traceback
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .probe import summary
from .trace import EVENTS, Trace, format_event

if TYPE_CHECKING:
    from .agent import Agent

MAX_VALUE = 10_000  # characters of a value's repr sent back
FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


class Session:
    """One shell's namespace and its way of running code; see the module docstring."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.out: Callable[[str], None] = lambda text: None
        self.namespace: dict[str, Any] = {
            "__name__": "__remsh__", "node": agent.node, "store": agent.store,
            "print": self._print, "processes": self._processes, "info": agent.probe.process,
            "tree": agent.tree, "kill": agent.kill, "pid": agent.probe.live_pid, "trace": self._trace,
        }

    def _print(self, *values: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self.out(sep.join(str(v) for v in values) + end)

    def _processes(self, n: int = 20, sort: str = "mailbox") -> None:
        for row in self.agent.processes(sort=sort, limit=n):
            self.out(f"{row['pid']:<24} {row['kind'][:28]:<28} mailbox={row['mailbox']} "
                     f"turns={row['turns']} {row['name'] or ''}\n")

    def _trace(self, target: Any, max_events: int = 20, seconds: float = 10.0, events: Any = EVENTS) -> Trace:
        return Trace(self.agent.probe, target, lambda e: self.out(format_event(e) + "\n"),
                     max_events=max_events, seconds=seconds, events=events)

    async def run(self, source: str, out: Callable[[str], None]) -> dict[str, Any]:
        """Run `source`; `out(text)` receives what it prints. Returns the last
        expression's repr as "value" (or None) and a traceback as "error" (or None)."""
        self.out = out
        try:
            value = await self._run(source)
        except SyntaxError as exc:
            return {"value": None, "error": "".join(traceback.format_exception_only(exc))}
        except Exception as exc:  # noqa: BLE001 - the shell shows it; the node goes on
            return {"value": None, "error": _user_traceback(exc)}
        return {"value": None if value is None else summary_long(value), "error": None}

    async def _run(self, source: str) -> Any:
        module = ast.parse(source, "<remsh>", "exec")
        last = None
        if module.body and isinstance(module.body[-1], ast.Expr):
            last = ast.Expression(module.body.pop().value)
        if module.body:
            await self._maybe_await(eval(compile(module, "<remsh>", "exec", flags=FLAGS), self.namespace))
        if last is None:
            return None
        value = await self._maybe_await(eval(compile(last, "<remsh>", "eval", flags=FLAGS), self.namespace))
        if isinstance(value, Trace):  # the shell waits for its end, printing its events
            return _Note(f"{len(await value)} events traced from {value.target}")
        return value

    @staticmethod
    async def _maybe_await(value: Any) -> Any:
        return await value if inspect.iscoroutine(value) else value


class _Note(str):
    """A message from the shell itself: shown as is, not as a repr."""

    def __repr__(self) -> str:
        return str(self)


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the shell's own code on: the frames running it are not news."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<remsh>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def summary_long(value: Any) -> str:
    """A value's repr for the shell: whole up to `MAX_VALUE` characters."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE else summary(value)


class Console(code.InteractiveConsole):
    """The client side of `letitcrash remsh`: a local REPL (prompts, line editing,
    continuation lines) whose complete inputs run remotely through `run(source)`."""

    def __init__(self, run: Callable[[str], Awaitable[dict[str, Any]]], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(filename="<remsh>")
        self.compile.compiler.flags |= FLAGS
        self._run = run
        self._loop = loop

    def runsource(self, source: str, filename: str = "<remsh>", symbol: str = "single") -> bool:
        try:
            if self.compile(source, filename, symbol) is None:
                return True  # more lines needed
        except (OverflowError, SyntaxError, ValueError):
            self.showsyntaxerror(filename)
            return False
        result = self._loop.run_until_complete(self._run(source))
        if result["error"]:
            self.write(result["error"])
        elif result["value"] is not None:
            print(result["value"], flush=True)
        return False
