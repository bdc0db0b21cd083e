"""Storage errors. Each names what is wrong: the store's path, the key, what was expected.

A process whose write fails crashes with one of these as its exit reason, so links,
monitors and supervisors see the storage fault like any other crash.
"""
from __future__ import annotations

import os
from typing import Any


class StorageError(Exception):
    """Base class of every storage error."""


class StoreClosed(StorageError):
    """The store was closed (or crashed) before this operation."""


class ForeignStore(StorageError):
    """The path holds something that is not a letitcrash store; nothing was written to it."""


class FormatVersionError(StorageError):
    """A store or value written by another format version of letitcrash."""

    def __init__(self, where: str, found: int, expected: int) -> None:
        super().__init__(f"{where}: format version {found}, this letitcrash reads version {expected}")
        self.where, self.found, self.expected = where, found, expected


class CorruptedValue(StorageError):
    """A stored value failed its checks (header, checksum, decoding, key)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"corrupted value at {where}: {problem}")
        self.where, self.problem = where, problem


class StaleWrite(StorageError):
    """A write based on an older revision than the stored one was refused: another
    incarnation of the same key has written since. Nothing was overwritten."""

    def __init__(self, key: Any, based_on: int, stored: int | str) -> None:
        super().__init__(f"stale write to {key!r:.200} refused: it is based on revision "
                         f"{based_on}, the store holds {stored}")
        self.key, self.based_on, self.stored = key, based_on, stored


class UnencodableValue(StorageError, TypeError):
    """State, an event or a key that msgpack (with Pid/Ref) cannot encode."""


class LimitExceeded(StorageError):
    """A value, a key or a batch over its configured limit."""


class StoreLocked(StorageError):
    """Another open store holds the directory's lock: a running process (or this one)
    already uses it. Nothing was opened or written."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = "an unknown process" if pid is None else (
            f"this process (pid {pid})" if pid == os.getpid() else f"process {pid}")
        super().__init__(f"store {path} is in use: {holder} holds its lock; "
                         "a store has one process writing it")
        self.path, self.pid = path, pid


class StoreFull(StorageError):
    """The disk is full, or the store reached its `max_map_size`. The batch was not written."""


class StorageIOError(StorageError):
    """LMDB reported an error while committing; the batch's outcome is unknown, so every
    process that wrote to it crashes and recovers what was stored."""


class ActivationError(StorageError):
    """An entity could not be started (its stored state is unreadable, its init failed);
    `entity_call` raises it for every call that was waiting for that activation."""

    def __init__(self, key: Any, reason: Any) -> None:
        super().__init__(f"entity {key!r:.200} could not be activated: {reason!r:.300}")
        self.key, self.reason = key, reason


class KeyMoving(ActivationError):
    """An entity's stored state is on its way from its previous node to this one (a
    membership change moved it): retry. `source` is the node it comes from."""

    def __init__(self, key: Any, source: str, here: str, epoch: int) -> None:
        StorageError.__init__(self, f"entity {key!r:.200} is moving from node {source} to node {here} "
                                    f"(epoch {epoch}): its state has not arrived yet; retry")
        self.key, self.reason, self.source, self.here, self.epoch = key, "moving", source, here, epoch


class StaleEpoch(StorageError):
    """A request or a membership change made with another epoch of the cluster's node list
    than the node's: refused, nothing done. `epoch` and `nodes` are the node's (the
    caller may adopt them and retry), `asked` the request's."""

    def __init__(self, node: str, epoch: int, nodes: Any, asked: int) -> None:
        super().__init__(f"node {node} is at epoch {epoch} of the node list {list(nodes)!r:.200}, the "
                         f"request was made at epoch {asked}: retry with epoch {epoch}'s node list")
        self.node, self.epoch, self.nodes, self.asked = node, epoch, tuple(nodes), asked


class MembershipError(StorageError, ValueError):
    """A change of a cluster's node list was refused (a node down or cut off, a handoff
    still running, a list that skips an epoch); nothing stored was changed by it."""
