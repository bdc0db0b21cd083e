"""The boundary to other nodes: what crosses it, and the one entry point on each side.

Everything one node hands another is a *delivery*: a value of one of the small closed
set of kinds below, carrying pids, refs, names and plain terms only, never a `Process`,
a `Node` or a bound method, so a socket can carry it (msgpack, see `actors.codec`).

| kind          | value                                  | what the receiving node does                |
|---------------|----------------------------------------|---------------------------------------------|
| `send`        | `Send(to, msg)`                        | a plain message to `to` (a pid or a name)   |
| `cast`        | `Cast(to, msg)`                        | a message to a GenServer's `handle_cast`    |
| `call`        | `CallRequest(to, caller, tag, monitor, request)` | a call; its `From` is `(caller, tag)` |
| `reply`       | `Reply(to, tag, ended, value)`         | the reply to the call `tag` of `to`         |
| `exit`        | `ExitSignal(to, sender, reason)`       | Erlang's `exit(to, reason)`                 |
| `linked_exit` | `LinkedExit(to, sender, reason)`       | `sender`, linked to `to`, exited            |
| `link`        | `Link(to, sender)`                     | record the link on `to`'s side              |
| `unlink`      | `Unlink(to, sender)`                   | remove it                                   |
| `monitor`     | `Monitor(to, watcher, ref)`            | `watcher` watches `to` (see below)          |
| `demonitor`   | `Demonitor(to, ref)`                   | stop that                                   |
| `down`        | `DownSignal(to, ref, pid, reason)`     | the monitored (or called) `pid` exited      |

A watcher or caller of None is a caller outside any process, found on its node by the
call's tag; a call's monitor has that tag as its `ref`.

As in Erlang, links and monitors across nodes are recorded on each side by pid: setting
one up is a `link`/`monitor` signal the far node applies to its own tables, answered
with a `linked_exit`/`down` with reason "noproc" when there is no such process there. A
call is a monitor and a request (gen:call's order), and both cross as one delivery: a
`call` with `monitor` set, whose node sets the monitor up on arrival (or answers with
"noproc") before the request reaches the server. `From` is `(caller pid, tag)` and a
reply goes to the tag's node. A reply sent from the node that holds the call's monitor
drops it there and says so (`ended`), so the call costs two deliveries on the wire;
when the call ends any other way (a timeout, the caller's exit, a reply from elsewhere:
a forwarded call's, whose `call` carries no monitor), the caller's node sends a
`demonitor`.

Deliveries leave through `node.transport(node, dst_name, delivery)` when one is installed
(the simulator's network; a wire), else through the connection to that node. A node
takes them in with `node.arrive(delivery)`: the one entry point a wire uses too. A
delivery for a process that has exited meanwhile is dropped.

A connection is any object with `send(delivery)` and `close()`, attached for a node
name and that node's incarnation (`attach`): the loopback between two nodes of one
interpreter (`connect(other)`: each side hands deliveries to the other's `arrive`), or a
socket's (`actors.dist`). A `connector`, when set (by `actors.dist`), is asked for a
connection to a node that has none: it may start connecting and buffer meanwhile
(Erlang's connect on first use). `disconnect(name)` acts on this node's tables only and
closes the connection, whose far end then disconnects itself, as a closed socket tells
the peer. Either way, each side's links across it break with "noconnection", its
monitors fire `Down(..., "noconnection")` and its calls waiting across it fail with that
reason. It is idempotent, and several detectors may call it (a closed stream, missed
ticks, a cluster manager's death report): given the connection it saw fail, a detector
that comes late never takes down a newer connection to the same node.

A delivery addressed (send, cast, call, exit) to a pid of an incarnation of `dst` other
than the connected one goes nowhere, as in Erlang: a restarted node never receives what
was meant for its previous life.

Node monitoring (Erlang's `monitor_node` and `net_kernel:monitor_nodes`): a process that
watches every node gets `NodeUp(name)` when a connection is attached and
`NodeDown(name, reason)` when it goes; one that watches node `name` gets one
`NodeDown(name, reason)` when that connection goes (or at once, with "noconnection",
when there is none to be had), and the watch ends there. Watches go with their process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from .errors import SystemLimit
from .ids import Pid, Ref
from .messages import KILL, KILLED, NOCONNECTION, NOPROC, Down, NodeDown, NodeUp
from .process import CALL, From, Process
from .registry import RemoteName

if TYPE_CHECKING:
    from .node import Node


class Send(NamedTuple):
    """A plain message (`send`, a timer's) for `to`, a pid or a name registered there."""

    to: Any
    msg: Any


class Cast(NamedTuple):
    """A message for `to`'s `handle_cast` (a coroutine process receives it bare)."""

    to: Any
    msg: Any


class CallRequest(NamedTuple):
    """A call of `to`; the caller is `(caller pid or None, tag)` (its `From`). With
    `monitor`, it carries the call's monitor, set up under `tag` on arrival (a forwarded
    call carries none: the monitor stays where the caller sent it)."""

    to: Any
    caller: Pid | None
    tag: Ref
    monitor: bool
    request: Any


class Reply(NamedTuple):
    """The reply to call `tag` of `to` (None: a caller outside any process); `ended`: the
    call's monitor was dropped by the node sending it (no `demonitor` needed)."""

    to: Pid | None
    tag: Ref
    ended: bool
    value: Any


class ExitSignal(NamedTuple):
    """Erlang's `exit(to, reason)` from `sender` (None: from outside any process)."""

    to: Any
    sender: Pid | None
    reason: Any


class LinkedExit(NamedTuple):
    """`sender` exited (or was never there: "noproc"); `to` was linked to it."""

    to: Pid
    sender: Pid
    reason: Any


class Link(NamedTuple):
    """`sender` linked itself to `to`."""

    to: Pid
    sender: Pid


class Unlink(NamedTuple):
    """`sender` removed its link to `to`."""

    to: Pid
    sender: Pid


class Monitor(NamedTuple):
    """`watcher` (None: a caller outside any process) monitors `to` under `ref`."""

    to: Any
    watcher: Pid | None
    ref: Ref


class Demonitor(NamedTuple):
    """The monitor `ref` of `to` ends."""

    to: Any
    ref: Ref


class DownSignal(NamedTuple):
    """`pid`, monitored (or called) under `ref` by `to`, exited with `reason`."""

    to: Pid | None
    ref: Ref
    pid: Any
    reason: Any


Delivery = (Send | Cast | CallRequest | Reply | ExitSignal | LinkedExit | Link | Unlink | Monitor
            | Demonitor | DownSignal)
KIND: dict[type, str] = {
    Send: "send", Cast: "cast", CallRequest: "call", Reply: "reply", ExitSignal: "exit",
    LinkedExit: "linked_exit", Link: "link", Unlink: "unlink", Monitor: "monitor",
    Demonitor: "demonitor", DownSignal: "down"}
"""Each kind of delivery by its class: the closed set that crosses between nodes."""


def kind_of(delivery: Delivery) -> str:
    """The kind of a delivery ("send", "call", "link", ...)."""
    return KIND[type(delivery)]


MESSAGES = frozenset({"send", "cast", "call"})  # what a lossy network may drop or duplicate
ADDRESSED = (Send, Cast, CallRequest, ExitSignal)  # what a sender addresses by its own choice
SETUP = frozenset({"link", "unlink", "monitor", "demonitor"})


class Remote:
    """A process of another node as this node's tables hold it: a monitor's watcher, or a
    call's caller (the owner of its `From`); `pid` is None for a caller outside any
    process, found on its node by `ref`, the call's tag. `target`: the process of this
    node that holds the call's monitor, until a reply drops it."""

    __slots__ = ("pid", "ref", "target")
    _node = None  # never this node: the kernel's `x._node is node` tests say "remote"

    def __init__(self, pid: Pid | None, ref: Ref, target: Process | None = None) -> None:
        self.pid = pid
        self.ref = ref
        self.target = target

    def __repr__(self) -> str:
        return f"<remote {self.pid!r} {self.ref!r}>"


class RemoteTarget:
    """What a caller waits on when the server is on another node."""

    __slots__ = ("to", "node_name", "cleared")
    _watchers = None  # the call's monitor lives on the far node

    def __init__(self, to: Any, node_name: str) -> None:
        self.to = to
        self.node_name = node_name
        self.cleared = False  # the far node dropped the monitor (the server exited, or is cut off)

    @property
    def _pid(self) -> Any:
        return self.to if type(self.to) is Pid else RemoteName(self.to, self.node_name)

    def release(self, node: Node, serial: int) -> None:
        """The call ended on the caller's side: drop its monitor there, unless it is gone."""
        if not self.cleared:
            self.cleared = True
            node._boundary.out(self.node_name, Demonitor(self.to, Ref(node.name, serial)))


def node_of(address: Any) -> str:
    """The node of a remote address as the kernel keeps it (a pid or a `RemoteName`)."""
    return address.node_name if type(address) is Pid else address.node


class Loopback:
    """The connection between two nodes of one interpreter (`Node.connect`)."""

    __slots__ = ("local", "remote", "twin")

    def __init__(self, local: Node, remote: Node) -> None:
        self.local = local
        self.remote = remote
        self.twin: Loopback | None = None

    def send(self, delivery: Delivery) -> None:
        self.remote.arrive(delivery)

    def message(self, kind: type, to: Any, msg: Any) -> None:
        self.remote.arrive(kind(to, msg))

    def close(self) -> None:
        """The far end notices, as a peer notices a closed socket."""
        assert self.twin is not None, "a loopback is made in pairs"
        self.remote._boundary.disconnect(self.local.name, "connection_closed", self.twin)


class Connection(Protocol):
    """What the boundary needs of a connection to another node (`Loopback`, or a socket's):
    `send` a delivery, `message` the delivery `kind(to, msg)` of a send or cast, `close`."""

    def send(self, delivery: Delivery) -> None: ...

    def message(self, kind: type, to: Any, msg: Any) -> None: ...

    def close(self) -> None: ...


MAX_NODE_WATCHES = 100_000  # processes watching nodes, and per-node watches, per node


class Boundary:
    """This node's side of the boundary; see the module docstring."""

    __slots__ = ("node", "peers", "creations", "handlers", "connector", "node_watchers", "node_watches")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.peers: dict[str, Connection] = {}
        self.creations: dict[str, int] = {}  # the incarnation of each node met, as of connecting
        self.connector: Callable[[str], Connection | None] | None = None
        """Asked for a connection to a node that has none (see the module docstring)."""
        self.node_watchers: dict[Process, None] = {}  # monitor_nodes: every node's up and down
        self.node_watches: dict[str, dict[Process, int]] = {}  # monitor_node: name -> watcher -> count
        self.handlers: dict[type, Callable[[Any], None]] = {
            Send: self.take_send, Cast: self.take_cast, CallRequest: self.take_call,
            Reply: self.take_reply, ExitSignal: self.take_exit, LinkedExit: self.take_linked_exit,
            Link: self.take_link, Unlink: self.take_unlink, Monitor: self.take_monitor,
            Demonitor: self.take_demonitor, DownSignal: self.take_down}

    # -- leaving -------------------------------------------------------------------------------

    def out(self, dst: str, delivery: Delivery) -> None:
        """Hand `delivery` to node `dst`."""
        node = self.node
        if type(delivery) in ADDRESSED and type(delivery.to) is Pid and dst in self.peers \
                and delivery.to.serial >> 40 != self.creations[dst]:
            # For another incarnation of the connected node: goes nowhere, as in Erlang;
            # the monitor a call carries finds no such process.
            if type(delivery) is CallRequest and delivery.monitor:
                self.arrive(DownSignal(delivery.caller, delivery.tag, delivery.to, NOPROC))
            return
        if dst == node.name:
            self.arrive(delivery)  # a From or pid that came back to its own node
        elif node.transport is not None:
            node.transport(node, dst, delivery)
        else:
            conn = self.peers.get(dst) or self.reach(dst)
            if conn is not None:
                conn.send(delivery)
            else:
                self.unreachable(delivery)

    def reach(self, dst: str) -> Connection | None:
        """The connection to node `dst`, or one the connector starts; None: no way there."""
        conn = self.peers.get(dst)
        if conn is None and self.connector is not None and self.node.transport is None:
            conn = self.connector(dst)
        return conn

    def unreachable(self, delivery: Delivery) -> None:
        """No connection to the node: a link or monitor (a call's too) fails at once with
        noconnection, as Erlang's does when the node cannot be reached; anything else goes
        nowhere."""
        if type(delivery) is Monitor:
            self.arrive(DownSignal(delivery.watcher, delivery.ref, delivery.to, NOCONNECTION))
        elif type(delivery) is CallRequest and delivery.monitor:
            self.arrive(DownSignal(delivery.caller, delivery.tag, delivery.to, NOCONNECTION))
        elif type(delivery) is Link:
            self.arrive(LinkedExit(delivery.sender, delivery.to, NOCONNECTION))

    def route(self, dest: Any, msg: Any, kind: type, strict: bool) -> None:
        """A message to `dest` wherever it is (`kind` is `Send` or `Cast`). What `out`
        does with `kind(to, msg)`, without making the delivery when a connection takes
        the message as it is (the hottest path to another node)."""
        node = self.node
        if type(dest) is Pid and dest.node_name != node.name:
            dst, to = dest.node_name, dest
        elif type(dest) is RemoteName and dest.node != node.name:
            dst, to = dest.node, dest.name
        else:
            where = node._names.where(dest, strict)
            if type(where) is not tuple:
                if where is not None and where._alive:
                    if kind is Send:
                        where._post(msg)
                    else:
                        where._deliver(msg)
                return
            dst, to = where
        conn = self.peers.get(dst)
        if node.transport is not None:
            if conn is not None or type(to) is Pid:  # a name is looked up on connected nodes only
                self.out(dst, kind(to, msg))
        elif conn is not None:
            if type(to) is not Pid or to.serial >> 40 == self.creations[dst]:  # else: see `out`
                conn.message(kind, to, msg)
        else:
            conn = self.reach(dst)
            if conn is not None:
                conn.message(kind, to, msg)

    def reply(self, caller: From, value: Any) -> None:
        """A reply to a caller of another node (see `actors.calls.Calls.reply`); the first
        one from the node holding the call's monitor drops it (see the module docstring)."""
        pid, tag = self.call_tag(caller)
        owner = caller.owner
        ended = type(owner) is Remote and owner.target is not None
        if ended:
            watchers = owner.target._watchers
            if watchers:
                watchers.pop(tag, None)
            owner.target = None
        self.out(tag.node_name, Reply(pid, tag, ended, value))

    def call_tag(self, caller: From) -> tuple[Pid | None, Ref]:
        """A `From` as it crosses: `(caller pid or None, tag)`."""
        owner = caller.owner
        if type(owner) is Remote:
            return owner.pid, owner.ref
        node = self.node
        if owner._node is not node:  # a From of another node of this interpreter
            return owner._node._boundary.call_tag(caller)
        if not isinstance(owner, Process):  # an outside caller: replies find it by tag
            node._calls.remote_waiters[caller.serial] = owner
            owner.ref = caller
            return None, Ref(node.name, caller.serial)
        return owner.pid, Ref(node.name, caller.serial)

    # -- arriving ----------------------------------------------------------------------------

    def arrive(self, delivery: Delivery) -> None:
        """Take a delivery from another node (see the module docstring)."""
        self.handlers[type(delivery)](delivery)
        node = self.node
        if node._current is None and node._exits:
            node._signals.drain_exits()

    def arrive_run(self, kind: type, to: Any, msgs: list) -> None:
        """Several sends (`kind` Send) or casts (Cast) to `to`, in order: what `arrive`
        does with each, its process found once (a wire's batches carry them so)."""
        proc = self.local(to)
        if proc is not None:
            deliver = proc._post if kind is Send else proc._deliver
            for msg in msgs:
                if not proc._alive:
                    break  # its mailbox overflowed, say
                deliver(msg)
        node = self.node
        if node._current is None and node._exits:
            node._signals.drain_exits()

    def local(self, to: Any) -> Process | None:
        """The live process of this node that `to` (a pid or a registered name) stands for."""
        node = self.node
        if type(to) is Pid:
            proc = to._proc
            if proc is None:
                proc = node._procs.get(to.serial) if to.node_name == node.name else None
            elif proc._node is not node:
                return None
        else:
            proc = node._names.table.get(to)
        return proc if proc is not None and proc._alive else None

    def take_send(self, d: Send) -> None:
        proc = self.local(d.to)
        if proc is not None:
            proc._post(d.msg)

    def take_cast(self, d: Cast) -> None:
        proc = self.local(d.to)
        if proc is not None:
            proc._deliver(d.msg)

    def take_call(self, d: CallRequest) -> None:
        proc = self.local(d.to)
        if proc is None:
            if d.monitor:  # the call's monitor says so to the caller
                self.out(d.tag.node_name, DownSignal(d.caller, d.tag, self.seen(d.to), NOPROC))
            return
        owner = Remote(d.caller, d.tag)
        if d.monitor:  # set up before the request is delivered (gen:call's order)
            owner.target = proc
            if proc._watchers is None:
                proc._watchers = {}
            proc._watchers[d.tag] = owner
        proc._deliver((CALL, d.request, From(owner, d.tag.serial)))

    def seen(self, to: Any) -> Any:
        """What a "noproc" answer names for `to`, a pid or a name registered here."""
        return to if type(to) is Pid else RemoteName(to, self.node.name)

    def waiting(self, to: Pid | None, tag: Ref) -> tuple[Any, From | None]:
        """The caller (a process, or an outside caller by tag) still waiting on call `tag`,
        and its `From`; `(None, None)` once that call has ended."""
        if to is None:
            waiter: Any = self.node._calls.remote_waiters.get(tag.serial)
            ref = waiter.ref if waiter is not None else None
        else:
            waiter = self.local(to)
            ref = waiter._wait_ref if waiter is not None else None
        if ref is None or ref.serial != tag.serial or tag.node_name != self.node.name:
            return None, None
        return waiter, ref

    def take_reply(self, d: Reply) -> None:
        waiter, ref = self.waiting(d.to, d.tag)
        if waiter is None:
            return  # the call ended: a late reply is dropped
        target = remote_target(waiter)
        if target is not None:
            if d.ended:
                target.cleared = True  # the far node dropped the call's monitor already
            else:
                target.release(self.node, d.tag.serial)  # the call's monitor goes now
        waiter._on_reply(ref, d.value)

    def take_exit(self, d: ExitSignal) -> None:
        proc = self.local(d.to)
        if proc is not None:
            signals = self.node._signals
            if d.reason == KILL:
                signals.doom(proc, KILLED)
            else:
                signals.signal(d.sender, proc, d.reason)

    def take_linked_exit(self, d: LinkedExit) -> None:
        proc = self.local(d.to)
        if proc is not None:
            self.node._signals.linked_exit(d.sender, proc, d.reason)

    def take_link(self, d: Link) -> None:
        proc = self.local(d.to)
        if proc is None:
            self.out(d.sender.node_name, LinkedExit(d.sender, d.to, NOPROC))
            return
        if proc._links is None:
            proc._links = {}
        proc._links[d.sender] = None

    def take_unlink(self, d: Unlink) -> None:
        proc = self.local(d.to)
        if proc is not None and proc._links:
            proc._links.pop(d.sender, None)

    def take_monitor(self, d: Monitor) -> None:
        proc = self.local(d.to)
        if proc is None:
            self.out(d.ref.node_name, DownSignal(d.watcher, d.ref, self.seen(d.to), NOPROC))
            return
        if proc._watchers is None:
            proc._watchers = {}
        proc._watchers[d.ref] = Remote(d.watcher, d.ref)

    def take_demonitor(self, d: Demonitor) -> None:
        proc = self.local(d.to)
        if proc is not None and proc._watchers:
            proc._watchers.pop(d.ref, None)

    def take_down(self, d: DownSignal) -> None:
        waiter, ref = self.waiting(d.to, d.ref)
        if waiter is not None:  # a call's server exited: its node dropped the monitor
            target = remote_target(waiter)
            if target is not None:
                target.cleared = True
            waiter._on_down(ref, d.pid, d.reason)
        elif d.to is not None:
            proc = self.local(d.to)
            if proc is not None:
                proc._on_down(d.ref, d.pid, d.reason)

    # -- connections -------------------------------------------------------------------------

    def connect(self, other: Node) -> None:
        """Join `other`, a node of this interpreter, with a loopback (see the module docstring)."""
        node = self.node
        assert other is not node, "a node is always connected to itself"
        current = self.peers.get(other.name)
        if type(current) is Loopback and current.remote is other:
            return  # connected already
        here, there = Loopback(node, other), Loopback(other, node)
        here.twin, there.twin = there, here
        self.attach(other.name, here, other.creation)
        other._boundary.attach(node.name, there, node.creation)

    def attach(self, name: str, conn: Connection, creation: int) -> None:
        """Make `conn` the connection to node `name` (incarnation `creation`): one that
        was there goes first, with its links and monitors. Watchers hear `NodeUp`."""
        assert name != self.node.name, "a node is always connected to itself"
        if name in self.peers:
            self.disconnect(name, "connection_replaced")
        self.peers[name] = conn
        self.creations[name] = creation
        self.tell_watchers(NodeUp(name))

    def disconnect(self, name: str, reason: str = "disconnect", conn: Connection | None = None) -> None:
        """Lose the connection to node `name` (see the module docstring). Given `conn`,
        only if it is still the connection to that node (a late detector's call is ignored)."""
        current = self.peers.get(name)
        if conn is not None and current is not conn:
            return
        if current is not None:
            del self.peers[name]
        self.break_connection(name)
        if current is not None:
            self.tell_watchers(NodeDown(name, reason))
        self.tell_node_watches(name, reason)
        node = self.node
        if node._current is None:
            node._signals.drain_exits()
        if current is not None:
            current.close()

    def break_connection(self, name: str) -> None:
        """Give this node's processes noconnection for every link, monitor and call they
        have across to node `name`, and forget that node's links and monitors here: all
        of them first, so that nothing a process does on hearing (its exit, say) sends
        across to that node on their account."""
        node = self.node
        signals = node._signals
        effects: list[tuple[Callable[..., None], tuple]] = []
        for proc in list(node._procs.values()):
            links, watching, watchers = proc._links, proc._watching, proc._watchers
            if links:
                for peer in [p for p in links if type(p) is Pid and p.node_name == name]:
                    del links[peer]
                    effects.append((signals.signal, (peer, proc, NOCONNECTION)))
            if watching:
                for ref in [r for r, t in watching.items() if type(t) is not Process and node_of(t) == name]:
                    effects.append((_post_if_alive, (proc, Down(ref, watching.pop(ref), NOCONNECTION))))
            target = proc._wait_target
            if type(target) is RemoteTarget and target.node_name == name:
                target.cleared = True
                effects.append((proc._on_down, (proc._wait_ref, target._pid, NOCONNECTION)))
            if watchers:
                for ref in [r for r, w in watchers.items() if type(w) is Remote and r.node_name == name]:
                    del watchers[ref]
        for effect, args in effects:
            effect(*args)
        node._calls.break_connection(name)

    # -- watching nodes ---------------------------------------------------------------------

    def watch_nodes(self, proc: Process, flag: bool) -> None:
        """`proc` hears every node's `NodeUp` and `NodeDown` (or stops, with flag False)."""
        if not flag:
            self.node_watchers.pop(proc, None)
            return
        if proc not in self.node_watchers:
            self.check_watch_limit(self.node_watchers)
            self.node_watchers[proc] = None

    def watch_node(self, proc: Process, name: str, flag: bool) -> None:
        """`proc` hears one `NodeDown` when node `name` goes (see the module docstring);
        each call adds one (as Erlang's monitor_node does); flag False removes them all."""
        watches = self.node_watches.get(name)
        if not flag:
            if watches is not None:
                watches.pop(proc, None)
                if not watches:
                    del self.node_watches[name]
            return
        if name == self.node.name:
            return  # a node is never disconnected from itself
        if (self.node.transport is None and self.reach(name) is None) or \
                (self.node.transport is not None and name not in self.peers):
            proc._post(NodeDown(name, NOCONNECTION))
            return
        if watches is None:
            self.check_watch_limit(self.node_watches)
            watches = self.node_watches[name] = {}
        self.check_watch_limit(watches)
        watches[proc] = watches.get(proc, 0) + 1

    def check_watch_limit(self, table: dict) -> None:
        if len(table) >= MAX_NODE_WATCHES:
            for proc in [p for p in table if type(p) is not str and not p._alive]:
                del table[proc]
            if len(table) >= MAX_NODE_WATCHES:
                raise SystemLimit(f"node {self.node.name}: at most {MAX_NODE_WATCHES} node watches")

    def tell_watchers(self, msg: NodeUp | NodeDown) -> None:
        watchers = self.node_watchers
        for proc in list(watchers):
            if proc._alive:
                proc._post(msg)
            else:
                del watchers[proc]

    def tell_node_watches(self, name: str, reason: str) -> None:
        watches = self.node_watches.pop(name, None)
        for proc, count in (watches or {}).items():
            for _ in range(count if proc._alive else 0):
                proc._post(NodeDown(name, reason))


def _post_if_alive(proc: Process, msg: Any) -> None:
    if proc._alive:
        proc._post(msg)


def remote_target(waiter: Any) -> RemoteTarget | None:
    """The server on another node a caller (a process, or an outside caller) waits on."""
    target = waiter._wait_target if isinstance(waiter, Process) else waiter.target
    return target if type(target) is RemoteTarget else None
