"""Cluster-wide names: Erlang's `global`. One name, one pid, across the connected nodes.

    from actors import global_names as g
    node.spawn(g.Server)                              # on every node, as OTP's kernel does
    if await g.register_name(self, "counter", pid):   # True, or False if the name is taken
        ...
    g.whereis_name(self.node, "counter")              # a table read on any node
    node.cast(g.via(node, "counter"), 1)              # a via works wherever a pid does

Contract (global's, with the choices named):
- A name server per node, registered as "letitcrash.global", keeps the cluster's table of
  names; reads (`whereis_name`, `registered_names`, a `via`) are table reads, never calls.
- `register_name` holds a lock on the name at every node whose server it knows, taken in
  the order of their names (so two nodes registering at once never deadlock, and one of
  them finds the name taken), registers everywhere, then lets go. It answers False when
  the name is held (by a live pid somewhere). A lock held by a node that goes down is
  let go; a node that goes down while a lock is asked of it counts as granted.
- A name goes when its process exits (its own node's server monitors it and tells the
  others) or when its node goes (every server drops the names of that node).
- When two nodes meet (at start, or on `NodeUp`), their servers exchange their names.
  Two pids under one name (registered on both sides of a partition) are resolved as
  global's default resolver does: the pid on the node whose name sorts first keeps the
  name, the other is killed (`exit(pid, "kill")`, by its own node) with one log line.
  Every node reaches the same answer, with no message.
- Limits: `MAX_NAMES` names in the cluster, `MAX_PENDING` registrations in progress per
  node (past it: `SystemLimit`).
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Hashable
from weakref import WeakKeyDictionary

from .errors import NoProc, SystemLimit
from .genserver import GenServer, NoReply
from .ids import Pid, Ref
from .messages import KILL, Down, NodeDown, NodeUp
from .node import Node
from .process import From, Process
from .registry import RemoteName, Via
from .requests import request

log = logging.getLogger("actors.global")

SERVER = "letitcrash.global"
TABLE = ("global", "names")
MAX_NAMES = 1_000_000
MAX_PENDING = 10_000


class Registration:
    """A `register_name` in progress: the locks asked, node by node."""

    __slots__ = ("name", "pid", "caller", "nodes", "next", "held")

    def __init__(self, name: Any, pid: Pid, caller: From, nodes: list[str]) -> None:
        self.name = name
        self.pid = pid
        self.caller = caller
        self.nodes = nodes  # whose lock to take, in order
        self.next = 0  # the index of the node asked now
        self.held: list[str] = []  # nodes whose lock is held


class Server(GenServer):
    """A node's name server; see the module docstring."""

    def init(self) -> None:
        self.node.register(SERVER, self.pid)
        self.table = self.node.new_table(TABLE, limit=MAX_NAMES)
        self.names: dict[Any, Pid] = {}
        self.watched: dict[Ref, Any] = {}  # monitors of this node's registered pids -> name
        self.peers: dict[str, Ref] = {}  # the servers met, by node -> the monitor of that server
        self.locks: dict[Any, tuple[str, Ref]] = {}  # name -> (node, registration) holding its lock here
        self.queued: dict[Any, deque[tuple[str, Ref]]] = {}  # name -> who waits for its lock here
        self.pending: dict[Ref, Registration] = {}
        self.monitor_nodes()
        for name in self.node.nodes():
            self.tell(name, self.sync_message())

    # -- requests of this node's processes ---------------------------------------------------------

    def handle_call(self, request: Any, caller: From) -> Any:
        op, name = request[0], request[1]
        if op == "unregister":
            pid = self.names.get(name)
            if pid is not None:
                self.drop(name, pid)
                self.tell_peers(("unregister", name, pid))
            return "ok"
        if op != "register":
            return ValueError(f"the global name server takes no request {op!r:.40}")
        pid = request[2]
        if type(pid) is not Pid:
            return TypeError(f"global names hold pids, not {pid!r:.100}")
        try:
            hash(name)
        except TypeError:
            return TypeError(f"a global name must be hashable, not a {type(name).__name__}")
        if name in self.names:
            return False
        if len(self.pending) >= MAX_PENDING:
            return SystemLimit(f"node {self.node.name}: {MAX_PENDING} global registrations in progress")
        tag = self.node.make_ref()
        nodes = sorted([self.node.name, *self.peers])
        self.pending[tag] = Registration(name, pid, caller, nodes)
        self.ask_lock(tag)
        return NoReply

    # -- taking the locks -------------------------------------------------------------------------

    def ask_lock(self, tag: Ref) -> None:
        reg = self.pending[tag]
        while reg.next < len(reg.nodes) and reg.nodes[reg.next] != self.node.name \
                and reg.nodes[reg.next] not in self.peers:
            reg.next += 1  # gone meanwhile: nothing to lock there
        if reg.next == len(reg.nodes):
            self.complete(tag)
        else:
            self.tell(reg.nodes[reg.next], ("lock", reg.name, self.node.name, tag))

    def on_lock(self, name: Any, requester: str, tag: Ref) -> None:
        if name in self.locks:
            self.queued.setdefault(name, deque()).append((requester, tag))
        else:
            self.grant(name, requester, tag)

    def grant(self, name: Any, requester: str, tag: Ref) -> None:
        self.locks[name] = (requester, tag)
        self.tell(requester, ("locked", name, tag, self.node.name, self.names.get(name)))

    def on_locked(self, name: Any, tag: Ref, at: str, holder: Pid | None) -> None:
        reg = self.pending.get(tag)
        if reg is None or reg.next >= len(reg.nodes) or reg.nodes[reg.next] != at:
            self.tell(at, ("release", name, tag, None))  # no longer wanted
            return
        reg.held.append(at)
        if holder is not None:
            self.finish(tag, False)  # taken: let go of what is held
            return
        reg.next += 1
        self.ask_lock(tag)

    def complete(self, tag: Ref) -> None:
        """Every lock is held: the name is registered everywhere, and the locks go."""
        reg = self.pending[tag]
        everywhere = dict.fromkeys([*reg.held, *self.peers])
        for node in everywhere:
            self.tell(node, ("release", reg.name, tag, reg.pid))
        self.finish(tag, True)

    def finish(self, tag: Ref, registered: bool) -> None:
        reg = self.pending.pop(tag)
        if not registered:
            for node in reg.held:
                self.tell(node, ("release", reg.name, tag, None))
        self.reply(reg.caller, registered)

    def on_release(self, name: Any, tag: Ref, pid: Pid | None) -> None:
        """A registration ends: with `pid` registered under `name`, or nothing."""
        if pid is not None:
            self.adopt(name, pid)
        if self.locks.get(name, (None, None))[1] == tag:
            del self.locks[name]
            self.next_holder(name)

    def next_holder(self, name: Any) -> None:
        waiting = self.queued.get(name)
        while waiting:
            requester, tag = waiting.popleft()
            if requester == self.node.name or requester in self.peers:
                self.grant(name, requester, tag)
                break
        if waiting is not None and not waiting:
            del self.queued[name]

    # -- the table ----------------------------------------------------------------------------------

    def adopt(self, name: Any, pid: Pid) -> None:
        """`pid` holds `name`, unless a pid holds it already: then the resolver decides."""
        current = self.names.get(name)
        if current == pid:
            return
        if current is not None:
            keep, lose = sorted((current, pid), key=lambda p: (p.node_name, p.serial))
            if lose.node_name == self.node.name:
                log.info("global: name conflict on %r: %r keeps it, %r is killed", name, keep, lose)
                self.exit(lose, KILL)
            if keep == current:
                return
            self.drop(name, current)
        if len(self.names) >= MAX_NAMES:
            log.warning("global: %d names held, %r not taken", MAX_NAMES, name)
            return
        self.names[name] = pid
        self.table.put(name, pid)
        if pid.node_name == self.node.name:
            self.watched[self.monitor(pid)] = name

    def drop(self, name: Any, pid: Pid) -> None:
        if self.names.get(name) == pid:
            del self.names[name]
            self.table.delete(name)

    def sync_message(self) -> tuple:
        return ("sync", self.node.name, self.pid, list(self.names.items()))

    def on_sync(self, node: str, server: Pid, names: list) -> None:
        if node not in self.peers:
            self.peers[node] = self.monitor(server)
            self.tell(node, self.sync_message())
        connected = set(self.node.nodes())
        for name, pid in names:
            if pid.node_name in connected or pid.node_name == self.node.name:
                self.adopt(name, pid)

    # -- what the kernel says -----------------------------------------------------------------------

    def handle_info(self, msg: Any) -> None:
        kind = type(msg)
        if kind is Down:
            self.down(msg)
        elif kind is NodeUp:
            self.tell(msg.node, self.sync_message())
        elif kind is NodeDown:
            self.node_down(msg.node)
        elif kind is tuple and msg and msg[0] in ("sync", "lock", "locked", "release", "unregister"):
            getattr(self, "on_" + msg[0])(*msg[1:])

    def on_unregister(self, name: Any, pid: Pid) -> None:
        self.drop(name, pid)

    def down(self, msg: Down) -> None:
        name = self.watched.pop(msg.ref, None)
        if name is not None:  # a registered process of this node exited
            if self.names.get(name) == msg.pid:
                self.drop(name, msg.pid)
                self.tell_peers(("unregister", name, msg.pid))
            return
        for node, ref in list(self.peers.items()):
            if ref == msg.ref:  # that node's server is gone (its node, or itself)
                self.forget_server(node)

    def node_down(self, node: str) -> None:
        self.forget_server(node)
        for name, pid in list(self.names.items()):
            if pid.node_name == node:
                self.drop(name, pid)

    def forget_server(self, node: str) -> None:
        """Node `node`'s server is gone: its locks go, and it is no longer asked for any."""
        ref = self.peers.pop(node, None)
        if ref is not None:
            self.demonitor(ref, flush=True)
        for name, (holder, _) in list(self.locks.items()):
            if holder == node:
                del self.locks[name]
                self.next_holder(name)
        for tag, reg in list(self.pending.items()):
            if reg.next < len(reg.nodes) and reg.nodes[reg.next] == node:
                reg.next += 1  # asked of a node gone: counts as granted
                self.ask_lock(tag)

    def tell(self, node: str, msg: tuple) -> None:
        self.send(RemoteName(SERVER, node), msg)

    def tell_peers(self, msg: tuple) -> None:
        for node in self.peers:
            self.tell(node, msg)


class GlobalNames:
    """The global names as a `via` registry of one node (OTP's via module interface)."""

    name = "global"

    def __init__(self, node: Node) -> None:
        self.node = node

    def whereis_name(self, key: Hashable) -> Pid | None:
        return whereis_name(self.node, key)

    def __repr__(self) -> str:
        return f"<global names on {self.node.name}>"


_VIAS: WeakKeyDictionary[Node, GlobalNames] = WeakKeyDictionary()


def start(node: Node) -> Pid:
    """Start the name server on `node` (one per node)."""
    return node.spawn(Server)


def register_name(caller: Node | Process, name: Hashable, pid: Pid, timeout: float | None = 5.0) -> Any:
    """Register `pid` under `name` across the cluster: True, or False if it is taken."""
    return request(caller, SERVER, ("register", name, pid), timeout)


def unregister_name(caller: Node | Process, name: Hashable, timeout: float | None = 5.0) -> Any:
    """Remove `name` across the cluster, if it is registered: "ok"."""
    return request(caller, SERVER, ("unregister", name), timeout)


def whereis_name(node: Node, name: Hashable) -> Pid | None:
    """The pid registered under `name`, as `node` knows it, or None."""
    table = node.table(TABLE)
    return table.get(name) if table is not None else None


def registered_names(node: Node) -> list[Any]:
    """Every name `node` knows of, in the order they were registered there."""
    table = node.table(TABLE)
    return table.keys() if table is not None else []


def send(node: Node, name: Hashable, msg: Any) -> Pid:
    """Send `msg` to the process registered under `name`; `NoProc` if there is none."""
    pid = whereis_name(node, name)
    if pid is None:
        raise NoProc(name)
    node.send(pid, msg)
    return pid


def via(node: Node, name: Hashable) -> Via:
    """An address for `name` that `send`, `cast`, `call`, `link` and `monitor` take."""
    names = _VIAS.get(node)
    if names is None:
        names = _VIAS[node] = GlobalNames(node)
    return Via(names, name)
