"""The chat server: the actor runtime embedded in a real TCP server.

One real-time node runs the chat and timeline applications; every accepted connection is
a supervised process that owns its socket (`connection`). Modules: `server` (ChatServer
and `letitcrash serve`), `connection`, `protocol` (length-prefixed msgpack frames, shared
with the client), `auth` (tokens and challenge-response), `client` (the asyncio client
library), `terminal` (`letitcrash chat`). The wire protocol is in `docs/protocol.md`.
"""
from .auth import load_secret, token_for
from .client import (Client, Closed, ConnectionClosed, Event, Message, Presence, Read, Receipt,
                     Sent, ServerError, Tweet)
from .connection import Limits
from .server import ChatServer

__all__ = ["ChatServer", "Client", "Closed", "ConnectionClosed", "Event", "Limits", "Message",
           "Presence", "Read", "Receipt", "Sent", "ServerError", "Tweet", "load_secret", "token_for"]
