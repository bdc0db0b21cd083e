"""Persistent servers: GenServers whose state survives crashes, restarts and `kill -9`.

Snapshot style: the whole `self.state` is saved at the end of every turn that changed it
(compared by its msgpack encoding), and loaded again when the server (re)starts.

    class Counter(PersistentServer):
        def initial_state(self, start=0):      # used when nothing is stored yet
            return {"n": start}

        def handle_cast(self, delta):
            self.state["n"] += delta

        def handle_call(self, request, caller):
            return self.state["n"]             # sent once the change above is stored

    pid = node.spawn(Counter, store, ("counter", 1), 10)    # init(store, key, *args)

Event-sourced style: `persist(event)` appends to the key's journal and `apply(event)`
folds it into `self.state` (at once, and again on recovery: keep it pure). Every
`snapshot_every` events the state is saved and the events it covers are deleted;
recovery is the latest snapshot plus a replay of the events after it.

    class Account(EventSourcedServer):
        def initial_state(self):
            return {"balance": 0}

        def apply(self, event):
            self.state["balance"] += event["amount"]

        def handle_call(self, amount, caller):
            self.persist({"amount": amount})
            return self.state["balance"]

Both keep `revision` (one per save, or per event) and refuse, with `StaleWrite`, a save
based on an older revision than the stored one (a stale incarnation). Replies and sent
messages leave only once the turn's writes have committed (see `storage.store`). A
storage fault crashes the server with the fault as its exit reason; its supervisor
restarts it from what was stored.

The unit of saving is the turn (up to `node.batch` messages handled in a row): if a
callback raises, the changes and the outputs of its whole turn are dropped with the
process (none of them had been acknowledged). A deliberate stop (`self.stop`, a shutdown
from the parent) saves the state it stops with, and commits before the exit signal goes
out. `handle_idle` is a turn like the others. An `async` callback's changes are saved
at the end of every scheduler pass in which it is suspended, before what it sent leaves.

Explicit saving (opt-in: `save_explicitly = True`): the state is then saved only at the
end of a turn that called `self.save()` (or staged records), instead of being encoded
after every turn to see whether it changed. For a server whose turns mostly change
nothing (a driver's location update, an offer kept in memory), that encoding is most of
its storage cost. A change made without `save()` is not stored (it is, with the next
saved turn), and a deliberate stop saves only if `save()` was called; `replace_state`
and `code_change` mark the state changed themselves. The default compares encodings,
so user code cannot forget a save.

    class Position(PersistentServer):
        save_explicitly = True
        def initial_state(self):
            return {"moves": 0}
        def handle_cast(self, msg):
            self.state["moves"] += 1
            self.save()                        # else this change is not stored

State must be msgpack-encodable (dicts, lists, str, bytes, numbers, bool, None, Pid,
Ref). A server that keeps part of it as a live object (a CRDT document) overrides
`snapshot_state()` to return the state with that part encoded, at the moment of saving.
A server that needs more set-up overrides `init` and calls `super().init(store, key,
*args)` first.

Records: a server that owns many values (a chat shard: every user's inbox, every
message's receipts) keeps them as records, each saved on its own, so no stored value
grows with the number of values and a save writes only what changed. `self.state` stays
small (it is saved whole); `put_record(key, value)` / `delete_record(key)` stage a
record, and the server defines `recover_records(records)`, which `init` calls with every
stored record as (key, value) pairs, in no promised order, after loading the state (and
before replaying events). Record keys are str, int, bytes or tuples of them (at most
495 bytes encoded); each value is limited like a state.

    class Inboxes(PersistentServer):
        def initial_state(self):
            return {"messages": 0}                     # small: saved whole
        def recover_records(self, records):
            self.boxes = dict(records)                 # user -> inbox
        def handle_call(self, request, caller):
            user, text = request
            self.boxes.setdefault(user, []).append(text)
            self.put_record(user, self.boxes[user])    # saved at the end of this turn
            self.state["messages"] += 1

System messages (`actors.system`) and a hot code upgrade's `code_change` see
`self.state`: `replace_state` sets it and it is stored like any change (an event-sourced
server saves it as a snapshot) before the caller hears back. A hibernating server keeps a
digest of its saved state instead of a copy of its encoding.

Reminders: `remind(name, due, period=None)` keeps a timer as a record of the server's
key; `handle_reminder(name)` runs when it is due, after restarts too (see
`storage.reminders`).

A server whose state held a growing dict moves it to records with `take_table(name,
records)` in `recover_records`; it also converts a state stored the old way.

A PersistentServer saves the records staged in a turn with the state at the end of that
turn. An EventSourcedServer saves them with its next snapshot: stage them in `apply`, so
that they are a function of the events (replaying the journal stages the same ones
again); a snapshot then writes the records changed since the previous one, whatever
the size of the whole. A value is encoded when it is saved, so changes made to it after
`put_record` and before then are saved too (stage it again after changing it later).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from actors import GenServer, packb
from actors.process import ExitNow

from .errors import LimitExceeded, UnencodableValue
from .reminders import Due, Reminders, is_reminder
from .store import MAX_RECORD_KEY_BYTES, SNAPSHOT, STATE, KeyRef, Store, decode_payload, record_key

_WAKE = ("$storage_fault",)
_DELETE = object()  # a staged deletion


class _Digest(bytes):
    """What a hibernating server keeps of its saved state: a digest of its encoding, enough
    to tell whether the state changed since, instead of a copy of it."""


def _digest(data: bytes) -> _Digest:
    return _Digest(hashlib.blake2b(data, digest_size=16).digest())


class PersistentServer(GenServer):
    """A GenServer whose `state` is saved after each turn that changed it; see the module
    docstring."""

    kind = STATE
    max_reminders: int = 1000
    """Reminders (see `storage.reminders`) a server keeps at most."""
    save_explicitly: bool = False
    """Save the state only after turns that call `save()` (see the module docstring)."""
    __slots__ = ("store", "state", "revision", "_ref", "_saved", "_fault", "_staged", "_fresh", "_reminders",
                 "_dirty")
    _fault: Exception | None  # a storage fault: the server crashes with it on its next turn
    _saved: bytes  # the saved state's encoding (a _Digest of it while hibernating)

    def init(self, store: Store, key: Any, *args: Any) -> None:
        """Load the stored state of `key` (and its records, if the class keeps records),
        or start from `initial_state(*args)`."""
        self.store = store
        self._ref = KeyRef(key)
        self._fault = None
        self._staged: dict[Any, Any] = {}
        self._fresh: set[Any] = set()  # staged keys not stored yet: a deletion just forgets them
        self._dirty = False  # save() called in this turn (see `save_explicitly`)
        if store.holds:
            self.node.hold_output(self)
        rev, snap_rev, snap, events = store.load(self, self._ref, self.kind)
        self.state = self.initial_state(*args) if snap is None else self._decode("state", snap)
        self.revision = rev
        self._reminders = Reminders(self) if self._remindable() else None
        if self._keeps_records() or self._reminders is not None:
            path, ref, node = store.path, self._ref, self.node
            records = [(record_key(rkey, path, "records", ref),
                        decode_payload("record", payload, node, path, "records", ref))
                       for rkey, payload in store.load_records(ref)]
            if self._reminders is not None:
                self._reminders.recover([r for r in records if is_reminder(r[0])])
                records = [r for r in records if not is_reminder(r[0])]
            if self._keeps_records():
                self.recover_records(records)
        self._recovered(snap, snap_rev, events)

    def initial_state(self, *args: Any) -> Any:
        """The state of a key with nothing stored, from the spawn arguments after the key."""
        if args:
            raise TypeError(f"{type(self).__name__}.initial_state takes no arguments, got {args!r}")
        return None

    @property
    def key(self) -> Any:
        return self._ref.key

    def system_get_state(self) -> Any:
        """What system messages (`actors.system`) and `code_change` see: `self.state`."""
        return self.state

    def save(self) -> None:
        """The state changed: save it at the end of this turn. Needed only with
        `save_explicitly` (harmless otherwise)."""
        self._dirty = True

    def system_replace_state(self, state: Any) -> None:
        """`replace_state` and `code_change` set `self.state`; it is saved with the turn."""
        self.state = state
        self._dirty = True

    def on_hibernate(self) -> None:
        """Hibernating: keep a digest of the saved state's encoding instead of the copy
        used to skip saving an unchanged state."""
        if type(self._saved) is bytes:
            self._saved = _digest(self._saved)

    def snapshot_state(self) -> Any:
        """What is saved as the state: `self.state`, unless a server keeps part of it as a
        live object (a CRDT document, say) and returns here a copy holding its encoded form,
        taken at the moment of saving."""
        return self.state

    # -- records ---------------------------------------------------------------------------

    def put_record(self, key: Any, value: Any, new: bool = False) -> None:
        """Stage record `key` = `value`, saved with the state (see the module docstring).
        `new`: the record was made since the last save and is not stored, so deleting it
        before the next save costs nothing (a message delivered between two snapshots
        never reaches the store)."""
        staged = self._staged
        if new and staged.get(key, None) is not _DELETE:  # a deletion pending: it may be stored
            self._fresh.add(key)
        staged[key] = value

    def delete_record(self, key: Any) -> None:
        """Stage the deletion of record `key` (nothing if it is not stored)."""
        if key in self._fresh:
            self._fresh.remove(key)
            del self._staged[key]
        else:
            self._staged[key] = _DELETE

    def recover_records(self, records: list[tuple[Any, Any]]) -> None:
        """Take the stored records, (key, value) pairs in no promised order; called by
        `init` after the state is loaded. A class that keeps records defines it."""
        raise NotImplementedError(f"{type(self).__name__} keeps records: it must define recover_records")

    def take_table(self, name: str, records: list[tuple[Any, Any]]) -> dict[Any, Any]:
        """For `recover_records`: the records keyed `(name, k)`, as a dict {k: value}. A
        state saved before this table became records (a dict at `self.state[name]`) is
        moved over: popped from the state and staged, so the next save writes it as
        records (an explicit, idempotent migration: a crash before then does it again)."""
        table = {key[1]: value for key, value in records
                 if type(key) is tuple and len(key) == 2 and key[0] == name}
        old = self.state.pop(name, None) if type(self.state) is dict else None
        for key, value in (old or {}).items():
            table[key] = value
            self.put_record((name, key), value)
        return table

    # -- reminders (see storage.reminders) ---------------------------------------------------

    def remind(self, name: str, due: float, period: float | None = None) -> None:
        """Register (or replace) the durable reminder `name`: `handle_reminder(name)` runs
        `due` seconds from now, then every `period` seconds if given; saved with this turn."""
        self._reminder_table().set(name, due, period)

    def cancel_reminder(self, name: str) -> bool:
        """Remove reminder `name`; False if there was none."""
        return self._reminder_table().cancel(name)

    def reminders(self) -> dict[str, tuple[float, float | None]]:
        """name -> (next time, period) of this server's reminders (times on the clock
        `storage.reminders.durable_now` reads)."""
        return self._reminder_table().listing()

    def handle_reminder(self, name: str) -> Any:
        """Callback: reminder `name` is due (at least once per due time; see
        `storage.reminders`). A class that uses reminders defines it."""
        raise NotImplementedError(f"{type(self).__name__} uses reminders: it must define handle_reminder")

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is Due and self._reminders is not None:
            return self.handle_reminder(msg.name) if self._reminders.fire(msg) else None
        return super().handle_info(msg)

    def _reminder_table(self) -> Reminders:
        if self._reminders is None:
            raise TypeError(f"{type(self).__name__} has no handle_reminder: define it to use reminders")
        return self._reminders

    @classmethod
    def _remindable(cls) -> bool:
        return cls.handle_reminder is not PersistentServer.handle_reminder

    def _save_staged(self) -> None:
        """Records staged now are saved at the end of this turn (an EventSourcedServer
        otherwise waits for its next snapshot)."""

    @classmethod
    def _keeps_records(cls) -> bool:
        return cls.recover_records is not PersistentServer.recover_records

    def _encode_records(self) -> dict[bytes, bytes | None]:
        """The staged records, encoded (and the stage emptied)."""
        if not self._keeps_records() and not self._remindable():
            raise TypeError(f"{type(self).__name__} staged records but does not define recover_records")
        out: dict[bytes, bytes | None] = {}
        for key, value in self._staged.items():
            try:
                rkey = packb(key)
            except (TypeError, ValueError, OverflowError) as exc:
                raise UnencodableValue(f"record key {key!r:.200} of {self._ref!r:.200} cannot be "
                                       f"stored: {exc}") from None
            if len(rkey) > MAX_RECORD_KEY_BYTES:
                raise LimitExceeded(f"record key {key!r:.100} of {self._ref!r:.100} is {len(rkey)} "
                                    f"bytes encoded; the limit is {MAX_RECORD_KEY_BYTES}")
            out[rkey] = None if value is _DELETE else self._encode(f"record {key!r:.100}", value)
        self._staged = {}
        self._fresh = set()
        return out

    # -- kernel side ---------------------------------------------------------------------

    def _recovered(self, snap: bytes | None, snap_rev: int, events: list[bytes]) -> None:
        self._saved = self._encode("state", self.state) if snap is None else snap

    def _flush(self) -> None:
        """Hand the state (and staged records) to the store if they changed since the
        last save (with `save_explicitly`, only after a `save()` or staged records)."""
        if self.save_explicitly and not self._dirty and not self._staged:
            return
        self._dirty = False
        data = self._encode("state", self.snapshot_state())
        saved = self._saved
        if (data != saved if type(saved) is bytes else _digest(data) != saved) or self._staged:
            records = self._encode_records() if self._staged else None
            self.store.write(self, self._ref, STATE, self.revision, self.revision + 1, data, [],
                             records)
            self.revision += 1
            self._saved = data

    def run_turn(self, turn: Callable[[], bool]) -> None:
        """The kernel's extension point (see `actors.genserver`): every turn, `init` too
        (what it changed is saved and what it sent waits for that, and no longer). A
        turn's writes go to the batch when it ends; a deliberate stop (ExitNow) saves the
        state it stops with, a crash saves nothing of the turn."""
        fault = getattr(self, "_fault", None)  # unset until init's turn has begun
        if fault is not None:
            raise fault
        mark = self.node.held_count(self)
        try:
            try:
                suspended = turn()
            except ExitNow:
                self._stopping()
                raise
            self._flush()
        except ExitNow:
            raise
        except BaseException:
            self.node.discard_output(self, keep=mark)  # a crashed turn's sends are never seen
            raise
        self.store.end_turn(self, suspended)

    def _stopping(self) -> None:
        self._flush()
        self.store.end_turn(self, False)  # its exit then waits behind its held output

    def _fail(self, exc: Exception) -> None:
        """Crash with `exc` on the next turn (a timer wakes it: timers are never held)."""
        self._fault = exc
        self.node.send_after(0, self.pid, _WAKE)

    def _encode(self, what: str, value: Any) -> bytes:
        try:
            data = packb(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableValue(f"{what} of {self._ref!r:.200} cannot be stored: {exc}") from None
        limit = self.store.max_value_bytes
        if len(data) > limit:
            raise LimitExceeded(f"{what} of {self._ref!r:.100} is {len(data)} bytes encoded; "
                                f"max_value_bytes is {limit}")
        return data

    def _decode(self, what: str, data: bytes) -> Any:
        db = "journal" if what == "event" else "snapshots"
        return decode_payload(what, data, self.node, self.store.path, db, self._ref)


class EventSourcedServer(PersistentServer):
    """A persistent server whose state changes only through `persist(event)`; see the
    module docstring."""

    kind = SNAPSHOT
    snapshot_every: int = 100
    """Save a snapshot (and delete the events it covers) every this many events."""

    __slots__ = ("_pending", "_snap_rev", "_snap_due", "_replaying")

    def apply(self, event: Any) -> None:
        """Fold `event` into `self.state`. Pure: it runs again on every recovery."""
        raise NotImplementedError(f"{type(self).__name__} has no apply for {event!r:.200}")

    def persist(self, event: Any) -> None:
        """Append `event` to the journal and apply it. Stored at the end of the turn;
        what the server sends after this leaves only once it is."""
        if self._replaying:
            raise RuntimeError(f"{type(self).__name__}.apply called persist: apply must be pure")
        if len(self._pending) >= self.store.max_batch_writes:
            raise LimitExceeded(f"{self._ref!r:.100} persisted more than max_batch_writes="
                                f"{self.store.max_batch_writes} events in one turn")
        data = self._encode("event", event)
        self.apply(event)
        self._pending.append(data)
        self.revision += 1

    def save_snapshot(self) -> None:
        """Snapshot the state at the end of this turn, deleting the events it covers
        (even with no new event: say after the state changed its stored form)."""
        self._snap_due = True

    def system_replace_state(self, state: Any) -> None:
        """A state set from outside (`replace_state`, `code_change`) comes from no event:
        it is saved as a snapshot at the end of the turn."""
        self.state = state
        self.save_snapshot()

    def _save_staged(self) -> None:
        self._snap_due = True  # reminders are records, and must not wait for the next snapshot

    def _recovered(self, snap: bytes | None, snap_rev: int, events: list[bytes]) -> None:
        if type(self.snapshot_every) is not int or self.snapshot_every < 1:
            raise ValueError(f"{type(self).__name__}.snapshot_every must be a positive int, "
                             f"got {self.snapshot_every!r}")
        self._pending: list[bytes] = []
        self._snap_rev = snap_rev
        self._snap_due = False
        self._replaying = True
        try:
            for data in events:
                self.apply(self._decode("event", data))
        finally:
            self._replaying = False

    def _flush(self) -> None:
        snap = records = None
        if self._snap_due or self.revision - self._snap_rev >= self.snapshot_every:
            due, self._snap_due = self._snap_due, False
            if self.revision > self._snap_rev or due:
                snap = self._encode("state", self.snapshot_state())
                records = self._encode_records() if self._staged else None
        if self._pending or snap is not None:
            events, self._pending = self._pending, []
            self.store.write(self, self._ref, SNAPSHOT, self.revision - len(events), self.revision,
                             snap, events, records)
            if snap is not None:
                self._snap_rev = self.revision
