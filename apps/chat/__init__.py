"""WhatsApp-style chat: a session process per connected device, users on chat shards by
consistent hashing, a pending store in LMDB, receipts, presence, heartbeats, rooms.

Modules: `service` (ChatService, the API and the supervision tree), `session`, `shard`,
`store` (the shard's stored records and their pure transitions), `receipts`, `router`, `rooms`,
`protocol` (frames and input checks), `config`, `errors`, `sim` (the simulated system).
"""
from .config import ChatConfig
from .errors import BadRequest, ChatError, Forbidden, Overloaded, QuotaExceeded, RateLimited, Unavailable
from .receipts import DELIVERED, READ, SENT
from .service import ChatService

__all__ = ["BadRequest", "ChatConfig", "ChatError", "ChatService", "DELIVERED", "Forbidden", "Overloaded",
           "QuotaExceeded", "READ", "RateLimited", "SENT", "Unavailable"]
