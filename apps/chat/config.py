"""Chat limits and timings, checked once when the config is built.

Numbers follow the WhatsApp design notes: a session with no heartbeat for 30 s is closed,
checked every 10 s; a push notification is titled "Message from X" with the body cut to
50 characters; messages are kept on the server only until delivered, then for a
retention period (the notes give 24-48 hours of temporary storage). Where the notes are
silent, WhatsApp's multi-device rules: a user links at most 5 devices (a phone and 4
companions), and a device unseen for 30 days is logged out.
"""
from __future__ import annotations

from dataclasses import dataclass

from apps.common import check_limits, check_nodes

MAX_DEVICES = 64


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """Everything a chat deployment agrees on. `shards` and `nodes` must be the same on
    every node: they decide where each user lives."""

    shards: int = 16
    """Chat shards; users are placed on them by consistent hashing (at most 1024: the
    shard index is the Snowflake machine id of the message ids it assigns)."""
    nodes: tuple[str, ...] = ()
    """Node names hosting the shards, shard i on nodes[i % len(nodes)]; empty: the node
    the service starts on hosts them all."""
    heartbeat_timeout: float = 30.0
    heartbeat_check: float = 10.0
    retention: float = 24 * 3600.0
    """Seconds a delivered message's record (its receipts and duplicate detection) is kept."""
    max_payload: int = 64 * 1024
    max_id_len: int = 64
    """Longest user id, device name, client message id or room name (characters)."""
    max_pending: int = 10_000
    """Undelivered items one user may have waiting; a send beyond it is refused (Overloaded)."""
    max_pending_bytes: int = 16 << 20
    """Undelivered payload bytes one user may have waiting; a send beyond it is refused
    (Overloaded)."""
    max_sender_bytes: int = 4 << 20
    """Payload bytes of one sender's undelivered messages on one shard (so at most
    `shards` times this in all); a send beyond it is refused (QuotaExceeded)."""
    max_sender_offline: int = 64
    """Offline users one sender may have undelivered messages for on one shard; a send to
    one more is refused (QuotaExceeded)."""
    window: int = 256
    """Items pushed to a session and not yet confirmed, at most."""
    resend_after: float = 2.0
    """Unconfirmed items (and unacknowledged receipts to other shards) go again after this."""
    max_contacts: int = 5_000
    max_push_records: int = 1_000
    """Push notification records a shard keeps (the newest)."""
    push_body: int = 50
    room_max_chars: int = 200
    room_rate: float = 1.0
    """Messages per second one user may say in one room (a token bucket)..."""
    room_burst: int = 5
    """...with this many in a burst."""
    room_max_members: int = 100_000
    call_timeout: float = 5.0
    snapshot_every: int = 2_000
    """Shard events between snapshots (a snapshot saves the records they changed)."""
    max_devices: int = 5
    """Devices one user may have linked (WhatsApp: a phone and 4 companions); connecting
    one more is refused (QuotaExceeded) until one is unlinked or expires."""
    device_expiry: float = 30 * 24 * 3600.0
    """Seconds a device may stay unseen (not connected) before it is unlinked and its
    delivery state dropped; connecting again makes it a new device."""

    def __post_init__(self) -> None:
        if type(self.shards) is not int or not 1 <= self.shards <= 1024:
            raise ValueError(f"ChatConfig.shards must be an int in 1..1024, got {self.shards!r}")
        check_nodes(self)
        check_limits(self, ints=("max_payload", "max_id_len", "max_pending", "max_pending_bytes",
                                 "max_sender_bytes", "max_sender_offline", "window", "max_contacts",
                                 "max_push_records", "push_body", "room_max_chars", "room_burst",
                                 "room_max_members", "snapshot_every", "max_devices"),
                     seconds=("heartbeat_timeout", "heartbeat_check", "retention", "resend_after",
                              "room_rate", "call_timeout", "device_expiry"))
        for name in ("max_pending_bytes", "max_sender_bytes"):
            if getattr(self, name) < self.max_payload:
                raise ValueError(f"ChatConfig.{name} ({getattr(self, name)}) must be at least "
                                 f"max_payload ({self.max_payload}): no message could be stored")
        if self.max_devices > MAX_DEVICES:
            raise ValueError(f"ChatConfig.max_devices must be at most {MAX_DEVICES} (a user's devices are "
                             f"scanned one by one), got {self.max_devices}")
        if self.heartbeat_check > self.heartbeat_timeout:
            raise ValueError(f"ChatConfig.heartbeat_check ({self.heartbeat_check}) must not exceed "
                             f"heartbeat_timeout ({self.heartbeat_timeout})")
