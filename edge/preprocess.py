"""Image decoding and resizing with Pillow, keeping the geometry needed to map results back.

``decode`` opens a path, bytes, a PIL image or a numpy array (JPEG, PNG, BMP, WebP, GIF first frame),
applies EXIF orientation and refuses decompression bombs. ``prepare`` converts to the model's channels and
resizes (``stretch``, ``letterbox`` or ``crop``); JPEGs much larger than the target are decoded in draft
mode (DCT scaling), which is several times faster. Every failure is an ``InputError`` for that input.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import ConfigError, InputError

log = logging.getLogger(__name__)

RESIZE_MODES = ("stretch", "letterbox", "crop")
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000x8000; larger is refused as a decompression bomb
EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
# where Pillow's getexif finds an orientation besides a TIFF's own tags
_ORIENTATION_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


class Geometry(NamedTuple):
    """How original pixels map to model pixels: ``model = original * scale + offset`` per axis."""

    original_width: int
    original_height: int
    model_width: int
    model_height: int
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_original(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[Any, Any]:
        """Model-pixel coordinates back to original-image pixels (unclipped)."""
        return (np.asarray(x) - self.offset_x) / self.scale_x, (np.asarray(y) - self.offset_y) / self.scale_y

    def box_to_original(self, xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, ...]:
        """A model-pixel box as ``(xmin, ymin, xmax, ymax)`` in original pixels, clipped to the image."""
        (x0, x1), (y0, y1) = self.to_original(np.array([xmin, xmax]), np.array([ymin, ymax]))
        w, h = self.original_width, self.original_height
        return (
            float(np.clip(x0, 0, w)),
            float(np.clip(y0, 0, h)),
            float(np.clip(x1, 0, w)),
            float(np.clip(y1, 0, h)),
        )


def geometry_for(width: int, height: int, model_width: int, model_height: int, mode: str) -> Geometry:
    """The scale and offsets of resizing a ``width`` x ``height`` image to the model size in ``mode``."""
    if mode == "stretch":
        return Geometry(width, height, model_width, model_height, model_width / width, model_height / height)
    if mode not in ("letterbox", "crop"):
        raise ConfigError(f"resize mode {mode!r} is not known; choose one of: {', '.join(RESIZE_MODES)}")
    if mode == "letterbox":
        scale = min(model_width / width, model_height / height)
        new_w = max(1, min(model_width, round(width * scale)))
        new_h = max(1, min(model_height, round(height * scale)))
        offset_x, offset_y = float((model_width - new_w) // 2), float((model_height - new_h) // 2)
        return Geometry(
            width, height, model_width, model_height, new_w / width, new_h / height, offset_x, offset_y
        )
    scale = max(model_width / width, model_height / height)
    offset_x, offset_y = (model_width - width * scale) / 2, (model_height - height * scale) / 2
    return Geometry(width, height, model_width, model_height, scale, scale, offset_x, offset_y)


class Prepared(NamedTuple):
    """Pixels ready for the model (H, W, C uint8) and the geometry to map results back."""

    pixels: np.ndarray
    geometry: Geometry | None


def open_image(item: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open (lazily, header only) a path or bytes as a PIL image; PIL images pass through."""
    if isinstance(item, Image.Image):
        _check_size(item.size, max_pixels, "image")
        return item
    name = _describe(item)
    if isinstance(item, bytes | bytearray | memoryview):
        if len(item) == 0:
            raise InputError("input is empty (0 bytes); expected an image")
        stream: Any = io.BytesIO(bytes(item))
    elif isinstance(item, str | Path):
        stream = item  # opened as it is: what is wrong with a path is worked out only when it fails
    else:
        raise InputError(
            f"cannot use an input of type {type(item).__name__}; pass a path, bytes, image or array"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is too large to decode safely ({exc}); resize it first") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{name} does not exist; check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name} is a folder; pass image files (or the folder to 'edge run')") from exc
    except UnidentifiedImageError as exc:
        if isinstance(stream, str | Path) and _is_empty(stream):
            raise InputError(f"{name} is empty (0 bytes); expected an image") from exc
        raise InputError(
            f"{name} is not an image Pillow can read (JPEG, PNG, BMP, WebP, GIF); skip it"
        ) from exc
    except OSError as exc:
        raise InputError(f"{name} is corrupt or truncated ({exc}); skip it or fetch it again") from exc
    _check_size(image.size, max_pixels, name)
    return image


def _is_empty(path: str | Path) -> bool:
    try:
        return Path(path).stat().st_size == 0
    except OSError:
        return False


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(decompression-bomb protection); resize it first"
        )


def _describe(item: Any) -> str:
    if isinstance(item, str | Path):
        return str(item)
    if isinstance(item, bytes | bytearray | memoryview):
        return f"input ({len(item)} bytes)"
    return "input"


def _orientation(image: Image.Image) -> int:
    try:
        if image.format == "PNG" and "exif" not in image.info:
            image.load()  # an eXIf chunk may follow the pixels (getexif loads too)
        if not hasattr(image, "tag_v2") and not any(key in image.info for key in _ORIENTATION_KEYS):
            return 1  # nothing that can hold an orientation: not worth building an Exif (per frame)
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block is not worth failing the image for
        return 1


def decode(
    item: Any,
    size: tuple[int, int] | None = None,
    mode: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    orientation: int | None = None,
) -> Image.Image:
    """Decode fully and upright (EXIF orientation); ``size`` (w, h) allows JPEG draft decoding."""
    image = open_image(item, max_pixels)
    name = name or _describe(item)
    try:
        orientation = _orientation(image) if orientation is None else orientation
        if size is not None and image.format == "JPEG":
            _draft(image, size, mode, orientation)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
        if orientation != 1:
            from PIL import ImageOps  # only here: most inputs need no turn, and it is 3 ms of start-up

            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is too large to decode safely ({exc}); resize it first") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"{name} is corrupt or truncated ({exc}); skip it or fetch it again") from exc
    return image


def _draft(image: Image.Image, size: tuple[int, int], mode: str, orientation: int) -> None:
    """Ask the JPEG decoder for a DCT-scaled image still at least as large as the resize needs."""
    target_w, target_h = size
    if orientation in _TRANSPOSED:
        target_w, target_h = target_h, target_w
    width, height = image.size
    need = covering_size(width, height, target_w, target_h, mode)
    if width >= 2 * need[0] and height >= 2 * need[1]:
        image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", need)


def covering_size(width: int, height: int, target_w: int, target_h: int, mode: str) -> tuple[int, int]:
    """The smallest size (keeping the aspect ratio where ``mode`` does) that resizing to the target needs."""
    if mode == "crop":
        scale = max(target_w / width, target_h / height)
    elif mode == "letterbox":
        scale = min(target_w / width, target_h / height)
    else:
        return target_w, target_h
    return max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, LA, I;16, CMYK...) to L (1 channel) or RGB (3 channels)."""
    target = "L" if channels == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8), "L")
    return image.convert(target)


def resize(
    image: Image.Image, width: int, height: int, mode: str, pad: int = 0
) -> tuple[Image.Image, Geometry]:
    """Resize an upright image to ``width`` x ``height``; the geometry maps back to the image's own pixels.

    Works on a draft-decoded JPEG too: ``original`` sizes in the geometry are those passed in ``image.info``
    under ``edge_original_size`` when present (set by ``prepare``).
    """
    original = image.info.get("edge_original_size", image.size)
    geometry = geometry_for(original[0], original[1], width, height, mode)
    ratio_x, ratio_y = image.size[0] / original[0], image.size[1] / original[1]
    if mode == "stretch":
        if image.size == (width, height):  # already the model's size: Pillow would copy it for nothing
            return image, geometry
        return image.resize((width, height), Image.Resampling.BILINEAR), geometry
    if mode == "letterbox":
        new_w = round(original[0] * geometry.scale_x)
        new_h = round(original[1] * geometry.scale_y)
        scaled = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        canvas = Image.new(image.mode, (width, height), pad if image.mode == "L" else (pad, pad, pad))
        canvas.paste(scaled, (int(geometry.offset_x), int(geometry.offset_y)))
        return canvas, geometry
    # crop: the centre region of the original that fills the model input, in this image's pixels
    left = -geometry.offset_x / geometry.scale_x
    top = -geometry.offset_y / geometry.scale_y
    box = (
        left * ratio_x,
        top * ratio_y,
        (left + width / geometry.scale_x) * ratio_x,
        (top + height / geometry.scale_y) * ratio_y,
    )
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box), geometry


def original_size(item: Any) -> tuple[int, int] | None:
    """The upright size of an input without decoding it (None when unknown)."""
    try:
        image = open_image(item)
    except InputError:
        return None
    width, height = image.size
    return (height, width) if _orientation(image) in _TRANSPOSED else (width, height)


def load_upright(
    item: Any, size: tuple[int, int], mode: str = "stretch", max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an input (path, bytes, PIL image or numpy image) upright; also its full upright size."""
    if isinstance(item, np.ndarray):
        image = array_to_image(item)
        return image, image.size
    opened = open_image(item, max_pixels)
    orientation = _orientation(opened)
    upright = opened.size[::-1] if orientation in _TRANSPOSED else opened.size
    image = decode(opened, size, mode, max_pixels, _describe(item), orientation)
    return image, (int(upright[0]), int(upright[1]))


def fit(
    image: Image.Image,
    upright: tuple[int, int],
    width: int,
    height: int,
    channels: int,
    mode: str = "stretch",
    pad: int = 0,
    name: str = "input",
) -> Prepared:
    """Convert a decoded image to the model's channels and size: (H, W, C) uint8 pixels plus the geometry."""
    image = to_channels(image, channels)
    image.info["edge_original_size"] = tuple(upright)
    try:
        resized, geometry = resize(image, width, height, mode, pad)
    except (OSError, ValueError) as exc:
        raise InputError(f"{name} cannot be resized ({exc})") from exc
    pixels = np.asarray(resized, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return Prepared(pixels, geometry)


def prepare_image(
    item: Any,
    width: int,
    height: int,
    channels: int,
    mode: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pad: int = 0,
) -> Prepared:
    """Decode an image input and resize it for a model: (H, W, C) uint8 pixels plus the geometry."""
    check_mode(mode)
    image, upright = load_upright(item, (width, height), mode, max_pixels)
    return fit(image, upright, width, height, channels, mode, pad, _describe(item))


def check_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode {mode!r} is not known; choose one of: {', '.join(RESIZE_MODES)}")
    return mode


def array_to_image(array: np.ndarray) -> Image.Image:
    """A numpy image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float 0..255, as a PIL image."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(
            f"array of shape {tuple(array.shape)} is not an image; "
            "expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise InputError(
                f"array of dtype {array.dtype} is not an image; use uint8 or float pixels 0..255"
            )
        array = np.clip(np.rint(np.nan_to_num(array.astype(np.float64))), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))
