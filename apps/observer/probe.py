"""The observer's one adapter to the kernel: everything it knows of a node comes through here.

    probe = Probe(node, store=store)       # installs itself; probe.close() takes it out
    probe.process(pid)                     # process_info plus state and last crash
    probe.scan(limit=100_000)              # one pass over the processes: totals and rows
    probe.subscribe(fn)                    # fn(event, pid, detail) for every kernel event
    probe.trace_process(pid, fn)           # fn(event, pid, detail) for its sends and receives

It uses only the kernel's public surface, so it works on any node:
- `node.statistics()` for the node's counters (spawns, exits, crashes, turns, messages,
  run queue: all kept by the kernel, read in O(1)); `node.process_info(pid)` for one
  process (its turns, messages in and out, links, monitors, current function, memory
  estimate, last message); `node.pid_of(serial)` to find a pid shown as text.
- `node.tracer`, one slot, is multiplexed while some trace session subscribes: the
  probe chains whatever tracer was there before and fans the events ("spawn", "run",
  "crash", "exit") out to its subscribers. `node.trace(pid, fn)`, one slot a process,
  is multiplexed the same way for the "send" and "receive" events of traced processes.
- supervision's report listener counts restarts; a handler on logger "actors" keeps the
  node's crash reports (pid, name, reason, last message, traceback), the last
  `MAX_CRASHES` of them.

Cost: an installed probe costs the node nothing per turn or per message: the counters
are the kernel's own, and the node's tracer is set only while a trace session runs
(then every kernel event is one extra Python call on the node's thread). A scan costs
a `process_info` per process and is bounded by `limit`. A node runs without a probe
until an observer (or a trace) asks for one, and the last one to stop removes it.
"""
from __future__ import annotations

import logging
import reprlib
import traceback
import weakref
from collections import deque
from typing import Any, Callable

from actors import Node, Pid
from supervision import DynamicSupervisor, Supervisor, add_report_listener, remove_report_listener

MAX_CRASHES = 200  # crash reports kept per node
MAX_SUBSCRIBERS = 64
MAX_REPLACED = MAX_CRASHES * 100  # restarted children whose predecessor is remembered
COUNTERS = ("spawns", "exits", "crashes", "turns", "messages")  # of node.statistics()

Event = Callable[[str, Pid, Any], None]
_short = reprlib.Repr()
_short.maxstring = 120
_short.maxother = 120
_short.maxlevel = 3


def pid_text(pid: Any) -> str | None:
    """A pid as the observer shows it, `<node.serial>`; None stays None."""
    return None if pid is None else repr(pid)


def parse_pid(text: str) -> Pid:
    """`<node.serial>` (as shown) back to a pid; ValueError names what is wrong."""
    body = text.strip()
    if body.startswith("<") and body.endswith(">"):
        body = body[1:-1]
    name, _, serial = body.rpartition(".")
    if not name or not serial.isdigit():
        raise ValueError(f"not a pid: {text!r:.80} (expected <node.serial>, e.g. <nonode@nohost.3>)")
    return Pid(name, int(serial))


def summary(value: Any) -> str:
    """A bounded one-line repr of any value."""
    return _short.repr(value)


def label(value: Any) -> str | None:
    """A name or child id as shown: a string as itself, anything else as its short repr."""
    if value is None:
        return None
    return value[:120] if isinstance(value, str) else summary(value)


class Probe:
    """See the module docstring. Install at most one per node (`Probe.of(node)` shares it)."""

    _installed: weakref.WeakKeyDictionary[Node, Probe] = weakref.WeakKeyDictionary()
    """Each node's probe: several observers of one node share it."""

    @classmethod
    def of(cls, node: Node, store: Any = None) -> Probe:
        """The node's probe, installed on first use; each `of` needs a `release`."""
        probe = cls._installed.get(node)
        if probe is None:
            probe = cls._installed[node] = cls(node, store)
        elif store is not None and probe.store is None:
            probe.store = store
        probe.users += 1
        return probe

    def release(self) -> None:
        """One user less; the last one uninstalls the probe."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    def __init__(self, node: Node, store: Any = None) -> None:
        self.node = node
        self.store = store
        self.users = 0
        self.restarts = 0
        self.crashes: deque[dict[str, Any]] = deque(maxlen=MAX_CRASHES)
        self.replaced: dict[Pid, Pid] = {}  # a restarted child's pid -> the pid it replaced
        self._last_child: dict[tuple[Pid, Any], Pid] = {}
        self._subscribers: list[Event] = []
        self._process_tracers: dict[Pid, list[Event]] = {}
        self._process_chained: dict[Pid, Event | None] = {}
        self._crash_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._chained: Event | None = None
        add_report_listener(self._on_report)
        self._handler = _CrashHandler(self)
        logging.getLogger("actors").addHandler(self._handler)
        self.closed = False

    def close(self) -> None:
        """Uninstall: the node's tracer is what it was before (if nobody replaced it since)."""
        if self.closed:
            return
        self.closed = True
        self._subscribers.clear()
        self._untap()
        for pid in list(self._process_tracers):
            self._process_tracers[pid].clear()
            self._untrace(pid)
        remove_report_listener(self._on_report)
        logging.getLogger("actors").removeHandler(self._handler)
        if Probe._installed.get(self.node) is self:
            del Probe._installed[self.node]

    # -- events (on the node's thread) -------------------------------------------------------

    @property
    def totals(self) -> dict[str, int]:
        """The node's counters since it started, and the restarts since the probe was installed."""
        stats = self.node.statistics()
        return {**{key: stats[key] for key in COUNTERS}, "restarts": self.restarts}

    def _on_event(self, event: str, pid: Pid, detail: Any) -> None:
        if self._chained is not None:
            self._chained(event, pid, detail)
        for fn in self._subscribers:
            fn(event, pid, detail)

    def _tap(self) -> None:
        """Set the node's tracer (chaining the one there) while anybody subscribes."""
        if self.node.tracer != self._on_event:
            self._chained, self.node.tracer = self.node.tracer, self._on_event

    def _untap(self) -> None:
        if self.node.tracer == self._on_event:
            self.node.tracer = self._chained
            self._chained = None

    def _on_report(self, kind: str, sup: Pid, child_id: Any, child_pid: Any, reason: Any) -> None:
        if sup.node_name != self.node.name:
            return
        if kind == "child_restarted":
            self.restarts += 1
            old = self._last_child.get((sup, child_id))
            if old is not None and child_pid is not None:
                if len(self.replaced) >= MAX_REPLACED:
                    del self.replaced[next(iter(self.replaced))]  # the oldest restart is forgotten
                self.replaced[child_pid] = old
        if kind in ("child_started", "child_restarted") and child_id is not None:
            if len(self._last_child) < MAX_CRASHES * 100 or (sup, child_id) in self._last_child:
                self._last_child[(sup, child_id)] = child_pid

    def record_crash(self, report: dict[str, Any]) -> None:
        self.crashes.append(report)
        for fn in self._crash_listeners:
            fn(report)

    def subscribe(self, fn: Event) -> None:
        """Call `fn(event, pid, detail)` for every kernel event of the node, on its thread;
        `fn` must be quick and must not raise."""
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise ValueError(f"at most {MAX_SUBSCRIBERS} trace sessions at once on a node")
        self._subscribers.append(fn)
        self._tap()

    def unsubscribe(self, fn: Event) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)
        if not self._subscribers:
            self._untap()

    def trace_process(self, pid: Pid, fn: Event) -> None:
        """Call `fn(event, pid, detail)` for the "send" and "receive" events of the live
        process `pid` (the kernel's `Node.trace`) until `untrace_process` or its exit;
        `fn` must be quick and must not raise."""
        fns = self._process_tracers.get(pid)
        if fns is None:
            if len(self._process_tracers) >= MAX_SUBSCRIBERS:
                raise ValueError(f"at most {MAX_SUBSCRIBERS} traced processes at once on a node")
            fns = self._process_tracers[pid] = []
            self._process_chained[pid] = self.node.trace(pid, self._on_process_event)
        fns.append(fn)

    def untrace_process(self, pid: Pid, fn: Event) -> None:
        fns = self._process_tracers.get(pid)
        if fns is not None and fn in fns:
            fns.remove(fn)
            if not fns:
                self._untrace(pid)

    def _untrace(self, pid: Pid) -> None:
        del self._process_tracers[pid]
        chained = self._process_chained.pop(pid)
        if self.node.is_alive(pid):
            self.node.trace(pid, chained)

    def _on_process_event(self, event: str, pid: Pid, detail: Any) -> None:
        chained = self._process_chained.get(pid)
        if chained is not None:
            chained(event, pid, detail)
        for fn in self._process_tracers.get(pid, ()):
            fn(event, pid, detail)
        if event == "exit" and pid in self._process_tracers:  # the kernel ended its trace
            del self._process_tracers[pid]
            del self._process_chained[pid]

    def on_crash(self, fn: Callable[[dict[str, Any]], None] | None, remove: bool = False) -> None:
        """Call `fn(report)` with each crash report of the node from now on (or stop)."""
        if remove:
            self._crash_listeners.remove(fn)
        else:
            self._crash_listeners.append(fn)

    # -- lookups ---------------------------------------------------------------------------

    def live_pid(self, pid: Pid | str) -> Pid | None:
        """The live pid object for a pid (or its text), or None if no such process runs here."""
        if isinstance(pid, str):
            pid = parse_pid(pid)
        return self.node.pid_of(pid.serial) if pid.node_name == self.node.name else None

    def state(self, pid: Pid) -> str | None:
        """A short summary of a process's own public attributes (a GenServer's state,
        a PersistentServer's `state` and `revision`), or None."""
        attrs = _public_attributes(self.node.get_process(pid))
        return summary(attrs) if attrs else None

    # -- views -------------------------------------------------------------------------------

    def row(self, pid: Pid, info: dict[str, Any]) -> dict[str, Any]:
        """What the process table shows of one process."""
        name = info["registered_name"]
        return {"pid": pid_text(pid), "name": label(name),
                "kind": info["initial_call"], "mailbox": info["mailbox_len"],
                "turns": info["turns"], "memory": info["memory"], "status": info["status"]}

    def scan(self, limit: int = 100_000) -> dict[str, Any]:
        """One pass over (at most `limit` of) the processes: totals, per-process rows, the
        supervisors that are roots (no supervisor above them) and each process's children
        by parent. Runs on the node's thread, between turns."""
        node = self.node
        rows: list[dict[str, Any]] = []
        children: dict[Pid, list[Pid]] = {}
        roots: list[Pid] = []
        mailbox = 0
        pids = node.processes()
        for pid in pids[:limit]:
            info = node.process_info(pid)
            if info is None:
                continue
            mailbox += info["mailbox_len"]
            rows.append(self.row(pid, info))
            parent = info["parent"]
            if parent is not None:
                children.setdefault(parent, []).append(pid)
            if self.is_supervisor(pid) and (parent is None or not self.is_supervisor(parent)):
                roots.append(pid)
        return {"processes": len(pids), "scanned": len(rows), "mailbox_total": mailbox,
                "run_queue": node.statistics()["run_queue"], "rows": rows, "roots": roots, "children": children}

    def is_supervisor(self, pid: Pid) -> bool:
        return isinstance(self.node.get_process(pid), (Supervisor, DynamicSupervisor))

    def process(self, pid: Pid | str) -> dict[str, Any] | None:
        """One process in detail, or None if it is not alive."""
        live = self.live_pid(pid)
        info = self.node.process_info(live) if live is not None else None
        if info is None:
            return None
        return {
            **self.row(live, info),
            "links": [pid_text(p) for p in info["links"]],
            "monitors": [pid_text(p) if isinstance(p, Pid) else summary(p) for p in info["monitors"]],
            "monitored_by": [pid_text(p) for p in info["monitored_by"]],
            "trap_exit": info["trap_exit"],
            "parent": pid_text(info["parent"]),
            "dropped": info["dropped"],
            "messages_in": info["messages_in"],
            "messages_out": info["messages_out"],
            "current_function": info["current_function"],
            "last_message": None if info["last_message"] is None else summary(info["last_message"]),
            "state": self.state(live),
            "last_crash": self.last_crash(live, info["registered_name"]),
        }

    def last_crash(self, pid: Pid, name: Any) -> dict[str, Any] | None:
        """The newest crash report of this process, of the one it replaced in its
        supervisor (a restart), or of its registered name."""
        before = self.replaced.get(pid)
        for report in reversed(self.crashes):
            if report["pid"] in (pid_text(pid), pid_text(before)) or (
                    name is not None and report["name"] == label(name)):
                return report
        return None


def store_bytes(store: Any) -> int | None:
    """Bytes the store's data occupies (LMDB pages in use), or None if it is closed."""
    try:
        info, stat = store.env.info(), store.env.stat()
    except Exception:  # noqa: BLE001 - closed or failed: the overview shows nothing
        return None
    return (info["last_pgno"] + 1) * stat["psize"]



_KERNEL_ATTRIBUTES = frozenset({"pid", "node", "store"})  # the same on every process: not state


def _public_attributes(obj: Any) -> dict[str, Any]:
    """An object's public attributes, from its __dict__ and the __slots__ of its classes."""
    attrs: dict[str, Any] = {}
    for cls in reversed(type(obj).__mro__):
        for name in getattr(cls, "__slots__", ()):
            if not name.startswith("_") and name not in _KERNEL_ATTRIBUTES and hasattr(obj, name):
                attrs[name] = getattr(obj, name)
    attrs.update((k, v) for k, v in getattr(obj, "__dict__", {}).items()
                 if not k.startswith("_") and k not in _KERNEL_ATTRIBUTES)
    return attrs


class _CrashHandler(logging.Handler):
    """Keeps the kernel's crash reports (logger "actors", ERROR records with `pid`)."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(logging.ERROR)
        self.probe = probe

    def emit(self, record: logging.LogRecord) -> None:
        pid = getattr(record, "pid", None)
        if not isinstance(pid, Pid) or pid.node_name != self.probe.node.name or not hasattr(record, "reason"):
            return
        name = getattr(record, "registered_name", None)
        text = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else None
        self.probe.record_crash({
            "pid": pid_text(pid), "name": label(name),
            "reason": summary(record.reason), "last_message": summary(getattr(record, "last_message", None)),
            "traceback": text[-4000:] if text else None, "at": record.created,
        })
