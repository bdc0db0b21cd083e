"""YouTube/Netflix-style video jobs, playback and recommendations as supervised,
persistent processes.

Modules: `ladder` (renditions), `transcode` (frames, scaling, segments, the thread
worker), `blobs` (write-once stored bytes), `upload` (one job per video), `abr` (bitrate
choice), `cache` (regional LRU edge caches), `recommend` (hybrid recommender, view
counts), `service` (the tree, the catalogue, playback, the API), `sim` (the simulated
system for scenarios).
"""
from .blobs import BlobError
from .service import VideoService
from .upload import UploadError, VideoConfig

__all__ = ["BlobError", "UploadError", "VideoConfig", "VideoService"]
