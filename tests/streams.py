"""Real video sources for tests: test frames, video files, a live RTSP server and an MJPEG HTTP camera.

Nothing here is a mock: ``RtspServer`` is GStreamer's RTSP server (``tests/stream_servers/rtsp_server.py``
run by Debian's ``/usr/bin/python3``, which has python3-gi; ``make system-deps`` installs the Debian
packages), ``MjpegServer`` a real HTTP server on a free port, and video files are encoded by PyAV.

Frames are RGB uint8 arrays (H, W, 3). ``frames_from_images(images, size, hold)`` makes frame ``k`` show
``images[k // hold]``; ``closest_image(frame, images)`` tells which image a decoded frame shows.

Fixtures (factories; everything they start is stopped at teardown, even when the test fails). They are not
registered by tests/conftest.py: a test module sets ``pytest_plugins = ["tests.streams"]`` (ruff-clean), or
imports them, ``from tests.streams import mjpeg_server, rtsp_server, video_file  # noqa: F401``, and then
needs ``# noqa: F811`` on every test taking one (ruff sees the argument as redefining the import).

- ``rtsp_server(frames=None, *, fps=15, size=None, user=None, password=None, shared=False, ...)``:
  a started ``RtspServer``; ``.url`` is ``rtsp://[user:password@]127.0.0.1:PORT/stream``.
- ``mjpeg_server(frames=None, *, fps=10, user=None, password=None, ...)``: a started ``MjpegServer``;
  ``.url`` is ``http://127.0.0.1:PORT/stream``, ``.snapshot_url`` ``.../snapshot.jpg``.
- ``video_file(name="clip.mp4", frames=None, *, fps=15, codec=None, corrupt=None, ...)``: the path of a
  video written with ``write_video`` (``corrupt="overwrite"|"truncate"``: ``write_corrupt_video``).

Reading a live stream with PyAV: ``RTSP_OPTIONS`` (TCP, no probing burst) and ``open_stream``. FFmpeg's
default probing reads about 1.8 s of a live RTSP stream inside ``av.open`` and then returns those frames
in a burst, so a reader runs that far behind live; ``analyzeduration=0`` avoids it (the SDP carries
SPS/PPS, so the size is known at once).

(PYTEST_DONT_REWRITE: a test module imports this before registering it as a plugin; it has no asserts.)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import io
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image, ImageStat

if TYPE_CHECKING:
    import av.container

__all__ = [
    "DEFAULT_SIZE", "MJPEG_BOUNDARY", "PATTERN_COLORS", "RTSP_OPTIONS", "SYSTEM_PYTHON", "MjpegServer",
    "RtspServer", "closest_image", "default_frames", "fit_image", "frames_from_images", "mean_color",
    "mjpeg_server", "open_stream", "pattern_image", "read_frames", "rtsp_request", "rtsp_server",
    "solid_frames", "video_file", "write_corrupt_video", "write_video",
]

Size = tuple[int, int]  # (width, height)
ImageLike = np.ndarray | Image.Image | str | os.PathLike[str]

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).resolve().parent / "stream_servers" / "rtsp_server.py"
DEFAULT_SIZE: Size = (640, 360)
RTSP_START_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine, GStreamer's first plugin scan
MJPEG_BOUNDARY = "123456789000000000000987654321"  # what an ESP32-CAM sends
# PyAV options for a live RTSP stream: TCP interleaved, no 1.8 s probing burst, a 10 s socket timeout (µs).
RTSP_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32", "timeout": "10000000"}
PATTERN_COLORS = ((230, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 60, 200), (40, 210, 210))


# --------------------------------------------------------------------------------------------- frames


def _as_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:  # float 0..1 (skimage) or wider ints
        scale = 255.0 if array.dtype.kind == "f" and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def fit_image(
    image: ImageLike, size: Size = DEFAULT_SIZE, background: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height), aspect kept, centred on ``background``."""
    width, height = size
    rgb = _as_rgb(image)
    scale = min(width / rgb.width, height / rgb.height)
    scaled = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), background)
    canvas.paste(scaled, ((width - scaled.width) // 2, (height - scaled.height) // 2))
    frame = np.asarray(canvas, dtype=np.uint8).copy()
    frame.flags.writeable = False
    return frame


def frames_from_images(
    images: Sequence[ImageLike], size: Size = DEFAULT_SIZE, hold: int = 1,
    background: tuple[int, int, int] = (0, 0, 0),
) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3): each image fitted to ``size`` (letterboxed), held ``hold`` frames.

    Frame ``k`` shows ``images[k // hold]``. Held frames are the same read-only array.
    """
    if hold < 1 or not images:
        raise ValueError("need at least one image and hold >= 1")
    return [frame for image in images for frame in [fit_image(image, size, background)] * hold]


def pattern_image(index: int, size: Size = DEFAULT_SIZE) -> np.ndarray:
    """A textured test image whose mean colour is ``PATTERN_COLORS[index % 6]`` give or take a few levels."""
    width, height = size
    base = np.array(PATTERN_COLORS[index % len(PATTERN_COLORS)], dtype=np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = 18.0 * np.sin(x / 23.0 + index) * np.cos(y / 17.0) + 12.0 * (((x // 40 + y // 40) % 2) - 0.5)
    frame = np.clip(base + texture[:, :, None], 0, 255).astype(np.uint8)
    frame.flags.writeable = False
    return frame


def solid_frames(
    colors: Sequence[tuple[int, int, int]], size: Size = DEFAULT_SIZE, hold: int = 1
) -> list[np.ndarray]:
    """Frames of one colour each, held ``hold`` frames (frame ``k`` is ``colors[k // hold]``)."""
    width, height = size
    images = [np.full((height, width, 3), color, dtype=np.uint8) for color in colors]
    return frames_from_images(images, size, hold)


def default_frames(size: Size = DEFAULT_SIZE, hold: int = 15, count: int = 3) -> list[np.ndarray]:
    """``count`` test patterns, each held ``hold`` frames: what the servers show unless given frames."""
    return [frame for i in range(count) for frame in [pattern_image(i, size)] * hold]


def mean_color(frame: np.ndarray) -> np.ndarray:
    """The mean R, G, B of an RGB uint8 frame (float, 0..255)."""
    return np.array(ImageStat.Stat(Image.fromarray(np.asarray(frame, dtype=np.uint8))).mean)  # 10x numpy


_thumbs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (image kept alive, thumbnail)


def _thumb(frame: np.ndarray, cache: bool = False) -> np.ndarray:
    if cache and id(frame) in _thumbs:
        return _thumbs[id(frame)][1]
    image = Image.fromarray(np.asarray(frame))
    image = image.reduce(max(1, min(image.width // 64, image.height // 36)))
    thumb = np.asarray(image.resize((32, 18), Image.BILINEAR), dtype=np.float32)
    if cache:
        if len(_thumbs) >= 256:
            _thumbs.clear()
        _thumbs[id(frame)] = (frame, thumb)
    return thumb


def closest_image(frame: np.ndarray, images: Sequence[np.ndarray]) -> int:
    """The index of the image in ``images`` that ``frame`` (decoded, any size) looks most like."""
    thumb = _thumb(frame)
    return int(np.argmin([np.mean((thumb - _thumb(image, cache=True)) ** 2) for image in images]))


def _unique(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Distinct frames (by content) and, for each frame, the index of its distinct frame."""
    by_id: dict[int, int] = {}
    by_hash: dict[bytes, int] = {}
    unique: list[np.ndarray] = []
    order: list[int] = []
    for frame in frames:
        index = by_id.get(id(frame))
        if index is None:
            array = np.ascontiguousarray(frame, dtype=np.uint8)
            digest = hashlib.blake2b(array.tobytes(), digest_size=16).digest() + repr(array.shape).encode()
            index = by_hash.setdefault(digest, len(unique))
            if index == len(unique):
                unique.append(array)
            by_id[id(frame)] = index
        order.append(index)
    return unique, order


# ---------------------------------------------------------------------------------------- video files

# codec name -> (encoder, pixel format, extra codec options)
_ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"preset": "veryfast"}),
    "hevc": ("libx265", "yuv420p", {"preset": "veryfast"}),
    "mjpeg": ("mjpeg", "yuvj420p", {}),  # full-range yuv420p: FFmpeg's mjpeg encoder refuses limited range
    "vp9": ("libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}),
    "vp8": ("libvpx", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}),
    "mpeg4": ("mpeg4", "yuv420p", {"qscale": "3"}),
}
_CODEC_ALIASES = {"h265": "hevc", "x264": "h264", "libx264": "h264", "jpeg": "mjpeg"}
_SUFFIX_CODECS = {".mp4": "h264", ".mkv": "h264", ".mov": "h264", ".avi": "mjpeg", ".webm": "vp9"}


def write_video(
    path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float = 15.0, codec: str = "h264", *,
    gop: int | None = None, bit_rate: int | None = None, options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames to a video file with PyAV and return its path.

    ``codec``: h264 (libx264), hevc (libx265), mjpeg, vp9 (libvpx-vp9), vp8, mpeg4; the container comes
    from the suffix (.mp4 .mkv .mov .avi .webm). yuv420p (yuvj420p for mjpeg), a key frame exactly every
    ``gop`` frames (default: one second; no scene-cut key frames), pts ``0, 1, 2...`` at ``fps``; .mp4/.mov
    get ``faststart`` (index first, so a truncated file still opens). ``options`` go to the encoder.
    """
    import av

    codec = _CODEC_ALIASES.get(codec, codec)
    if codec not in _ENCODERS:
        raise ValueError(f"unknown codec {codec!r}; choose from {sorted(_ENCODERS)}")
    if not frames:
        raise ValueError("no frames")
    encoder, pix_fmt, codec_options = _ENCODERS[codec]
    path = Path(path)
    gop = gop or max(1, round(fps))
    codec_options = dict(codec_options)
    if codec == "h264":
        codec_options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    elif codec == "hevc":
        codec_options["x265-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
    elif codec in ("vp9", "vp8"):
        codec_options["keyint_min"] = str(gop)
    codec_options.update(options or {})
    height, width = frames[0].shape[:2]
    container_options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=container_options) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(encoder, rate=rate, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.gop_size = gop
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame.reformat(format=pix_fmt)))
        container.mux(stream.encode(None))
    return path


def write_corrupt_video(
    path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float = 15.0, codec: str = "h264", *,
    mode: str = "overwrite", at: float = 0.5, span: float = 0.1, seed: int = 0, **kwargs: Any,
) -> Path:
    """A real video (``write_video``) damaged part way through.

    ``mode="overwrite"``: ``span`` of the file's bytes from ``at`` (fractions of its size) become random
    bytes (the header and the .mp4 index, which ``faststart`` puts first, stay intact); ``mode="truncate"``:
    the file is cut at ``at``. What a reader sees depends on the container: .mp4 hands the damaged samples
    to the decoder (h264: ``av.error.InvalidDataError``); the Matroska/WebM and AVI demuxers stop or skip at
    the damage silently, so fewer frames come out (VP9 in WebM may even decode all of them).
    """
    path = write_video(path, frames, fps, codec, **kwargs)
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    if mode == "truncate":
        del data[start:]
    elif mode == "overwrite":
        end = min(len(data), start + max(1, int(len(data) * span)))
        data[start:end] = random.Random(seed).randbytes(end - start)
    else:
        raise ValueError(f"mode must be 'overwrite' or 'truncate', not {mode!r}")
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------------- stream reading


def open_stream(url: str, *, options: dict[str, str] | None = None, format: str | None = None,
                timeout: float | tuple[float, float] = (20.0, 10.0)) -> av.container.InputContainer:
    """``av.open`` for a live stream: ``RTSP_OPTIONS`` for rtsp:// URLs (plus ``options``)."""
    import av

    merged = dict(RTSP_OPTIONS) if url.startswith("rtsp") else {}
    merged.update(options or {})
    return av.open(url, format=format, options=merged, timeout=timeout)


def read_frames(
    url: str, count: int, *, options: dict[str, str] | None = None, format: str | None = None,
    timeout: float | tuple[float, float] = (20.0, 10.0), thread_type: str | None = None,
) -> list[np.ndarray]:
    """Open ``url`` with PyAV, decode ``count`` frames to RGB arrays and close it.

    ``thread_type``: the decoder's ("NONE", "SLICE", "FRAME", "AUTO"); default PyAV's (slice threads).
    """
    with open_stream(url, options=options, format=format, timeout=timeout) as container:
        stream = container.streams.video[0]
        if thread_type is not None:
            stream.codec_context.thread_type = thread_type
        frames: list[np.ndarray] = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= count:
                break
    if len(frames) < count:
        raise EOFError(f"{url}: the stream ended after {len(frames)} of {count} frames")
    return frames


# ----------------------------------------------------------------------------------------------- RTSP


def rtsp_request(url: str, method: str = "DESCRIBE", *, user: str | None = None, password: str | None = None,
                 timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """One RTSP request over TCP: (status code, headers with lower-case names, body)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    user = unquote(parts.username) if user is None and parts.username is not None else user
    password = unquote(parts.password) if password is None and parts.password is not None else password
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    lines = [f"{method} {bare} RTSP/1.0", "CSeq: 1", "User-Agent: edge-tests"]
    if method == "DESCRIBE":
        lines.append("Accept: application/sdp")
    if user is not None:
        lines.append("Authorization: Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode())
    address = (parts.hostname or "127.0.0.1", parts.port or 554)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{bare}: connection closed before a {method} reply")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    return int(status_line.split()[1]), headers, body.decode("latin-1")


_live_processes: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:  # a server started outside a fixture and never stopped
    for process in list(_live_processes):
        with contextlib.suppress(OSError):
            process.kill()


class RtspServer:
    """A live H.264 RTSP server (GStreamer, in a ``/usr/bin/python3`` subprocess) on a free port.

    Serves ``frames`` (default: three test patterns held one second each) looped, live at ``fps``, as
    ``size`` (default: the frames' size; others are stretched to it). Each client gets its own pipeline
    starting at frame 0, unless ``shared``: then one pipeline runs from ``start()`` on and a client joins it
    at the next key frame. ``user``/``password``: RTSP basic auth. ``key_int``: frames between key frames
    (default one second); ``slices``: H.264 slices per frame. TCP and UDP transports both work. The port
    is kept across ``restart()``/``start()``; the server exits by itself if the test process dies.
    """

    def __init__(
        self, workdir: str | os.PathLike[str], frames: Sequence[np.ndarray] | None = None, *,
        fps: float = 15.0, size: Size | None = None, user: str | None = None, password: str | None = None,
        shared: bool = False, key_int: int | None = None, slices: int = 1, bitrate_kbps: int = 2000,
        port: int = 0, mount: str = "/stream", python: str = SYSTEM_PYTHON,
    ) -> None:
        self.workdir = Path(workdir)
        self.frames = list(frames) if frames is not None else default_frames(size or DEFAULT_SIZE, round(fps))
        height, width = self.frames[0].shape[:2]
        self.size: Size = size or (width, height)
        self.fps = fps
        self.user, self.password, self.shared = user, password, shared
        self.key_int, self.slices, self.bitrate_kbps = key_int, slices, bitrate_kbps
        self.host, self.port, self.mount, self.python = "127.0.0.1", port, mount, python
        self.frames_dir = self.workdir / "frames"
        self.log_path = self.workdir / "rtsp_server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_frames()

    def _write_frames(self) -> None:
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        unique, order = _unique(self.frames)
        for index, frame in enumerate(unique):
            Image.fromarray(frame).save(self.frames_dir / f"frame{index:05d}.png", compress_level=1)
        (self.frames_dir / "frames.txt").write_text("".join(f"frame{i:05d}.png\n" for i in order))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        """The stream URL with the given credentials (none: no userinfo)."""
        auth = f"{user}:{password or ''}@" if user is not None else ""
        return f"rtsp://{auth}{self.host}:{self.port}{self.mount}"

    @property
    def url(self) -> str:
        """The stream URL, with the server's credentials if it has any."""
        return self.url_for(self.user, self.password)

    @property
    def bare_url(self) -> str:
        """The stream URL without credentials."""
        return self.url_for()

    def log(self) -> str:
        """The server's stderr/stdout so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self, user: str | None = None, password: str | None = None, timeout: float = 10.0) -> int:
        """The status code of an RTSP DESCRIBE with these credentials (200, 401...)."""
        return rtsp_request(self.url_for(user, password), "DESCRIBE", timeout=timeout)[0]

    def start(self, timeout: float = RTSP_START_TIMEOUT_S) -> RtspServer:
        """Start the server and wait until a client can DESCRIBE the stream (its pipeline runs)."""
        if self.running:
            return self
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        width, height = self.size
        command = [
            self.python, str(RTSP_SCRIPT), "--frames", str(self.frames_dir), "--port", str(self.port),
            "--address", self.host, "--mount", self.mount, "--fps", str(self.fps), "--width", str(width),
            "--height", str(height), "--slices", str(self.slices), "--bitrate", str(self.bitrate_kbps),
            "--key-int", str(self.key_int or 0), "--ready-file", str(ready), "--parent-pid", str(os.getpid()),
        ]
        if self.user is not None:
            command += ["--user", self.user, "--password", self.password or ""]
        if self.shared:
            command.append("--shared")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it; teardown ends it
            )
        _live_processes.add(self.process)
        deadline = time.monotonic() + timeout
        last_error = "not listening"
        while time.monotonic() < deadline:
            if not self.running:
                self._fail(f"exited with {self.process.returncode}")
            if not ready.exists():
                time.sleep(0.05)
                continue
            self.port = int(ready.read_text())
            try:
                wait = max(1.0, min(15.0, deadline - time.monotonic()))
                status = self.describe(self.user, self.password, timeout=wait)
            except OSError as error:
                status, last_error = 0, repr(error)
            if status == 200:
                return self
            if status:
                last_error = f"DESCRIBE answered {status}"
            time.sleep(0.2)
        self._fail(f"not ready after {timeout:.0f} s ({last_error})")
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        self.kill()
        log = self.log()
        hint = ""
        if any(s in log for s in ("No module named 'gi'", "GstRtspServer not available", "no element")):
            hint = " (GStreamer's RTSP server or a plugin is missing: run `make system-deps` as root)"
        raise RuntimeError(f"RTSP server {self.url}: {why}{hint}; its log:\n{log[-4000:]}")

    def _end(self, sig: int, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _live_processes.discard(process)

    def kill(self) -> None:
        """SIGKILL: clients' connections drop at once, no RTSP teardown."""
        self._end(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (clean exit), SIGKILL after ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def restart(self, timeout: float = RTSP_START_TIMEOUT_S) -> RtspServer:
        """Stop and start again on the same port."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"RtspServer({self.url}, running={self.running})"


# ---------------------------------------------------------------------------------------------- MJPEG


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.asarray(frame)).save(out, "JPEG", quality=quality)
    return out.getvalue()


class _MjpegHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: MjpegServer

    def shutdown_request(self, request: Any) -> None:
        if self.owner._abort:  # kill(): reset the connection (RST) instead of a clean close (FIN)
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_request(request)
            return
        super().shutdown_request(request)


class _MjpegHandler(BaseHTTPRequestHandler):
    server: _MjpegHTTPServer
    protocol_version = "HTTP/1.0"
    disable_nagle_algorithm = True  # else Nagle and delayed ACKs send frames in pairs ~40 ms apart

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        owner.requests.append(path)
        if not owner._authorized(self.headers.get("Authorization")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="edge-tests"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path in ("/stream", "/mjpeg", "/video"):
            owner._serve_stream(self)
        elif path in ("/snapshot.jpg", "/capture", "/jpg"):
            owner._serve_snapshot(self)
        else:
            self.send_error(404)


class MjpegServer:
    """An MJPEG HTTP camera (like an ESP32-CAM) in a thread, on a free port of 127.0.0.1.

    ``/stream``: ``multipart/x-mixed-replace; boundary=MJPEG_BOUNDARY``, one JPEG part per frame at ``fps``;
    each connection starts at frame 0 and loops (``loop=False``: closes after the last frame). Parts carry
    ``Content-Length`` unless ``content_length=False``. ``/snapshot.jpg`` (also ``/capture``): one
    ``image/jpeg``, the next frame of its own sequence per request. ``user``/``password``: HTTP basic auth.
    """

    def __init__(
        self, frames: Sequence[np.ndarray] | None = None, *, fps: float = 10.0, user: str | None = None,
        password: str | None = None, quality: int = 85, loop: bool = True, content_length: bool = True,
        boundary: str = MJPEG_BOUNDARY, port: int = 0, host: str = "127.0.0.1",
    ) -> None:
        self.frames = list(frames) if frames is not None else default_frames(DEFAULT_SIZE, round(fps))
        unique, order = _unique(self.frames)
        encoded = [_jpeg(frame, quality) for frame in unique]
        self.jpegs = [encoded[i] for i in order]
        self.fps, self.user, self.password, self.loop = fps, user, password, loop
        self.content_length, self.boundary = content_length, boundary
        self.host, self.port = host, port
        self.requests: list[str] = []  # request paths, in order
        self.parts_sent = 0  # multipart parts sent over all connections (garbage ones included)
        self.clients = 0  # open /stream connections
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._abort = False
        self._connections: set[socket.socket] = set()
        self._stall_until = 0.0
        self._corrupt_left = 0
        self._snapshots = 0
        self._garbage = random.Random(0)
        self._httpd: _MjpegHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # controls
    def stall(self, seconds: float) -> None:
        """For ``seconds`` send nothing (connections stay open, new ones are accepted but get no data)."""
        with self._lock:
            self._stall_until = time.monotonic() + seconds

    def corrupt(self, n: int = 1) -> None:
        """The next ``n`` parts sent (over all connections; in place of frames) have garbage bodies."""
        with self._lock:
            self._corrupt_left += n

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def url_for(self, path: str = "/stream", user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password or ''}@" if user is not None else ""
        return f"http://{auth}{self.host}:{self.port}{path}"

    @property
    def url(self) -> str:
        """The ``/stream`` URL, with the server's credentials if it has any."""
        return self.url_for("/stream", self.user, self.password)

    @property
    def snapshot_url(self) -> str:
        return self.url_for("/snapshot.jpg", self.user, self.password)

    def start(self) -> MjpegServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._abort = False
        httpd = _MjpegHTTPServer((self.host, self.port), _MjpegHandler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"mjpeg:{self.port}", daemon=True)
        self._thread.start()
        return self

    def _end(self, abort: bool, timeout: float = 10.0) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._abort = abort
        self._stopping.set()
        httpd.shutdown()  # no new connections
        if thread is not None:
            thread.join(timeout)
        with self._idle:  # open /stream connections end within one frame period...
            if not self._idle.wait_for(lambda: self.clients == 0, 2.0):
                for connection in list(self._connections):  # ...unless blocked writing to a client that
                    with contextlib.suppress(OSError):  # does not read: unblock them
                        connection.shutdown(socket.SHUT_RDWR)
                self._idle.wait_for(lambda: self.clients == 0, timeout)
        httpd.server_close()
        self._httpd = self._thread = None

    def stop(self) -> None:
        """Close the listening socket and every connection (clients see the stream end)."""
        self._end(abort=False)

    def kill(self) -> None:
        """Like ``stop`` but connections are reset (RST), as when a camera loses power."""
        self._end(abort=True)

    def restart(self) -> MjpegServer:
        """Stop, then listen again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MjpegServer({self.url}, running={self.running})"

    # serving
    def _authorized(self, header: str | None) -> bool:
        if self.user is None:
            return True
        expected = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
        return header is not None and header.strip() == f"Basic {expected}"

    def _wait_while_stalled(self) -> None:
        while not self._stopping.is_set():
            remaining = self._stall_until - time.monotonic()
            if remaining <= 0:
                return
            self._stopping.wait(min(remaining, 0.05))

    def _next_body(self, index: int) -> bytes:
        with self._lock:
            if self._corrupt_left > 0:
                self._corrupt_left -= 1
                return self._garbage.randbytes(len(self.jpegs[index]))
        return self.jpegs[index]

    def _serve_stream(self, handler: _MjpegHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={self.boundary}")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        with self._lock:
            self.clients += 1
            self._connections.add(handler.connection)
        try:
            period = 1.0 / self.fps
            next_time = time.monotonic()
            index = 0
            while not self._stopping.is_set():
                if index >= len(self.jpegs):
                    if not self.loop:
                        break
                    index = 0
                self._wait_while_stalled()
                if time.monotonic() > next_time + period:  # after a stall: resume at the frame rate
                    next_time = time.monotonic()
                if self._stopping.wait(max(0.0, next_time - time.monotonic())):
                    break
                body = self._next_body(index)
                head = f"--{self.boundary}\r\nContent-Type: image/jpeg\r\n"
                if self.content_length:
                    head += f"Content-Length: {len(body)}\r\n"
                head += f"X-Timestamp: {time.time():.6f}\r\n\r\n"
                handler.wfile.write(head.encode() + body + b"\r\n")
                handler.wfile.flush()
                with self._lock:
                    self.parts_sent += 1
                index += 1
                next_time += period
        except OSError:  # the client went away
            pass
        finally:
            with self._idle:
                self.clients -= 1
                self._connections.discard(handler.connection)
                self._idle.notify_all()

    def _serve_snapshot(self, handler: _MjpegHandler) -> None:
        self._wait_while_stalled()
        if self._stopping.is_set():
            return
        with self._lock:
            index = self._snapshots % len(self.jpegs)
            self._snapshots += 1
        body = self._next_body(index)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(body)


# ------------------------------------------------------------------------------------------- fixtures

RtspFactory = Callable[..., RtspServer]
MjpegFactory = Callable[..., MjpegServer]
VideoFactory = Callable[..., Path]


@pytest.fixture
def rtsp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspFactory]:
    """Factory: ``rtsp_server(frames=None, *, start=True, **RtspServer options)``; all killed at teardown."""
    servers: list[RtspServer] = []

    def make(frames: Sequence[np.ndarray] | None = None, *, start: bool = True, **kwargs: Any) -> RtspServer:
        server = RtspServer(tmp_path_factory.mktemp("rtsp"), frames, **kwargs)
        servers.append(server)
        return server.start() if start else server

    try:
        yield make
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegFactory]:
    """Factory: ``mjpeg_server(frames=None, *, start=True, **MjpegServer options)``; stopped at teardown."""
    servers: list[MjpegServer] = []

    def make(frames: Sequence[np.ndarray] | None = None, *, start: bool = True, **kwargs: Any) -> MjpegServer:
        server = MjpegServer(frames, **kwargs)
        servers.append(server)
        return server.start() if start else server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def video_file(tmp_path_factory: pytest.TempPathFactory) -> VideoFactory:
    """Factory: ``video_file(name="clip.mp4", frames=None, *, fps=15, codec=None, corrupt=None, **options)``.

    ``codec`` defaults from the suffix (.mp4/.mkv/.mov h264, .avi mjpeg, .webm vp9); ``frames`` to three
    test patterns held one second each at 320x240. ``corrupt``: "overwrite" or "truncate"
    (``write_corrupt_video``).
    """
    folder = tmp_path_factory.mktemp("videos")

    def make(name: str = "clip.mp4", frames: Sequence[np.ndarray] | None = None, *, fps: float = 15.0,
             codec: str | None = None, corrupt: str | None = None, **kwargs: Any) -> Path:
        path = folder / name
        codec = codec or _SUFFIX_CODECS.get(path.suffix.lower(), "h264")
        frames = frames if frames is not None else default_frames((320, 240), round(fps))
        if corrupt:
            return write_corrupt_video(path, frames, fps, codec, mode=corrupt, **kwargs)
        return write_video(path, frames, fps, codec, **kwargs)

    return make
