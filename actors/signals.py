"""Signals: links, monitors, exit signals, and a process's end.

Contract (Erlang's, with the deviations the README lists):
- A link is both ways, once per pair. When a process exits, each linked process gets an
  exit signal with its reason: one that traps exits gets `Exit(pid, reason)` as a
  message; otherwise "normal" is ignored and any other reason kills it with that reason.
  `exit(pid, "kill")` kills even a trapping process, with reason "killed".
- A monitor delivers `Down(ref, pid, reason)` once; on a process already gone, at once
  with "noproc". Demonitoring (with `flush`) also drops a `Down` already queued.
- An exit that kills takes effect once the running process's turn is over (`doom`):
  from then on the process counts as dead, takes no messages and ignores signals.
  `drain_exits` terminates doomed processes when no process is running.
- A process's end (`Process._terminate`) removes it: its names, timers of its waits, tables
  and monitors go; then its links and monitors hear (`notify_exit`), behind any output
  it still holds.
- Between nodes, a link ends when its exit signal arrives (unlinked meanwhile, it is
  ignored), and a connection lost with the signal in flight still ends the link, with
  reason "noconnection".
- `shutdown` stops the node: roots (processes without a live parent) get "shutdown",
  newest first; whatever outlives every root gets "shutdown" next; after the timeout
  the rest are killed.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .boundary import Demonitor, DownSignal, ExitSignal, Link, LinkedExit, Monitor, Unlink, node_of
from .errors import NoProc
from .future import Future
from .ids import Pid, Ref
from .messages import KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, Down, Exit
from .process import ExitNow, Process
from .registry import RemoteName

if TYPE_CHECKING:
    from .node import Node


class Signals:
    """The node's signal handling; see the module docstring."""

    __slots__ = ("node", "exits", "draining", "stopping", "stop_timer", "stop_roots")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.exits: deque[tuple[Process, Any]] = deque()  # doomed, to terminate after the turn
        self.draining = False
        self.stopping: Future | None = None
        self.stop_timer: Any = None
        self.stop_roots: dict[int, Process] = {}

    # -- exit signals ----------------------------------------------------------------------

    def send_exit(self, sender: Process | None, dest: Any, reason: Any) -> None:
        """Erlang's `exit(dest, reason)` from `sender` (None: from outside the node)."""
        node = self.node
        target = node._names.where(dest)
        sender_pid = sender._pid if sender is not None else None
        if type(target) is tuple:
            node._boundary.out(target[0], ExitSignal(target[1], sender_pid, reason))
            return
        if target is None or not target._alive:
            return
        assert isinstance(target, Process)
        if target is sender:
            if reason == KILL:
                raise ExitNow(KILLED)
            if target._trap:
                target._post(Exit(sender_pid, reason))
                return
            raise ExitNow(reason)
        if reason == KILL:
            self.doom(target, KILLED)
        else:
            self.signal(sender_pid, target, reason)

    def linked_exit(self, dead: Pid, target: Process, reason: Any) -> None:
        """A linked process of another node exited: the link ends as the signal arrives
        (unlinked meanwhile, the signal is ignored)."""
        links = target._links
        if links is not None and dead in links:
            del links[dead]
            self.signal(dead, target, reason)

    def signal(self, sender: Pid | None, target: Process, reason: Any) -> None:
        """Deliver an exit signal: a message if `target` traps exits, else maybe its end."""
        if not target._alive:
            return
        if target._trap:
            target._post(Exit(sender, reason))
        elif reason != NORMAL:
            self.doom(target, reason)

    # -- links and monitors -------------------------------------------------------------------

    def add_link(self, a: Process, b: Process) -> None:
        if a._links is None:
            a._links = {}
        if b._links is None:
            b._links = {}
        a._links[b] = None
        b._links[a] = None

    def link(self, proc: Process, dest: Any) -> None:
        node = self.node
        where = node._names.where(dest)
        if type(where) is tuple:  # recorded by pid here; the far node records its half
            to = where[1]
            if type(to) is not Pid:
                raise TypeError(f"link to a process of another node takes its pid, not {dest!r}")
            if proc._links is None:
                proc._links = {}
            proc._links[to] = None
            node._boundary.out(where[0], Link(to, proc._pid))
            return
        target = where if where is not None and where._alive else None
        if target is proc:
            return
        if target is None:
            if proc._trap:
                proc._post(Exit(dest, NOPROC))
                return
            raise NoProc(dest)
        self.add_link(proc, target)

    def unlink(self, proc: Process, dest: Any) -> None:
        node = self.node
        target = node._names.where(dest)
        if type(target) is tuple:
            to = target[1]
            if proc._links and to in proc._links:
                del proc._links[to]
                node._boundary.out(target[0], Unlink(to, proc._pid))
            return
        if target is None and type(dest) is Pid and proc._links:
            # dead, its exit held behind its output: unlinking still cancels that signal
            target = next((peer for peer in proc._links if type(peer) is not Pid and peer._pid == dest), None)
        if target is not None and proc._links is not None and target in proc._links:
            del proc._links[target]
            if target._links is not None:  # else dead, its exit signal in flight to us
                del target._links[proc]

    def monitor(self, proc: Process, dest: Any) -> Ref:
        node = self.node
        ref = node.make_ref()
        where = node._names.where(dest)
        if type(where) is tuple:  # recorded by address here; the far node records its half
            dst, to = where
            if proc._watching is None:
                proc._watching = {}
            proc._watching[ref] = to if type(to) is Pid else RemoteName(to, dst)
            node._boundary.out(dst, Monitor(to, proc._pid, ref))
            return ref
        target = where if where is not None and where._alive else None
        if target is None:
            proc._post(Down(ref, dest, NOPROC))
            return ref
        if target._watchers is None:
            target._watchers = {}
        if proc._watching is None:
            proc._watching = {}
        target._watchers[ref] = proc
        proc._watching[ref] = target
        return ref

    def demonitor(self, proc: Process, ref: Ref, flush: bool) -> None:
        target = proc._watching.pop(ref, None) if proc._watching else None
        if target is not None:
            self.unwatch(ref, target)
        if flush and proc._mbox:
            for queued in proc._mbox:
                msg = proc._unwrap(queued)
                if type(msg) is Down and msg.ref == ref:
                    proc._mbox.remove(queued)
                    break

    def unwatch(self, ref: Ref, target: Any) -> None:
        """Drop the far half of the monitor `ref` (a process here, or an address there)."""
        if type(target) is Pid or type(target) is RemoteName:
            to = target.name if isinstance(target, RemoteName) else target
            self.node._boundary.out(node_of(target), Demonitor(to, ref))
        elif target._watchers is not None:
            target._watchers.pop(ref, None)

    # -- a process's end ------------------------------------------------------------------------

    def doom(self, proc: Process, reason: Any) -> None:
        """Make proc exit with reason once the running process's turn is over. It counts as
        dead from now on: it takes no messages and ignores further signals."""
        self.exits.append((proc, reason))
        proc._alive = False
        proc._halt = True
        if self.node._current is None:
            self.drain_exits()

    def drain_exits(self) -> None:
        if self.draining or not self.exits:
            return
        self.draining = True
        try:
            exits = self.exits
            while exits:
                proc, reason = exits.popleft()
                proc._terminate(reason)
        finally:
            self.draining = False

    def notify_exit(self, proc: Process, reason: Any) -> None:
        """Send a dead process's exit to its links and its Downs to its monitors."""
        node = self.node
        pid = proc._pid
        if proc._links:
            for peer in proc._links:
                if type(peer) is Pid:  # the far end's half of the link goes when the signal arrives
                    node._boundary.out(peer.node_name, LinkedExit(peer, pid, reason))
                else:
                    del peer._links[proc]
                    self.signal(pid, peer, reason)
        if proc._watchers:
            for ref, watcher in list(proc._watchers.items()):
                if watcher._node is node:
                    watcher._on_down(ref, pid, reason)
                else:
                    node._boundary.out(ref.node_name, DownSignal(watcher.pid, ref, pid, reason))
        proc._links = proc._watchers = None

    # -- the node's shutdown ----------------------------------------------------------------------

    def shutdown(self, timeout: float) -> Future:
        """`node.stop`: see the module docstring."""
        node = self.node
        if self.stopping is None:
            self.stopping = Future()
            self.stop_roots = {serial: proc for serial, proc in node._procs.items()
                               if proc._parent is None or node._names.lookup(proc._parent) is None}
            for proc in reversed(list(self.stop_roots.values())):
                self.send_exit(None, proc._pid, SHUTDOWN)
            if node._procs:
                self.stop_timer = node._add_timer(timeout, self.kill_all, ())
            elif not self.stopping.done():
                self.stopping.set_result(None)
        return self.stopping

    def stopped(self, pid: Pid) -> None:
        """A process exited while the node stops."""
        node = self.node
        stopping = self.stopping
        assert stopping is not None, "only while the node stops"
        if self.stop_roots:
            self.stop_roots.pop(pid.serial, None)
            if not self.stop_roots:
                for orphan in reversed(list(node._procs.values())):
                    self.signal(None, orphan, SHUTDOWN)
        if not node._procs and not stopping.done():
            if self.stop_timer is not None:
                node._timers.cancel(self.stop_timer)
            stopping.set_result(None)

    def kill_all(self) -> None:
        for proc in reversed(list(self.node._procs.values())):
            self.doom(proc, KILLED)
