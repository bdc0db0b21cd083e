"""Collaborative playlists as a simulated system (scenarios name it `playlists`, or
`"apps.playlists.sim:PlaylistsSystem"`).

Server nodes "pl1".. each run a `PlaylistService` on a real LMDB store (sync mode), each
holding a replica of every playlist. Node "clients" (spared by random faults, not by
partitions) runs the devices: one `PlaylistDevice` per device, with its own CRDT client id
from a seeded stream, driven by a client process. A device syncs through one server node
and moves to another when that one does not answer (a load balancer's choice). It edits
its open playlists (adds, removes, moves, renames) whether or not it can reach a server,
syncs after some edits, and now and then goes offline for a few seconds: its edits pile
up and merge when it is back. Some clients play a playlist and skip through it (the next
track is prefetched). With a small `compact_bytes`, playlists change epochs during the run.

The model is built from acknowledgements: an edit is acknowledged when a sync that
carried it has answered (the node it went through stored it).

Checks:
- always: every acknowledged add is in the stored document of the node that acknowledged
  it, unless some device removed that entry;
- eventually: every edit was acknowledged; every node's stored replica of each playlist is
  at the same epoch with the same entries in the same order and the same name, and so is
  every device's; no acknowledged add is missing unless a remove of it was issued; no entry
  appears that was never added; no entry an acknowledged remove took out is back (a remove
  wins over a concurrent move, see `apps.playlists.doc`).
"""
from __future__ import annotations

from typing import Any

from actors import Node
from sim.schema import Field
from sim.system import System, check

from apps.common import RETRYABLE, ServerNodes, ServerSystem, read_key, top_restarts

from .config import BITRATES, PlaylistConfig
from .device import Device
from .errors import BadRequest, PlaylistError
from .replica import stored_document
from .service import PlaylistService

TRACKS = 500  # the catalogue the devices add from


class PlaylistsSystem(ServerSystem, System):
    """See the module docstring."""

    options = {
        "servers": Field.int(3, 1, 16, "server nodes pl1.., each with a replica of every playlist"),
        "compact_bytes": Field.int(4096, 64, 1 << 30, "a playlist starts a new epoch past this many bytes"),
        "snapshot_every": Field.int(20, 1, 1_000_000, "updates journalled between snapshots"),
        "sync_every": Field.seconds(0.5, 0.01, 60.0, "seconds between rounds of pushes to peers"),
        "idle_timeout": Field.seconds(3.0, 0.1, 3600.0, "idle replicas and queues are passivated"),
        "top_restarts": top_restarts(20),
    }
    workload_options = {
        "playlists": Field.int(3, 1, 1000, "playlists, created first"),
        "devices": Field.int(6, 1, 10_000, "devices on node 'clients'"),
        "rate": Field.float(2.0, 0.01, 1000.0, "edits per second per device"),
        "sync": Field.float(0.5, 0.0, 1.0, "probability a device syncs after an edit"),
        "offline": Field.float(0.05, 0.0, 1.0, "probability a device goes offline after an edit"),
        "offline_for": Field.seconds(3.0, 0.0, 600.0, "longest offline stretch"),
        "play": Field.float(0.05, 0.0, 1.0, "probability a device plays instead of editing"),
        "entries": Field.int(20, 1, 10_000, "a device removes instead of adding past this many entries"),
        "timeout": Field.seconds(2.0, 0.01, 60.0, "a device's call timeout"),
    }

    def setup(self) -> None:
        opts, load = self.config, self.load
        self.servers = [f"pl{i + 1}" for i in range(opts["servers"])]
        self.pl_config = PlaylistConfig(
            nodes=tuple(self.servers), seed=self.sim.seed, compact_bytes=opts["compact_bytes"],
            snapshot_every=opts["snapshot_every"], sync_every=opts["sync_every"],
            idle_timeout=opts["idle_timeout"], call_timeout=load["timeout"], head_seconds=0.2,
            origin_latency=0.05, edge_bytes=1 << 20)
        self.playlists = [f"p{i}" for i in range(load["playlists"])]
        self.created: dict[str, None] = {}
        self.devices: list[dict[str, Any]] = []
        # Entries by (playlist, entry id): an entry id is unique within its playlist.
        self.adds: dict[tuple[str, str], str] = {}  # -> the device that added it
        self.acked_adds: dict[tuple[str, str], str] = {}  # -> the node that acknowledged it
        self.removed: dict[tuple[str, str], None] = {}  # some device issued a remove of it
        self.acked_removes: dict[tuple[str, str], None] = {}
        self.violations: list[str] = []
        self.read_cache: dict[tuple[str, str], tuple] = {}  # (node, playlist) -> (stored, document)
        self.counts = dict.fromkeys(("edits", "acked", "syncs", "sync_failures", "offline", "rebases", "epochs",
                                     "plays", "skips", "cached", "refused"), 0)
        self.nodes = ServerNodes(self, self.servers, lambda node, store, resolve: PlaylistService(
            node, store, self.pl_config, resolve=resolve, max_restarts=opts["top_restarts"]))
        self.nodes.add()
        self.sim.add_node("clients", self._start_clients, targets=False)

    def _service(self, name: str) -> PlaylistService:
        return self.nodes.serving(name)  # NoProc while it is down: a client retries

    # -- clients -----------------------------------------------------------------------------------

    def _start_clients(self, node: Node) -> None:
        node.spawn(self._creator)
        for i in range(self.load["devices"]):
            rng = self.sim.stream(f"workload/device-{i}")
            state = {"i": i, "rng": rng, "server": self.servers[i % len(self.servers)], "edits": {},
                     "acked": {}, "log": {}, "epochs": {}}
            client_id = 1 + rng.below((1 << 32) - 1)
            state["device"] = Device.spawn(node, lambda s=state: self._service(s["server"]), client_id)
            state["device"].timeout = 3 * self.load["timeout"]
            self.devices.append(state)
        self.spawn_clients(node, len(self.devices), lambda proc, i: self._client_loop(proc, self.devices[i]))

    async def _creator(self, proc: Any) -> None:
        rng = self.sim.stream("workload/creator")
        for playlist in self.playlists:
            while True:
                try:
                    await self._service(self.servers[0]).create(proc, playlist, f"Playlist {playlist}")
                    break
                except (*RETRYABLE, PlaylistError):
                    await proc.sleep(rng.uniform(0.05, 0.3))
            self.created[playlist] = None

    async def _client_loop(self, proc: Any, dev: dict[str, Any]) -> None:
        rng, load = dev["rng"], self.load
        offline_until = 0.0
        while True:
            if not self.workload_on:
                await self._settle(proc, dev)
                await self.work(proc)
            await proc.sleep(rng.uniform(0.0, 2.0 / load["rate"]))
            if not self.workload_on:
                continue
            playlist = self.playlists[rng.below(len(self.playlists))]
            if playlist not in dev["edits"] and not await self._open(proc, dev, playlist):
                continue
            if rng.random() < load["play"]:
                await self._play(proc, dev, playlist)
                continue
            await self._edit(proc, dev, playlist)
            if proc.now() >= offline_until:
                if rng.random() < load["offline"]:
                    offline_until = proc.now() + rng.uniform(0.0, load["offline_for"])
                    self.counts["offline"] += 1
                elif rng.random() < load["sync"]:
                    await self._sync(proc, dev, playlist)

    async def _open(self, proc: Any, dev: dict[str, Any], playlist: str) -> bool:
        if playlist not in self.created:
            return False
        try:
            await dev["device"].open(proc, playlist)
        except (*RETRYABLE, PlaylistError):
            self._switch(dev)
            return False
        dev["edits"][playlist], dev["acked"][playlist], dev["log"][playlist] = 0, 0, []
        return True

    async def _edit(self, proc: Any, dev: dict[str, Any], playlist: str) -> None:
        rng, device = dev["rng"], dev["device"]
        entries = (await device.view(proc, playlist))["entries"]
        draw = rng.random()
        try:
            if not entries or draw < 0.55 and len(entries) < self.load["entries"]:
                track = f"spotify:track:{rng.below(TRACKS)}"
                position = rng.below(len(entries) + 1) if rng.random() < 0.5 else None
                entry = await device.add(proc, playlist, track, f"u{dev['i']}", position)
                self.adds[(playlist, entry)] = f"device {dev['i']}"
                self._log(dev, playlist, "add", entry)
            elif draw < 0.8:
                entry = entries[rng.below(len(entries))][0]
                if await device.remove(proc, playlist, entry):
                    self.removed[(playlist, entry)] = None
                    self._log(dev, playlist, "rm", entry)
            elif draw < 0.95:
                entry = entries[rng.below(len(entries))][0]
                if await device.move(proc, playlist, entry, rng.below(len(entries))):
                    self._log(dev, playlist, "mv", entry)
            else:
                await device.rename(proc, playlist, f"{playlist} by u{dev['i']} #{dev['edits'][playlist]}")
                self._log(dev, playlist, "name", "")
        except BadRequest as exc:  # a device refuses only what a client should not ask
            self.counts["refused"] += 1
            self.violations.append(f"device {dev['i']}: an edit of {playlist} was refused: {exc}")

    def _log(self, dev: dict[str, Any], playlist: str, kind: str, entry: str) -> None:
        dev["edits"][playlist] += 1
        dev["log"][playlist].append((dev["edits"][playlist], kind, entry))
        self.counts["edits"] += 1

    async def _sync(self, proc: Any, dev: dict[str, Any], playlist: str) -> bool:
        node = dev["server"]
        try:
            answer = await dev["device"].sync(proc, playlist)
        except (*RETRYABLE, PlaylistError):
            self.counts["sync_failures"] += 1
            self._switch(dev)
            return False
        self.counts["syncs"] += 1
        if answer["epoch"] != dev["epochs"].setdefault(playlist, answer["epoch"]):
            self.counts["rebases"] += 1
            dev["epochs"][playlist] = answer["epoch"]
            self.counts["epochs"] = max(self.counts["epochs"], answer["epoch"])
        log, kept = dev["log"][playlist], []
        for seq, kind, entry in log:
            if seq > answer["acked"]:
                kept.append((seq, kind, entry))
            elif kind == "add":
                self.acked_adds[(playlist, entry)] = node
            elif kind == "rm":
                self.acked_removes[(playlist, entry)] = None
        self.counts["acked"] += len(log) - len(kept)
        dev["log"][playlist] = kept
        dev["acked"][playlist] = answer["acked"]
        return True

    def _switch(self, dev: dict[str, Any]) -> None:
        dev["server"] = self.servers[dev["rng"].below(len(self.servers))]

    async def _settle(self, proc: Any, dev: dict[str, Any]) -> None:
        """With the workload off: sync every open playlist now and then (pending edits go,
        and the final state comes back) until the run ends."""
        rng = dev["rng"]
        while not self.workload_on:
            for playlist in list(dev["edits"]):
                await self._sync(proc, dev, playlist)
            await proc.sleep(rng.uniform(0.5, 1.0))

    async def _play(self, proc: Any, dev: dict[str, Any], playlist: str) -> None:
        rng, user = dev["rng"], f"u{dev['i']}"
        service = dev["server"]
        try:
            now = await self._service(service).play(proc, user, playlist, BITRATES[rng.below(len(BITRATES))])
            self.counts["plays"] += 1
            for _ in range(3):
                if now["track"] is None:
                    break
                await proc.sleep(0.3)  # listens a little, while the next head is prefetched
                now = await self._service(service).next_track(proc, user)
                self.counts["skips"] += 1
                self.counts["cached"] += bool(now["cached"])
        except (*RETRYABLE, PlaylistError):
            self._switch(dev)

    # -- checks ---------------------------------------------------------------------------------------

    def _stored(self, node: str, playlist: str) -> tuple[int, Any] | None | bool:
        """(epoch, doc) as `node` stores `playlist`, None if it knows none, False if its
        store cannot be read now (the node is down)."""
        store = self.nodes.store(node)
        found = read_key(store, ("playlist", playlist))
        if found is False:
            return False
        # Opened again only when what is stored changed (compared whole: a failed commit
        # can take a revision back, and the next write reach it again with other content).
        cached = self.read_cache.get((node, playlist))
        if cached is None or cached[0] != found:
            cached = self.read_cache[(node, playlist)] = (found, stored_document(found))
        return cached[1]

    @check("always")
    def acknowledged_adds_stored(self) -> str | None:
        """Every acknowledged add is stored by the node that acknowledged it (unless removed)."""
        if self.violations:
            return self.violations[0]
        held: dict[tuple[str, str], Any] = {}
        for (playlist, entry), node in self.acked_adds.items():
            if (playlist, entry) in self.removed:
                continue
            if (node, playlist) not in held:
                found = self._stored(node, playlist)
                held[(node, playlist)] = None if found is False else set() if found is None else {
                    e[0] for e in found[1].raw}
            stored = held[(node, playlist)]
            if stored is not None and entry not in stored:
                return (f"entry {entry} of {playlist} (added by {self.adds[(playlist, entry)]}) was acknowledged by "
                        f"{node}, which does not store it")
        return None

    @check("eventually")
    def replicas_converge_and_keep_acknowledged_edits(self) -> str | None:
        """Every edit acknowledged; every replica and device equal; the model's membership."""
        for dev in self.devices:
            for playlist, log in dev["log"].items():
                if log:
                    return f"device {dev['i']}: {len(log)} edits of {playlist} never acknowledged (first: {log[0]})"
        if len(self.created) < len(self.playlists):
            return f"only {len(self.created)} of {len(self.playlists)} playlists were created"
        for playlist in self.playlists:
            found = {node: self._stored(node, playlist) for node in self.servers}
            down = [node for node, f in found.items() if f is False]
            if down:
                return f"nodes {down} cannot be read after heal"
            missing = [node for node, f in found.items() if f is None]
            if missing:
                return f"playlist {playlist} is not stored on {missing}"
            first = self.servers[0]
            epoch, doc = found[first]
            want = (epoch, doc.view(), doc.meta())
            for node, (e, d) in found.items():
                got = (e, d.view(), d.meta())
                if got != want:
                    return f"playlist {playlist}: {node} has {_brief(got)}, {first} has {_brief(want)}"
            for dev in self.devices:
                if playlist in dev["edits"]:
                    seen = self._device_view(dev, playlist)
                    if seen != want:
                        return f"playlist {playlist}: device {dev['i']} has {_brief(seen)}, {first} has {_brief(want)}"
            problem = self._model(playlist, {e[0] for e in want[1]})
            if problem:
                return problem
        return None

    def _device_view(self, dev: dict[str, Any], playlist: str) -> tuple:
        node = self.sim.node("clients")
        p = node.get_process(dev["device"].pid).open[playlist]
        return (p["epoch"], p["doc"].view(), p["doc"].meta())

    def _model(self, playlist: str, final: set) -> str | None:
        for entry in final:
            if (playlist, entry) not in self.adds:
                return f"playlist {playlist} holds entry {entry}, which no device added to it"
        for key in self.acked_adds:
            if key[0] == playlist and key[1] not in final and key not in self.removed:
                return f"acknowledged entry {key[1]} (added by {self.adds[key]}) is missing from {playlist}"
        for key in self.acked_removes:
            if key[0] == playlist and key[1] in final:
                return f"entry {key[1]} of {playlist} was removed (acknowledged) and is back"
        return None

    def stats(self) -> dict[str, int]:
        return dict(self.counts)


def _brief(seen: tuple) -> str:
    epoch, entries, meta = seen
    return f"epoch {epoch}, {len(entries)} entries {[e[0] for e in entries[:4]]}..., name {meta['name']!r}"
