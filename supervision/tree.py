"""A live supervision tree as data (`supervision_tree`) or text (`render_tree`).

    print(render_tree(node, app.supervisor))

    Shop <n.3> supervisor one_for_one mailbox=0
    ├─ db <n.4> worker restarts=2 mailbox=0
    └─ sessions <n.5> supervisor dynamic restarts=0 mailbox=0 children=20000
       ├─ - <n.6> worker mailbox=0
       └─ ... 19999 more

Both read the supervisors' state directly, without a call, so they work from anywhere
(a CLI, a log line, a test) under either driver, and see the tree as it is between two
process turns. Only supervisors on `node` are walked. Children are listed in start order
(`which_children` lists them newest first, as OTP does); `max_children` and `max_depth`
bound the output for a DynamicSupervisor holding millions of children.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from actors import Node, Pid

from ._base import SupervisorBase


class Tree(NamedTuple):
    """One node of a supervision tree. `kind` is the strategy (or "dynamic") of a
    supervisor, None for a worker; `restarts` is how often its supervisor restarted it
    (None where not tracked: the root and dynamic children); `omitted` counts children
    left out by `max_children` or `max_depth`."""

    id: Any
    pid: Pid | None
    type: str
    kind: str | None
    restarts: int | None
    mailbox_len: int | None
    registered_name: Any
    children: tuple[Tree, ...]
    omitted: int


def _supervisor_at(node: Node, pid: Pid) -> SupervisorBase | None:
    proc = node.get_process(pid)
    return proc if isinstance(proc, SupervisorBase) else None


def supervision_tree(node: Node, sup: Any, *, max_children: int = 20, max_depth: int = 16) -> Tree:
    """A snapshot of the tree under `sup` (a pid or a registered name of a supervisor on
    `node`)."""
    if type(max_children) is not int or max_children < 0 or type(max_depth) is not int or max_depth < 0:
        raise ValueError(f"max_children and max_depth must be ints >= 0, got {max_children!r}, {max_depth!r}")
    pid = sup if type(sup) is Pid else node.whereis(sup)
    if pid is None or _supervisor_at(node, pid) is None:
        raise ValueError(f"{sup!r} is not a live supervisor on {node!r}")
    return _walk(node, None, pid, "supervisor", None, max_children, max_depth)


def _walk(node: Node, child_id: Any, pid: Pid | None, kind_of: str, restarts: int | None,
          max_children: int, depth: int) -> Tree:
    info = node.process_info(pid) if pid is not None else None
    name = info["registered_name"] if info else None
    mailbox = info["mailbox_len"] if info else None
    label = child_id if child_id is not None else name
    sup = _supervisor_at(node, pid) if pid is not None else None
    if sup is None:
        return Tree(label, pid, kind_of, None, restarts, mailbox, name, (), 0)
    entries, total = sup.tree_entries(max_children if depth > 0 else 0)
    children = tuple(_walk(node, cid, cpid, ctype, crestarts, max_children, depth - 1)
                     for cid, cpid, ctype, crestarts in entries)
    return Tree(label, pid, kind_of, sup.describe(), restarts, mailbox, name, children,
                total - len(children))


def render_tree(node: Node, sup: Any, *, max_children: int = 20, max_depth: int = 16) -> str:
    """The tree under `sup` as indented text: id, pid, type, strategy, restarts, mailbox
    length (see the module docstring for an example)."""
    lines: list[str] = []
    _render(supervision_tree(node, sup, max_children=max_children, max_depth=max_depth), "", "", lines)
    return "\n".join(lines)


def _render(tree: Tree, lead: str, indent: str, lines: list[str]) -> None:
    parts = ["-" if tree.id is None else str(tree.id), repr(tree.pid) if tree.pid is not None else "(not running)",
             tree.type]
    if tree.kind is not None:
        parts.append(tree.kind)
    if tree.restarts is not None:
        parts.append(f"restarts={tree.restarts}")
    if tree.mailbox_len is not None:
        parts.append(f"mailbox={tree.mailbox_len}")
    if tree.kind == "dynamic":
        parts.append(f"children={len(tree.children) + tree.omitted}")
    lines.append(lead + " ".join(parts))
    rows: list[Any] = list(tree.children)
    if tree.omitted:
        rows.append(f"... {tree.omitted} more")
    for i, row in enumerate(rows):
        last = i == len(rows) - 1
        branch, carry = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if isinstance(row, Tree):
            _render(row, indent + branch, indent + carry, lines)
        else:
            lines.append(indent + branch + row)
