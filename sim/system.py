"""What a simulated system provides, and the registry scenarios name systems from.

A system is a class: its options (`[systems.NAME]` in a scenario) and workload options
(`[systems.NAME.workload]`) as `Field` tables, `setup()` to add its nodes and clients to
the simulation, and checks: methods marked `@check("always")` (must hold at every check
point during the run) or `@check("eventually")` (must hold once the world has healed and
quiesced). A check returns None when it holds, or a message saying what is wrong.

    class Chat(System):
        options = {"rooms": Field.int(4, 1, 1000, "chat rooms")}

        def setup(self) -> None:
            self.disk = Disk(self.sim, "chat1")          # sim.disk: the node's store under faults
            self.sim.add_node("chat1", self.start_server, on_crash=self.disk.crash)
            self.sim.heart("chat1", lambda: self.app.supervisor is not None)
            self.sim.add_node("phones", self.start_phones, targets=False)

        def start_server(self, node):                  # at boot and after every restart
            store = self.disk.attach(Store(self.data_dir / node.name, node, simulated=True))
            ...

        async def phone(self, proc):                   # a client process
            while True:
                await self.work(proc)                  # waits while the workload is off
                ...

        def storages(self):
            return {"chat1": self.disk}

        @check("eventually")
        def no_acked_message_lost(self) -> str | None:
            ...

Scenarios find systems by name in `sim.systems.BUILTIN`, in what `register()` added, in
the `letitcrash.systems` entry points of installed packages, or as a "module:Class" path.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .schema import Field
from .systems import BUILTIN, ENTRY_POINTS

if TYPE_CHECKING:
    from .core import Simulation
    from .faults import Storage

WHEN = ("always", "eventually")
_GO = ("$workload", "go")


def _is_go(msg: Any) -> bool:
    return msg == _GO


def check(when: str) -> Callable[[Callable], Callable]:
    """Mark a System method as a check (see the module docstring)."""
    assert when in WHEN, f"check when must be one of {WHEN}, got {when!r}"

    def mark(fn: Callable) -> Callable:
        fn.check_when = when  # type: ignore[attr-defined]
        return fn
    return mark


class System:
    """Base class of simulated systems. See the module docstring."""

    options: ClassVar[dict[str, Field]] = {}
    workload_options: ClassVar[dict[str, Field]] = {}

    def __init__(self, sim: Simulation, options: dict[str, Any], workload: dict[str, Any],
                 data_dir: Path) -> None:
        self.sim = sim
        self.config = options
        self.load = workload
        self.data_dir = data_dir  # a fresh directory for the system's real LMDB files
        self.workload_on = False
        self._idle: dict[Any, None] = {}  # clients waiting in `work`, by pid

    def setup(self) -> None:
        """Add the system's nodes (and its clients' node) to the simulation."""
        raise NotImplementedError

    def set_workload(self, on: bool) -> None:
        """Clients start new requests only while the workload is on (see `work`);
        requests under way still finish, retrying as they would."""
        self.workload_on = on
        if on:
            for pid in list(self._idle):  # in the order they began to wait
                node = self.sim.node(pid.node_name)
                if node is not None:
                    node.send(pid, _GO)

    async def work(self, proc: Any) -> None:
        """Wait while the workload is off: a client awaits this before each new request."""
        while not self.workload_on:
            self._idle[proc.pid] = None
            try:
                await proc.receive(_is_go)
            finally:
                self._idle.pop(proc.pid, None)

    def storages(self) -> dict[str, Storage]:
        """The storage of each node that has one, by node name (for disk and commit faults)."""
        return {}

    def stats(self) -> dict[str, int]:
        """Counters for the report (requests, acks, retries, ...)."""
        return {}

    def close(self) -> None:
        """Release what the system holds outside the simulation (files, environments)."""

    @classmethod
    def checks(cls) -> dict[str, str]:
        """The system's checks: method name -> "always" | "eventually", in definition order."""
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                when = getattr(fn, "check_when", None)
                if when is not None:
                    found[attr] = when
        return found


_REGISTRY: dict[str, str | type[System]] = dict(BUILTIN)


def register(name: str, system: str | type[System]) -> None:
    """Make a system available to scenarios as `[systems.NAME]`; `system` is the class or
    "module:Class" (imported when a scenario first uses it)."""
    if name in _REGISTRY and _REGISTRY[name] != system:
        raise ValueError(f"system {name!r} is already registered to {_REGISTRY[name]!r}")
    _REGISTRY[name] = system


def _entry_points() -> dict[str, str]:
    """The systems installed packages declare (group `letitcrash.systems`), by name."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}


def lookup(name: str) -> type[System]:
    """The system class for a registry name, an entry point name or a "module:Class"
    path. Raises LookupError with a message saying what is known."""
    target = _REGISTRY.get(name)
    if target is None and ":" not in name:
        installed = _entry_points()
        target = installed.get(name)
        if target is None:
            known = sorted(set(_REGISTRY) | set(installed))
            raise LookupError(f"unknown system {name!r}; known: {', '.join(known)} "
                              "(or give \"module:Class\")")
    target = target or name
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise LookupError(f"system {name!r}: cannot import {target!r} ({exc})") from None
    else:
        cls = target
    if not (isinstance(cls, type) and issubclass(cls, System)):
        raise LookupError(f"system {name!r}: {target!r} is not a sim.System subclass")
    return cls
