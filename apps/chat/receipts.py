"""Message receipts: sent -> delivered -> read, only ever forward.

`sent` is the acknowledgement of a send (the message is stored); `delivered` when the
recipient's device confirms it; `read` when the recipient reads it. A read before the
delivery confirmation implies delivery, so the later `delivered` changes nothing.
"""
from __future__ import annotations

SENT, DELIVERED, READ = 1, 2, 3
NAMES = {SENT: "sent", DELIVERED: "delivered", READ: "read"}


def advance(current: int, new: int) -> bool:
    """True when moving from `current` to `new` goes forward (the receipt is news)."""
    assert current in NAMES and new in NAMES, (current, new)
    return new > current
