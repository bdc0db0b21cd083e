"""The pykka bridge: blocking work (CPU or I/O) on real threads, as an ordinary process.

    class Resize(ThreadWorker):          # a pykka ThreadingActor
        sim_seconds = 0.05               # virtual time one request takes under the simulator

        def on_receive(self, frame):
            return scale(frame)          # blocking: runs on the worker's own thread

    pid = self.spawn_link(Resize)        # inside a process: linked like any child
    small = await self.call(pid, frame)  # the reply comes back as a message

The node hosts a proxy process for each worker: links, monitors, names and exit signals
work on it as on any process. A request the worker raises on crashes the proxy with that
exception (the caller gets `CallExit`, links get the exit signal); when the proxy exits
the pykka actor is stopped. Requests queue in the worker's pykka inbox, one at a time.

Under the deterministic driver no thread is started: `on_receive` runs in the scheduler
thread and its result arrives `sim_seconds` later in virtual time, so runs replay exactly.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import pykka

from .genserver import GenServer, NoReply
from .process import From


class _NotifyingFuture(pykka.ThreadingFuture):
    """A pykka future that calls back once it is set, on whichever thread sets it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._ready = False
        self._notify: Callable[[_NotifyingFuture], None] | None = None

    def set(self, value: Any = None) -> None:
        super().set(value)
        self._fire()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info if exc_info is not None else sys.exc_info())
        self._fire()

    def on_done(self, notify: Callable[[_NotifyingFuture], None]) -> None:
        with self._lock:
            self._notify = notify
            ready = self._ready
        if ready:
            notify(self)

    def _fire(self) -> None:
        with self._lock:
            self._ready = True
            notify = self._notify
        if notify is not None:
            notify(self)


class ThreadWorker(pykka.ThreadingActor):
    """Base class for blocking work; spawn it like a GenServer. Override `on_receive`."""

    sim_seconds: float = 0.0
    """Virtual seconds one request takes when the node is deterministic."""

    @staticmethod
    def _create_future() -> _NotifyingFuture:
        return _NotifyingFuture()


class ThreadWorkerProcess(GenServer):
    """The node-side proxy of one `ThreadWorker` (made by `spawn`, not by users)."""

    def init(self, worker_class: type[ThreadWorker], *args: Any) -> None:
        self.worker_class = worker_class
        self.worker: ThreadWorker | None
        self.ref: Any  # the pykka ActorRef, or None
        if self._node._clock.virtual:
            self.worker = worker_class(*args)  # built, never started: no thread
            self.worker.on_start()
            self.ref = None
        else:
            self.worker = None
            self.ref = worker_class.start(*args)

    def _initial_call(self) -> str:
        worker_class = getattr(self, "worker_class", None)
        return worker_class.__qualname__ if worker_class is not None else type(self).__qualname__

    def handle_call(self, request: Any, caller: From) -> Any:
        self._submit(request, caller)
        return NoReply

    def handle_cast(self, msg: Any) -> None:
        self._submit(msg, None)

    def _submit(self, request: Any, caller: From | None) -> None:
        node = self._node
        if self.ref is not None:
            self.ref.ask(request, block=False).on_done(
                lambda future: self._post_result(caller, future))
            return
        future = _NotifyingFuture()
        assert self.worker is not None, "a worker without a thread runs inline"
        try:
            future.set(self.worker.on_receive(request))
        except Exception:  # noqa: BLE001 - delivered below, at its virtual time
            future.set_exception()
        node._add_timer(self.worker_class.sim_seconds, node._scheduler.run_callback,
                        (self, self._done, caller, future))

    def _post_result(self, caller: From | None, future: _NotifyingFuture) -> None:
        """On the worker's thread: hand the result to the node's thread."""
        try:
            node = self._node
            node._clock.loop.call_soon_threadsafe(node._scheduler.run_callback, self, self._done, caller, future)
        except RuntimeError:
            pass  # the node's loop has closed: nobody is left to receive the result

    def _done(self, caller: From | None, future: _NotifyingFuture) -> None:
        value = future.get(timeout=0)  # re-raises the worker's exception: this process crashes
        if caller is not None:
            self.reply(caller, value)

    def _release(self) -> None:
        super()._release()
        if self.ref is not None:
            self.ref.stop(block=False)
        elif self.worker is not None:
            self.worker.on_stop()
