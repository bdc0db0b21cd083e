"""What crosses the chat service's edge, and the checks on it.

Frames a device's `outlet` gets (a TCP server writes them to the socket): items and
presence straight from the user's home shard, the others from its session. They are
shared with the server, read-only:

- `("items", items, acked)`: pending-store items in order (see `apps.chat.store`). The
  device takes item `seq` only if it is the one after the last it took (a gap waits for
  the resend) and confirms cumulatively; items it already took come again only when its
  confirmation was lost, so it confirms again. `acked` is what is already confirmed, so
  a new device starts from there.
- `("presence", user, status, last_seen)`: a contact went online, away or offline.
- `("room", room, user, text)`: said in a room the device joined.
- `("closed", reason)`: the session ended ("replaced", "heartbeat timeout").

Every check raises `BadRequest` naming the field and what was expected.
"""
from __future__ import annotations

from typing import Any

from .config import ChatConfig
from .errors import BadRequest

PRESENCE = ("online", "away", "offline")
MAX_READ_IDS = 1_000


def check_name(what: str, value: Any, config: ChatConfig) -> str:
    """A user id, device name or room name: a non-empty str of at most max_id_len chars."""
    if type(value) is not str or not value:
        raise BadRequest(f"{what} must be a non-empty str, got {value!r:.80}")
    if len(value) > config.max_id_len:
        raise BadRequest(f"{what} is {len(value)} characters; the limit is {config.max_id_len}")
    return value


def check_client_id(value: Any, config: ChatConfig) -> str | int:
    """A client message id: a str (as check_name) or an int >= 0."""
    if type(value) is int:
        if not 0 <= value < 1 << 63:
            raise BadRequest(f"client message id must be in [0, 2**63), got {value}")
        return value
    return check_name("client message id", value, config)


def check_message(to: Any, cid: Any, payload: Any, preview: Any, config: ChatConfig) -> None:
    check_name("recipient", to, config)
    check_client_id(cid, config)
    if type(payload) is not bytes:
        raise BadRequest(f"payload must be bytes (opaque to the server), got {type(payload).__name__}")
    if len(payload) > config.max_payload:
        raise BadRequest(f"payload is {len(payload)} bytes; the limit is {config.max_payload}")
    if type(preview) is not str:
        raise BadRequest(f"preview must be a str, got {type(preview).__name__}")


def check_seq(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise BadRequest(f"confirm needs an item seq (an int >= 0), got {value!r:.80}")
    return value


def check_ids(ids: Any) -> list[int]:
    if type(ids) not in (list, tuple) or len(ids) > MAX_READ_IDS:
        raise BadRequest(f"read needs a list of at most {MAX_READ_IDS} message ids, got {ids!r:.80}")
    for msg_id in ids:
        if type(msg_id) is not int or msg_id < 0:
            raise BadRequest(f"message ids are ints >= 0, got {msg_id!r:.80}")
    return list(ids)


def check_contacts(user: str, contacts: Any, config: ChatConfig) -> list[str]:
    if type(contacts) not in (list, tuple):
        raise BadRequest(f"contacts must be a list of user ids, got {type(contacts).__name__}")
    if len(contacts) > config.max_contacts:
        raise BadRequest(f"{len(contacts)} contacts; the limit is {config.max_contacts}")
    out: list[str] = []
    seen: set[str] = set()  # membership only
    for contact in contacts:
        check_name("contact", contact, config)
        if contact != user and contact not in seen:
            seen.add(contact)
            out.append(contact)
    return out


def push_record(sender: str, preview: str, config: ChatConfig) -> list[str]:
    """[title, body] of the push notification for an offline recipient. The payload is
    opaque: the body is the sender's client-chosen preview, cut to `push_body` chars."""
    return [f"Message from {sender}", preview[:config.push_body]]
