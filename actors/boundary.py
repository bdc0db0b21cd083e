"""The boundary to other nodes (interim: the in-process form the next step replaces)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .messages import NOCONNECTION, Down

if TYPE_CHECKING:
    from .node import Node
    from .process import Process


class Boundary:
    __slots__ = ("node", "peers")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.peers: dict[str, Node] = {}

    def post(self, proc: Process, msg: Any) -> None:
        if proc._node is self.node:
            proc._post(msg)
        else:
            self.cross(proc, proc._post, (msg,))

    def deliver(self, proc: Process, msg: Any) -> None:
        if proc._node is self.node:
            proc._deliver(msg)
        else:
            self.cross(proc, proc._deliver, (msg,))

    def cross(self, receiver: Any, deliver: Callable[..., Any], args: tuple) -> None:
        node = self.node
        if node.transport is None:
            receiver._node.arrive(receiver, deliver, args)
        else:
            node.transport(node, receiver._node, receiver, deliver, args)

    def arrive(self, receiver: Any, deliver: Callable[..., Any], args: tuple) -> None:
        if getattr(receiver, "_alive", True):
            deliver(*args)
        if self.node._current is None:
            self.node._signals.drain_exits()

    def connect(self, other: Node) -> None:
        node = self.node
        assert other is not node, "a node is always connected to itself"
        self.peers[other.name] = other
        other._boundary.peers[node.name] = node

    def disconnect(self, name: str) -> None:
        node = self.node
        peer = self.peers.pop(name, None)
        if peer is not None and peer._boundary.peers.get(node.name) is node:
            del peer._boundary.peers[node.name]
        self.break_connection(name)
        if peer is not None:
            peer._boundary.break_connection(node.name)
        if node._current is None:
            node._signals.drain_exits()
        if peer is not None and peer._current is None:
            peer._signals.drain_exits()

    def break_connection(self, name: str) -> None:
        node = self.node
        signals = node._signals
        for proc in list(node._procs.values()):
            links, watching, watchers = proc._links, proc._watching, proc._watchers
            if links:
                for other in [p for p in links if p._node.name == name]:
                    del links[other]
                    if other._links is not None:
                        del other._links[proc]
                    signals.signal(other._pid, proc, NOCONNECTION)
                    other._node._signals.signal(proc._pid, other, NOCONNECTION)
            if watching:
                for ref in [r for r, t in watching.items() if t._node.name == name]:
                    target = watching.pop(ref)
                    if target._watchers is not None:
                        target._watchers.pop(ref, None)
                    proc._post(Down(ref, target._pid, NOCONNECTION))
            if proc._wait_target is not None and proc._wait_target._node.name == name:
                proc._on_down(proc._wait_ref, proc._wait_target._pid, NOCONNECTION)
            if watchers:
                for ref in [r for r, w in watchers.items() if w._node.name == name]:
                    watchers.pop(ref)._on_down(ref, proc._pid, NOCONNECTION)
