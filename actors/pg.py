"""Process groups across connected nodes: Erlang's `pg` (OTP 23+).

    from actors import pg
    node.spawn(pg.Scope)                        # on every node (scope "pg"), as OTP's kernel does
    await pg.join(self, "room-7", self.pid)     # in a process; `node` from outside
    pg.members(self.node, "room-7")             # every member, cluster-wide: a table read
    pg.local_members(self.node, "room-7")       # those of this node

Contract (pg's):
- A scope is one process per node, registered as `("pg", scope)`; the scopes of one name
  on connected nodes share one space of groups. Scopes talk by messages only, so a scope
  runs the same under the simulator as over sockets.
- `join(caller, group, pids)` adds processes of the scope's own node to a group (a
  process may join a group several times, and then leaves it as many times); `leave`
  takes one membership away, and answers "not_joined" for a process that has none.
  Either answers once the scope's node sees the change.
- Members leave when they exit (the scope monitors them) and when their node goes (each
  scope monitors the others: a `Down`, "noconnection" or an exit, takes all of that
  scope's members away).
- Membership elsewhere is eventually consistent, as in pg: the other scopes hear of a
  join or leave by message. Reads (`members`, `local_members`, `which_groups`) are table
  reads on the caller's node, never calls, in the order a member joined (per node).
- Discovery: a scope sends `discover` to its peers when it starts and whenever a node
  comes up; a scope that hears `discover` from one it does not know monitors it, answers
  with its local members (`sync`), and asks back.
- Limits: `MAX_GROUPS` groups per scope, `MAX_MEMBERS` memberships per group on one node
  (past them, a join answers `SystemLimit`).
"""
from __future__ import annotations

from typing import Any

from .errors import SystemLimit
from .genserver import GenServer
from .ids import Pid
from .messages import Down, NodeUp
from .node import Node
from .process import From, Process
from .registry import RemoteName
from .requests import request

MAX_GROUPS = 100_000
MAX_MEMBERS = 1_000_000


def scope_name(scope: str) -> tuple[str, str]:
    """The registered name of a scope's process."""
    return ("pg", scope)


class Scope(GenServer):
    """The process of one scope on one node; see the module docstring."""

    def init(self, scope: str = "pg") -> None:
        self.scope = scope
        self.node.register(scope_name(scope), self.pid)
        self.members = self.node.new_table(("pg", scope))  # group -> all members, this node's first
        self.locals = self.node.new_table(("pg", scope, "local"))  # group -> this node's members
        self.local: dict[Any, list[Pid]] = {}  # group -> members here, once per join
        self.joined: dict[Pid, tuple[Any, list[Any]]] = {}  # member here -> (monitor ref, its groups)
        self.remote: dict[Pid, tuple[Any, dict[Any, list[Pid]]]] = {}  # peer scope -> (monitor ref, its groups)
        self.monitor_nodes()
        for name in self.node.nodes():
            self.discover(name)

    # -- the API's requests ---------------------------------------------------------------------

    def handle_call(self, request: Any, caller: From) -> Any:
        op, group, pids = request
        if op == "join":
            return self.join(group, pids)
        if op == "leave":
            return self.leave(group, pids)
        return ValueError(f"pg scope {self.scope!r}: no request {op!r:.40}")

    def join(self, group: Any, pids: list[Pid]) -> Any:
        for pid in pids:
            if type(pid) is not Pid or pid.node_name != self.node.name:
                return ValueError(f"pg.join: {pid!r:.100} is not a process of node {self.node.name}")
        if group not in self.local and len(self.local) >= MAX_GROUPS:
            return SystemLimit(f"pg scope {self.scope!r}: at most {MAX_GROUPS} groups on a node")
        members = self.local.setdefault(group, [])
        if len(members) + len(pids) > MAX_MEMBERS:
            return SystemLimit(f"pg scope {self.scope!r}: at most {MAX_MEMBERS} members of a group on a node")
        for pid in pids:
            members.append(pid)
            ref, groups = self.joined.get(pid) or (self.monitor(pid), [])
            groups.append(group)
            self.joined[pid] = (ref, groups)
        self.publish(group)
        self.tell_peers(("join", self.pid, group, pids))
        return "ok"

    def leave(self, group: Any, pids: list[Pid]) -> Any:
        members = self.local.get(group, [])
        gone = [pid for pid in pids if pid in members]
        if not gone:
            return "not_joined"
        for pid in gone:
            self.forget(pid, group)
        self.publish(group)
        self.tell_peers(("leave", self.pid, gone, [group]))
        return "ok"

    def forget(self, pid: Pid, group: Any) -> None:
        """One membership of `pid` (of this node) in `group` ends."""
        members = self.local[group]
        members.remove(pid)
        if not members:
            del self.local[group]
        ref, groups = self.joined[pid]
        groups.remove(group)
        if not groups:
            del self.joined[pid]
            self.demonitor(ref, flush=True)

    # -- what other scopes and the kernel say -------------------------------------------------------

    def handle_info(self, msg: Any) -> None:
        kind = type(msg)
        if kind is Down:
            self.down(msg)
        elif kind is NodeUp:
            self.discover(msg.node)
        elif kind is tuple and msg and msg[0] in ("discover", "sync", "join", "leave") and type(msg[1]) is Pid:
            getattr(self, "on_" + msg[0])(*msg[1:])
        # anything else (a NodeDown: the monitors say it) is no concern of a scope

    def discover(self, node_name: str) -> None:
        self.send(RemoteName(scope_name(self.scope), node_name), ("discover", self.pid))

    def on_discover(self, peer: Pid) -> None:
        self.send(peer, ("sync", self.pid, {group: list(pids) for group, pids in self.local.items()}))
        if peer not in self.remote:
            self.remote[peer] = (self.monitor(peer), {})
            self.send(peer, ("discover", self.pid))

    def on_sync(self, peer: Pid, groups: dict) -> None:
        if peer not in self.remote:
            self.remote[peer] = (self.monitor(peer), {})
        ref, old = self.remote[peer]
        self.remote[peer] = (ref, {group: list(pids) for group, pids in groups.items()})
        for group in dict.fromkeys([*old, *groups]):
            self.publish(group)

    def on_join(self, peer: Pid, group: Any, pids: list) -> None:
        if peer in self.remote:
            self.remote[peer][1].setdefault(group, []).extend(pids)
            self.publish(group)

    def on_leave(self, peer: Pid, pids: list, groups: list) -> None:
        if peer not in self.remote:
            return
        theirs = self.remote[peer][1]
        for group in groups:
            members = theirs.get(group, [])
            for pid in pids:
                if pid in members:
                    members.remove(pid)
            if not members:
                theirs.pop(group, None)
            self.publish(group)

    def down(self, msg: Down) -> None:
        if msg.pid in self.joined:  # a member of this node exited: it leaves every group
            pid = msg.pid
            groups = list(self.joined[pid][1])
            for group in groups:
                self.forget(pid, group)
                self.publish(group)
            self.tell_peers(("leave", self.pid, [pid], list(dict.fromkeys(groups))))
        elif msg.pid in self.remote:  # a peer scope exited, or its node went
            _, theirs = self.remote.pop(msg.pid)
            for group in theirs:
                self.publish(group)

    # -- tables and peers ---------------------------------------------------------------------------

    def publish(self, group: Any) -> None:
        """Write `group`'s members to the tables the reads see."""
        local = tuple(self.local.get(group, ()))
        everyone = local + tuple(pid for _, groups in self.remote.values() for pid in groups.get(group, ()))
        for table, value in ((self.locals, local), (self.members, everyone)):
            if value:
                table.put(group, value)
            else:
                table.delete(group)

    def tell_peers(self, msg: tuple) -> None:
        for peer in self.remote:
            self.send(peer, msg)


def start(node: Node, scope: str = "pg") -> Pid:
    """Start scope `scope` on `node` (one per node and scope)."""
    return node.spawn(Scope, scope)


def join(caller: Node | Process, group: Any, pids: Pid | list[Pid], scope: str = "pg") -> Any:
    """`pids` (one or a list, processes of the caller's node) join `group`: "ok"."""
    return request(caller, scope_name(scope), ("join", group, _listed(pids)))


def leave(caller: Node | Process, group: Any, pids: Pid | list[Pid], scope: str = "pg") -> Any:
    """One membership each of `pids` in `group` ends: "ok", or "not_joined" if none had one."""
    return request(caller, scope_name(scope), ("leave", group, _listed(pids)))


def members(node: Node, group: Any, scope: str = "pg") -> tuple[Pid, ...]:
    """Every member of `group` known on `node`, this node's first (a pid once per join)."""
    table = node.table(("pg", scope))
    return table.get(group, ()) if table is not None else ()


def local_members(node: Node, group: Any, scope: str = "pg") -> tuple[Pid, ...]:
    """The members of `group` that are processes of `node`."""
    table = node.table(("pg", scope, "local"))
    return table.get(group, ()) if table is not None else ()


def which_groups(node: Node, scope: str = "pg") -> list[Any]:
    """The groups with a member anywhere, as `node` knows them."""
    table = node.table(("pg", scope))
    return list(table.keys()) if table is not None else []


def _listed(pids: Pid | list[Pid]) -> list[Pid]:
    return [pids] if isinstance(pids, Pid) else list(pids)
