"""The demo's camera: an MJPEG HTTP camera (like an ESP32-CAM) in a thread, showing the held-out digits once.

``DigitCamera(images, fps=30, hold=3).start()`` listens on a free port of 127.0.0.1 and serves ``/stream``
as ``multipart/x-mixed-replace`` (one JPEG part per frame, with ``Content-Length``, at ``fps``). Each digit
(8x8, scaled up with NEAREST to ``size`` x ``size`` pixels, white on black) is held for ``hold`` frames, so
frame ``n`` of a connection shows digit ``n // hold``: a result's ``frame`` tells which digit it saw.

The show is one-shot, which keeps the demo's accounting exact:

- a connection gets its HTTP headers at once, then waits (sending nothing) until ``show()`` is called; the
  demo calls it once the device serves the pushed model, so that no digit goes by before anything can
  answer it. Every connection then starts at frame 0 (``edge run`` first asks for the headers alone, to learn
  the content type, and hangs up; only its second connection, FFmpeg's, reads frames);
- after the last frame the response ends (the connection is closed) and ``finished`` is set;
- from then on every request is answered ``503`` at once: no frame is ever sent again, so no result can come
  after the last frame's, and the device's reconnect attempts cost it nothing but a log line.

Nothing here blocks the demo's exit: serving threads are daemons, writes time out, ``close()`` returns
within a few seconds whatever the clients do.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOUNDARY = "123456789000000000000987654321"  # what an ESP32-CAM sends
WAIT_FOR_SHOW_S = 120.0  # a connection made before show() waits this long at most
WRITE_TIMEOUT_S = 5.0


def digit_jpeg(pixels: Any, size: int, quality: int = 90) -> bytes:
    """One digit (0..255 grey, shape (8, 8) or (8, 8, 1)) as a ``size`` x ``size`` JPEG, scaled up NEAREST."""
    import numpy as np
    from PIL import Image

    array = np.clip(np.rint(np.asarray(pixels, dtype=np.float32).reshape(8, 8)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array, "L").resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that never reads cannot keep the demo alive
    block_on_close = False
    camera: DigitCamera


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one response per connection; the end of the stream is the end of it
    timeout = WRITE_TIMEOUT_S  # applied to the socket: a blocked write fails instead of hanging
    disable_nagle_algorithm = True  # TCP_NODELAY: each frame leaves when written, not up to 40 ms later
    server_version = "demo-camera/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints what matters
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        camera = self.server.camera
        if self.path.split("?", 1)[0] != "/stream":
            self._plain(404, "not found; the stream is /stream\n")
        elif camera.finished.is_set() or camera.closing.is_set():
            self._plain(503, "the demo camera has shown every digit; the stream has ended\n")
        else:
            camera._serve(self)

    def _plain(self, code: int, text: str) -> None:
        body = text.encode()
        with contextlib.suppress(OSError):
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


class DigitCamera:
    """An MJPEG camera on 127.0.0.1 showing ``images`` once, each for ``hold`` frames at ``fps``."""

    def __init__(
        self, images: Sequence[Any], *, fps: float = 30.0, hold: int = 3, size: int = 240, quality: int = 90
    ) -> None:
        if not images:
            raise ValueError("the camera needs at least one image")
        if fps <= 0 or hold < 1:
            raise ValueError(f"fps must be > 0 and hold >= 1, got fps={fps}, hold={hold}")
        self.fps, self.hold, self.size = fps, hold, size
        self.jpegs = [digit_jpeg(image, size, quality) for image in images]
        self.frames = len(self.jpegs) * hold  # frames in the whole show
        self.shown = threading.Event()  # show() was called: connections start their frames
        self.finished = threading.Event()  # one connection got every frame; the stream has ended
        self.closing = threading.Event()
        self.connections = 0  # /stream requests answered with a stream
        self.incomplete: list[int] = []  # frames written to each connection that ended before the last frame
        self.shown_at = 0.0  # time.monotonic() of show()
        self.finished_at = 0.0  # time.monotonic() the last frame was written
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the camera first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    @property
    def seconds(self) -> float:
        """How long the whole show lasts."""
        return self.frames / self.fps

    def digit_of(self, frame: int) -> int:
        """The index of the image frame ``frame`` of a connection shows."""
        return frame // self.hold

    def start(self) -> DigitCamera:
        server = _Server(("127.0.0.1", 0), _Handler)  # port 0: a free port, chosen by the kernel
        server.camera = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="demo-camera", daemon=True
        )
        self._thread.start()
        return self

    def show(self) -> None:
        """Start the show: every connection (those already waiting too) gets frame 0 onwards."""
        self.shown_at = time.monotonic()
        self.shown.set()

    def wait_finished(self, timeout: float) -> bool:
        return self.finished.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and end every stream; returns within ``timeout`` seconds or so."""
        self.closing.set()
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join(timeout)
        server.server_close()

    # ------------------------------------------------------------------------------------ serving

    def _serve(self, handler: _Handler) -> None:
        sent = 0
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache, no-store")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.flush()
            with self._lock:
                self.connections += 1
            deadline = time.monotonic() + WAIT_FOR_SHOW_S
            while not self.shown.wait(0.1):  # headers now; frames once the device serves the model
                if self.closing.is_set() or time.monotonic() > deadline:
                    return
            period = 1.0 / self.fps
            due = time.monotonic()
            for frame in range(self.frames):
                if self.closing.wait(max(0.0, due - time.monotonic())):
                    return
                body = self.jpegs[self.digit_of(frame)]
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n"
                    f"X-Frame: {frame}\r\n\r\n"
                )
                handler.wfile.write(head.encode() + body + b"\r\n")
                handler.wfile.flush()
                sent += 1
                due += period
            with self._lock:
                if not self.finished.is_set():
                    self.finished_at = time.monotonic()
                    self.finished.set()
        except OSError:  # the client hung up (edge run's content-type probe does)
            pass
        finally:
            if sent < self.frames:
                with self._lock:
                    self.incomplete.append(sent)
