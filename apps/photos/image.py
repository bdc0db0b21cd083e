"""Images as bytes and as numpy arrays: reading, thumbnails, and the thread worker.

Photos are binary Netpbm images, decoded with numpy alone: PPM (`P6`, RGB) and PGM (`P5`,
grey), 8 bits per sample (maxval 255), with the header's comments allowed. `read_header`
checks a photo before anything is stored (the magic, the size, the pixel count, that the
bytes are exactly as many as the header says); `read_image` gives its pixels without a
copy. A thumbnail keeps the aspect ratio at the width of its size (150, 640 or 1080
pixels, times the deployment's `scale`), never wider than the photo (no upscaling, as
Instagram stores a narrow photo at its own width), area-averaged over the source pixels
(`downscale`: each output pixel is the mean of the block of source pixels it covers, rows
then columns, with `np.add.reduceat`), and is stored as an image of the same kind.

`Resizer` is the `ThreadWorker` that makes one thumbnail per request on its own thread:
numpy's reductions release the GIL on large arrays, so the workers of several photos use
every core. A request may name an injected fault (`fail=True`), for fault scenarios; a
failure is answered as a str.
"""
from __future__ import annotations

import re

import numpy as np

from actors import ThreadWorker

MAX_SIDE = 16_384
MAX_PIXELS = 50_000_000
_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\S+)")  # one header field, after blanks and comments
CHANNELS = {b"P6": 3, b"P5": 1}


class BadImage(ValueError):
    """The bytes are not a photo this service reads; the message says what is wrong."""


class ResizeFault(RuntimeError):
    """An injected resizer failure."""


def read_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, channels, offset of the pixels) of a PPM or PGM photo, checked
    against the length of `data`; BadImage otherwise."""
    if type(data) is not bytes:
        raise BadImage(f"a photo is bytes, not {type(data).__name__}")
    magic = data[:2]
    if magic not in CHANNELS:
        raise BadImage(f"not a PPM (P6) or PGM (P5) image: it starts with {data[:8]!r}")
    fields, pos = [], 2
    for _ in range(3):
        found = _TOKEN.match(data, pos, min(len(data), pos + 256))
        if found is None or not found.group(1).isdigit():
            raise BadImage(f"the image header is cut short or malformed near byte {pos}: {data[pos:pos + 24]!r}")
        fields.append(int(found.group(1)))
        pos = found.end()
    width, height, maxval = fields
    if pos >= len(data) or data[pos:pos + 1] not in (b" ", b"\t", b"\n", b"\r"):
        raise BadImage("the image header does not end with a single blank before the pixels")
    pos += 1
    if maxval != 255:
        raise BadImage(f"only 8-bit images (maxval 255) are read, this one has maxval {maxval}")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise BadImage(f"an image is 1..{MAX_SIDE} pixels a side and at most {MAX_PIXELS} pixels, "
                       f"this one is {width}x{height}")
    channels = CHANNELS[magic]
    need = pos + width * height * channels
    if len(data) != need:
        raise BadImage(f"a {width}x{height} {magic.decode()} image is {need} bytes, this one has {len(data)}")
    return width, height, channels, pos


def read_image(data: bytes) -> np.ndarray:
    """The pixels of a checked photo: height x width x channels, uint8 (a view, no copy)."""
    width, height, channels, offset = read_header(data)
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(height, width, channels)


def write_image(pixels: np.ndarray) -> bytes:
    """A PPM (3 channels) or PGM (1 channel) of `pixels`."""
    height, width, channels = pixels.shape
    magic = b"P6" if channels == 3 else b"P5"
    return b"%s\n%d %d\n255\n" % (magic, width, height) + np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


def thumbnail_size(width: int, height: int, target: int) -> tuple[int, int]:
    """The size of a thumbnail `target` pixels wide of a `width` x `height` photo: the
    aspect ratio kept, never wider than the photo, at least 1 x 1."""
    out_w = max(1, min(width, target))
    return out_w, max(1, round(height * out_w / width))


def thumbnail(data: bytes, target: int) -> bytes:
    """The thumbnail of photo `data` at width `target` (see `thumbnail_size`)."""
    pixels = read_image(data)
    height, width, _ = pixels.shape
    out_w, out_h = thumbnail_size(width, height, target)
    if (out_w, out_h) == (width, height):
        return write_image(pixels)
    return write_image(downscale(pixels, out_w, out_h))


def downscale(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average `pixels` (height x width x channels, uint8) down to `width` x
    `height`: output row i covers source rows [i*H//height, (i+1)*H//height), and so for
    columns; each output pixel is the rounded mean of its block."""
    src_h, src_w, _ = pixels.shape
    assert 0 < width <= src_w and 0 < height <= src_h, (pixels.shape, width, height)
    rows = (np.arange(height) * src_h) // height
    cols = (np.arange(width) * src_w) // width
    sums = np.add.reduceat(np.add.reduceat(pixels, rows, axis=0, dtype=np.uint32), cols, axis=1, dtype=np.uint32)
    counts = np.diff(np.append(rows, src_h))[:, None] * np.diff(np.append(cols, src_w))[None, :]
    return ((sums + counts[:, :, None] // 2) // counts[:, :, None]).astype(np.uint8)


def synthetic_photo(seed: int, width: int, height: int, grey: bool = False) -> bytes:
    """A photo of gradients and seeded noise (tests, the simulator, benchmarks)."""
    rng = np.random.default_rng(seed)
    across = (np.arange(width, dtype=np.uint16) * 127 // max(1, width - 1)).astype(np.uint8)
    down = (np.arange(height, dtype=np.uint16) * 127 // max(1, height - 1)).astype(np.uint8)
    base = np.add.outer(down, across)  # 0..254
    noisy = base + rng.integers(0, 24, size=(height, width), dtype=np.uint8)  # wraps: texture
    pixels = noisy[:, :, None] if grey else np.stack([base, noisy, 255 - base], axis=-1)
    return write_image(pixels)


class Resizer(ThreadWorker):
    """One thumbnail per request: `("thumb", photo bytes, width, fail)` -> the image
    bytes, or the str saying why it could not be made. (A failure is an answer, not a
    crash: the job, linked to its resizers, then counts it as an attempt of that size.)"""

    sim_seconds = 0.05

    def on_receive(self, request: tuple) -> bytes | str:
        kind, data, target, fail = request
        if kind != "thumb":
            raise ValueError(f"resizer: unknown request {kind!r}")
        try:
            if fail:
                raise ResizeFault(f"injected resizer failure at width {target}")
            return thumbnail(data, target)
        except Exception as exc:  # noqa: BLE001 - any failure of this size is reported as one
            return f"{exc!r:.300}"
