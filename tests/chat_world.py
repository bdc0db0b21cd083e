"""A chat service on the deterministic driver with a real LMDB store, and devices that
keep their frames: what the chat tests share."""
from __future__ import annotations

from actors import GenServer, Node
from apps.chat import ChatConfig, ChatService
from storage import Store


class Device(GenServer):
    """A device's end of a session: keeps every frame; takes items in seq order only."""

    def init(self, frames: list) -> None:
        self.frames = frames
        self.last = 0
        self.took: list[list] = []

    def handle_info(self, msg):
        self.frames.append(msg)
        if msg[0] == "items":
            self.last = max(self.last, msg[2])
            for item in msg[1]:
                if item[0] == self.last + 1:
                    self.last = item[0]
                    self.took.append(item)


class World:
    """A node running the chat service (4 shards unless `config` says) on a store at
    `path` (`store_options`: more Store arguments)."""

    def __init__(self, path, seed=1, store_options=None, **config):
        self.path = path
        self.store_options = store_options or {}
        self.config = ChatConfig(**{"shards": 4, **config})
        self.boot(seed)

    def boot(self, seed=1, creation=0):
        self.node = Node(seed=seed, creation=creation)
        self.store = Store(self.path, self.node, mode="process", **self.store_options)
        self.svc = ChatService(self.node, self.store, self.config)
        self.svc.start()

    def run(self, fut):
        return self.node.run_until_complete(fut)

    def device(self):
        frames: list = []
        pid = self.node.spawn(Device, frames)
        return pid, frames

    def connect(self, user, device="phone"):
        pid, frames = self.device()
        return self.run(self.svc.connect(self.node, user, device, pid)), pid, frames

    def took(self, device_pid):
        return self.node.get_process(device_pid).took

    def confirm_all(self, session, device_pid):
        self.run(self.svc.confirm(self.node, session, self.node.get_process(device_pid).last))
        self.node.run_for(0.01)

    def restart(self, seed=2):
        self.store.close()
        self.boot(seed, creation=1)
