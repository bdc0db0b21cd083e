"""The simulator's hold on one node's `storage.Store`: full disks, failing and slow
commits, crashes and power cuts. One `Disk` per node name outlives the node's
incarnations (a full disk stays full across a reboot); each new store is `attach`ed.

    disk = Disk(sim, "counter1")
    store = disk.attach(Store(path, node, simulated=True))   # in the node's start function
    sim.add_node("counter1", start, on_crash=disk.crash)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage import Store, StorageError, StorageIOError, StoreFull

from .faults import STORAGE_FAULTS, Draws, EventFaults

if TYPE_CHECKING:
    from .core import Simulation


class Disk:
    """Implements `sim.faults.Storage` for a node's store."""

    def __init__(self, sim: Simulation, node: str) -> None:
        self.sim = sim
        self.node = node
        self.store: Store | None = None
        self.full = False
        self.commits = 0  # commits tried on this node, every incarnation (a script's `nth`)
        self.log: list[dict[str, Any]] | None = None  # where injected faults are logged
        self._random = sim.stream(f"storage/{node}/faults").random  # one draw a commit (`Draws`)
        self._power = sim.stream(f"storage/{node}/power_loss")
        self._draws: Draws | None = None
        self._faults = EventFaults(node=node)

    def attach(self, store: Store) -> Store:
        assert store.simulated, "a simulated node's store needs Store(..., simulated=True)"
        store.commit_fault = self._before_commit
        self.store = store
        return store

    # -- sim.faults.Storage ------------------------------------------------------------------

    def fill_disk(self, full: bool) -> None:
        self.full = full

    def set_rates(self, rates: dict[str, float], delay_max: float) -> None:
        on = any(rates.get(k, 0.0) > 0 for k in STORAGE_FAULTS)
        self._draws = Draws(STORAGE_FAULTS, rates, {"commit_delay": delay_max}, self._random) if on else None

    def script(self, entry: dict[str, Any]) -> None:
        """A scripted commit fault (entries come in time order): the first commit at or
        after `at`, and no earlier than the node's `nth`, fails ("commit_fail") or blocks
        the node for `delay` seconds ("commit_delay")."""
        self._faults.script.append(entry)

    def _before_commit(self) -> StorageError | None:
        self.commits += 1
        if self.full:
            return StoreFull(f"disk full (injected) at {self.node}")
        faults, draws = self._faults, self._draws
        fault, delay = "", 0.0
        if draws is not None or faults.script:  # with no commit faults configured, nothing to roll
            drawn = draws.strike(draws.random()) if draws is not None else ("", 0.0)
            fault, delay = faults.roll(self.commits, self.sim.now, drawn, self.log)
        if not fault:
            self.sim.trace.event("commit", self.node, self.commits)
            return None
        self.sim.count_fault(fault, self.node, delay)
        if fault == "commit_fail":
            return StorageIOError(f"commit failed (injected) at {self.node}")
        self.sim.stall(self.node, delay)
        return None

    # -- node crashes ------------------------------------------------------------------------

    def crash(self, node: str, power_loss: bool) -> None:
        """The node died (`Simulation.add_node`'s on_crash): the pending batch is lost; on a
        power cut, also a random suffix of the commits not yet synced (a kept prefix)."""
        assert node == self.node, (node, self.node)
        store, self.store = self.store, None
        if store is None or store.closed:
            return
        if power_loss:
            lost = store.power_loss(self._power.below(store.unsynced_commits + 1))
            if lost:
                self.sim.trace.event("lost", self.node, lost)
        else:
            store.crash()

    def close(self) -> None:
        if self.store is not None and not self.store.closed:
            self.store.crash()
        self.store = None
