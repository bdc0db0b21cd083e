"""A session: the process of one connected device (in a TCP server, the connection).

Started by `ChatService.connect` under the node's session DynamicSupervisor (temporary:
a broken connection is not restarted; the device connects again). It attaches to its
user's home shard, which links the device if it is new (see `apps.chat.shard`), links
to the session and from then on sends the device's items and the contacts' presence
straight to the device's `outlet` (a hop less per frame than passing them through the
session); the session forwards room messages to the outlet, and the device's requests
to the shards. `("attached",)` answers the attach's outcome once there is one (the
shard's answer, or the refusal of a device past the user's `max_devices`, after which
the session closes).

A user with several devices linked gets a copy of each message it sends on all of them:
the session, told the count when it attaches and when another device is linked, asks the
recipient's shard for it with the message (the user's own shard drops it if the user is
down to one device by then).

`send` and `read` are forwarded to the shard that handles them with the device's own
caller (OTP's forwarding of `From`), so the shard answers the device directly, once the
message is stored (the `sent` receipt): one message less per send, and the session never
waits. The device sends its messages in order, waiting for each answer, so a sender's
messages reach each recipient's shard in the order it sent them. The answer is
`Unavailable` when the shard is not running; if it dies with the request, the device's
call times out (`CallTimeout`) and it retries with the same client id. `confirm` is a
cast (a lost one heals itself: the items come again). Callers on the session's own node
skip even that hop: while attached, the session keeps its route (user, device, home
shard) in the node's route table (see `Hub`), and `ChatService` sends their `send`,
`confirm` and `read` straight to the shards with it; a caller watching the shard then
hears of its death at once (`CallExit`) instead of timing out. The session handles them
itself for callers on other nodes and while it is not attached (with the answers for
that).

Heartbeats go into the node's heartbeat table (see `apps.chat.heartbeat`); the checker
closes the session when they stop. The session traps exits: when its home shard goes
down it attaches to the next incarnation, whose pushes start over from the first
unconfirmed item (the device drops what it already took). A shard on another node that
dies with its exit signal lost on the way still reaches the session, as `noconnection`
(the kernel keeps Erlang's link semantics). The shard dismisses a session it no longer
has (its device connected again, or was unlinked) by an exit signal over the link it
keeps, `(DISMISSED, why)`: the session closes, telling its device why. A cast could be
lost, leaving the session believing it is attached (and, unlinked, deaf to the shard's
end); a signal is lost only with the connection, and then the link's `noconnection`
has the session attach again, to be told then.
"""
from __future__ import annotations

import logging
from typing import Any

from actors import Exit, GenServer, NoProc, NoReply, Pid

from apps.common import RETRYABLE

from .errors import BadRequest, QuotaExceeded, Unavailable
from .protocol import PRESENCE, check_ids, check_message, check_name, check_seq
from .rooms import join_room, room_request
from .router import Router

log = logging.getLogger("apps.chat")
ATTACH = ("$chat.attach",)
REFUSED = ("$chat.refused",)
MAX_WAITING = 8  # callers of `attached` waiting for the outcome at most
ATTACHED = ("acked", "seq", "devices", "new", "linked")
"""The fields of the shard's answer to an attach (a tuple: sessions are many)."""
DISMISSED = "$chat.dismissed"
"""A shard's exit signal `(DISMISSED, why)` tells an attached session it is no longer."""


class Hub:
    """What every session of a node shares: the router, the heartbeat table and the route
    table. `routes` maps an attached session's pid to `(user, device, home shard pid,
    siblings)`, written only by that session (as an Erlang session would write a public
    ETS table), while it is attached: `ChatService` reads it to take a device's sends,
    confirms and reads straight to the shards from the device's own node, a hop and a
    turn less each (see `ChatService.send`)."""

    __slots__ = ("router", "beats", "routes")

    def __init__(self, router: Router, beats: dict[Pid, float]) -> None:
        self.router = router
        self.beats = beats
        self.routes: dict[Pid, tuple] = {}


class Session(GenServer):
    """See the module docstring. Spawned as `(hub, user, device, outlet)`."""

    __slots__ = ("hub", "user", "device", "outlet", "home", "attached", "refused", "siblings", "waiting")

    def init(self, hub: Hub, user: str, device: str, outlet: Pid) -> None:
        self.trap_exit = True
        self.hub = hub
        self.user = user
        self.device = device
        self.outlet = outlet
        self.home: Pid | None = None
        self.attached: tuple | None = None  # the shard's first answer (attaching again must not displace a newer session)
        self.refused: QuotaExceeded | None = None  # the device may not link: the session ends
        self.siblings = False  # the user has other devices linked: its messages are copied to them
        self.waiting: list[Any] | None = None  # callers of `attached`, until it is known
        hub.beats[self.pid] = self.now()
        self.continue_with(ATTACH)

    def handle_continue(self, arg: Any) -> Any:
        return self._attach()

    def terminate(self, reason: Any) -> None:
        self.hub.beats.pop(self.pid, None)
        self.hub.routes.pop(self.pid, None)

    def _publish(self) -> None:
        """Keep this session's entry of the node's route table (see `Hub`) as it is now:
        there while attached, gone while it is not."""
        if self.home is None:
            self.hub.routes.pop(self.pid, None)
        else:
            self.hub.routes[self.pid] = (self.user, self.device, self.home, self.siblings)

    # -- attaching to the home shard -------------------------------------------------------------

    async def _attach(self) -> None:
        router = self.hub.router
        shard = router.locate(self.user)
        try:
            if shard is None:
                raise NoProc(router.name_of(router.home(self.user)))
            info = await self.call(shard, ("attach", self.user, self.pid, self.outlet, self.device,
                                           self.attached is not None), router.config.call_timeout)
        except RETRYABLE:
            self.send_after(router.config.resend_after, self.pid, ATTACH)
            return
        if info in ("replaced", "unlinked"):  # connected again meanwhile, or dropped: this one is stale
            self._close(info)
            return
        if isinstance(info, QuotaExceeded):  # one device more than the user may link
            self.refused = info
            if self.waiting:
                self._answer_waiting(info)
                self._close(f"device limit: {info}")
            else:  # the caller of `attached` may be on its way: it hears why, then the session ends
                self.send_after(router.config.call_timeout, self.pid, REFUSED)
            return
        if isinstance(info, Exception):
            raise info  # the ring disagrees with itself: nothing a retry can fix
        self.home = shard  # it linked to us: its exit reaches us as an Exit
        self.siblings = info[2] > 1
        if self.attached is None:
            self.attached = info
        self._publish()
        self._answer_waiting(dict(zip(ATTACHED, self.attached)))

    def _answer_waiting(self, answer: Any) -> None:
        waiting, self.waiting = self.waiting, None
        for caller in waiting or ():
            self.reply(caller, answer)

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is Exit:
            reason = msg.reason
            if type(reason) is tuple and len(reason) == 2 and reason[0] == DISMISSED:
                return self._close(reason[1])  # replaced or unlinked: the device hears why
            if msg.pid == self.home:
                self.home = None
                self._publish()
                self.send_after(self.hub.router.config.resend_after, self.pid, ATTACH)
            return None  # anyone else's exit (a replaced shard link) is not ours to act on
        if msg == ATTACH:
            return self._attach() if self.home is None else None
        if msg == REFUSED:
            return self._close(f"device limit: {self.refused}")
        return super().handle_info(msg)

    def _close(self, reason: str) -> None:
        self.send(self.outlet, ("closed", reason))
        self.stop("normal")

    # -- the device's requests ------------------------------------------------------------------------

    def handle_call(self, request: Any, caller: Any) -> Any:
        config = self.hub.router.config
        try:
            kind = request[0] if type(request) is tuple and request else request
            if kind == "send":
                _, to, cid, payload, preview = request
                check_message(to, cid, payload, preview, config)
                if self.attached is None:  # a device sends once it is linked
                    raise Unavailable(f"this session of {self.user!r} is attaching to its chat shard; retry")
                store = ("store", self.user, to, cid, payload, preview, True) if self.siblings else \
                    ("store", self.user, to, cid, payload, preview)
                return self._forward(self.hub.router.locate(to), to, store, caller)
            if kind == "attached":
                if self.attached is not None:
                    return dict(zip(ATTACHED, self.attached))
                if self.refused is not None:  # answered, then the session ends
                    self._close(f"device limit: {self.refused}")
                    return self.refused
                waiting = self.waiting = self.waiting or []
                if len(waiting) >= MAX_WAITING:
                    raise Unavailable(f"{len(waiting)} callers already wait for this session to attach")
                waiting.append(caller)
                return NoReply
            if kind == "heartbeat":
                now = self.hub.beats[self.pid] = self.now()
                return now
            if kind == "read":
                ids = check_ids(request[1])
                return self._forward(self.home, self.user, ("read", self.user, ids), caller)
            if kind == "presence":
                if request[1] not in PRESENCE[:2]:
                    raise BadRequest(f"presence must be 'online' or 'away', got {request[1]!r:.40}")
                self._home_cast(("presence", self.user, request[1], self.pid))
            elif kind == "disconnect":
                self.stop("normal")
            elif kind in ("join", "leave", "say"):
                check_name("room", request[1], config)
                return self._room(request)
            else:
                raise BadRequest(f"a chat session does not understand {request!r:.80}")
        except (BadRequest, Unavailable) as exc:
            return exc
        except (TypeError, ValueError) as exc:
            return BadRequest(f"bad chat request {request!r:.80}: {exc}")
        return "ok"

    def _forward(self, shard: Pid | None, user: str, request: tuple, caller: Any) -> Any:
        """Hand `request` to `user`'s shard, which answers the device itself."""
        if shard is None:
            return Unavailable(f"the chat shard of {user!r} is not running, or this session "
                               f"is attaching to it; retry")
        self.node.forward(shard, request, caller)
        return NoReply

    def _home_cast(self, msg: tuple) -> None:
        # Not attached (its shard is restarting): dropped; unconfirmed items come again.
        if self.home is not None:
            self.cast(self.home, msg)

    async def _room(self, request: tuple) -> Any:
        router = self.hub.router
        try:
            if request[0] == "join":
                return await join_room(self, router, request[1], self.user)
            return await room_request(self, router, request[1], (request[0], self.user, *request[2:]))
        except RETRYABLE as exc:
            return Unavailable(f"room {request[1]!r} did not answer: {exc}")

    # -- what the shards, rooms and the heartbeat checker send ---------------------------------------------

    def handle_cast(self, msg: Any) -> None:
        kind = msg[0]
        if kind == "confirm":
            try:
                self._home_cast(("confirm", self.user, self.device, check_seq(msg[1])))
            except BadRequest as exc:  # a cast has no one to answer (ChatService.confirm checks)
                log.warning("chat session of %r dropped a confirm: %s", self.user, exc)
        elif kind == "room":
            self.send(self.outlet, msg)
        elif kind == "close":
            self._close(msg[1])
        elif kind == "devices":  # another device was linked: copy from now on. Never lowered
            self.siblings |= msg[1] > 1  # here: such casts may come out of order, and the user's
            # shard drops the copy of one left alone
            if self.home is not None:
                self._publish()
        else:
            GenServer.handle_info(self, msg)  # logged and dropped, as OTP does
