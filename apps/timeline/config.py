"""Timeline limits and numbers, from the Twitter design notes: tweets of at most 280
characters; home timelines of the newest 800 tweet ids; pages of 50; authors with fewer
than 10,000 followers fan out on write, the others on read."""
from __future__ import annotations

from dataclasses import dataclass

from apps.common import check_limits, check_nodes


@dataclass(frozen=True, slots=True)
class TimelineConfig:
    """What a timeline deployment agrees on; `nodes` must be the same on every node."""

    nodes: tuple[str, ...] = ()
    """Node names; users are placed on them by consistent hashing. Empty: one node. The
    index of a node here is its Snowflake machine id."""
    threshold: int = 10_000
    """Authors with more followers than this fan out on read (their tweets are merged
    into timelines when read) instead of on write."""
    capacity: int = 800
    page: int = 50
    max_text: int = 280
    max_following: int = 5_000
    fanout_batch: int = 256
    """Timeline inserts the fan-out sends per turn, shared round-robin by its jobs."""
    retry_after: float = 2.0
    """Fan-out inserts not acknowledged after this are sent again."""
    idle_timeout: float = 60.0
    """Seconds after which an unused timeline or author process is passivated."""
    max_active: int = 100_000
    lease: float = 1.0
    """Seconds of Snowflake ids reserved per stored lease (one write per second of ids)."""
    call_timeout: float = 5.0
    max_jobs: int = 100_000
    """Fan-out jobs a node queues at most; beyond, posts wait (backpressure)."""
    max_done_jobs: int = 100_000

    def __post_init__(self) -> None:
        check_nodes(self)
        check_limits(self, ints=("threshold", "capacity", "page", "max_text", "max_following",
                                 "fanout_batch", "max_active", "max_jobs", "max_done_jobs"),
                     seconds=("retry_after", "idle_timeout", "lease", "call_timeout"))
        if self.page > self.capacity:
            raise ValueError(f"TimelineConfig.page ({self.page}) exceeds capacity ({self.capacity})")
