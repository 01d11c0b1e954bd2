"""The Raspberry Pi camera (``picamera:N``) through picamera2, where Raspberry Pi OS provides it.

picamera2 is not on PyPI in a form that installs everywhere: it comes with Raspberry Pi OS as the Debian
package ``python3-picamera2``, so the virtual environment must see the system's packages
(``python3 -m venv --system-site-packages``). Without it, a ``picamera:N`` source fails with one line that
says so, and the other sources go on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from edge.errors import ConfigError, SourceError
from edge.sources.base import STREAMING, InputItem
from edge.sources.live import Feed, FeedOptions, SourceContext, reconnecting

DEFAULT_SIZE = (1280, 720)
INSTALL_HINT = (
    "picamera:{index} needs picamera2, which is not installed here: on Raspberry Pi OS run "
    "'sudo apt install python3-picamera2' and create the virtual environment with --system-site-packages"
)


class ArrayFrame:
    """A frame held as RGB numpy pixels (a camera that hands over arrays); scaled with Pillow on demand."""

    __slots__ = ("_pixels",)

    def __init__(self, pixels: np.ndarray) -> None:
        self._pixels = pixels

    @property
    def size(self) -> tuple[int, int]:
        return int(self._pixels.shape[1]), int(self._pixels.shape[0])

    def to_array(self, width: int, height: int) -> np.ndarray:
        if (width, height) == self.size:
            return self._pixels
        image = Image.fromarray(self._pixels).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image)

    def grey(self, width: int, height: int) -> np.ndarray:
        image = Image.fromarray(self._pixels).convert("L").resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image)


def parse_index(target: str) -> int:
    text = target.split(":", 1)[1] if ":" in target else ""
    if not text.isdigit():
        raise ConfigError(f"{target!r}: a Pi camera is picamera:N with N its number (picamera:0)")
    return int(text)


def _open(index: int, size: tuple[int, int], fps: float | None) -> Any:
    try:
        from picamera2 import Picamera2  # Raspberry Pi OS only
    except ImportError as exc:
        raise SourceError(INSTALL_HINT.format(index=index)) from exc
    camera = None
    try:
        camera = Picamera2(index)
        controls = {"FrameRate": fps} if fps else {}
        config = camera.create_video_configuration(main={"size": size, "format": "RGB888"}, controls=controls)
        camera.configure(config)
        camera.start()
    except (IndexError, RuntimeError, OSError) as exc:
        if camera is not None:  # opened but not started: release it, or every retry finds it busy
            camera.close()
        raise SourceError(
            f"picamera:{index} cannot be opened ({exc}); check 'rpicam-hello --list-cameras'"
        ) from exc
    return camera


def picamera_feed(
    name: str,
    target: str,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    feed_options: FeedOptions | None = None,
) -> Feed:
    """The feed of Pi camera ``picamera:N``: live, newest frame only, reopened with backoff when it fails."""
    index = parse_index(target)

    def session(context: SourceContext) -> bool:
        camera = _open(index, size or DEFAULT_SIZE, fps)
        delivered = False
        try:
            while not context.stop.is_set():
                try:
                    pixels = camera.capture_array("main")
                except (RuntimeError, OSError) as exc:
                    raise SourceError(f"picamera:{index} stopped delivering frames ({exc})") from exc
                if not delivered:
                    delivered = True
                    context.set_state(STREAMING)
                # picamera2's "RGB888" is B, G, R in memory
                context.emit(InputItem("", ArrayFrame(np.ascontiguousarray(pixels[:, :, 2::-1]))))
        finally:
            try:
                camera.stop()
            finally:
                camera.close()
        return delivered

    produce = reconnecting(session, retry=True)

    def run(context: SourceContext) -> None:
        try:
            import picamera2  # noqa: F401
        except ImportError as exc:  # not retried: installing it needs a restart anyway
            raise SourceError(INSTALL_HINT.format(index=index)) from exc
        produce(context)

    return Feed(name, "picamera", target, run, True, feed_options)
