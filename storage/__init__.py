"""LMDB persistence: store, snapshots, journal, group commit, activated entities.

    from storage import Entities, PersistentServer, Store, entity_call, entity_cast

    store = Store(path, node)                         # one per node; mode="sync" by default
    pid = node.spawn(Counter, store, ("counter", 1))  # a PersistentServer: state survives
    timelines = node.spawn(Entities, store, Timeline, 60.0)  # idle entities stop after 60 s
    entity_cast(node, timelines, ("timeline", 42), post)    # starts the entity on demand

`storage.store` documents the layout, the group commit, what each durability mode
promises and the fault hooks; `storage.persistent` the two ways to persist;
`storage.entities` the activated entities; `storage.cluster` activated entities placed
across nodes, moving with the node list; `storage.reminders` durable reminders
(`self.remind(name, due, period)` on a persistent server).
"""
from .entities import Entities, entities_info, entity_call, entity_cast
from .errors import (ActivationError, CorruptedValue, ForeignStore, FormatVersionError, KeyMoving,
                     LimitExceeded, MembershipError, StaleEpoch, StaleWrite, StoreClosed, StoreFull,
                     StoreLocked, StorageError, StorageIOError, UnencodableValue)
from .persistent import EventSourcedServer, PersistentServer
from .store import MODES, Store

__all__ = [
    "ActivationError", "CorruptedValue", "Entities", "EventSourcedServer", "ForeignStore",
    "FormatVersionError", "KeyMoving", "LimitExceeded", "MODES", "MembershipError", "PersistentServer",
    "StaleEpoch", "StaleWrite", "Store",
    "StoreClosed", "StoreFull", "StoreLocked", "StorageError", "StorageIOError", "UnencodableValue",
    "entities_info", "entity_call", "entity_cast",
]
