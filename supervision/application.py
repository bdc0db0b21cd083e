"""Application: a supervision tree started and stopped with one call each.

    app = Application(Shop, config, restart="transient")
    top = app.start(node)                 # the top supervisor's pid; raises StartError
    await app.stop()                      # asyncio; or node.run_until_complete(app.stop())

Like OTP's application master, an `_ApplicationMaster` process owns the top supervisor
(linked; the supervisor is its child, so it gets `terminate`). `stop()` shuts the tree
down with the supervisor shutdown protocol and resolves when every process of it is gone.
If the top supervisor exits on its own (its intensity was exceeded), the restart type
decides, as in OTP: "permanent" stops the whole node, "transient" stops it unless the
exit was normal ("normal", "shutdown", ("shutdown", x)), "temporary" only reports it.
The application's end is reported on logger "supervision" as `application_stopped`.

`start` is called from outside any process and, like `spawn`, does not wait: a tree whose
start fails without having to wait raises `StartError`; one that had to wait (a child's
async `init`, or started children that trap exits to stop after a later one failed) has
returned the top supervisor's pid, and its failure stops the application as above
(`node.start(Supervisor, ...)` is the start that waits for the whole tree).
"""
from __future__ import annotations

import logging
from typing import Any

from actors import (SHUTDOWN, CallExit, Exit, Future, GenServer, Node, NoProc, Pid, StartError,
                    is_normal_exit)

from ._base import SupervisorBase, report, shutdown_children
from .spec import RESTART_TYPES, ChildSpec


class Application:
    """A top supervisor (a `Supervisor` or `DynamicSupervisor` class and its spawn
    arguments) with a restart type; `name` registers the top supervisor."""

    def __init__(self, supervisor: type, *args: Any, restart: str = "temporary", name: Any = None) -> None:
        if not (isinstance(supervisor, type) and issubclass(supervisor, SupervisorBase)):
            raise TypeError(f"Application takes a Supervisor or DynamicSupervisor class, not {supervisor!r}")
        if restart not in RESTART_TYPES:
            raise ValueError(f"Application restart must be one of {RESTART_TYPES}, got {restart!r}")
        self.spec = ChildSpec(name if name is not None else supervisor.__name__, supervisor, args,
                              restart=restart, shutdown="infinity",
                              options={"name": name} if name is not None else {})
        self._node: Node | None = None
        self._master: Pid | None = None
        self._top: Pid | None = None  # set by the master as it starts the top supervisor

    @property
    def supervisor(self) -> Pid | None:
        """The top supervisor's pid while the application runs, else None."""
        if self._top is None or self._node is None or not self._node.is_alive(self._top):
            return None
        return self._top

    def start(self, node: Node) -> Pid:
        """Start the tree on `node` (from outside any process); returns the top
        supervisor's pid. A failed start raises the top supervisor's `StartError`, unless
        the tree had to wait first (see the module docstring)."""
        if self._master is not None and self._node is not None and self._node.is_alive(self._master):
            raise RuntimeError(f"application {self.spec.id!r} is already running")
        self._node = node
        try:
            self._master = node.spawn(_ApplicationMaster, self)
        except StartError as exc:
            raise (exc.reason if isinstance(exc.reason, StartError) else exc) from None
        assert self._top is not None
        return self._top

    def stop(self) -> Future:
        """Shut the tree down; the Future resolves once every process of it has exited
        (at once if the application is not running)."""
        done = Future()
        if self._master is None or self._node is None or not self._node.is_alive(self._master):
            done.set_result(None)
            return done

        def finished(call: Future) -> None:
            exc = call.exception()
            if exc is None or isinstance(exc, (CallExit, NoProc)):  # or it went down on its own
                done.set_result(None)
            else:
                done.set_exception(exc)

        self._node.call(self._master, "stop", timeout=None).add_done_callback(finished)
        return done


class _ApplicationMaster(GenServer):
    """Owns the top supervisor; see the module docstring."""

    def init(self, app: Application) -> None:
        self.trap_exit = True
        self.spec = spec = app.spec
        self.stopping = False
        self.sup = app._top = self.spawn_link(spec.start, *spec.args, **spec.options)

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request != "stop":
            return ValueError(f"an application master takes only 'stop', not {request!r:.200}")
        self.stopping = True
        return self._stop_tree()

    async def _stop_tree(self) -> None:
        await self._shut_down()
        self.stop()

    async def _shut_down(self) -> None:
        for _, reason in await shutdown_children(self, ((self.sup, self.spec),)):
            report(logging.ERROR, "shutdown_error", self.pid, self.spec.id, self.sup, reason)
        report(logging.INFO, "application_stopped", self.pid, self.spec.id, self.sup, SHUTDOWN)

    def handle_info(self, msg: Any) -> None:
        if self.stopping:
            return  # a stop in progress: the top supervisor's exit is expected, not a failure
        if type(msg) is not Exit or msg.pid != self.sup:
            return GenServer.handle_info(self, msg)
        report(logging.INFO if is_normal_exit(msg.reason) else logging.ERROR,
               "application_stopped", self.pid, self.spec.id, self.sup, msg.reason)
        restart = self.spec.restart
        if restart == "permanent" or (restart == "transient" and not is_normal_exit(msg.reason)):
            self.node.stop()
        self.stop()

    def terminate(self, reason: Any) -> Any:
        if self.stopping or not self.node.is_alive(self.sup):
            return None
        self.stopping = True
        return self._shut_down()
