"""Supervision trees on the letitcrash kernel: "let it crash" means a crash is answered by a
restart to a known good state, and a failure that keeps repeating climbs the tree.

A static tree (OTP's supervisor):

    from supervision import ChildSpec, Flags, Supervisor

    children = [ChildSpec("db", Database, args=(path,)),
                ChildSpec("cache", Cache, restart="transient", shutdown=1.0)]
    sup = node.spawn(Supervisor, children, Flags(strategy="rest_for_one", max_restarts=3, max_seconds=5))

Children added at run time (Elixir's DynamicSupervisor), from a process or from outside:

    from supervision import DynamicFlags, DynamicSupervisor, start_child, terminate_child

    sessions = node.spawn(DynamicSupervisor, DynamicFlags(max_children=1_000_000))
    spec = ChildSpec("session", Session, restart="temporary")
    pid = await start_child(self, sessions, spec, user_id)             # inside a process
    pid = node.run_until_complete(start_child(node, sessions, spec, 7))  # outside, deterministic

A whole application, started and stopped with one call each:

    app = Application(Supervisor, children, Flags())
    top = app.start(node)
    print(render_tree(node, top))
    await app.stop()                        # resolves when the whole tree is down

Beyond OTP: `Backoff` on a child spec spaces its restarts out (exponential, seeded
jitter); `CircuitBreaker` fails calls to a flaky process fast. Supervisor reports go to
logger "supervision" with `extra={"report": kind, "supervisor", "child_id", "child_pid",
"reason", ...}`; kinds: child_started, child_restarted, child_terminated, start_error,
shutdown_error, max_restart_intensity, auto_shutdown, application_stopped. A tool that
only counts them can `add_report_listener(fn)` instead: a call per report, no log record.
For code that supervises processes of its own (storage's `Entities`): `report(...)` files
a report of these kinds, and `shutdown_children(proc, children)` runs OTP's shutdown
protocol on them from inside the supervising process.

Modules: `spec` (ChildSpec, Flags, DynamicFlags, Backoff), `supervisor`, `dynamic`,
`tasks` (TaskSupervisor, async_nolink), `client` (the run-time API), `application`,
`breaker`, `tree`, `errors`.
"""
from ._base import add_report_listener, remove_report_listener, report, shutdown_children
from .application import Application
from .breaker import CircuitBreaker
from .client import (count_children, delete_child, get_childspec, restart_child, start_child,
                     terminate_child, which_children)
from .dynamic import DynamicSupervisor
from .errors import (AlreadyPresent, AlreadyStarted, BadCombination, ChildError, ChildNotFound,
                     ChildRestarting, ChildRunning, CircuitOpen, Ignore, MaxChildren,
                     StartChildError, SupervisionError)
from .spec import Backoff, ChildSpec, DynamicFlags, Flags
from .supervisor import ChildInfo, Supervisor
from .tasks import TaskSupervisor, async_nolink
from .tree import Tree, render_tree, supervision_tree

__all__ = [
    "AlreadyPresent", "AlreadyStarted", "Application", "Backoff", "BadCombination",
    "ChildError", "ChildInfo", "ChildNotFound", "ChildRestarting", "ChildRunning",
    "ChildSpec", "CircuitBreaker", "CircuitOpen", "DynamicFlags", "DynamicSupervisor",
    "Flags", "Ignore", "MaxChildren", "StartChildError", "SupervisionError", "Supervisor", "TaskSupervisor",
    "Tree", "add_report_listener", "async_nolink", "count_children", "delete_child", "get_childspec",
    "remove_report_listener",
    "render_tree", "report", "restart_child", "shutdown_children", "start_child",
    "supervision_tree", "terminate_child",
    "which_children",
]
