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

The kernel map (each module's docstring states its part's contract):

    node.py       Node, the façade: wiring, spawn, send/cast/call/reply/forward, names,
                  timers, introspection, the drivers' entry points
    process.py    a process's runtime fields and the API its code calls; reserved fields
    genserver.py  GenServer callbacks; system messages, hibernation; the run_turn extension point
    statem.py     GenStateMachine (gen_statem) on GenServer's loop: states, postpone,
                  inserted events, event/state/generic timeouts on the node's clock
    spawn.py      making a process (options, limits, a GenServer's init as StartError), and
                  the starts that wait for an async init
    system.py     OTP's sys: get_state, replace_state, suspend, resume, get_status, stop
    upgrade.py    hot code upgrade: load a module's new code, move its servers (code_change)
    runq.py       the run queue and make_runnable, the one way a process becomes runnable
    scheduler.py  turns: the turn loop, timers due, crash reports
    clock.py      the clock strategy: virtual time, or an asyncio loop
    names.py      registered names, registries' keys, and what a destination means
    calls.py      calls: request, reply, lazy timeouts, callers outside any process
    signals.py    links, monitors, exit signals, a process's end, the node's shutdown
    boundary.py   what crosses to other nodes (delivery kinds), connect and disconnect
    output.py     held output and pass hooks (what storage needs from the scheduler)
    threads.py    the thread bridge: *_from_thread and start_thread
    watch.py      waiting from outside: monitors and exit waits for asyncio code and threads
    bridge.py     ThreadWorker: blocking work on pykka threads, as a process
    tables.py     node-local tables (ETS's protected named set)
    task.py       tasks (Elixir's Task): async, await, await_many, yield, shutdown, async_stream
    registry.py   Registry, Via, RemoteName, and the Dest and Name types
    codec.py      msgpack: storage's encoding, and the wire's (encode_term/decode_term)
    timers.py, ids.py, messages.py, errors.py, future.py: the small vocabulary
"""
from .bridge import ThreadWorker
from .dist import Distribution, new_creation
from .codec import packb, unpackb
from .errors import (ActorError, AlreadyRegistered, CallExit, CallingSelf, CallTimeout,
                     MailboxOverflow, NoProc, ReceiveTimeout, RemoteError, StartError, SystemLimit)
from .future import Future
from .genserver import GenServer, NoReply
from .ids import Pid, Ref
from .messages import (KILL, KILLED, NOCONNECTION, NOPROC, NORMAL, SHUTDOWN, Down, Exit, NodeDown,
                       NodeUp, is_normal_exit)
from .node import Node, seed_for
from .peers import PeerTable
from .process import Call, CoroutineProcess, From, Process
from .registry import Dest, Name, Registry, RemoteName, Via
from .statem import (EventTimeout, GenericTimeout, GenStateMachine, KeepState, NextEvent, NextState,
                     Postpone, RepeatState, Reply, StateTimeout, Stop)
from .tables import Table, TableError
from .task import (Task, TaskExit, TaskTimeout, async_stream, async_task, await_many, await_task,
                   shutdown_task, yield_task)
from .watch import ExitWatch

__all__ = [
    "ActorError", "AlreadyRegistered", "Call", "CallExit", "CallTimeout", "CallingSelf", "CoroutineProcess",
    "Dest", "Distribution", "Down", "EventTimeout", "Exit", "ExitWatch", "From", "Future", "GenServer",
    "GenStateMachine", "GenericTimeout", "KILL", "KILLED", "KeepState", "MailboxOverflow", "NOCONNECTION",
    "NOPROC", "NORMAL", "Name", "NextEvent", "NextState", "NoProc", "NoReply", "Node", "NodeDown", "NodeUp",
    "PeerTable", "Pid", "Postpone", "Process", "ReceiveTimeout", "Ref", "Registry", "RemoteError", "RemoteName",
    "RepeatState", "Reply", "SHUTDOWN", "StartError", "StateTimeout", "Stop", "SystemLimit", "Table",
    "TableError", "Task", "TaskExit", "TaskTimeout", "ThreadWorker", "Via", "async_stream", "async_task",
    "await_many", "await_task", "is_normal_exit", "new_creation", "packb", "seed_for", "shutdown_task",
    "unpackb", "yield_task",
]
