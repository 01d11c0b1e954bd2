"""Image preprocessing for calibration and evaluation, done the way the device does it.

Decode with Pillow, convert to RGB or grayscale by the model's channel count, stretch-resize to the
model's height x width (bilinear), then ``(pixel - mean) / std`` per channel with pixels in 0..255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def preprocess_image(
    image: Image.Image,
    height: int,
    width: int,
    channels: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> np.ndarray:
    """One decoded image -> float32 array (height, width, channels) in the model's input space."""
    if channels not in (1, 3):
        raise ValueError(f"image inputs need 1 or 3 channels, got {channels}")
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.float32).reshape(height, width, channels)
    return normalize(pixels, mean, std)


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(pixels - mean) / std`` broadcast over the last (channel) axis."""
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    return ((pixels - mean_arr) / std_arr).astype(np.float32)
