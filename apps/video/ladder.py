"""The rendition ladder (the YouTube transcoder's quality profiles in the design notes).

    >>> [r.name for r in ladder_for(720)]
    ['144p', '240p', '360p', '480p', '720p']

144p, 240p and 360p are always made; each higher rendition only when the source is at
least that tall (no upscaling).
"""
from __future__ import annotations

from typing import NamedTuple


class Rendition(NamedTuple):
    name: str
    width: int
    height: int
    kbps: int


LADDER = (
    Rendition("144p", 256, 144, 100),
    Rendition("240p", 426, 240, 300),
    Rendition("360p", 640, 360, 700),
    Rendition("480p", 854, 480, 1500),
    Rendition("720p", 1280, 720, 3000),
    Rendition("1080p", 1920, 1080, 6000),
    Rendition("1440p", 2560, 1440, 12000),
    Rendition("2160p", 3840, 2160, 24000),
)
BY_NAME = {r.name: r for r in LADDER}
ALWAYS = 3  # the three lowest renditions are made from any source
MIN_SOURCE_HEIGHT, MAX_SOURCE_HEIGHT = 144, 4320


def ladder_for(height: int) -> list[Rendition]:
    """The renditions made from a source `height` pixels tall."""
    if type(height) is not int or not MIN_SOURCE_HEIGHT <= height <= MAX_SOURCE_HEIGHT:
        raise ValueError(f"source height must be an int in {MIN_SOURCE_HEIGHT}..{MAX_SOURCE_HEIGHT}, got {height!r}")
    return [r for i, r in enumerate(LADDER) if i < ALWAYS or r.height <= height]
