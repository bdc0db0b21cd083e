"""Errors the chat service answers with. A server never crashes on a bad request: it
replies with one of these, and the client API raises it."""
from __future__ import annotations


class ChatError(Exception):
    """Base class of every chat error."""


class BadRequest(ChatError, ValueError):
    """The request itself is wrong (a bad user id, an oversized payload...); retrying it
    cannot help. Nothing was stored."""


class Unavailable(ChatError):
    """The shard or room that must handle the request cannot be reached now; retry later.
    Nothing was acknowledged, so a retry (same client id) is safe."""


class Overloaded(ChatError):
    """A limit was reached (a recipient's pending queue, a room's members); retry later."""


class QuotaExceeded(Overloaded):
    """The sender's own quota was reached (its undelivered bytes, or the offline users it
    is waiting for); retry once some are delivered."""


class Forbidden(ChatError):
    """The user may not do this (see another user's presence without being its contact);
    retrying cannot help."""


class RateLimited(ChatError):
    """The sender said too much in a room too quickly."""
