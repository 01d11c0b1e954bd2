"""How sources are opened and read: the options, checked, without importing the sources themselves.

``edge run`` builds these from its flags and config for every run, so they live apart from ``stream``
and ``live``, which a run on image files never needs to import.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from edge.errors import ConfigError

RTSP_TRANSPORTS = ("tcp", "udp")
VIDEO_FORMATS = {"mjpeg": "mjpeg", "yuyv": "yuyv422"}


class StreamOptions(NamedTuple):
    """How a stream, file or camera is opened and read."""

    rtsp_transport: str = "tcp"
    video_size: tuple[int, int] | None = None  # V4L2 only
    video_fps: float | None = None  # V4L2 only
    video_format: str | None = None  # V4L2 only: mjpeg or yuyv
    realtime: bool = False  # video files: pace at their frame rate, newest frame only
    stall_timeout: float = 10.0  # seconds without data before a stream counts as stalled
    open_timeout: float = 10.0
    interval: float = 5.0  # an http URL that serves single images: seconds between snapshots
    decode_hint: tuple[int, int] | None = None  # the model's input size: MJPEG decodes no larger than needed


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` as ``(1280, 720)``; a ConfigError naming the value otherwise."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--video-size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 1 or height < 1:
        raise ConfigError(f"--video-size {text!r}: width and height must be at least 1")
    return width, height


def check_options(options: StreamOptions) -> StreamOptions:
    if options.rtsp_transport not in RTSP_TRANSPORTS:
        raise ConfigError(f"--rtsp-transport {options.rtsp_transport!r}: choose tcp or udp")
    if options.video_format is not None and options.video_format not in VIDEO_FORMATS:
        allowed = ", ".join(VIDEO_FORMATS)
        raise ConfigError(f"--video-format {options.video_format!r}: choose one of {allowed}")
    if options.video_fps is not None and not (math.isfinite(options.video_fps) and options.video_fps > 0):
        raise ConfigError(f"--video-fps {options.video_fps}: must be a number more than 0")
    if not (math.isfinite(options.stall_timeout) and options.stall_timeout > 0):
        raise ConfigError(f"--stall-timeout {options.stall_timeout}: must be a number of seconds more than 0")
    return options



class FeedOptions(NamedTuple):
    """How the inference loop takes from one source: at most ``fps`` per second, gated by ``motion``."""

    fps: float | None = None
    motion: float | None = None  # percent of the picture that must change; None: no gate
