"""Instagram-style photos: uploads of at most 10 MB stored before they are acknowledged,
three thumbnail sizes made by numpy on resizer threads (a durable queue, jobs that resume
after crashes and restarts), and a follower feed (the timeline case study's fan-out).

Modules: `service` (PhotoService, the API and the tree), `photo` (a photo's record),
`thumbnailer` (the queue and the jobs), `image` (PPM/PGM reading, thumbnails, the
Resizer thread worker), `context` (placement, names, checks), `config`, `errors`, `sim`.
"""
from .config import SIZES, PhotoConfig
from .errors import BadImage, BadRequest, PhotoError, PhotoExists, PhotoTooLarge, UnknownPhoto, Unavailable
from .image import synthetic_photo
from .service import PhotoService

__all__ = ["BadImage", "BadRequest", "PhotoConfig", "PhotoError", "PhotoExists", "PhotoService", "PhotoTooLarge",
           "SIZES", "UnknownPhoto", "Unavailable", "synthetic_photo"]
