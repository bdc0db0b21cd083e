"""Node-local tables: what one process publishes for every process of its node to read
without a message (Erlang's ETS, in its `set`, `protected`, `named_table` form).

    class Cell(GenServer):
        def init(self, name):
            self.table = self.node.new_table(("cell", name))   # owned by this process
            self.table.put("members", ())

    # any process of the same node, in its own turn:
    table = self.node.table(("cell", name))        # None while no process owns one
    members = table.get("members") if table is not None else ()

The owner alone writes (`put`, `delete`); everyone on the node reads (`get`), at once and
in the scheduler's deterministic order: a read sees every write made before it. The
table goes when its owner exits, as an ETS table dies with its owner (no heir), so a
reader never sees what a dead process left behind.

Deliberate deviation from ETS: values are shared, not copied (a copy per read would
cost what the table saves). Put only values nobody mutates afterwards: numbers, strings,
tuples of them, bytes, numpy arrays with `flags.writeable = False`.

Tables live in one node's memory and are read and written on its scheduler's thread
only: a process of another node, or a foreign thread, sends a message instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ActorError

if TYPE_CHECKING:
    from .node import Node
    from .process import Process

_NONE = object()


class TableError(ActorError):
    """A table used the wrong way: a write by another process than its owner, a name
    taken, a table that is gone, or a limit reached. The message says which."""


class Table:
    """One named table; see the module docstring. Made by `Node.new_table`."""

    __slots__ = ("name", "owner", "limit", "_node", "_data")

    def __init__(self, node: Node, name: Any, owner: Process, limit: int) -> None:
        self.name = name
        self.owner: Process | None = owner  # None once the table is deleted
        self.limit = limit
        self._node = node
        self._data: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        """The value stored under `key`, or `default`."""
        if self.owner is None:
            raise TableError(f"table {self.name!r} was deleted when its owner exited")
        return self._data.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        """Store `value` under `key` (the owner only). Share only values nobody mutates."""
        self._check_owner("put")
        if key not in self._data and len(self._data) >= self.limit:
            raise TableError(f"table {self.name!r} is full ({self.limit} keys)")
        self._data[key] = value

    def delete(self, key: Any) -> None:
        """Remove `key` if present (the owner only)."""
        self._check_owner("delete")
        self._data.pop(key, None)

    def keys(self) -> list[Any]:
        """The keys stored, in the order they were first put."""
        if self.owner is None:
            raise TableError(f"table {self.name!r} was deleted when its owner exited")
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _NONE) is not _NONE

    def __repr__(self) -> str:
        owner = "deleted" if self.owner is None else f"owner {self.owner._pid!r}"
        return f"<Table {self.name!r} {owner}, {len(self._data)} keys>"

    def _check_owner(self, what: str) -> None:
        if self.owner is None:
            raise TableError(f"table {self.name!r} was deleted when its owner exited")
        current = self._node._current
        if current is not self.owner:
            raise TableError(f"table {self.name!r} is written by its owner {self.owner._pid!r} only; "
                             f"{'no process' if current is None else repr(current._pid)} tried to {what}")


class Tables:
    """A node's tables by name, and which process owns which (so an exit deletes them)."""

    __slots__ = ("node", "by_name", "owned", "limit")

    def __init__(self, node: Node, limit: int) -> None:
        self.node = node
        self.by_name: dict[Any, Table] = {}
        self.owned: dict[Process, list[Table]] = {}
        self.limit = limit

    def new(self, name: Any, limit: int) -> Table:
        owner = self.node._current
        if owner is None:
            raise TableError(f"new_table({name!r}) must be called by a process, in its turn")
        taken = self.by_name.get(name)
        if taken is not None:
            raise TableError(f"table {name!r} already exists, owned by "
                             f"{taken.owner._pid if taken.owner is not None else None!r}")
        if len(self.by_name) >= self.limit:
            raise TableError(f"node {self.node.name} is at its limit of {self.limit} tables")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"a table's limit must be a positive int, got {limit!r}")
        table = self.by_name[name] = Table(self.node, name, owner, limit)
        self.owned.setdefault(owner, []).append(table)
        return table

    def drop_owned(self, proc: Process) -> None:
        """`proc` exited: its tables go with it."""
        for table in self.owned.pop(proc, ()):
            del self.by_name[table.name]
            table.owner = None
