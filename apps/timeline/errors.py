"""Errors the timeline service answers with; the client API raises them."""
from __future__ import annotations


class TimelineError(Exception):
    """Base class of every timeline error."""


class BadRequest(TimelineError, ValueError):
    """The request is wrong (a tweet over 280 characters, a bad user id...); nothing was
    stored and a retry cannot help."""


class Unavailable(TimelineError):
    """A process the request needs cannot be reached now; retry (a post with the same
    client id is stored once)."""
