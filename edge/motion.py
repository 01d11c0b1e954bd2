"""The motion gate: skip inference on frames that did not change since the last inferred one.

The comparison is cheap on purpose: both frames as small grey pictures (``GREY_WIDTH`` wide), a pixel counts
as changed when its grey value moved by more than ``PIXEL_DELTA`` (of 255, above sensor noise and compression
flicker), and the frame counts as moved when more than ``threshold`` percent of the pixels changed.
"""

from __future__ import annotations

import numpy as np

from edge.errors import ConfigError
from edge.sources.base import FrameImage

DEFAULT_THRESHOLD = 1.0  # percent of the picture
GREY_WIDTH = 64
PIXEL_DELTA = 24


def check_threshold(value: float) -> float:
    if not 0.0 <= value < 100.0:
        raise ConfigError(f"--motion {value}: the threshold is a percentage of the picture, from 0 to 100")
    return float(value)


def grey_size(width: int, height: int) -> tuple[int, int]:
    """The size of the grey picture compared for a frame of ``width`` x ``height``."""
    if width <= GREY_WIDTH:
        return width, height
    return GREY_WIDTH, max(1, round(height * GREY_WIDTH / width))


def changed_percent(previous: np.ndarray, current: np.ndarray) -> float:
    """Percent of pixels whose grey value moved by more than ``PIXEL_DELTA``."""
    delta = np.abs(previous.astype(np.int16) - current.astype(np.int16))
    return float(np.count_nonzero(delta > PIXEL_DELTA)) * 100.0 / max(1, delta.size)


class MotionGate:
    """Remembers the last frame let through; ``changed`` says whether a new one moved enough."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = check_threshold(threshold)
        self._last: np.ndarray | None = None

    def changed(self, frame: FrameImage) -> bool:
        """True (and this frame becomes the reference) when it differs enough from the last one passed."""
        current = frame.grey(*grey_size(*frame.size))
        last = self._last
        if last is not None and last.shape == current.shape and (
            changed_percent(last, current) <= self.threshold
        ):
            return False
        self._last = current
        return True
