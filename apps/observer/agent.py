"""The agent: what an observer asks of a node, answered inside that node.

    agent = Agent.of(node, store=store)     # on the node's running loop (shared per node)
    agent.overview()                        # counts, totals, the store, the last minutes
    agent.tree()                            # every supervision tree, as dicts
    agent.processes(sort="turns", limit=50, query="conn")
    agent.process("<nonode@nohost.7>")      # detail, or None
    agent.kill("<nonode@nohost.7>")         # exit(pid, "kill"): its supervisor restarts it
    agent.metrics()                         # Prometheus text
    agent.release()                         # the last user's release closes it

The web page (`apps.observer.web`) calls it in-process; the attach server
(`apps.observer.attach`) calls the same methods for a client in another OS process, so
`letitcrash observe` shows a running node exactly as `--observer` does. Every answer is
plain data (dicts, lists, str, numbers): it travels as JSON or msgpack unchanged.

Every second the agent samples the node's counters into `history` (the last
`HISTORY_SECONDS` points: processes, run queue, turns, messages, spawns, exits, crashes, restarts per second,
store commits per second and their mean latency); a scan of the processes
(`Probe.scan`, bounded by `scan_limit`) runs only when asked for, and is reused for a
second. Every observer of one node (its page, its attach socket, the agent other nodes
ask) shares one agent through `Agent.of`, so a node samples once a second however many
ways it is watched.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from actors import KILL, Node
from supervision import supervision_tree

from .metrics import Metrics
from .probe import Probe, label, pid_text, store_bytes

HISTORY_SECONDS = 600
SORTS = ("mailbox", "turns", "memory", "pid")
MAX_LIMIT = 1000
MAX_TREE_CHILDREN = 200
SCAN_TTL = 1.0  # seconds a scan is reused for


class Agent:
    """See the module docstring. Create and use it on the node's thread."""

    _shared: dict[Node, Agent] = {}

    @classmethod
    def of(cls, node: Node, store: Any = None, *, scan_limit: int = 100_000) -> Agent:
        """The node's agent, made on first use; each `of` needs a `release`. A later user
        adds its store if the agent had none, and a smaller `scan_limit` lowers the bound."""
        agent = cls._shared.get(node)
        if agent is None:
            agent = cls._shared[node] = cls(node, store, scan_limit=scan_limit)
        else:
            _check_scan_limit(scan_limit)
            agent.scan_limit = min(agent.scan_limit, scan_limit)
            if store is not None and agent.store is None:
                agent._watch_store(store)
        agent.users += 1
        return agent

    def release(self) -> None:
        """One user less; the last one closes the agent."""
        assert self.users > 0, "an agent released more often than taken"
        self.users -= 1
        if self.users == 0:
            if self._shared.get(self.node) is self:
                del self._shared[self.node]
            self.close()

    def __init__(self, node: Node, store: Any = None, *, scan_limit: int = 100_000) -> None:
        if node.seed is not None:
            raise ValueError("an observer watches a real-time node (Node() in an asyncio loop); "
                             "a deterministic node is read with render_tree and process_info")
        _check_scan_limit(scan_limit)
        self.node = node
        self.users = 0
        self.probe = Probe.of(node, store)
        self.store = self.probe.store
        self.scan_limit = scan_limit
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SECONDS)
        self._scan: dict[str, Any] | None = None
        self._scan_at = -1.0
        self._commit_lock = threading.Lock()  # on_commit runs on the store's writer thread
        self._commit_time = 0.0
        self._commit_count = 0
        self.commit_observers: list[Any] = []
        if self.store is not None:
            self._watch_store(self.store)
        self._last = self._counters()
        self.metrics_registry = Metrics(self)
        self._sampler = asyncio.get_running_loop().call_later(1.0, self._sample)

    def _watch_store(self, store: Any) -> None:
        """Read `store`'s sizes and time its commits (if no one else times them)."""
        self.store = self.probe.store = store
        if getattr(store, "on_commit", False) is None:
            store.on_commit = self._on_commit

    def close(self) -> None:
        self._sampler.cancel()
        if self.store is not None and getattr(self.store, "on_commit", None) == self._on_commit:
            self.store.on_commit = None
        self.probe.release()

    # -- sampling ----------------------------------------------------------------------------

    def _on_commit(self, writes: int, seconds: float) -> None:
        with self._commit_lock:
            self._commit_time += seconds
            self._commit_count += 1
        for observe in self.commit_observers:
            observe(seconds)

    def _counters(self) -> dict[str, Any]:
        with self._commit_lock:
            commit_time, commit_count = self._commit_time, self._commit_count
        return {**self.probe.totals, "commits": self.store.commits if self.store is not None else 0,
                "commit_time": commit_time, "timed_commits": commit_count, "at": self.node.now()}

    def _sample(self) -> None:
        self._sampler = asyncio.get_running_loop().call_later(1.0, self._sample)
        now, last = self._counters(), self._last
        self._last = now
        span = max(now["at"] - last["at"], 1e-9)
        timed = now["timed_commits"] - last["timed_commits"]
        point = {key: (now[key] - last[key]) / span for key in ("turns", "messages", "spawns", "exits", "crashes",
                                                                  "restarts", "commits")}
        point.update(at=now["at"], processes=len(self.node),
                     commit_ms=(now["commit_time"] - last["commit_time"]) / timed * 1000 if timed else None,
                     run_queue=self.node.statistics()["run_queue"])
        self.history.append(point)

    def scan(self) -> dict[str, Any]:
        """The processes now (reused for `SCAN_TTL` seconds)."""
        if self._scan is None or self.node.now() - self._scan_at >= SCAN_TTL:
            self._scan = self.probe.scan(self.scan_limit)
            self._scan_at = self.node.now()
        return self._scan

    # -- what an observer asks ------------------------------------------------------------------

    def overview(self, history: int = 300) -> dict[str, Any]:
        """The node at a glance, and its last `history` seconds."""
        scan = self.scan()
        store = None
        if self.store is not None:
            store = {"path": str(self.store.path), "mode": self.store.mode, "commits": self.store.commits,
                     "writes": self.store.writes, "bytes": store_bytes(self.store)}
        points = list(self.history)[-max(0, min(history, HISTORY_SECONDS)):] if history else []
        return {"node": self.node.name, "processes": scan["processes"], "scanned": scan["scanned"],
                "run_queue": scan["run_queue"], "mailbox_total": scan["mailbox_total"],
                "totals": dict(self.probe.totals), "store": store, "history": points}

    def processes(self, sort: str = "mailbox", limit: int = 50, query: str = "") -> list[dict[str, Any]]:
        """The top `limit` processes by `sort` (largest first; "pid": oldest first) whose
        pid, name or kind contains `query`."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, got {sort!r:.40}")
        if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an int in 1..{MAX_LIMIT}, got {limit!r:.40}")
        rows = self.scan()["rows"]
        if query:
            q = str(query).lower()
            rows = [r for r in rows if q in r["pid"].lower() or q in (r["name"] or "").lower()
                    or q in r["kind"].lower()]
        if sort == "pid":
            return rows[:limit]
        return sorted(rows, key=lambda r: -r[sort])[:limit]

    def process(self, pid: str) -> dict[str, Any] | None:
        """One process in detail (`Probe.process`), or None if it is gone."""
        return self.probe.process(pid)

    def kill(self, pid: str, reason: Any = KILL) -> bool:
        """Send `pid` an exit signal ("kill" by default: untrappable). False if it was
        not alive."""
        live = self.probe.live_pid(pid)
        if live is None:
            return False
        self.node.exit(live, reason)
        return True

    def metrics(self) -> str:
        """The node's Prometheus metrics, in the text exposition format (`metrics`)."""
        return self.metrics_registry.render().decode()

    def crashes(self, n: int = 50) -> list[dict[str, Any]]:
        """The newest `n` crash reports, newest last."""
        return list(self.probe.crashes)[-max(0, n):] if n else []

    def tree(self, max_children: int = 20) -> list[dict[str, Any]]:
        """Every supervision tree of the node (roots: supervisors with no supervisor
        above), with each worker's own spawned children (an `Entities`' entities)."""
        if type(max_children) is not int or not 0 <= max_children <= MAX_TREE_CHILDREN:
            raise ValueError(f"max_children must be an int in 0..{MAX_TREE_CHILDREN}, got {max_children!r:.40}")
        scan = self.scan()
        trees = []
        for root in scan["roots"]:
            try:
                tree = supervision_tree(self.node, root, max_children=max_children)
            except ValueError:
                continue  # it stopped since the scan
            trees.append(self._tree_dict(tree, scan["children"], max_children))
        return trees

    def _tree_dict(self, tree: Any, children: dict, max_children: int) -> dict[str, Any]:
        kids = [self._tree_dict(t, children, max_children) for t in tree.children]
        omitted = tree.omitted
        if tree.kind is None and tree.pid is not None:  # a worker: the processes it spawned
            spawned = children.get(tree.pid, ())
            for pid in spawned[:max_children]:
                info = self.node.process_info(pid)
                if info is not None:
                    kids.append(_node_dict(None, pid, "worker", None, None, info["mailbox_len"],
                                           info["registered_name"], [], 0, info["initial_call"]))
            omitted += max(0, len(spawned) - max_children)
        info = self.node.process_info(tree.pid) if tree.pid is not None else None
        return _node_dict(tree.id, tree.pid, tree.type, tree.kind, tree.restarts, tree.mailbox_len,
                          tree.registered_name, kids, omitted,
                          info["initial_call"] if info is not None else None)


def _node_dict(id_: Any, pid: Any, type_: str, kind: str | None, restarts: int | None, mailbox: int | None,
               name: Any, children: list, omitted: int, runs: str | None) -> dict[str, Any]:
    return {"id": label(id_), "pid": pid_text(pid), "type": type_,
            "strategy": kind, "restarts": restarts, "mailbox": mailbox,
            "name": label(name), "runs": runs,
            "children": children, "omitted": omitted}


def _check_scan_limit(scan_limit: Any) -> None:
    if type(scan_limit) is not int or scan_limit < 1:
        raise ValueError(f"scan_limit must be a positive int, got {scan_limit!r}")
