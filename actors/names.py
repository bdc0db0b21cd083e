"""Names: the node's registered names, registries' keys, and what a destination means.

Contract:
- A destination (`actors.Dest`) is a `Pid`, a name registered on this node, a `Via`
  (a key of a `Registry` of this node, or of any names object with OTP's via
  interface, `whereis_name(key) -> Pid | None`: the cluster's `actors.global_names`) or
  a `RemoteName` (a name on another node, looked up there).
- A process has at most one registered name and any number of registry keys; all go
  when it exits. A name is bound to one live process at a time (`AlreadyRegistered`).
  The process keeps each as `(table, key)`, and `table.pop(key, None)` removes it (a
  duplicate registry's table there is the process's membership under that key).
- Sending to a name nobody holds raises `NoProc` (Erlang's badarg); a cast, a monitor, a
  link or a call resolve it quietly and treat it as a missing process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import AlreadyRegistered, NoProc, SystemLimit
from .ids import Pid
from .registry import Registry, RemoteName, Via, check_key

if TYPE_CHECKING:
    from .node import Node
    from .process import Process


class Names:
    """The node's name table and destination lookups; see the module docstring."""

    __slots__ = ("node", "table")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.table: dict[Any, Process] = {}

    def register(self, name: Any, proc: Process) -> None:
        if type(name) is RemoteName:
            raise ValueError(f"{name!r}: a name is registered on its own node, without a node part")
        if type(name) is Via:
            registry = name.registry
            if type(registry) is not Registry:
                raise ValueError(f"{name!r} is a name of {registry!r}: register it there "
                                 "(a cluster-wide name takes a round of messages, not a spawn option)")
            registry.node._names.bind(registry._table, name.key, proc, registry.limit)
            return
        if proc._names and any(table is self.table for table, _ in proc._names):
            raise ValueError(f"{proc._pid!r} already has a registered name")
        self.bind(self.table, name, proc, self.node.max_processes)

    def bind(self, table: dict, key: Any, proc: Process, limit: int) -> None:
        """Bind `key` to `proc` in `table` (the node's names, or a registry's)."""
        check_key(key)
        holder = table.get(key)
        if holder is not None:
            raise AlreadyRegistered(key, holder._pid)
        if len(table) >= limit:
            raise SystemLimit(f"registry limit of {limit} names reached")
        table[key] = proc
        if proc._names is None:
            proc._names = []
        proc._names.append((table, key))

    def unbind(self, table: dict, key: Any) -> None:
        proc = table.pop(key, None)
        if proc is not None:
            proc._names.remove((table, key))

    def name_of(self, proc: Process) -> Any:
        """The name `proc` is registered under on this node, or None."""
        return next((k for t, k in proc._names or () if t is self.table), None)

    def where(self, dest: Any, strict: bool = False) -> Any:
        """Where `dest` is: its process on this node (alive or not), a `(node name,
        address there)` pair for a process of another node, or None (nobody holds the
        name; `NoProc` with `strict`)."""
        node = self.node
        if type(dest) is Pid:
            proc = dest._proc
            if proc is not None and proc._node is node:
                return proc
            if dest.node_name == node.name:
                return node._procs.get(dest.serial)  # a decoded pid, or a dead one: None
            return (dest.node_name, dest)
        if type(dest) is Via:
            registry = dest.registry
            if type(registry) is not Registry:  # another kind of names (OTP's via module)
                pid = registry.whereis_name(dest.key)
                if pid is None and strict:
                    raise NoProc(dest)
                return self.where(pid) if pid is not None else None
            proc = registry._table.get(dest.key)
            if proc is not None and proc._node is not node:  # a registry of another node
                return (proc._node.name, proc._pid)
        elif type(dest) is RemoteName:
            if dest.node != node.name:
                # Erlang's send to {Name, Node} never fails, whatever is (not) there.
                return (dest.node, dest.name) if node._boundary.reach(dest.node) is not None else None
            proc = self.table.get(dest.name)
        else:
            proc = self.table.get(dest)
        if proc is None and strict:
            raise NoProc(dest)
        return proc

    def lookup(self, dest: Any) -> Process | None:
        """The live process of this node `dest` names, or None."""
        proc = self.where(dest)
        return proc if proc is not None and type(proc) is not tuple and proc._alive else None

    def live(self, pid: Pid) -> Process:
        """The live process of `pid`; `NoProc` if there is none."""
        proc = self.lookup(pid)
        if proc is None:
            raise NoProc(pid)
        return proc
