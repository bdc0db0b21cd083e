"""The turn loop: runnable processes get turns, and a turn's end is handled.

Contract:
- The run queue (`actors.runq`) says which process runs next.
- A turn runs with `node._current` set to its process. A turn that raises `ExitNow` exits
  the process with its reason (and logs a stop report if the `ExitNow` asks: a GenServer
  that stopped with an abnormal reason); any other exception crashes it: a crash report
  goes to logger "actors" (pid, registered name, last message, traceback), the tracer
  hears "crash", and the process's `_on_crash` gives the reason it exits with.
- Exits decided during a turn (a kill, a crash) take effect once the turn is over, never
  in the middle of another process's code. After every pass (a batch of turns, or a
  round of timers) the node's pass hooks run (see `actors.output`).
- Counters (read by `Node.statistics`): turns given, turns that raised, and messages
  taken. A process counts its own turns and the messages it takes (`Process._run`,
  `GenServer._run`, `Process._take`); a GenServer's turn counts as one message taken and
  only a turn that takes another number corrects the count, so the node's total is
  `turns - other_turns + taken`, exact, at no cost per message.
"""
from __future__ import annotations

import logging
import reprlib
from typing import TYPE_CHECKING, Any, Callable

from .process import NONE, ExitNow, Process

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("actors")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 200


class _Short:
    """A log argument shown as its shortened repr, computed only if a handler formats
    the record: a crash storm's reports cost little when nobody prints them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return _short.repr(self.value)


class Scheduler:
    """Gives turns to runnable processes; see the module docstring."""

    __slots__ = ("node", "turns", "other_turns", "taken", "crashes")

    def __init__(self, node: Node) -> None:
        self.node = node
        # The node's counters (see the module docstring); they only grow.
        self.turns = 0
        self.other_turns = 0  # turns that are not a GenServer's (they count no message)
        self.taken = 0  # messages taken, less one for each GenServer turn
        self.crashes = 0

    @property
    def messages(self) -> int:
        """Messages taken from mailboxes by their processes, since the node started."""
        return self.turns - self.other_turns + self.taken

    def run_ready(self, budget: int) -> int:
        """Give up to `budget` turns to runnable processes; returns the turns taken."""
        node = self.node
        runq = node._runq
        take = runq.take
        exits = node._exits
        drain = node._signals.drain_exits
        turns = 0
        while runq and turns < budget:
            proc = take()
            proc._queued = False
            if not proc._alive:
                continue  # doomed while queued; its exit is already pending
            turns += 1
            if node.tracer is not None:
                node.tracer("run", proc._pid, None)
            node._current = proc
            try:
                proc._run()
            except ExitNow as exc:
                self.exit_self(proc, exc.reason, None, exc.report)
            except Exception as exc:  # noqa: BLE001 - let it crash
                self.exit_self(proc, exc, exc)
            node._current = None
            if exits:
                drain()
        self.turns += turns
        if node._pass_hooks:
            node._output.end_pass()
        return turns

    def fire_due(self, now: float) -> None:
        """Fire the timers due at `now` (a pass of its own), then the pass hooks."""
        node = self.node
        calls = node._calls
        if now >= calls.waits_due:
            calls.arm_timeouts()
        pop = node._timers.pop_due
        timer = pop(now)
        while timer is not None:
            timer.action(*timer.args)
            timer = pop(now)
        if node._pass_hooks:
            node._output.end_pass()

    def run_callback(self, proc: Process, fn: Callable[..., Any], *args: Any) -> None:
        """Run kernel-triggered process code (an idle timeout, a worker's result) as a turn."""
        if not proc._alive:
            return
        node = self.node
        previous, node._current = node._current, proc
        try:
            fn(*args)
        except ExitNow as exc:
            self.exit_self(proc, exc.reason, None, exc.report)
        except Exception as exc:  # noqa: BLE001 - let it crash: the process's own failure
            self.exit_self(proc, exc, exc)
        finally:
            node._current = previous
        if previous is None:
            node._signals.drain_exits()

    def exit_self(self, proc: Process, reason: Any, exc: BaseException | None, report: bool = False) -> None:
        """The process's own code ended it: with `reason` on purpose (`report`: log a stop
        report), or crashing with `exc`."""
        node = self.node
        if report:
            stop_report(proc, reason)
        if exc is not None:
            self.crashes += 1
            if node.tracer is not None:
                node.tracer("crash", proc._pid, exc)
            if proc._tracer is not None:
                proc._tracer("crash", proc._pid, exc)
            crash_report(proc, exc)
            reason = proc._on_crash(exc)
            if reason is NONE:
                return  # an async terminate is running; its end exits the process
        proc._exit_own_turn(reason)


def crash_report(proc: Process, reason: Any) -> None:
    """Log a crash on logger "actors", with structured `extra` fields."""
    _report(proc, "crash report: process %r%s crashed with %s; last message %s", reason,
            reason if isinstance(reason, BaseException) else None)


def stop_report(proc: Process, reason: Any) -> None:
    """Log, on logger "actors", a GenServer that stopped itself with an abnormal reason (OTP
    logs every reason but "normal", "shutdown" and ("shutdown", x))."""
    _report(proc, "stop report: server %r%s stopped with reason %s; last message %s", reason, None)


def _report(proc: Process, text: str, reason: Any, exc_info: BaseException | None) -> None:
    if not log.isEnabledFor(logging.ERROR):
        return
    names = [key for _, key in proc._names] if proc._names else []
    last = None if proc._last is NONE else proc._last
    log.error(text, proc._pid, f" {names[0]!r}" if names else "", _Short(reason),
              "-" if proc._last is NONE else _Short(last), exc_info=exc_info,
              extra={"pid": proc._pid, "registered_name": names[0] if names else None,
                     "last_message": last, "reason": reason})


def log_unexpected(proc: Process, msg: Any) -> None:
    """A GenServer's default `handle_info`: log the message and drop it, as OTP does."""
    log.warning("%r got an unexpected message %s", proc._pid, _Short(msg),
                extra={"pid": proc._pid, "unexpected_message": msg})
