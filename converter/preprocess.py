"""Image preprocessing for calibration and evaluation: exactly what the device does.

Decoding, EXIF orientation, channel conversion and the stretch resize come from the device's own
``edge.preprocess.prepare_image``; this module adds the normalization ``(pixel - mean) / std`` that the
device applies before quantizing (see ``edge.model``), giving float32 values in model-input space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from edge.preprocess import prepare_image


def preprocess_image(
    image: Image.Image | Path | str | bytes,
    height: int,
    width: int,
    channels: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> np.ndarray:
    """One image (PIL image, path or encoded bytes) -> float32 (height, width, channels), model-input space.

    Raises ``edge.errors.InputError`` when the image cannot be decoded.
    """
    pixels = prepare_image(image, width, height, channels, mode="stretch").pixels
    return normalize(pixels.astype(np.float32).reshape(height, width, channels), mean, std)


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(pixels - mean) / std`` broadcast over the last (channel) axis."""
    mean_arr = np.asarray(mean, dtype=np.float32)
    std_arr = np.asarray(std, dtype=np.float32)
    return ((pixels - mean_arr) / std_arr).astype(np.float32)
