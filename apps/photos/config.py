"""Photo limits and numbers, from the Instagram design notes: uploads of at most 10 MB;
three thumbnail sizes, 150, 640 and 1080 pixels wide, made in the background; a photo
appears in its owner's followers' feeds once its thumbnails are made."""
from __future__ import annotations

from dataclasses import dataclass

from apps.common import check_limits, check_nodes
from apps.video.blobs import MAX_BLOB

SIZES = (("thumbnail", 150), ("medium", 640), ("large", 1080))  # name, width in pixels


@dataclass(frozen=True, slots=True)
class PhotoConfig:
    """What a photo deployment agrees on; `nodes` must be the same on every node."""

    nodes: tuple[str, ...] = ()
    """Node names; users (and their photos) are placed on them by consistent hashing.
    Empty: one node."""
    max_bytes: int = 10 * 1024 * 1024
    scale: float = 1.0
    """Multiplies every thumbnail width (tests and the simulator use small photos)."""
    max_caption: int = 2_200  # Instagram's caption limit
    part_bytes: int = 4 << 20
    """Photos and thumbnails are stored as blobs of at most this many bytes each (at most
    `apps.video.blobs.MAX_BLOB`, 4 MiB)."""
    parallel: int = 2
    """Photos a node makes thumbnails for at once (each on three resizer threads)."""
    max_attempts: int = 3
    """Failures of one thumbnail size before the photo is failed with the reason."""
    max_job_crashes: int = 5
    """Crashes of one photo's job before the photo is failed with the reason."""
    retry_after: float = 1.0
    """Seconds before a crashed job is started again."""
    max_jobs: int = 10_000
    """Photos waiting for thumbnails per node; beyond, uploads wait (`Unavailable`)."""
    feed_threshold: int = 10_000
    """Owners with more followers than this are merged into feeds when read (the timeline
    case study's fan-out on read) instead of pushed to them."""
    idle_timeout: float = 60.0
    max_active: int = 100_000
    call_timeout: float = 5.0
    fail: tuple[str, ...] = ()
    """Sizes whose resizer always raises (fault injection)."""

    def __post_init__(self) -> None:
        check_nodes(self)
        check_limits(self, ints=("max_bytes", "max_caption", "part_bytes", "parallel", "max_attempts", "max_job_crashes",
                                 "max_jobs", "feed_threshold", "max_active"),
                     seconds=("retry_after", "idle_timeout", "call_timeout"))
        if self.part_bytes > MAX_BLOB:
            raise ValueError(f"PhotoConfig.part_bytes must be at most {MAX_BLOB} (a blob), got {self.part_bytes}")
        if type(self.scale) not in (int, float) or not 0.001 <= self.scale <= 1.0:
            raise ValueError(f"PhotoConfig.scale must be in [0.001, 1], got {self.scale!r}")
        unknown = [name for name in self.fail if name not in dict(SIZES)]
        if unknown:
            raise ValueError(f"PhotoConfig.fail names unknown sizes {unknown}; sizes: {[n for n, _ in SIZES]}")

    def widths(self) -> dict[str, int]:
        """Each size's thumbnail width, scaled."""
        return {name: max(1, round(width * self.scale)) for name, width in SIZES}
