"""Errors the photo service answers with; the client API raises them."""
from __future__ import annotations

from .image import BadImage


class PhotoError(Exception):
    """Base class of every photo error (but `BadImage`, a ValueError of `image`)."""


class BadRequest(PhotoError, ValueError):
    """The request is wrong (a bad user or photo id, a caption too long...); nothing was
    stored and a retry cannot help."""


class PhotoTooLarge(BadRequest):
    """The upload is over the size limit (10 MB); nothing was stored."""


class PhotoExists(BadRequest):
    """A photo with this id was uploaded before with other bytes; it is kept as it was."""


class UnknownPhoto(PhotoError, LookupError):
    """No photo has this id (or the thumbnail asked for is not made yet)."""


class Unavailable(PhotoError):
    """A process the request needs cannot be reached now; retry (an upload with the same
    id and bytes is stored once)."""


__all__ = ["BadImage", "BadRequest", "PhotoError", "PhotoExists", "PhotoTooLarge", "UnknownPhoto", "Unavailable"]
