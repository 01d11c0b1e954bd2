"""Video files, stream URLs and V4L2 cameras, decoded by PyAV (FFmpeg's libraries, binary wheels).

- video files (``.mp4 .mkv .mov .avi .webm`` ...): every frame in order by default; ``realtime`` paces them at
  their own frame rate and keeps only the newest frame, as a live source;
- ``rtsp://``/``rtsps://`` (TCP by default), ``rtmp://``, ``http(s)://`` MJPEG (``multipart/x-mixed-replace``)
  and HLS (``.m3u8``): live, newest frame only, reopened with backoff when they fail, drop or stall;
  an ``http(s)://`` URL that answers with a single image is polled as a snapshot every ``interval`` seconds;
- ``/dev/videoN``: a V4L2 camera with an optional size, frame rate and pixel format.

Frames stay in the decoder's own format; they are scaled and converted to RGB (``AvFrame.to_array``) only for
the frames that are inferred, at the size the model needs. Credentials in URLs never reach the log, the
states or the results (``mask_url``).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, SourceError
from edge.sources.base import STREAMING, InputItem, kind_of, mask_in, mask_url
from edge.sources.live import Feed, Producer, SourceContext, SourceStalled, reconnecting
from edge.sources.options import (  # noqa: F401  (re-exported: the options used to live here)
    RTSP_TRANSPORTS,
    VIDEO_FORMATS,
    FeedOptions,
    StreamOptions,
    check_options,
    parse_size,
)
from edge.sources.snapshot import fetch_snapshot, open_url

log = logging.getLogger(__name__)

MAX_CORRUPT_IN_A_ROW = 100  # packets that fail to decode before the stream is reopened
_HLS_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl")


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # armv7l has no wheel: see docs/sources.md
        raise SourceError(
            "video files, streams and cameras need PyAV, which is not installed: 'pip install av' "
            "(on 32-bit Raspberry Pi OS: 'sudo apt install python3-av', see docs/sources.md)"
        ) from exc
    return av


class Scalers(threading.local):
    """One source's FFmpeg scalers, one pair per thread: a scaler keeps its context between frames (building
    one costs ~1.6 ms), and one context used from two threads at once hangs FFmpeg."""

    def __init__(self) -> None:
        import av.video.reformatter

        self.rgb = av.video.reformatter.VideoReformatter()
        self.grey = av.video.reformatter.VideoReformatter()


class AvFrame:
    """A decoded PyAV frame; converted to RGB or grey only when asked, at the size asked."""

    __slots__ = ("_frame", "_scalers", "_size")

    def __init__(self, frame: Any, scalers: Scalers, size: tuple[int, int] | None = None) -> None:
        self._frame = frame
        self._scalers = scalers
        self._size = size or (int(frame.width), int(frame.height))  # full size, also when decoded smaller

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def to_array(self, width: int, height: int) -> Any:
        rgb = self._scalers.rgb.reformat(self._frame, width=width, height=height, format="rgb24")
        return rgb.to_ndarray()

    def grey(self, width: int, height: int) -> Any:
        luma = self._scalers.grey.reformat(self._frame, width=width, height=height, format="gray")
        return luma.to_ndarray()


def _open_args(target: str, options: StreamOptions, kind: str) -> dict[str, Any]:
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    container_options: dict[str, str] = {}
    args: dict[str, Any] = {"timeout": (options.open_timeout, options.stall_timeout)}
    if kind == "camera":
        args["format"] = "v4l2"
        if options.video_size:
            container_options["video_size"] = "{}x{}".format(*options.video_size)
        if options.video_fps:
            container_options["framerate"] = f"{options.video_fps:g}"
        if options.video_format:
            container_options["input_format"] = VIDEO_FORMATS[options.video_format]
    elif kind == "stream":
        if scheme in ("rtsp", "rtsps", "rtmp", "rtmps"):
            # live: no buffering of the probed packets (on HLS it would drop the first segments' frames)
            container_options["fflags"] = "nobuffer"
        if scheme in ("rtsp", "rtsps"):
            container_options["rtsp_transport"] = options.rtsp_transport
            container_options["allowed_media_types"] = "video"
            # FFmpeg would otherwise read ~2 s of stream to probe it and hand those frames over in a burst,
            # running that far behind live; the SDP already says what the stream is.
            container_options["analyzeduration"] = "0"
            container_options["probesize"] = "32"
    args["container_options"] = container_options
    return args


def lowres_for(width: int, height: int, hint: tuple[int, int] | None) -> int:
    """The MJPEG decoder's ``lowres`` (DCT scaling by 2**k, k <= 3) that still gives at least ``hint``."""
    if hint is None or hint[0] < 1 or hint[1] < 1:
        return 0
    k = 0
    while k < 3 and (width >> (k + 1)) >= hint[0] and (height >> (k + 1)) >= hint[1]:
        k += 1
    return k


def _reason(exc: BaseException, target: str) -> str:
    """A one-line reason for a PyAV/OS error, without the URL's credentials."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = mask_in(str(text), target)
    status = {401: "the camera refused the user name or password (HTTP/RTSP 401)",
              403: "the camera refused access (403)", 404: "no such stream path on the camera (404)"}
    for code, message in status.items():
        if str(code) in text:
            return message
    return text


def read_frames(context: SourceContext, target: str, options: StreamOptions, kind: str) -> bool:
    """Open ``target`` and hand over its frames until it ends; True when any frame was delivered.

    Raises ``SourceError`` when it cannot be opened or fails, ``SourceStalled`` when no data came for the
    stall timeout.
    """
    av = _av()
    shown = mask_url(target)
    live = kind != "video" or options.realtime
    try:
        container = av.open(target, **_open_args(target, options, kind))
    except av.ExitError as exc:
        raise SourceError(f"cannot open {shown}: no answer within {options.open_timeout:g} s") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot open {shown}: {_reason(exc, target)}") from exc
    delivered = False
    try:
        if not container.streams.video:
            raise SourceError(f"{shown} has no video stream")
        stream = container.streams.video[0]
        # Live: one decoder thread, the lowest latency (frame threads hold frames back). Files: any threads.
        stream.thread_type = "NONE" if live else "AUTO"
        scalers = Scalers()
        codec = stream.codec_context
        full: tuple[int, int] | None = None
        lowres = lowres_for(codec.width, codec.height, options.decode_hint) if codec.name == "mjpeg" else 0
        if lowres:  # decoder-side scaling: a 1600x1200 camera JPEG for a 224x224 model decodes at 400x300
            codec.options = {**codec.options, "lowres": str(lowres)}
            full = (int(codec.width), int(codec.height))
        pace = _Pacer(context) if kind == "video" and options.realtime else None
        corrupt_in_a_row = 0
        for packet in container.demux(stream):
            if context.stop.is_set():
                break
            try:
                frames = packet.decode()
            except av.ExitError:
                raise
            except (av.FFmpegError, ValueError) as exc:
                context.count("errors")
                corrupt_in_a_row += 1
                if corrupt_in_a_row >= MAX_CORRUPT_IN_A_ROW:
                    raise SourceError(f"{shown}: corrupt data ({_reason(exc, target)})") from exc
                continue
            corrupt_in_a_row = 0
            for frame in frames:
                if not delivered:
                    delivered = True
                    context.set_state(STREAMING)
                if pace is not None and pace.wait(frame.time):
                    return delivered
                media_time = frame.time if kind == "video" else None  # a camera's timeline is the clock
                context.emit(InputItem("", AvFrame(frame, scalers, full), media_time=media_time))
    except av.ExitError as exc:
        raise SourceStalled(f"no data from {shown} for {options.stall_timeout:g} s") from exc
    except (av.FFmpegError, OSError) as exc:
        if delivered and getattr(exc, "errno", None) == errno.EIO:
            return delivered  # how FFmpeg's MJPEG-over-HTTP reader says the camera closed the stream
        raise SourceError(f"{shown} failed: {_reason(exc, target)}") from exc
    finally:
        container.close()
    return delivered


class _Pacer:
    """Holds frames of a video file back to the file's own frame rate (``--realtime``)."""

    def __init__(self, context: SourceContext) -> None:
        self.context = context
        self.start: tuple[float, float] | None = None

    def wait(self, pts_s: float | None) -> bool:
        """Sleep until the frame at ``pts_s`` is due; True when the run is stopping."""
        if pts_s is None:
            return self.context.stop.is_set()
        now = time.monotonic()
        if self.start is None:
            self.start = (now, pts_s)
            return False
        due = self.start[0] + (pts_s - self.start[1])
        return self.context.wait(due - now) if due > now else self.context.stop.is_set()


def _http_kind(url: str, timeout: float) -> str:
    """What an http(s) URL serves, from its content type: ``mjpeg``, ``snapshot``, ``hls`` or ``video``."""
    import urllib.error

    if url.split("?", 1)[0].lower().endswith(".m3u8"):
        return "hls"
    try:
        with open_url(url, timeout) as response:
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{mask_url(url)} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach {mask_url(url)} ({mask_in(str(reason), url)})") from exc
    if content_type.startswith("multipart/"):
        return "mjpeg"
    if content_type.startswith("image/"):
        return "snapshot"
    if content_type in _HLS_TYPES:
        return "hls"
    return "video"


def _http_session(url: str, options: StreamOptions) -> Any:
    """One connection to an http(s) camera: an MJPEG/HLS/video stream, or snapshots polled while they work."""

    def session(context: SourceContext) -> bool:
        kind = _http_kind(url, options.open_timeout)
        if kind != "snapshot":
            return read_frames(context, url, options, "stream")
        delivered = False
        while not context.stop.is_set():
            item = fetch_snapshot(url, "", options.open_timeout)
            if item.error is not None:
                raise SourceError(item.error)
            if not delivered:
                delivered = True
                context.set_state(STREAMING)
            context.emit(item)
            context.wait(options.interval)
        return delivered

    return session


def _with_av(produce: Producer) -> Producer:
    """``produce`` after one check that PyAV is there: without it the source fails once, not each retry."""

    def run(context: SourceContext) -> None:
        _av()
        produce(context)

    return run


def stream_feed(
    name: str, target: str, options: StreamOptions, feed_options: FeedOptions | None = None
) -> Feed:
    """The feed of a video file, stream URL or V4L2 camera."""
    check_options(options)
    kind = kind_of(target)
    if kind not in ("camera", "stream", "video"):
        raise ConfigError(f"{mask_url(target)!r} is not a video file, stream URL or /dev/video camera")
    shown = mask_url(target)
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if kind == "stream" and scheme in ("http", "https"):
        return Feed(name, kind, shown, _with_av(reconnecting(_http_session(target, options), retry=True)),
                    True, feed_options)
    if kind == "video":
        def video(context: SourceContext) -> bool:
            if not Path(target).is_file():
                raise SourceError(f"{target}: no such video file; check the path")
            return read_frames(context, target, options, kind)

        return Feed(name, kind, shown, _with_av(reconnecting(video, retry=False)), options.realtime,
                    feed_options)
    if kind == "camera":
        existed = Path(target).exists()

        def camera(context: SourceContext) -> bool:
            if not existed and not Path(target).exists():
                raise SourceError(f"{target}: no such camera; check 'ls /dev/video*' (is it plugged in?)")
            return read_frames(context, target, options, kind)

        return Feed(name, kind, shown, _with_av(reconnecting(camera, retry=existed)), True, feed_options)

    def stream(context: SourceContext) -> bool:
        return read_frames(context, target, options, kind)

    return Feed(name, kind, shown, _with_av(reconnecting(stream, retry=True)), True, feed_options)
