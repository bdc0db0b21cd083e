"""Task supervisors: Elixir's Task.Supervisor, for tasks that must not take their caller
down with them.

    tasks = node.spawn(TaskSupervisor)                   # or ChildSpec("tasks", TaskSupervisor)
    task = await async_nolink(self, tasks, fetch, url)    # supervised, not linked to self
    outcome = await yield_task(self, task, 1.0) or await shutdown_task(self, task)

A `TaskSupervisor` is a `DynamicSupervisor` whose children are tasks (`actors.task`):
temporary (never restarted) with a 5 s shutdown, as Elixir's. `async_nolink` starts
`fn(*args)` under it with the caller as the owner: the caller monitors the task, so a
crash arrives as ("exit", reason) from `yield_task` or `TaskExit` from `await_task`,
and the caller lives on; stopping the supervisor stops its tasks.
"""
from __future__ import annotations

from typing import Any, Callable

from actors import Process
from actors.task import Task, attach, task_body

from .client import start_child
from .dynamic import DynamicSupervisor
from .spec import ChildSpec, DynamicFlags

TASK = ChildSpec("task", task_body, restart="temporary", shutdown=5.0)


class TaskSupervisor(DynamicSupervisor):
    """A DynamicSupervisor of tasks; spawn it with optional `DynamicFlags` (say a
    `max_children`)."""

    def configure(self, flags: DynamicFlags | None = None) -> DynamicFlags:
        return flags if flags is not None else DynamicFlags()


async def async_nolink(proc: Process, sup: Any, fn: Callable[..., Any], *args: Any) -> Task:
    """Start `fn(*args)` as a task under the task supervisor `sup`, owned (monitored, not
    linked) by `proc` (Elixir's Task.Supervisor.async_nolink)."""
    if not callable(fn):
        raise TypeError(f"a task runs a function, not {fn!r:.200}")
    pid = await start_child(proc, sup, TASK, proc.pid, fn, args)
    return attach(proc, pid)
