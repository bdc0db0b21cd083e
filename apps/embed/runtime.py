"""What a node needs to start inside a web server, and the node once started.

    runtime = Runtime(tree=lambda node, store: [ChildSpec("counters", Counters, args=(store, "c"),
                                                          options={"name": "counters"})],
                      store="data")
    embedded = await runtime.start()          # on the server's running loop (ASGI, aiohttp)
    await embedded.stop()
    embedded = runtime.start_thread()         # on a thread of its own (WSGI)
    embedded.stop_thread()

`Runtime` is the recipe, frozen and shared by the three adapters: the store's directory
and durability `mode`, and the supervision tree, `tree(node, store)`, called once the
store is open. It returns either the children of a top `Supervisor` (with `flags`,
registered as `name`) or a service object with `start()` and `stop()` (a case study's
`TreeService`, such as `ChatService`), which handlers then reach as `embedded.service`.

`Embedded` is one started node: `node`, `store`, `service`. Starting opens the store on
the node's thread and starts the tree; a failure (a store that cannot be opened, an
`init` that raises) stops what did start, closes the store and raises. Stopping, always
after the server has drained its requests: the tree stops in order (bounded by
`stop_timeout`, then whatever is left gets "shutdown" and is killed after `stop_timeout`),
then the store closes (committing and syncing what is pending). A top supervisor that
gives up (its restart intensity exceeded) is reported and not restarted (an
`Application`'s "temporary" restart): the server keeps answering, its calls fail with
`NoProc` (503), until the server process is restarted.

One store per OS process: LMDB's writer is the node, so two server workers must never
share a store directory. With `store_per_process=True`, each process takes its own
directory `<store>/worker-<n>`, the lowest `n` no live process holds (a lock file held
for the process's life, released by the OS when it dies), so `uvicorn --workers N` and
`gunicorn -w N` run N nodes on N stores and a restarted worker takes its free one back.
Each worker then has its own state: a request may reach any worker, so state that must
be one lives with one worker (a node serves thousands of concurrent requests), or the
requests are routed by key in front of the workers.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from actors import Future, Node
from storage import MODES, StorageIOError, Store
from supervision import Application, ChildSpec, Flags, Supervisor

log = logging.getLogger("apps.embed")
MAX_WORKERS = 64  # store directories `store_per_process` hands out under one root


class Service(Protocol):
    """A supervision tree with its own start and stop (`apps.common.TreeService`)."""

    def start(self) -> Any: ...

    def stop(self) -> Future: ...


Tree = Callable[[Node, Store], "Sequence[ChildSpec] | Service"]


@dataclass(frozen=True)
class Runtime:
    """What a node needs to start; see the module docstring."""

    tree: Tree
    store: str | os.PathLike
    mode: str = "sync"
    flags: Flags | None = None
    name: str = "app"
    store_per_process: bool = False
    stop_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not callable(self.tree):
            raise TypeError(f"Runtime.tree must be a function (node, store) -> children or a "
                            f"service, got {self.tree!r:.100}")
        if self.mode not in MODES:
            raise ValueError(f"Runtime.mode must be one of {MODES}, got {self.mode!r}")
        if type(self.stop_timeout) not in (int, float) or not 0 < self.stop_timeout < float("inf"):
            raise ValueError(f"Runtime.stop_timeout must be positive seconds, got {self.stop_timeout!r}")

    async def start(self) -> Embedded:
        """A node on the running asyncio loop, its store open and its tree started."""
        embedded = Embedded(self, Node())
        embedded.node.attach(asyncio.get_running_loop())
        try:
            embedded.boot()
        except BaseException:
            await embedded.stop()
            raise
        return embedded

    def start_thread(self) -> Embedded:
        """A node on a thread of its own, its store open and its tree started there."""
        embedded = Embedded(self, Node().start_thread())
        try:
            embedded.node.run_from_thread(embedded.boot)
        except BaseException:
            embedded.stop_thread()
            raise
        return embedded


class Embedded:
    """A started node of a `Runtime`; see the module docstring."""

    def __init__(self, runtime: Runtime, node: Node) -> None:
        self.runtime = runtime
        self.node = node
        self.store: Store | None = None
        self.service: Service | None = None
        self._tree: Application | Service | None = None
        self._lock: int | None = None  # the fd holding this process's store directory

    def boot(self) -> None:
        """Open the store and start the tree (on the node's thread)."""
        runtime = self.runtime
        path = Path(runtime.store)
        if runtime.store_per_process:
            path, self._lock = claim_directory(path)
        self.store = Store(path, self.node, mode=runtime.mode)
        tree = runtime.tree(self.node, self.store)
        if isinstance(tree, (list, tuple)):
            app = Application(Supervisor, list(tree), runtime.flags or Flags(), name=runtime.name)
            app.start(self.node)
            self._tree = app
        else:
            tree.start()
            self._tree = self.service = tree

    async def stop(self) -> None:
        """Stop the tree, the node, then close the store (on the node's loop)."""
        timeout = self.runtime.stop_timeout
        try:
            if self._tree is not None:
                try:
                    await asyncio.wait_for(self._tree.stop(), timeout)
                except TimeoutError:
                    self._slow_tree()
            await self.node.stop(timeout)  # what is left: "shutdown", killed after timeout
        finally:
            self._close()

    def stop_thread(self) -> None:
        """`stop` for a node started with `start_thread`, from another thread."""
        timeout = self.runtime.stop_timeout
        try:
            if self._tree is not None:
                try:
                    self.node.run_from_thread(self._tree.stop, timeout=timeout)
                except TimeoutError:
                    self._slow_tree()
            self.node.stop_thread(timeout * 2)  # the node's stop kills what is left after timeout
        finally:
            self._close()

    def _slow_tree(self) -> None:
        log.warning("the supervision tree did not stop within %s s; what is left is shut "
                    "down, then killed", self.runtime.stop_timeout)

    def _close(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            if self._lock is not None:
                os.close(self._lock)  # the directory is free for the next process
                self._lock = None

    def forsake(self) -> None:
        """In a child forked after this started: let go of the parent's hold on its store
        directory, touching nothing else (the store and the node are the parent's)."""
        if self._lock is not None:
            os.close(self._lock)  # the parent's own fd keeps the directory held
            self._lock = None

    def __repr__(self) -> str:
        return f"<Embedded {self.node!r} store={self.store!r}>"


def claim_directory(root: Path) -> tuple[Path, int]:
    """`root/worker-<n>` for the lowest `n` whose lock file no live process holds, and the
    fd that holds it (closing it frees the directory)."""
    for n in range(MAX_WORKERS):
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / f"worker-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageIOError(f"cannot open the store at {root}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return root / f"worker-{n}", fd
    raise RuntimeError(f"all {MAX_WORKERS} store directories under {root} are held by running "
                       "processes; run fewer workers")
