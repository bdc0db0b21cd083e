"""Node-local tables: the owner writes, every process of the node reads, the table dies
with its owner."""
from __future__ import annotations

import pytest

from actors import CallExit, GenServer, Node, Table, TableError


class Owner(GenServer):
    def init(self, name, limit=1_000_000):
        self.table = self.node.new_table(name, limit=limit)

    def handle_cast(self, msg):
        if msg[0] == "put":
            self.table.put(msg[1], msg[2])
        elif msg[0] == "delete":
            self.table.delete(msg[1])
        else:
            raise RuntimeError("asked to crash")


class Reader(GenServer):
    """Reads the table on each cast and keeps what it saw."""

    def init(self, name):
        self.name, self.seen = name, []

    def handle_cast(self, key):
        table = self.node.table(self.name)
        self.seen.append(None if table is None else table.get(key, "missing"))

    def handle_call(self, request, caller):
        if request == "write":
            self.node.table(self.name).put("k", "not mine")
        return self.seen


def call(node, pid, request):
    return node.run_until_complete(node.call(pid, request))


def test_the_owner_writes_and_every_process_reads_at_once_in_order():
    node = Node(seed=1)
    owner = node.spawn(Owner, "t")
    reader = node.spawn(Reader, "t")
    node.cast(reader, "k")
    node.run()
    node.cast(owner, ("put", "k", 1))
    node.run()
    node.cast(reader, "k")
    node.cast(owner, ("put", "k", 2))
    node.cast(owner, ("delete", "gone"))
    node.run()
    node.cast(reader, "k")
    assert call(node, reader, "seen") == ["missing", 1, 2]
    table = node.table("t")
    assert isinstance(table, Table) and table.get("k") == 2 and "k" in table and len(table) == 1


def test_only_the_owner_writes():
    node = Node(seed=1)
    node.spawn(Owner, "t")
    reader = node.spawn(Reader, "t")
    with pytest.raises(CallExit) as info:  # the writer crashes: a programming error
        call(node, reader, "write")
    assert isinstance(info.value.reason, TableError)
    assert "written by its owner" in str(info.value.reason) and "tried to put" in str(info.value.reason)
    with pytest.raises(TableError, match="no process tried to put"):
        node.table("t").put("k", 1)  # from outside any process
    assert node.table("t").get("k") is None


def test_a_table_dies_with_its_owner_and_a_restarted_owner_makes_it_again():
    node = Node(seed=1)
    owner = node.spawn(Owner, "t")
    node.cast(owner, ("put", "k", 1))
    node.run()
    table = node.table("t")
    node.cast(owner, ("crash",))
    node.run()
    assert node.table("t") is None
    with pytest.raises(TableError, match="deleted when its owner exited"):
        table.get("k")
    again = node.spawn(Owner, "t")
    assert node.table("t") is not table and node.table("t").get("k") is None
    node.exit(again, "kill")
    node.run()
    assert node.table("t") is None


def test_names_are_unique_and_tables_are_made_by_processes():
    node = Node(seed=1)
    node.spawn(Owner, ("cell", "9q8yy"))
    with pytest.raises(Exception, match=r"table \('cell', '9q8yy'\) already exists"):
        node.spawn(Owner, ("cell", "9q8yy"))
    with pytest.raises(TableError, match="must be called by a process"):
        node.new_table("outside")


def test_limits():
    node = Node(seed=1, max_tables=2)
    owner = node.spawn(Owner, "small", 2)
    for key in ("a", "b", "a"):  # rewriting a key is not a new one
        node.cast(owner, ("put", key, 1))
    node.run()
    node.cast(owner, ("put", "c", 1))
    node.run()
    assert node.table("small") is None  # the third key crashed the owner: its table went with it
    with pytest.raises(Exception, match="limit must be a positive int, got 0"):
        node.spawn(Owner, "none", 0)
    node.spawn(Owner, "one")
    node.spawn(Owner, "two")
    with pytest.raises(Exception, match="limit of 2 tables"):
        node.spawn(Owner, "three")
