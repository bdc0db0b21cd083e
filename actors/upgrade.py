"""Hot code upgrade: load a module's new code into a running node and move its live
servers onto it, as OTP's release handler does for one module (`{update, Mod, {advanced,
Extra}}`: suspend, load, code_change, resume).

    report = node.run_until_complete(upgrade(node, "shop.cart"))  # deterministic driver
    report = await upgrade(node, "shop.cart", extra={"tax": 0.2})  # asyncio code
    report = await upgrade(self, "shop.cart")                      # inside a process

Steps, in virtual time under the simulator (the load itself takes none):
1. The servers to move: this node's live GenServers whose class is defined in the module,
   in spawn order (not the caller itself).
2. Each is suspended (`actors.system.suspend`), one after the other. One not suspended
   within `timeout` (busy in an async callback) or gone is left as it is, and reported.
3. The new code is loaded: the module's source file is read, compiled and run in the
   module's namespace (as `importlib.reload` does, but never from a stale bytecode
   cache). If that fails (a syntax error, an exception while importing), every server
   resumes on its old code and the report's `error` says why.
4. Each suspended server moves to its class's new version (the same qualified name)
   through `code_change(old_vsn, state, extra)`, run by the new code, where `old_vsn` is
   the old class's `vsn` and `state` what `system_get_state()` gives (a persistent
   server's `self.state`, stored once changed). If `code_change` raises, the class is
   gone, or it cannot take the object (a new `__slots__` layout), the server keeps its
   old class and state and goes on running the old code; the report says why.
5. All are resumed. From then on, spawning one of the module's old classes starts its new
   version (`actors.spawn.redirect`): a supervisor's child spec holds the old class, and
   its restarts run the new code.

Returns an `UpgradeReport`. Python's limits, not OTP's: the module is loaded once for the
whole interpreter, so another node of it keeps its servers on the old classes until it
is upgraded too; the module's namespace is updated in place, so old code still running
(a server whose `code_change` failed) calls the module's new functions by name; only
classes defined in the module move (a subclass defined elsewhere keeps the base it was
made with until its own module is upgraded); a coroutine process keeps running the
function it started with.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any, NamedTuple

from .errors import ActorError, CallTimeout
from .genserver import GenServer
from .ids import Pid
from .node import Node
from .process import SYS, Process
from .requests import run_in_process
from .spawn import redirect
from .system import request, resume, suspend

__all__ = ["UpgradeReport", "upgrade"]


class UpgradeReport(NamedTuple):
    """What `upgrade` did: `upgraded` holds (pid, old_vsn, new_vsn) for each server moved to
    the new code, `failed` (pid, reason) for each left on its old code; `error` is why the
    new code could not be loaded (then nothing moved)."""

    module: str
    upgraded: list[tuple[Pid, Any, Any]]
    failed: list[tuple[Pid, Any]]
    error: BaseException | None = None


def upgrade(caller: Node | Process, module: str | types.ModuleType, extra: Any = None, *,
            timeout: float | None = 5.0) -> Any:
    """Load `module`'s new code and move this node's servers of its classes onto it (see
    the module docstring): a coroutine to await from a process, a `Future` from outside.
    `timeout` bounds each step with each server (suspend, code_change, resume)."""
    name = module if isinstance(module, str) else getattr(module, "__name__", None)
    loaded = sys.modules.get(name) if isinstance(name, str) else None
    if loaded is None:
        raise ValueError(f"upgrade takes a loaded module or its name, not {module!r:.200}")
    return run_in_process(caller, _upgrade, loaded, extra, timeout)


async def _upgrade(proc: Process, module: types.ModuleType, extra: Any, timeout: float | None) -> UpgradeReport:
    node = proc.node
    name = module.__name__
    servers = [p.pid for p in node._procs.values()
               if isinstance(p, GenServer) and type(p).__module__ == name and p._alive]
    failed: list[tuple[Pid, Any]] = [(pid, "it runs the upgrade") for pid in servers if pid == proc.pid]
    suspended = []
    for pid in servers:
        if pid == proc.pid:
            continue
        try:
            await suspend(proc, pid, timeout)
            suspended.append(pid)
        except ActorError as exc:
            failed.append((pid, exc))
            if isinstance(exc, CallTimeout):
                _resume_later(node, pid)  # its suspend is still queued: undo it once it gets there
    old = _classes(module)
    try:
        _load(module)
    except Exception as exc:  # noqa: BLE001 - a module that does not load leaves everything as it was
        await _resume_all(proc, suspended, timeout, failed)
        return UpgradeReport(name, [], failed, exc)
    for qualname, cls in old.items():
        new = _resolve(module, qualname)
        if new is not None and new is not cls:
            for stale, current in list(redirect.items()):
                if current is cls:
                    redirect[stale] = new
            redirect[cls] = new
    upgraded = []
    for pid in suspended:
        server = node.get_process(pid)
        new = _resolve(module, type(server).__qualname__) if server is not None else None
        if new is None:
            failed.append((pid, "exited" if server is None else "its class is not in the new code"))
            continue
        try:
            old_vsn, new_vsn = await request(proc, pid, ("change_code", new, extra), timeout)
        except Exception as exc:  # noqa: BLE001 - the server stays on its old code
            failed.append((pid, exc))
        else:
            upgraded.append((pid, old_vsn, new_vsn))
    await _resume_all(proc, suspended, timeout, failed)
    return UpgradeReport(name, upgraded, failed)


async def _resume_all(proc: Process, pids: list[Pid], timeout: float | None,
                      failed: list[tuple[Pid, Any]]) -> None:
    for pid in pids:
        try:
            await resume(proc, pid, timeout)
        except ActorError as exc:
            failed.append((pid, exc))


def _resume_later(node: Node, pid: Pid) -> None:
    """Queue a resume that nobody waits for (behind a suspend that timed out)."""
    server = node._names.lookup(pid)
    if server is not None:
        server._deliver((SYS, ("resume",), None))


def _classes(module: types.ModuleType) -> dict[str, type]:
    """The module's own GenServer classes by qualified name (top level)."""
    return {value.__qualname__: value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, GenServer) and value.__module__ == module.__name__}


def _resolve(module: types.ModuleType, qualname: str) -> type[GenServer] | None:
    """The module's current class of that qualified name, if it is a GenServer class."""
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, GenServer) else None


def _load(module: types.ModuleType) -> None:
    """Run the module's current source in its namespace (importlib.reload without the
    bytecode cache, which an edit within the same second could leave stale)."""
    spec = module.__spec__
    loader = spec.loader if spec is not None else None
    source = loader.get_source(module.__name__) if isinstance(loader, importlib.machinery.SourceFileLoader) else None
    if source is None:
        importlib.reload(module)
        return
    path = loader.get_filename(module.__name__)  # type: ignore[union-attr]
    exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - loading code is the point
