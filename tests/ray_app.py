"""The application the Ray cluster tests start on every node host (`start`): an echo that
says which incarnation answers, where a key is placed as the node sees the cluster, and
chats for the tests; a supervised tally kept in the node's LMDB store; and the cluster's
chat (`apps.cluster.chat`). Stores live under $LETITCRASH_DATA/NODE."""
from __future__ import annotations

from typing import Any

from actors import ActorError, GenServer, Node, Pid
from actors.placement import node_for
from apps.chat import ChatError, ChatService
from apps.cluster import chat
from storage import PersistentServer, Store
from supervision import ChildSpec, Flags, Supervisor


class Phone(GenServer):
    """A device: takes its items in seq order, confirms them, keeps their message ids."""

    def init(self, service: ChatService) -> None:
        self.service = service
        self.session: Pid | None = None
        self.last = 0
        self.taken: list[int] = []

    def handle_cast(self, msg: Any) -> None:
        self.session = msg[1]  # ("session", pid)

    def handle_call(self, request: Any, caller: Any) -> list[int]:
        return self.taken

    def handle_info(self, frame: Any) -> None:
        if frame[0] != "items" or self.session is None:
            return
        for seq, kind, msg_id, *_ in frame[1]:
            if seq == self.last + 1:
                self.last = seq
                if kind == "m":
                    self.taken.append(msg_id)
        self.service.confirm(self, self.session, self.last)


class Echo(GenServer):
    """Answers what the tests ask of its node."""

    def init(self, service: ChatService) -> None:
        self.service = service
        self.phones: dict[str, list[Pid]] = {}  # user -> [phone, session]

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "who":
            return [self.node.name, self.node.creation]
        if request == "nodes":
            return self.node.nodes()
        if request[0] == "place":
            return node_for(self.node, request[1])
        try:
            if request[0] == "chat_send":  # ("chat_send", user, to, client id, text): the message id, or "retry"
                _, user, to, cid, text = request
                return await self.service.send(self, await self.session(user), to, cid, text.encode(), text)
            if request[0] == "chat_taken":  # ("chat_taken", user): the message ids its phone took
                await self.session(request[1])
                return await self.call(self.phones[request[1]][0], "taken")
        except (ChatError, ActorError):
            return "retry"
        return ValueError(f"no such request {request!r}")

    async def session(self, user: str) -> Pid:
        if user not in self.phones or not self.node.is_alive(self.phones[user][1]):
            phone = self.phones[user][0] if user in self.phones else self.node.spawn(Phone, self.service)
            session = await self.service.connect(self, user, "phone", phone)
            self.cast(phone, ("session", session))
            self.phones[user] = [phone, session]
        return self.phones[user][1]


class Tally(PersistentServer):
    """A count kept in LMDB: each call adds to it and answers the total, once stored."""

    def init(self, store: Store, key: Any) -> None:
        super().init(store, key)
        self.node.register("tally", self.pid)

    def initial_state(self) -> dict:
        return {"n": 0}

    def handle_call(self, delta: int, caller: Any) -> int:
        self.state["n"] += delta
        return self.state["n"]


def start(node: Node) -> None:
    service = chat.start(node)
    node.spawn(Supervisor, [ChildSpec("tally", Tally, args=(service.store, "tally"))],
               Flags(max_restarts=10, max_seconds=5))
    node.register("echo", node.spawn(Echo, service))


def broken(node: Node) -> None:
    raise ValueError("this application is misconfigured")
