"""A FastAPI service whose state lives in supervised, persistent letitcrash processes.

    LETITCRASH_DATA=/tmp/app uvicorn --app-dir examples fastapi_app:app --port 8080
    curl -X POST localhost:8080/counters/visits                # {"name": "visits", "value": 1}
    curl -X POST 'localhost:8080/counters/visits?delta=5'      # {"name": "visits", "value": 6}
    curl localhost:8080/counters/visits                        # {"name": "visits", "value": 6}
    curl -X POST localhost:8080/crash                          # 500; the supervisor restarts it
    curl -X POST localhost:8080/rooms/lobby -H 'Content-Type: application/json' \\
         -d '{"user": "ann", "text": "hello"}'                 # {"seq": 1}
    curl 'localhost:8080/rooms/lobby?after=1&wait=20'          # waits for the next message

The counters are one `PersistentServer` under the app's supervisor; each chat room is an
activated entity (`Entities`): a process started on its first message with its stored
messages, stopped when idle. The LMDB store is in mode "sync": a 200 answer to a POST
means the change is on disk. A room's reader may wait (long polling): the room answers
it when a message comes or the wait is over, so a server stopping with SIGTERM first
answers the readers waiting. Each uvicorn worker runs its own node on its own store
(`store_per_process`): `--workers 2` gives two independent services, so keep one worker
when every client must see the same counters.
"""
from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, Field

from actors import NoReply
from apps.embed import Embedded, Runtime
from apps.embed.asgi import embedded, exception_handlers, lifespan
from storage import Entities, PersistentServer, entity_call
from supervision import ChildSpec

MAX_COUNTERS = 1000
MAX_DELTA = 10**9
KEPT = 100  # newest messages a room keeps
MAX_READERS = 1000  # readers waiting on one room; more are answered at once
MAX_WAIT = 30.0  # seconds a reader may wait, below the rooms' idle time
ROOM_IDLE = 60.0  # seconds without a message before a room's process stops
NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class Counters(PersistentServer):
    """Named counters, `{name: count}`, saved after every turn that changed them."""

    def initial_state(self) -> dict:
        return {}

    def handle_call(self, request: tuple, caller: Any) -> int | None:
        """("get", name): the count or None; ("add", name, delta): the new count, or None
        when a new name would pass MAX_COUNTERS; ("crash",): let it crash."""
        if request[0] == "get":
            return self.state.get(request[1])
        if request[0] == "add":
            _, name, delta = request
            if name not in self.state and len(self.state) >= MAX_COUNTERS:
                return None
            self.state[name] = self.state.get(name, 0) + delta
            return self.state[name]
        if request[0] == "crash":
            raise RuntimeError("crash requested over HTTP")
        raise ValueError(f"unknown request {request!r:.100}")


class Room(PersistentServer):
    """A chat room: its newest KEPT messages `[seq, user, text]`, stored; the readers
    waiting for a message after theirs are held in memory (a reply owed to each)."""

    def init(self, store: Any, key: Any) -> None:
        super().init(store, key)
        self.readers: dict[Any, int] = {}  # caller -> the seq it has

    def initial_state(self) -> dict:
        return {"seq": 0, "messages": []}

    def handle_call(self, request: tuple, caller: Any) -> Any:
        """("post", user, text): the message's seq; ("read", after, wait): the messages
        after seq `after`, waiting up to `wait` seconds for one if there are none yet."""
        if request[0] == "post":
            _, user, text = request
            seq = self.state["seq"] = self.state["seq"] + 1
            self.state["messages"] = [*self.state["messages"][1 - KEPT:], [seq, user, text]]
            for reader, after in self.readers.items():
                self.reply(reader, self.after(after))
            self.readers.clear()
            return seq
        _, after, wait = request
        if self.after(after)["messages"] or wait <= 0 or len(self.readers) >= MAX_READERS:
            return self.after(after)
        self.readers[caller] = after
        self.send_after(wait, self.pid, ("give up", caller))
        return NoReply

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and msg[0] == "give up" and msg[1] in self.readers:
            self.reply(msg[1], self.after(self.readers.pop(msg[1])))
        else:
            super().handle_info(msg)

    def after(self, seq: int) -> dict:
        messages = [{"seq": s, "user": u, "text": t} for s, u, t in self.state["messages"] if s > seq]
        return {"messages": messages, "readers": len(self.readers)}


def tree(node: Any, store: Any) -> list[ChildSpec]:
    """The app's supervision tree, started once the store is open."""
    return [ChildSpec("counters", Counters, args=(store, "counters"), options={"name": "counters"}),
            ChildSpec("rooms", Entities, args=(store, Room, ROOM_IDLE), options={"name": "rooms"})]


runtime = Runtime(tree, os.environ.get("LETITCRASH_DATA", "fastapi-data"), store_per_process=True)
app = FastAPI(lifespan=lifespan(runtime), exception_handlers=exception_handlers())
Node = Annotated[Embedded, Depends(embedded)]
Name = Annotated[str, Path(pattern=NAME)]


class Post(BaseModel):
    user: str = Field(pattern=NAME)
    text: str = Field(min_length=1, max_length=500)


@app.get("/counters/{name}")
async def read_counter(name: Name, embedded: Node) -> dict:
    value = await embedded.node.call("counters", ("get", name))
    if value is None:
        raise HTTPException(404, f"no counter {name!r}")
    return {"name": name, "value": value}


@app.post("/counters/{name}")
async def add_to_counter(name: Name, embedded: Node,
                         delta: Annotated[int, Query(ge=-MAX_DELTA, le=MAX_DELTA)] = 1) -> dict:
    value = await embedded.node.call("counters", ("add", name, delta))
    if value is None:
        raise HTTPException(507, f"at the limit of {MAX_COUNTERS} counters")
    return {"name": name, "value": value}


@app.post("/crash")
async def crash(embedded: Node) -> None:
    await embedded.node.call("counters", ("crash",))  # raises CallExit: a 500, then a restart


@app.post("/rooms/{room}")
async def post_message(room: Name, post: Post, embedded: Node) -> dict:
    seq = await entity_call(embedded.node, "rooms", ("room", room), ("post", post.user, post.text))
    return {"seq": seq}


@app.get("/rooms/{room}")
async def read_messages(room: Name, embedded: Node, after: Annotated[int, Query(ge=0)] = 0,
                        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0) -> dict:
    return await entity_call(embedded.node, "rooms", ("room", room), ("read", after, wait),
                             timeout=wait + 5.0)
