"""An aiohttp chat server: a websocket per connected user, and each user a process.

    LETITCRASH_DATA=/tmp/chat python examples/aiohttp_chat.py --port 8081
    curl 'localhost:8081/presence/bob?viewer=bob'      # {"user": "bob", "status": "offline", ...}

A client opens `ws://localhost:8081/ws/<user>` and speaks JSON:

    -> {"to": "bob", "text": "hi", "id": "c1"}         send (`id`: the client's id, a retry is stored once)
    <- {"sent": "c1", "msg": 4194305}                   stored: bob gets it now or when he connects
    <- {"from": "bob", "text": "hello", "msg": 7}       a message for this user
    -> {"read": [7]}                                     bob is told it was read
    -> {"contacts": ["bob"]}                            bob may see this user's presence
    <- {"receipt": 4194305, "status": "delivered"}     then "read"
    <- {"error": "...", "status": 503, "id": "c1"}     a request that failed, as HTTP statuses say

This is the chat case study (`apps.chat.ChatService`: sessions, shards storing every
message in LMDB before it is acknowledged, receipts, presence) on a node inside aiohttp's
event loop. Each connected user is a `WebUser` process under a supervisor: the device of
the user's chat session. It takes the session's items in order and confirms them, turns
them into frames for its websocket, sends the user's messages one at a time, and keeps
the session alive with heartbeats. The websocket handler only carries frames between the
socket and the process. When the socket closes, the process stops and the session ends;
when the process stops (the session was replaced by a newer connection, the frames
queued for a slow reader passed MAX_OUTBOX, a crash), the socket closes. Messages for a
user who is not connected wait in LMDB. `/presence/<user>?viewer=<who>` answers as the
chat does: only to a viewer the user lists as a contact (else 403). There is no
authentication: put yours in front (the TCP server in `apps/server` shows a
challenge-response). SIGTERM: the websockets
close (1001, going away), the node stops, the store closes, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import weakref
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from actors import GenServer
from apps.chat import BadRequest, ChatService, Forbidden, Overloaded, RateLimited, Unavailable
from apps.chat.protocol import check_name
from apps.common import RETRYABLE
from apps.embed import HttpErrors, Runtime
from apps.embed.aio import embedded, setup
from supervision import (
    ChildError,
    ChildSpec,
    DynamicFlags,
    DynamicSupervisor,
    start_child,
    terminate_child,
)

USERS = "web.users"  # the supervisor of the WebUser processes
MAX_USERS = 10_000
MAX_OUTBOX = 1_000  # frames queued for a websocket; a reader that slow is cut off
MAX_MAILBOX = 1_000  # client frames a WebUser has not handled yet; more crash it
MAX_FRAME = 16 * 1024  # bytes of one client frame
BEAT = ("$beat",)
RECEIPTS = {2: "delivered", 3: "read"}
ERRORS = HttpErrors({BadRequest: 400, Forbidden: 403, Unavailable: 503, Overloaded: 503, RateLimited: 429})
SOCKETS = web.AppKey("sockets", weakref.WeakSet)


class WebChat(ChatService):
    """The chat tree, and a supervisor for the connected users' processes."""

    def children(self) -> list[ChildSpec]:
        return [*super().children(),
                ChildSpec("users", DynamicSupervisor, args=(DynamicFlags(max_children=MAX_USERS),),
                          options={"name": USERS})]


class WebUser(GenServer):
    """One connected user: see the module docstring. Spawned as `(chat, user, outbox)`;
    `outbox` is the asyncio queue of frames its websocket handler writes, None to close."""

    def init(self, chat: ChatService, user: str, outbox: asyncio.Queue) -> None:
        self.trap_exit = True  # a supervisor's shutdown runs terminate: the session ends
        self.chat, self.user, self.outbox = chat, user, outbox
        self.session = None
        self.taken: int | None = None  # seq of the last item taken from the session
        self.continue_with("connect")

    async def handle_continue(self, _: Any) -> None:
        try:
            self.session = await self.chat.connect(self, self.user, "web", self.pid)
        except ERRORS.types as exc:
            self.refuse(exc)
            self.stop("normal")
            return
        self.send_after(self.chat.config.heartbeat_timeout / 3, self.pid, BEAT)

    async def handle_cast(self, frame: dict) -> None:
        """A frame from the client (the handler checked it is a JSON object)."""
        try:
            if "read" in frame:
                await self.chat.read(self, self.session, frame["read"])
            elif "contacts" in frame:
                await self.chat.set_contacts(self, self.user, frame["contacts"])
            else:
                cid = frame.get("id")
                text = frame.get("text")
                if type(text) is not str:
                    raise BadRequest(f"text must be a str, got {type(text).__name__}")
                msg_id = await self.chat.send(self, self.session, frame.get("to"), cid,
                                              text.encode(), text)
                self.push({"sent": cid, "msg": msg_id})
        except ERRORS.types as exc:
            self.refuse(exc, frame.get("id"))

    async def handle_info(self, msg: Any) -> None:
        if msg == BEAT:
            try:
                await self.chat.heartbeat(self, self.session)
            except RETRYABLE:
                pass  # the next one may get through; the session closes if none does
            self.send_after(self.chat.config.heartbeat_timeout / 3, self.pid, BEAT)
        elif type(msg) is tuple and msg[0] == "items":
            self.take(msg[1], msg[2])
        elif type(msg) is tuple and msg[0] == "presence":
            self.push({"presence": msg[1], "status": msg[2]})
        elif type(msg) is tuple and msg[0] == "closed":
            self.push({"closed": msg[1]})
            self.stop("normal")
        else:
            super().handle_info(msg)

    def take(self, items: list, acked: int) -> None:
        """Take the items after the last one taken, in order (a gap waits for the resend),
        then confirm them: a lost confirmation heals itself, the items come again."""
        if self.taken is None or acked > self.taken:
            self.taken = acked
        took = False
        for seq, kind, msg_id, who, body in items:
            if seq == self.taken + 1:
                self.taken = seq
                self.push({"from": who, "text": body.decode("utf-8", "replace"), "msg": msg_id}
                          if kind == "m" else {"receipt": msg_id, "status": RECEIPTS[who]})
            took |= seq <= self.taken
        if took:
            self.chat.confirm(self, self.session, self.taken)

    def refuse(self, exc: BaseException, cid: Any = None) -> None:
        failure = ERRORS.answer(exc)
        self.push({"error": failure.message, "status": failure.status, "id": cid})

    def push(self, frame: dict) -> None:
        if self.outbox.qsize() >= MAX_OUTBOX:
            self.stop("slow reader")
        self.outbox.put_nowait(frame)

    async def terminate(self, reason: Any) -> None:
        self.outbox.put_nowait(None)  # the handler closes the socket
        if self.session is not None:
            try:
                await self.chat.disconnect(self, self.session)
            except RETRYABLE:
                pass  # gone already


USER_SPEC = ChildSpec("user", WebUser, restart="temporary", options={"mailbox_limit": MAX_MAILBOX})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Carry frames between the socket and the user's process (see the module docstring)."""
    node, chat = embedded(request).node, embedded(request).service
    user = check_name("user", request.match_info["user"], chat.config)  # BadRequest: a 400
    outbox: asyncio.Queue = asyncio.Queue()
    pid = await start_child(node, USERS, USER_SPEC, chat, user, outbox)  # before the upgrade:
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME)                   # a failure is a status
    writer = None
    try:
        await ws.prepare(request)
        request.app[SOCKETS].add(ws)
        writer = asyncio.create_task(write_frames(ws, outbox))
        async for msg in ws:
            try:
                frame = json.loads(msg.data) if msg.type == WSMsgType.TEXT else None
            except json.JSONDecodeError:
                frame = None
            if isinstance(frame, dict):
                node.cast(pid, frame)
            else:
                outbox.put_nowait({"error": "frames are JSON objects", "status": 400})
    finally:
        try:
            await terminate_child(node, USERS, pid)
        except ChildError:
            pass  # it stopped first
        if writer is not None:
            await writer
    return ws


async def write_frames(ws: web.WebSocketResponse, outbox: asyncio.Queue) -> None:
    """Write the process's frames in order; close the socket after the last."""
    while (frame := await outbox.get()) is not None:
        try:
            await ws.send_json(frame)
        except ConnectionError:
            pass  # the client went away: the handler stops the process, which ends this
    await ws.close()


async def presence(request: web.Request) -> web.Response:
    chat = embedded(request).service
    user = request.match_info["user"]
    status, last_seen = await chat.presence(embedded(request).node, user, viewer=request.query.get("viewer", ""))
    return web.json_response({"user": user, "status": status, "last_seen": last_seen})


async def close_sockets(app: web.Application) -> None:
    """On shutdown, before the handlers are waited for: every websocket goes away."""
    for ws in list(app[SOCKETS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def make_app(data: str) -> web.Application:
    app = web.Application()
    app[SOCKETS] = weakref.WeakSet()
    setup(app, Runtime(lambda node, store: WebChat(node, store), data), ERRORS)
    app.on_shutdown.append(close_sockets)
    app.add_routes([web.get("/ws/{user}", websocket), web.get("/presence/{user}", presence)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = make_app(os.environ.get("LETITCRASH_DATA", "chat-data"))
    sock = socket.create_server((args.host, args.port))  # bound here to print the port picked
    print(f"listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    web.run_app(app, sock=sock, print=None, shutdown_timeout=10.0)
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
