"""Errors the playlist service answers with; the client API raises them."""
from __future__ import annotations


class PlaylistError(Exception):
    """Base class of every playlist error."""


class BadRequest(PlaylistError, ValueError):
    """The request is wrong (a bad track id, a name too long, an update that is not a
    playlist edit...); nothing was stored and a retry cannot help."""


class UnknownPlaylist(PlaylistError, LookupError):
    """No playlist has this id (its home node says so); create it first."""


class Unavailable(PlaylistError):
    """A process the request needs cannot be reached now; retry. A device keeps its
    edits and sends them again with its next sync."""
