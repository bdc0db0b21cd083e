"""Write-once blobs in the store: uploaded chunks, rendition segments, thumbnails.

Each blob is an activated entity (`storage.Entities`, keys such as `("chunk", video, n)`
or `("seg", video, rendition, i)`) whose stored state is its bytes and crc32. A `put`
answers once the bytes are committed; putting the same bytes again is a no-op, and
putting different bytes under a stored key is refused, so nothing stored is ever lost.
"""
from __future__ import annotations

import zlib
from typing import Any

from storage import PersistentServer

MAX_BLOB = 4 << 20  # bytes in one blob


class BlobError(ValueError):
    """A put that would overwrite other bytes, or a get of a blob never stored."""


class Blob(PersistentServer):
    """Calls: `("put", data)` -> crc32, `("get",)` -> bytes."""

    def initial_state(self) -> dict[str, Any]:
        return {"data": None, "crc": None}

    def handle_call(self, request: tuple, caller: Any) -> Any:
        s = self.state
        if request[0] == "put":
            data = request[1]
            if type(data) is not bytes or len(data) > MAX_BLOB:
                return BlobError(f"blob {self.key!r}: data must be bytes of at most {MAX_BLOB}, "
                                 f"got {type(data).__name__} of {len(data) if isinstance(data, bytes) else '?'}")
            if s["data"] is not None:
                if s["data"] != data:
                    return BlobError(f"blob {self.key!r} is stored with other bytes (crc {s['crc']}); not overwritten")
                return s["crc"]
            s["data"], s["crc"] = data, zlib.crc32(data)
            return s["crc"]
        if request[0] == "get":
            if s["data"] is None:
                return BlobError(f"no blob {self.key!r}")
            return s["data"]
        return ValueError(f"blob {self.key!r}: unknown request {request!r:.200}")
