"""The application the separate-OS-process tests start on every node (`start`): services
the test process, itself a node of the cluster, calls and watches across real sockets."""
from __future__ import annotations

from typing import Any

from actors import ActorError, Down, Exit, GenServer, NodeDown, NoReply, Pid, global_names
from supervision import ChildSpec, Flags, Supervisor


class Echo(GenServer):
    """Answers calls with its node's name; counts casts and checks their order per sender."""

    def init(self) -> None:
        self.last: dict[Any, int] = {}
        self.count = 0
        self.out_of_order = 0

    def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "stats":
            return (self.count, self.out_of_order)
        if request == "pid":
            return self.pid
        return ("echo", self.node.name, request)

    def handle_cast(self, msg: Any) -> None:
        sender, i = msg
        if i != self.last.get(sender, -1) + 1:
            self.out_of_order += 1
        self.last[sender] = i
        self.count += 1


class Silent(GenServer):
    """Takes calls and never answers them."""

    def handle_call(self, request: Any, caller: Any) -> Any:
        return NoReply


class Worker(GenServer):
    """Supervised on one node, linked to the global "partner" while its node is connected."""

    def init(self, report_to: Pid) -> None:
        partner = global_names.whereis_name(self.node, "partner")
        if partner is not None and partner.node_name in self.node.nodes():
            self.link(partner)
        else:
            partner = None
        self.send(report_to, ("worker started", self.node.name, self.pid, partner))


class Sentinel(GenServer):
    """Links to, monitors and calls a process of another node; reports what it hears."""

    def init(self, target: Pid, silent: Pid, report_to: Pid) -> None:
        self.report_to = report_to
        self.trap_exit = True
        self.monitor_node(target.node_name)
        self.link(target)
        self.monitor(target)
        self.continue_with(silent)

    async def handle_continue(self, silent: Pid) -> None:
        self.send(self.report_to, ("sentinel ready", self.node.name))
        try:
            await self.call(silent, "never answered", 120.0)
        except ActorError as exc:
            self.send(self.report_to, ("call failed", self.node.name, getattr(exc, "reason", None)))

    def handle_info(self, msg: Any) -> None:
        if type(msg) in (Exit, Down, NodeDown):
            self.send(self.report_to, ("heard", self.node.name, type(msg).__name__, msg[-1]))


class Lab(GenServer):
    """What the tests ask a node to do."""

    def handle_call(self, request: Any, caller: Any) -> Any:
        op = request[0]
        if op == "sentinel":  # ("sentinel", target, silent, report_to)
            return self.node.spawn(Sentinel, *request[1:])
        if op == "supervise":  # ("supervise", report_to)
            return self.node.spawn(Supervisor, [ChildSpec("worker", Worker, args=(request[1],))],
                                   Flags(max_restarts=10, max_seconds=5))
        if op == "partner":  # register this node's echo as the global "partner"
            return self.call_partner()
        return ValueError(f"no such request {op!r}")

    async def call_partner(self) -> Any:
        return await global_names.register_name(self, "partner", self.node.whereis("echo"))


def start(node: Any) -> None:
    for name, server in (("echo", Echo), ("silent", Silent), ("lab", Lab)):
        node.register(name, node.spawn(server))



def observed(node: Any) -> None:
    """`start`, and a supervised "kept" echo: what an observer kills to see it restarted."""
    start(node)
    node.spawn(Supervisor, [ChildSpec("kept", Echo, options={"name": "kept"})], Flags(max_restarts=10, max_seconds=5))
