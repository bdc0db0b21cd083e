"""ChatService: WhatsApp-style chat as one supervision tree per node, and its client API.

    service = ChatService(node, store)               # ChatConfig() by default: one node
    service.start()                                  # the tree below, as an Application
    alice = node.run_until_complete(service.connect(node, "alice", "phone", outlet))
    msg_id = node.run_until_complete(service.send(node, alice, "bob", "c1", b"hi", "hi"))

    chat (one_for_one)
    ├─ shards (one_for_one)      the chat shards this node hosts, `chat.shard.<i>`
    ├─ sessions (dynamic)        one per connected device (`chat.sessions`)
    ├─ heartbeats                closes the sessions whose heartbeats stopped
    └─ rooms (dynamic)           live-chat rooms placed on this node (`chat.rooms`)

Every API function takes `caller`: the calling process (then it returns a coroutine to
await) or the `Node` (from outside: a `Future`). Errors are raised: `BadRequest` (wrong
input; nothing stored), `Unavailable` (retry, with the same client id), `Overloaded`
(a recipient's pending store is full), `QuotaExceeded` (the sender's), `Forbidden`
(another user's presence, not being its contact), `RateLimited`, and the kernel's `CallTimeout`/`NoProc` when a session is gone
(`CallTimeout` too when the shard a session handed a `send` or `read` to dies with it:
the shard answers the device itself, see `apps.chat.session`).

The device side: `outlet` is the pid that gets the session's frames (see
`apps.chat.protocol`; the user's home shard sends its items and presence frames there
directly); the device confirms the items it took (`confirm(upto)`, a cast),
heartbeats at least every 30 s, and sends its messages in order, retrying an
unacknowledged one with the same client id before sending the next.

Devices: a user may be connected from up to `max_devices` devices at once (a phone and
companions), each named by the device id given to `connect` and with its own delivery
state: every message reaches all of them (and the sender's other devices, as a copy),
each confirms on its own, the sender hears `delivered` when the first took it and
`read` once, however many read it (the reader's other devices learn it was read). A
device unseen for `device_expiry` is unlinked (`unlink` does it at once); connecting
again with the same device id replaces that device's older session only.
"""
from __future__ import annotations

from typing import Any

from actors import Future, Node, NoProc, Pid, Process
from storage import Store
from supervision import ChildSpec, DynamicFlags, DynamicSupervisor, Flags, Supervisor, start_child
from supervision.client import request

from apps.common import TreeService

from .config import ChatConfig
from .errors import BadRequest, Unavailable
from .heartbeat import Heartbeats
from .protocol import check_ids, check_name, check_seq
from .rooms import ROOMS_SUP
from .router import Resolve, Router
from .session import Hub, Session
from .shard import Shard
from .store import check_fits

SESSIONS_SUP = "chat.sessions"
SESSION_SPEC = ChildSpec("session", Session, restart="temporary", shutdown="brutal_kill")
_CONFIRMED = Future()  # what every confirm returns: done, so shared (a done Future never changes)
_CONFIRMED.set_result("ok")


class ChatService(TreeService):
    """The chat application on one node; see the module docstring. `max_restarts`: what
    the top supervisor allows in 5 s before the node's chat gives up."""

    name = "chat"

    def __init__(self, node: Node, store: Store, config: ChatConfig | None = None, *,
                 resolve: Resolve | None = None, max_sessions: int = 2_000_000,
                 max_restarts: int = 10) -> None:
        super().__init__(node, store, max_restarts)
        self.config = config or ChatConfig()
        check_fits(self.config, store.max_value_bytes)
        self.router = Router(node, self.config, resolve)
        self.max_sessions = max_sessions
        self.hub = Hub(self.router, {})

    # -- the tree --------------------------------------------------------------------------

    def children(self) -> list[ChildSpec]:
        router = self.router
        shards = [ChildSpec(f"shard-{i}", Shard, args=(self.store, i, router),
                            options={"name": router.name_of(i)}) for i in router.hosted_here()]
        return [
            ChildSpec("shards", Supervisor, args=(shards, Flags("one_for_one", 10, 5.0))),
            ChildSpec("sessions", DynamicSupervisor,
                      args=(DynamicFlags(max_children=self.max_sessions, extra_arguments=(self.hub,),
                                         child=SESSION_SPEC),),
                      options={"name": SESSIONS_SUP}),
            ChildSpec("heartbeats", Heartbeats, args=(self.hub.beats, self.config.heartbeat_timeout,
                                                      self.config.heartbeat_check, self.hub.routes)),
            ChildSpec("rooms", DynamicSupervisor, args=(DynamicFlags(max_children=1_000_000),),
                      options={"name": ROOMS_SUP}),
        ]

    # -- the client API ------------------------------------------------------------------------

    def connect(self, caller: Node | Process, user: str, device: str, outlet: Pid) -> Any:
        """Start a session for `user` on `device` on this node: its pid. Its frames go to
        `outlet`. An older session of the same device is closed ("replaced"); the user's
        other devices stay connected. The session attaches to the user's shard right
        after (see `attached`); a device past the user's `max_devices` is refused there,
        and its session closed."""
        check_name("user", user, self.config)
        check_name("device", device, self.config)
        if type(outlet) is not Pid:
            raise BadRequest(f"outlet must be the pid that takes the session's frames, "
                             f"got {outlet!r:.80}")
        # The spec and the hub are the sessions supervisor's own: only plain terms cross.
        return start_child(caller, self._local(SESSIONS_SUP), None, user, device, outlet,
                           timeout=self.config.call_timeout)

    def home_node(self, user: str) -> str:
        """The node where `user`'s devices should connect: the one hosting its home shard.
        A session there sends its own shard's traffic (attach, confirms, its receipts'
        items) without leaving the node, and only what goes to a user homed elsewhere
        crosses (the store and its answer, the receipts and their acknowledgement); any
        node accepts any user all the same."""
        check_name("user", user, self.config)
        return self.router.home_node(user)

    def attached(self, caller: Node | Process, session: Pid) -> Any:
        """Once `session` has attached: `{"acked", "seq", "devices", "new", "linked"}`
        (`acked`: its device's position; `devices`: how many the user has linked; `new`:
        this attach linked the device, starting from the user's first device's position,
        with nothing from an earlier link kept; `linked`: the node time it was linked, the
        same until it is unlinked). Raises `QuotaExceeded` for a device past `max_devices`."""
        return self._ask(caller, session, ("attached",))

    def send(self, caller: Node | Process, session: Pid, to: str, client_id: str | int,
             payload: bytes, preview: str = "") -> Any:
        """Send `payload` to `to`: the message id, once it is stored. `preview` is the text
        of the recipient's push notification if it is offline (the payload is opaque)."""
        route = self._route(caller, session)
        if route is not None:
            shard = self.router.locate(to)
            if shard is not None:  # else the session answers why not
                request = ("store", route[0], to, client_id, payload, preview, True) if route[3] else \
                    ("store", route[0], to, client_id, payload, preview)
                return self._ask(caller, shard, request)
        return self._ask(caller, session, ("send", to, client_id, payload, preview))

    def confirm(self, caller: Node | Process, session: Pid, upto: int) -> Future:
        """The device took every item up to seq `upto`: they leave the pending store. A
        cast (a lost one heals itself: the items come again, and are confirmed again), so
        it returns a done `Future` ("ok"), to await like the others or to ignore."""
        check_seq(upto)
        if not isinstance(caller, (Node, Process)):
            raise TypeError(f"caller must be the calling process or a Node, not {caller!r:.200}")
        route = self._route(caller, session)
        if route is None:
            caller.cast(session, ("confirm", upto))
        else:
            caller.cast(route[2], ("confirm", route[0], route[1], upto))
        return _CONFIRMED

    def read(self, caller: Node | Process, session: Pid, msg_ids: list[int]) -> Any:
        """The user read these messages: their senders get `read` receipts."""
        route = self._route(caller, session)
        if route is None:
            return self._ask(caller, session, ("read", msg_ids))
        return self._ask(caller, route[2], ("read", route[0], check_ids(msg_ids)))

    def heartbeat(self, caller: Node | Process, session: Pid) -> Any:
        return self._ask(caller, session, ("heartbeat",))

    def set_presence(self, caller: Node | Process, session: Pid, status: str) -> Any:
        """"online" or "away" (offline is the session ending)."""
        return self._ask(caller, session, ("presence", status))

    def disconnect(self, caller: Node | Process, session: Pid) -> Any:
        return self._ask(caller, session, ("disconnect",))

    def join(self, caller: Node | Process, session: Pid, room: str) -> Any:
        return self._ask(caller, session, ("join", room))

    def leave(self, caller: Node | Process, session: Pid, room: str) -> Any:
        return self._ask(caller, session, ("leave", room))

    def say(self, caller: Node | Process, session: Pid, room: str, text: str) -> Any:
        """Broadcast `text` to the room: the number of members it went to."""
        return self._ask(caller, session, ("say", room, text))

    def presence(self, caller: Node | Process, user: str, *, viewer: str) -> Any:
        """`(status, last_seen)` of `user` as `viewer` may see it: status online, away or
        offline; last_seen the node time its last session ended (None if never).
        `Forbidden` unless `user` lists `viewer` as a contact (or is the viewer)."""
        check_name("viewer", viewer, self.config)
        return self._shard_ask(caller, user, ("presence_of", user, viewer))

    def set_contacts(self, caller: Node | Process, user: str, contacts: list[str]) -> Any:
        """The users who may see `user`'s presence; those who list `user` too get its
        changes as they happen."""
        return self._shard_ask(caller, user, ("contacts", user, contacts))

    def pushes(self, caller: Node | Process, user: str) -> Any:
        """The push notification records kept for `user` (newest last)."""
        return self._shard_ask(caller, user, ("pushes", user))

    def pending(self, caller: Node | Process, user: str) -> Any:
        """`user`'s stored items: those some linked device has not confirmed (for tools
        and tests)."""
        return self._shard_ask(caller, user, ("pending", user))

    def devices(self, caller: Node | Process, user: str) -> Any:
        """`user`'s linked devices: `[[device, online, last_seen], ...]`."""
        return self._shard_ask(caller, user, ("devices", user))

    def unlink(self, caller: Node | Process, user: str, device: str) -> Any:
        """Unlink a device of `user`: its session is closed ("unlinked"), its delivery
        state and the items only it still needed are dropped; "ok". `BadRequest` if it
        is not linked."""
        check_name("device", device, self.config)
        return self._shard_ask(caller, user, ("unlink", user, device))

    # -- plumbing -------------------------------------------------------------------------------

    def _route(self, caller: Node | Process, session: Pid) -> tuple | None:
        """The route of `session` if it is attached and the caller runs on this node (see
        `apps.chat.session.Hub`): `(user, device, home shard pid, siblings)`, or None
        (then the request goes through the session, which has the answers for a session
        attaching, gone or never attached)."""
        route = self.hub.routes.get(session)
        if route is None:
            return None
        node = self.node
        if caller is not node and (not isinstance(caller, Process) or caller.node is not node):
            return None  # another node's caller: only this node's table is its to read
        if not node.is_alive(session):
            return None  # a killed session (its entry stays until the heartbeat sweep)
        return route

    def _ask(self, caller: Node | Process, dest: Any, message: tuple) -> Any:
        return request(caller, dest, message, self.config.call_timeout)

    def _shard_ask(self, caller: Node | Process, user: str, message: tuple) -> Any:
        check_name("user", user, self.config)
        shard = self.router.locate(user)
        if shard is None:
            raise Unavailable(f"the chat shard of {user!r} is not running")
        return self._ask(caller, shard, message)

    def _local(self, name: str) -> Pid:
        try:
            return self.pid(name)
        except NoProc:  # chat's clients retry on Unavailable
            raise Unavailable(f"{name} is not running on {self.node.name} (not started, or restarting)") from None
