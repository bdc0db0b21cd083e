"""Adaptive bitrate choice (the Netflix notes' rules), over the renditions a video has.

Initial choice: the highest bitrate within the usable bandwidth (80 % of it, or 60 % when
the buffer is under 30 % full) that the device can show (mobile, tablet and laptop up to
1080p; desktop, smart TV and console up to 2160p), else the lowest rendition.

During playback: step down one rendition when the buffer holds under 5 s and packet
loss is over 2 %, or when the current bitrate exceeds the bandwidth; step up one when
the buffer holds over 30 s, loss is under 0.1 % and the next bitrate fits the usable
bandwidth; otherwise keep the rendition.
"""
from __future__ import annotations

from .ladder import Rendition

DEVICE_MAX_HEIGHT = {"mobile": 1080, "tablet": 1080, "laptop": 1080, "desktop": 2160,
                     "smart_tv": 2160, "gaming_console": 2160}
HEALTHY_BUFFER = 0.3  # fraction of the buffer target above which 80 % of bandwidth is used
LOW_BUFFER_S, HIGH_BUFFER_S = 5.0, 30.0
LOSSY, CLEAN = 0.02, 0.001


def check_device(device: str) -> str:
    if device not in DEVICE_MAX_HEIGHT:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICE_MAX_HEIGHT)}")
    return device


def usable_kbps(bandwidth_kbps: float, buffer_health: float) -> float:
    assert bandwidth_kbps >= 0 and 0.0 <= buffer_health <= 1.0, (bandwidth_kbps, buffer_health)
    return bandwidth_kbps * (0.8 if buffer_health > HEALTHY_BUFFER else 0.6)


def choose(renditions: list[Rendition], bandwidth_kbps: float, buffer_health: float, device: str) -> Rendition:
    """The initial rendition (see the module docstring); `renditions` lowest first."""
    assert renditions, "a video without renditions cannot be played"
    cap = DEVICE_MAX_HEIGHT[check_device(device)]
    budget = usable_kbps(bandwidth_kbps, buffer_health)
    fitting = [r for r in renditions if r.kbps <= budget and r.height <= cap]
    return max(fitting, key=lambda r: r.kbps) if fitting else renditions[0]


def adjust(renditions: list[Rendition], current: Rendition, bandwidth_kbps: float, buffer_s: float,
           loss: float, device: str) -> Rendition:
    """The rendition for the next segment (see the module docstring)."""
    i = renditions.index(current)
    if (buffer_s < LOW_BUFFER_S and loss > LOSSY) or current.kbps > bandwidth_kbps:
        return renditions[max(0, i - 1)]
    if buffer_s > HIGH_BUFFER_S and loss < CLEAN and i + 1 < len(renditions):
        up = renditions[i + 1]
        if up.kbps <= usable_kbps(bandwidth_kbps, 1.0) and up.height <= DEVICE_MAX_HEIGHT[device]:
            return up
    return current
