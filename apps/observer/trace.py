"""Tracing one process, bounded, as Erlang's `recon_trace`: never an unbounded firehose.

    t = Trace(probe, "counter", emit=print, max_events=20, seconds=5.0)
    ...                                 # emit(event) for each of at most 20 events
    await t.done                        # resolves with the events once either bound is hit

The target is a live pid (or its text) or a registered name held now; anything else is
a ValueError. A name is followed: when the
process holding it exits and another takes the name (a supervisor's restart), the trace
goes on with the new holder, so a trace shows a crash and the restart after it.

Events are dicts `{"event", "pid", "detail", "at"}` (`at` on the node's clock): the
target's "send" (detail: `(dest, msg)`), "receive" (detail: the message as it was
queued, or a call's reply), "run" (a turn), "crash" (detail: the exception) and "exit"
(detail: the reason), and "spawn" of a new holder of a traced name. `events=` picks
some of them. Send and receive come from the kernel's per-process trace
(`Probe.trace_process`), the others from the node's tracer. A trace
stops after `max_events` events or `seconds` seconds, whichever comes first, or at
`stop()`; `max_events` is at most `MAX_EVENTS` and `seconds` at most `MAX_SECONDS`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from actors import Future, Pid

from .probe import Probe, label, pid_text, summary

MAX_EVENTS = 10_000
MAX_SECONDS = 3600.0
EVENTS = frozenset({"spawn", "run", "send", "receive", "crash", "exit"})
PROCESS_EVENTS = frozenset({"send", "receive"})  # from the kernel's per-process trace


class Trace:
    """One bounded trace session; see the module docstring."""

    def __init__(self, probe: Probe, target: Any, emit: Callable[[dict[str, Any]], None] | None = None, *,
                 max_events: int = 100, seconds: float = 10.0, events: frozenset[str] | set[str] = EVENTS) -> None:
        if type(max_events) is not int or not 0 < max_events <= MAX_EVENTS:
            raise ValueError(f"max_events must be an int in 1..{MAX_EVENTS}, got {max_events!r}")
        if type(seconds) not in (int, float) or not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SECONDS}], got {seconds!r}")
        unknown = set(events) - EVENTS
        if unknown or not events:
            raise ValueError(f"events must be some of {sorted(EVENTS)}, got {sorted(events)}")
        self.probe = probe
        self.node = probe.node
        self.emit = emit
        self.max_events = max_events
        self.kinds = frozenset(events)
        self.events: list[dict[str, Any]] = []
        self.done = Future()
        """Resolves with `events` when the trace ends."""
        self.name: Any = None
        self.pid: Pid | None = None
        if isinstance(target, Pid) or (isinstance(target, str) and target.startswith("<")):
            self.pid = probe.live_pid(target)
            if self.pid is None:
                raise ValueError(f"no live process {target!r:.80} to trace")
        else:
            self.name = target
            self.pid = self.node.whereis(target)
            if self.pid is None:
                raise ValueError(f"no process is registered as {target!r:.80}")
        self.deadline = self.node.now() + seconds
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._timer = asyncio.get_running_loop().call_later(seconds, self.stop)
        except RuntimeError:
            pass  # a deterministic node: the deadline is checked at each event instead
        probe.subscribe(self._on_event)
        self._traced: Pid | None = None  # the process whose sends and receives are traced
        self._follow()

    @property
    def target(self) -> str:
        return pid_text(self.pid) if self.name is None else f"{label(self.name)} ({pid_text(self.pid)})"

    def _follow(self) -> None:
        """Trace the sends and receives of the target's process (a name's new holder too)."""
        if self.pid is not None and self.pid != self._traced and self.kinds & PROCESS_EVENTS:
            self._traced = self.pid
            self.probe.trace_process(self.pid, self._on_process_event)

    def _on_event(self, event: str, pid: Pid, detail: Any) -> None:
        if self.name is not None and self.pid is None and event != "exit":
            self.pid = self.node.whereis(self.name)  # a new holder of the name
            self._follow()
        if pid != self.pid:
            return
        if event == "exit" and self.name is not None:
            self.pid = None  # whoever takes the name next is traced next
        self._record(event, pid, detail)

    def _on_process_event(self, event: str, pid: Pid, detail: Any) -> None:
        if event in PROCESS_EVENTS:  # its crash and exit come through _on_event
            self._record(event, pid, detail)

    def _record(self, event: str, pid: Pid, detail: Any) -> None:
        if self.node.now() > self.deadline:
            self.stop()
            return
        if event not in self.kinds:
            return
        record = {"event": event, "pid": pid_text(pid),
                  "detail": None if detail is None else summary(detail), "at": self.node.now()}
        self.events.append(record)
        if self.emit is not None:
            self.emit(record)
        if len(self.events) >= self.max_events:
            self.stop()

    def stop(self) -> None:
        """End the trace now (idempotent); `done` resolves with the events seen."""
        if self.done.done():
            return
        self.probe.unsubscribe(self._on_event)
        if self._traced is not None:
            self.probe.untrace_process(self._traced, self._on_process_event)
        if self._timer is not None:
            self._timer.cancel()
        self.done.set_result(self.events)

    def __await__(self):
        return self.done.__await__()


def format_event(event: dict[str, Any]) -> str:
    """One trace event as a line: `12.503 <node.7> crash ValueError('boom')`."""
    detail = "" if event["detail"] is None else f" {event['detail']}"
    return f"{event['at']:.3f} {event['pid']} {event['event']}{detail}"
