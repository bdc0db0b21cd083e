"""Case studies built on the runtime: chat, rides, video, timeline."""
