"""The output gate and pass hooks: what a storage layer needs from the scheduler.

- Output holding: while a process's output is held, what it sends (send, cast, call
  requests, forwards, replies) is queued in order instead of leaving, until released,
  so a reply is never seen before the write it acknowledges has committed. Timers are
  not held. If the process exits meanwhile, its exit signals and Downs wait behind that
  output (a message sent before a death arrives before the death, as in Erlang), so
  whoever holds must release or discard, or its links never hear.
- Pass hooks: called after every scheduler pass (a batch of turns, or a round of
  timers): where a storage layer group-commits.

`defer` is the held-output prelude of every sending path, in one copy; the hottest
(`Node.send`, `Node.cast`) inline it and say so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .process import visible

if TYPE_CHECKING:
    from .node import Node
    from .process import Process

MAX_PASS_HOOKS = 64


def defer(proc: Process | None, fn: Callable[..., Any], args: tuple, dest: Any, msg: Any) -> bool:
    """The prelude of `proc` sending `msg` to `dest` by `fn(*args)`: a traced process's
    tracer hears "send" (see `Node.trace`); if its output is held, `fn(*args)` is queued
    behind it and True returned."""
    if proc is None:
        return False
    if proc._tracer is not None:
        proc._tracer("send", proc._pid, (dest, visible(msg)))
    if proc._held is not None:
        proc._held.append((fn, args))
        return True
    return False


class OutputGate:
    """The node's output holding and pass hooks; see the module docstring."""

    __slots__ = ("node", "hooks")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.hooks: list[Callable[[], None]] = []

    def hold(self, proc: Process) -> None:
        if proc._held is None:
            proc._held = []

    def release(self, proc: Process, keep_holding: bool) -> None:
        held = proc._held
        proc._held = [] if keep_holding and proc._alive else None
        if not held:
            return
        node = self.node
        previous, node._current = node._current, None
        try:
            for deliver, args in held:
                deliver(*args)
        finally:
            node._current = previous

    def held_count(self, proc: Process) -> int:
        return len(proc._held) if proc._held is not None else 0

    def discard(self, proc: Process, keep: int) -> None:
        held = proc._held
        if not held or len(held) <= keep:
            return
        notify = self.node._signals.notify_exit
        notices = [item for item in held[keep:] if item[0] == notify]
        del held[keep:]
        held.extend(notices)
        if not keep and notices:
            self.release(proc, False)

    def add_pass_hook(self, hook: Callable[[], None]) -> None:
        if len(self.hooks) >= MAX_PASS_HOOKS:
            raise ValueError(f"at most {MAX_PASS_HOOKS} pass hooks per node")
        self.hooks.append(hook)

    def end_pass(self) -> None:
        for hook in self.hooks:
            hook()
