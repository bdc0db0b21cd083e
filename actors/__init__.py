"""letitcrash kernel: lightweight processes, links, monitors, GenServer, timers, registry,
node-local tables.

    from actors import Node, GenServer

    class Counter(GenServer):
        def init(self, n=0):
            self.n = n
        def handle_call(self, request, caller):
            return self.n
        def handle_cast(self, delta):
            self.n += delta

    node = Node(seed=1)                 # deterministic; `async with Node()` for real time
    pid = node.spawn(Counter, 41)
    node.cast(pid, 1)
    assert node.run_until_complete(node.call(pid, "get")) == 42
"""
from .bridge import ThreadWorker
from .codec import packb, unpackb
from .errors import (ActorError, AlreadyRegistered, CallExit, CallingSelf, CallTimeout,
                     MailboxOverflow, NoProc, ReceiveTimeout, RemoteError, StartError, SystemLimit)
from .future import Future
from .genserver import GenServer, NoReply
from .ids import Pid, Ref
from .messages import (KILL, KILLED, NOCONNECTION, NOPROC, NORMAL, SHUTDOWN, Down, Exit,
                       is_normal_exit)
from .node import Node, seed_for
from .process import Call, CoroutineProcess, From, Process
from .registry import Dest, Name, Registry, RemoteName, Via
from .tables import Table, TableError

__all__ = [
    "ActorError", "AlreadyRegistered", "Call", "CallExit", "CallTimeout", "CallingSelf",
    "CoroutineProcess", "Dest", "Down", "Exit", "From", "Future", "GenServer", "KILL", "KILLED",
    "MailboxOverflow", "NOCONNECTION", "NOPROC", "NORMAL", "Name", "Node", "NoProc", "NoReply", "Pid", "Process",
    "ReceiveTimeout", "Ref", "Registry", "RemoteError", "RemoteName", "SHUTDOWN", "StartError", "SystemLimit",
    "Table", "TableError", "ThreadWorker", "Via", "is_normal_exit", "packb", "seed_for", "unpackb",
]
