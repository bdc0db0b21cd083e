"""Transcoding on real data: raw frame streams, scaling, segmenting, thumbnails.

A source is a raw frame stream: a header (`b"LCRAW"`, version, the nominal width and
height, the stored width and height, frame count, fps) and the frames as uint8 RGB,
row-major. The nominal size chooses the ladder; the frames are stored at the nominal size
times the `scale` knob (1.0: real sizes; tests use a few hundredths, so a 2160p rendition
is 115 x 65 pixels), and every rendition is made at its ladder size times the same knob.
`synthetic_source` makes a source from a seed (moving gradients and noise), the way a
test or the simulator's uploader does.
 A rendition is the frames
resized to its (scaled) size by area averaging over the source pixels (numpy), cut into
segments of `segment_seconds`, each compressed with zlib (the stand-in for a codec) and
checksummed. Thumbnails are the frames at 10/25/50/75/90 % of the video at 320 x 180
(scaled).

`Transcoder` is the `ThreadWorker` that does one rendition (or the thumbnails) per request,
on its own thread: numpy, zlib and crc32 release the GIL on big buffers, so workers use
both cores. A request may name an injected fault (`fail=True`), for fault scenarios.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from actors import ThreadWorker

from .ladder import Rendition

HEADER = struct.Struct(">5sBHHHHIB")  # magic, version, nominal w, h, stored w, h, frames, fps
MAGIC, VERSION = b"LCRAW", 1
THUMB_AT = (0.10, 0.25, 0.50, 0.75, 0.90)
THUMB_SIZE = (320, 180)
MAX_FRAMES = 100_000
MAX_PIXELS = 3840 * 2160


class SourceError(ValueError):
    """The uploaded bytes are not a raw frame stream letitcrash can read."""


class TranscodeFault(RuntimeError):
    """An injected transcoder failure."""


def scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    """A size multiplied by the knob, at least 2 x 2 pixels."""
    return max(2, round(width * scale)), max(2, round(height * scale))


def synthetic_source(seed: int, nominal_width: int, nominal_height: int, seconds: float,
                     scale: float, fps: int = 10) -> bytes:
    """A raw frame stream of `seconds` of moving gradients with seeded noise, stored at
    the nominal size times `scale`."""
    frames = max(1, round(seconds * fps))
    width, height = scaled(nominal_width, nominal_height, scale)
    if width * height > MAX_PIXELS or frames > MAX_FRAMES:
        raise ValueError(f"synthetic source too big: {width}x{height}, {frames} frames")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    t = np.arange(frames)[:, None, None]
    base = ((x[None] + 3 * t) % 256 + (y[None] * 2 + t) % 256) // 2
    noise = rng.integers(0, 32, size=(frames, height, width))
    rgb = np.stack([base, (base + noise) % 256, (255 - base)], axis=-1).astype(np.uint8)
    return HEADER.pack(MAGIC, VERSION, nominal_width, nominal_height, width, height, frames, fps) + rgb.tobytes()


def read_source(data: bytes) -> tuple[np.ndarray, int, tuple[int, int]]:
    """The frames (frames x height x width x 3, uint8), fps and nominal (width, height)
    of a raw frame stream."""
    if len(data) < HEADER.size:
        raise SourceError(f"source is {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, version, nominal_w, nominal_h, width, height, frames, fps = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise SourceError(f"source is not a raw frame stream (magic {magic!r}, version {version})")
    if not (0 < width * height <= MAX_PIXELS and 0 < nominal_w * nominal_h and 0 < frames <= MAX_FRAMES
            and fps > 0):
        raise SourceError(f"source header out of range: {width}x{height}, {frames} frames at {fps} fps")
    need = HEADER.size + width * height * 3 * frames
    if len(data) != need:
        raise SourceError(f"source is {len(data)} bytes; its header says {need}")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=HEADER.size)
    return pixels.reshape(frames, height, width, 3), fps, (nominal_w, nominal_h)


def resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average resize of a batch of frames (each output pixel averages the source
    pixels it covers; upscaling repeats them)."""
    _, h, w, _ = frames.shape
    y0 = (np.arange(height) * h) // height
    y1 = np.maximum(y0 + 1, (np.arange(1, height + 1) * h) // height)
    x0 = (np.arange(width) * w) // width
    x1 = np.maximum(x0 + 1, (np.arange(1, width + 1) * w) // width)
    acc = np.cumsum(np.cumsum(frames.astype(np.uint32), axis=1), axis=2)
    acc = np.pad(acc, ((0, 0), (1, 0), (1, 0), (0, 0)))
    total = (acc[:, y1][:, :, x1] - acc[:, y0][:, :, x1] - acc[:, y1][:, :, x0] + acc[:, y0][:, :, x0])
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :])[None, :, :, None]
    return (total // area).astype(np.uint8)


def encode_segments(frames: np.ndarray, fps: int, segment_seconds: float) -> list[bytes]:
    """Cut frames into segments and compress each (zlib level 1)."""
    per = max(1, round(fps * segment_seconds))
    return [zlib.compress(frames[i:i + per].tobytes(), 1) for i in range(0, len(frames), per)]


def transcode(source: bytes, rendition: Rendition, scale: float, segment_seconds: float) -> dict[str, Any]:
    """One rendition of a source: its segments and their checksums."""
    frames, fps, _ = read_source(source)
    width, height = scaled(rendition.width, rendition.height, scale)
    segments = encode_segments(resize(frames, width, height), fps, segment_seconds)
    return {"width": width, "height": height, "segments": segments,
            "crcs": [zlib.crc32(s) for s in segments]}


def thumbnails(source: bytes, scale: float) -> list[bytes]:
    """PPM images of the frames at 10/25/50/75/90 % of the video."""
    frames, _, _ = read_source(source)
    width, height = scaled(*THUMB_SIZE, scale)
    picks = frames[[min(len(frames) - 1, int(p * len(frames))) for p in THUMB_AT]]
    return [b"P6 %d %d 255\n" % (width, height) + img.tobytes() for img in resize(picks, width, height)]


class Transcoder(ThreadWorker):
    """One job's worker. Requests: `("rendition", source, Rendition, scale, segment_seconds,
    fail)` -> `transcode(...)`; `("thumbnails", source, scale, fail)` -> list of images."""

    sim_seconds = 0.2

    def on_receive(self, request: tuple) -> Any:
        if request[-1]:
            raise TranscodeFault(f"injected transcoder failure on {request[0]} "
                                 f"{getattr(request[2], 'name', '')}".rstrip())
        if request[0] == "rendition":
            return transcode(*request[1:5])
        if request[0] == "thumbnails":
            return thumbnails(request[1], request[2])
        raise ValueError(f"transcoder: unknown request {request[0]!r}")
