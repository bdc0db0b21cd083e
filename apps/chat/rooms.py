"""Rooms for live-stream chat: join, leave, say to everyone in the room.

A room is a process registered as `chat.room.<name>` on the node the ring gives the room,
started by the first join under that node's `chat.rooms` DynamicSupervisor and stopped
when its last member leaves. Members are sessions (monitored: a closed session leaves).
Nothing is stored: live chat is for whoever is there. Limits: `room_max_chars` per message,
`room_max_members`, and a token bucket per member (`room_rate` messages per second,
`room_burst` at once), on node time.
"""
from __future__ import annotations

from typing import Any

from actors import AlreadyRegistered, CallExit, Down, GenServer, NoProc, Pid, Process
from supervision import ChildSpec, StartChildError, start_child

from .config import ChatConfig
from .errors import BadRequest, Overloaded, RateLimited, Unavailable

ROOMS_SUP = "chat.rooms"


def room_name(room: str) -> str:
    return f"chat.room.{room}"


class Room(GenServer):
    """One live-chat room; see the module docstring. Spawned as `(room, config)`."""

    def init(self, room: str, config: ChatConfig) -> None:
        self.register(room_name(room))  # a room of that name already runs: AlreadyRegistered
        self.room = room
        self.config = config
        self.members: dict[str, list] = {}  # user -> [session, monitor ref]
        self.buckets: dict[str, list[float]] = {}  # user -> [tokens, when]

    def handle_call(self, request: Any, caller: Any) -> Any:
        kind, user = request[0], request[1]
        if kind == "join":
            return self._join(user, request[2])
        if user not in self.members:
            return BadRequest(f"{user!r} is not in room {self.room!r}; join first")
        if kind == "leave":
            self._leave(user)
            return "ok"
        if kind == "say":
            return self._say(user, request[2])
        return BadRequest(f"room {self.room!r} does not understand {request!r:.80}")

    def _join(self, user: str, session: Pid) -> int:
        entry = self.members.get(user)
        if entry is not None and entry[0] == session:
            return len(self.members)
        if entry is None and len(self.members) >= self.config.room_max_members:
            return Overloaded(f"room {self.room!r} is full ({self.config.room_max_members} members)")
        if entry is not None:  # the user's new session takes the place of the old one
            self.demonitor(entry[1], flush=True)
        self.members[user] = [session, self.monitor(session)]
        self.buckets[user] = [float(self.config.room_burst), self.now()]
        return len(self.members)

    def _leave(self, user: str) -> None:
        session, ref = self.members.pop(user)
        self.demonitor(ref, flush=True)
        del self.buckets[user]
        if not self.members:
            self.stop("normal")

    def _say(self, user: str, text: Any) -> Any:
        if type(text) is not str or not text:
            return BadRequest(f"a room message must be a non-empty str, got {text!r:.40}")
        if len(text) > self.config.room_max_chars:
            return BadRequest(f"a room message is at most {self.config.room_max_chars} characters, "
                              f"this one has {len(text)}")
        bucket = self.buckets[user]
        now = self.now()
        tokens = min(float(self.config.room_burst), bucket[0] + (now - bucket[1]) * self.config.room_rate)
        if tokens < 1.0:
            return RateLimited(f"{user!r} may say {self.config.room_rate:g} messages per second in "
                               f"room {self.room!r} (burst {self.config.room_burst}); wait")
        bucket[0], bucket[1] = tokens - 1.0, now
        frame = ("room", self.room, user, text)
        for session, _ in self.members.values():
            self.cast(session, frame)
        return len(self.members)

    def handle_info(self, msg: Any) -> None:
        if type(msg) is Down:
            for user, (_, ref) in self.members.items():
                if ref == msg.ref:
                    del self.members[user], self.buckets[user]
                    break
            if not self.members:
                self.stop("normal")
        else:
            super().handle_info(msg)


ROOM_SPEC = ChildSpec("room", Room, restart="temporary")


async def join_room(proc: Process, router: Any, room: str, user: str) -> Any:
    """Join `room` (starting it if needed) as `proc`, a session. Returns the member count."""
    node_name = router.room_node(room)
    timeout = router.config.call_timeout
    for _ in range(3):  # a room that stops as we join, or two joiners starting it at once
        pid = router.resolve(node_name, room_name(room))
        if pid is None:
            sup = router.resolve(node_name, ROOMS_SUP)
            if sup is None:
                return Unavailable(f"no room supervisor on {node_name}")
            try:
                pid = await start_child(proc, sup, ROOM_SPEC, room, router.config, timeout=timeout)
            except StartChildError as exc:
                if isinstance(exc.reason, AlreadyRegistered):
                    continue
                raise
        try:
            return await proc.call(pid, ("join", user, proc.pid), timeout)
        except (CallExit, NoProc):
            continue
    return Unavailable(f"room {room!r} kept stopping while {user!r} joined")


async def room_request(proc: Process, router: Any, room: str, request: tuple) -> Any:
    """Send `leave` or `say` to a running room."""
    pid = router.resolve(router.room_node(room), room_name(room))
    if pid is None:
        return BadRequest(f"room {room!r} is not running; join it first")
    return await proc.call(pid, request, router.config.call_timeout)
