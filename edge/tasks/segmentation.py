"""Segmentation: per-pixel classes to per-class shares and the box of each class's largest region.

Input: one output ``(1, H, W, C)`` at the model input's resolution or a fixed fraction of it (DeepLab's
``(1, 257, 257, 21)`` logits, MediaPipe's ``(1, 256, 256, 1)`` selfie mask). With ``C > 1`` each pixel is
the argmax over classes (logits or probabilities alike); with ``C == 1`` the value is a foreground mask,
cut at 0.5 when all values are in 0..1 (sigmoid outputs) and at 0 otherwise (logits): class 0 background,
1 foreground. ``(1, H, W)`` outputs are taken as class ids already (rounded, negatives are 0).

Only the part of the map that covers the original image counts: a letterbox's padding is left out through
the resize ``Geometry`` (a crop's unseen margins were never in the map). For each class present there:

- ``share``: its fraction of those pixels;
- ``box``: the bounding box of its largest 4-connected region, ``xmin, ymin, xmax, ymax`` in pixels of the
  original image (clipped to it; model-input pixels when there is no geometry), mapped as detection boxes are;
- ``region_share``: that region's fraction of the pixels.

Background: class 0 is background (``background`` true) when its label looks like one (``background``,
``bg``, ``__background__``, ``none``, ``void``, ``unlabeled``, ``other``, ``???``), when the model has no
labels, and always for a one-channel mask or a class-id map; a model whose class 0 is a real class
(Cityscapes' ``road``) has none. Background stays in ``classes``, so a subscriber sees how much of the
picture is empty, and is marked so it can be ignored. Classes are sorted by share, largest first; at most
``top_k`` non-background classes are kept, and every class (background too) needs ``share >= threshold``
(default 0: all). In the result record they are ``segments`` (not ``classes``, which means classification:
``{"label", "index", "score"}``).

Connected components use numpy and Python only (no scipy, no OpenCV on a device): each row is run-length
encoded, runs in consecutive rows that overlap and share a class are paired with ``searchsorted``, and the
pairs are merged by vectorized union-find (hook roots to the smaller root, then pointer jumping), so the cost
grows with the number of runs, not of pixels, and stays bounded on noisy maps.

The class map (output resolution, uint8 or uint16 ids) stays on the result (``class_map``) for ``save_mask``,
which writes it as a colour PNG (PASCAL VOC's palette) at the original image's size; it is not in ``to_json``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import ConfigError, ModelError
from edge.tasks import TaskContext

if TYPE_CHECKING:
    from edge.preprocess import Geometry

NAME = "segmentation"
BACKGROUND_LABELS = frozenset(
    {"background", "bg", "__background__", "_background_", "none", "void", "unlabeled", "unlabelled"}
    | {"other", "???"}
)
MASK_COMPRESS_LEVEL = 3  # zlib level: 3x faster than Pillow's default 6 for masks ~25 % larger
UNSEEN = 255  # palette index of mask pixels the model never saw (a crop's margins); VOC's "void" colour


@dataclass(frozen=True, slots=True)
class SegmentedClass:
    label: str
    index: int
    share: float  # fraction of the original image's pixels (in the map) of this class
    box: tuple[float, float, float, float]  # largest region: xmin, ymin, xmax, ymax in original pixels
    region_share: float  # that region's fraction of the pixels
    background: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "share": round(self.share, 6),
            "box": [round(v, 2) for v in self.box],
            "region_share": round(self.region_share, 6),
            "background": self.background,
        }


@dataclass(frozen=True, slots=True)
class SegmentationResult:
    classes: tuple[SegmentedClass, ...]
    # For the mask writer, not the wire: class ids at the output's resolution, the resize geometry and the
    # model input size (width, height) the output's pixels are a fraction of.
    class_map: np.ndarray = field(repr=False, compare=False)
    geometry: Geometry | None = field(default=None, repr=False, compare=False)
    input_size: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"segments": [c.to_json() for c in self.classes]}

    def save_mask(self, path: str | Path, size: tuple[int, int] | None = None) -> Path:
        return save_mask(self, path, size)


def decode(outputs: list[np.ndarray], context: TaskContext) -> SegmentationResult:
    if len(outputs) != 1:
        raise ModelError(
            f"segmentation expects one (1, H, W, C) output, got shapes {[list(o.shape) for o in outputs]}; "
            "try --task raw"
        )
    class_map, channels = class_map_of(outputs[0])
    height, width = class_map.shape
    input_w, input_h = context.input_size
    if input_w <= 0 or input_h <= 0:
        input_w, input_h = width, height
    step_x, step_y = input_w / width, input_h / height  # model-input pixels per output pixel
    c0, r0, c1, r1 = seen_window(context.geometry, width, height, step_x, step_y)
    window = class_map[r0:r1, c0:c1]
    total = window.size
    stats = region_stats(window) if total else {}
    background = channels == 1 or _background_like(context)
    rows = []
    for index, (pixels, region, (x0, y0, x1, y1)) in stats.items():
        share = pixels / total
        if share < context.threshold:
            continue
        box = _to_original(
            context.geometry,
            (c0 + x0) * step_x,
            (r0 + y0) * step_y,
            (c0 + x1) * step_x,
            (r0 + y1) * step_y,
            input_w,
            input_h,
        )
        rows.append(
            SegmentedClass(
                context.label(index), index, share, box, region / total, background and index == 0
            )
        )
    rows.sort(key=lambda c: (-c.share, c.index))
    k = max(context.top_k, 0)
    kept, others = [], 0
    for row in rows:
        if not row.background:
            if others >= k:
                continue
            others += 1
        kept.append(row)
    return SegmentationResult(tuple(kept), class_map, context.geometry, (input_w, input_h))


def class_map_of(output: np.ndarray) -> tuple[np.ndarray, int]:
    """Class ids (H, W) as uint8 (uint16 past 256 classes) and the channel count (0 for a class-id map)."""
    if output.ndim == 4 and output.shape[0] == 1:
        scores = output[0]
        channels = int(scores.shape[-1])
        if channels == 0 or scores.size == 0:
            raise ModelError(f"segmentation output of shape {list(output.shape)} is empty")
        if channels == 1:
            values = scores[..., 0]
            low, high = float(values.min()), float(values.max())
            cut = 0.5 if low >= 0.0 and high <= 1.0 else 0.0
            return (values > cut).astype(np.uint8), 1
        ids = np.argmax(scores, axis=-1)
        return ids.astype(np.uint8 if channels <= 256 else np.uint16), channels
    if output.ndim == 3 and output.shape[0] == 1 and output.size:
        values = output[0]
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(np.nan_to_num(values.astype(np.float64)))
        values = np.clip(values, 0, 65535)
        top = int(values.max())
        return values.astype(np.uint8 if top < 256 else np.uint16), 0
    raise ModelError(
        f"segmentation expects a (1, H, W, C) score output or a (1, H, W) class-id output, got shape "
        f"{list(output.shape)}; try --task raw"
    )


def seen_window(
    geometry: Geometry | None, width: int, height: int, step_x: float, step_y: float
) -> tuple[int, int, int, int]:
    """Columns c0..c1 and rows r0..r1 (exclusive ends) of the output whose pixel centres fall on the image."""
    if geometry is None:
        return 0, 0, width, height
    left, top = geometry.offset_x, geometry.offset_y
    right = left + geometry.original_width * geometry.scale_x
    bottom = top + geometry.original_height * geometry.scale_y

    def span(lo: float, hi: float, step: float, n: int) -> tuple[int, int]:
        first = max(0, math.ceil(lo / step - 0.5 - 1e-9))
        last = min(n, math.floor(hi / step - 0.5 + 1e-9) + 1)
        return first, max(first, last)

    c0, c1 = span(left, right, step_x, width)
    r0, r1 = span(top, bottom, step_y, height)
    return c0, r0, c1, r1


def _background_like(context: TaskContext) -> bool:
    if context.num_labels == 0:
        return True
    return context.label(0).strip().lower() in BACKGROUND_LABELS


def _to_original(
    geometry: Geometry | None, xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int
) -> tuple[float, float, float, float]:
    """A model-input box to original pixels through the geometry (as detection boxes), clipped."""
    if geometry is None:
        return (
            float(min(max(xmin, 0), width)),
            float(min(max(ymin, 0), height)),
            float(min(max(xmax, 0), width)),
            float(min(max(ymax, 0), height)),
        )
    x0, y0, x1, y1 = geometry.box_to_original(xmin, ymin, xmax, ymax)
    return x0, y0, x1, y1


# ---------------------------------------------------------------------------------- connected components


def region_stats(class_map: np.ndarray) -> dict[int, tuple[int, int, tuple[int, int, int, int]]]:
    """Per class id present: (pixels, pixels of its largest 4-connected region, that region's box).

    The box is ``(x0, y0, x1, y1)`` in map pixels, ends exclusive. Ties between equal regions go to the one
    whose first run comes first in row-major order.
    """
    height, width = class_map.shape
    flat = np.ascontiguousarray(class_map).reshape(-1)
    change = np.empty(flat.size, dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::width] = True  # every row starts a run
    starts = np.flatnonzero(change)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = flat.size
    classes = flat[starts]
    lengths = ends - starts
    rows = starts // width
    cols = starts - rows * width
    n = starts.size

    # Pair each run (rows >= 1) with the runs of the row above that overlap it: rows are partitioned into
    # runs, so those are the runs holding the pixels just above its first and last pixel, and all between.
    below = np.flatnonzero(rows > 0)
    first = np.searchsorted(starts, starts[below] - width, side="right") - 1
    last = np.searchsorted(starts, ends[below] - 1 - width, side="right") - 1
    counts = last - first + 1
    total = int(counts.sum())
    if total:
        b = np.repeat(below, counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        a = np.repeat(first, counts) + offsets
        same = classes[a] == classes[b]
        roots = union_find(n, a[same], b[same])
    else:
        roots = np.arange(n)

    area = np.bincount(roots, weights=lengths, minlength=n)
    present = np.bincount(classes, weights=lengths)
    # The largest component of each class: sort by (class, -area, root), take each class's first.
    component = np.flatnonzero(area > 0)
    component_class = classes[component]  # a root is one of its runs (the smallest index), same class
    order = np.lexsort((component, -area[component], component_class))
    component, component_class = component[order], component_class[order]
    firsts = np.flatnonzero(np.r_[True, component_class[1:] != component_class[:-1]])
    best = component[firsts]
    # Boxes of those components only.
    is_best = np.zeros(n, dtype=bool)
    is_best[best] = True
    members = np.flatnonzero(is_best[roots])
    member_roots = roots[members]
    x0 = np.full(n, width, dtype=np.int64)
    y0 = np.full(n, height, dtype=np.int64)
    x1 = np.zeros(n, dtype=np.int64)
    y1 = np.zeros(n, dtype=np.int64)
    np.minimum.at(x0, member_roots, cols[members])
    np.minimum.at(y0, member_roots, rows[members])
    np.maximum.at(x1, member_roots, cols[members] + lengths[members])
    np.maximum.at(y1, member_roots, rows[members] + 1)
    return {
        int(classes[r]): (
            int(present[classes[r]]),
            int(area[r]),
            (int(x0[r]), int(y0[r]), int(x1[r]), int(y1[r])),
        )
        for r in best
    }


def union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The root (smallest member index) of each of ``n`` nodes joined by the edges ``a[i]``-``b[i]``."""
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return parent
        ra, rb = ra[differ], rb[differ]
        a, b = a[differ], b[differ]  # edges already inside one component never matter again
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


# ------------------------------------------------------------------------------------------------ mask PNG


@functools.cache
def voc_palette() -> bytes:
    """PASCAL VOC's colour map for 256 ids (0 black, 1 dark red, ..., 15 person pink, 255 void cream)."""
    out = bytearray()
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        out += bytes((r, g, b))
    return bytes(out)


def mask_image(result: SegmentationResult, size: tuple[int, int] | None = None) -> Any:
    """The class map as a Pillow 'P' image of ``size`` (w, h; default the original image's size).

    Each output pixel maps back through the geometry (letterbox padding and crop undone), nearest neighbour.
    Pixels of the original the model never saw (a crop's margins) are ``UNSEEN`` (255, VOC's void colour);
    ids of 255 and more (rare) wrap modulo 255.
    """
    from PIL import Image

    class_map = result.class_map
    height, width = class_map.shape
    input_w, input_h = result.input_size if min(result.input_size) > 0 else (width, height)
    geometry = result.geometry
    if geometry is None:
        original_w, original_h = input_w, input_h
        scale_x, scale_y, offset_x, offset_y = 1.0, 1.0, 0.0, 0.0
    else:
        original_w, original_h = geometry.original_width, geometry.original_height
        scale_x, scale_y = geometry.scale_x, geometry.scale_y
        offset_x, offset_y = geometry.offset_x, geometry.offset_y
    out_w, out_h = size if size is not None else (original_w, original_h)
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"mask size must be positive, got {out_w}x{out_h}")
    # Centre of each output pixel -> original pixels -> model-input pixels -> class-map cell.
    xs = ((np.arange(out_w) + 0.5) * (original_w / out_w) * scale_x + offset_x) * (width / input_w)
    ys = ((np.arange(out_h) + 0.5) * (original_h / out_h) * scale_y + offset_y) * (height / input_h)
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    col_ok, row_ok = (cols >= 0) & (cols < width), (rows >= 0) & (rows < height)
    ids = class_map if class_map.dtype == np.uint8 else (class_map % 255).astype(np.uint8)
    pixels = ids[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]  # two takes: 10x a 2-D index
    if not (col_ok.all() and row_ok.all()):
        pixels[~(row_ok[:, None] & col_ok[None, :])] = UNSEEN
    image = Image.fromarray(np.ascontiguousarray(pixels), "P")
    image.putpalette(voc_palette())
    return image


def save_mask(result: SegmentationResult, path: str | Path, size: tuple[int, int] | None = None) -> Path:
    """Write ``result``'s class map as a colour PNG of ``size`` (w, h; default the original's), atomically."""
    from edge.fsutil import atomic_writer

    image = mask_image(result, size)
    path = Path(path)
    with atomic_writer(path) as handle:
        image.save(handle, format="PNG", compress_level=MASK_COMPRESS_LEVEL)
    return path


class MaskWriter:
    """Writes each segmentation result's mask PNG into ``folder`` and names it in the record (``"mask"``).

    A pipeline annotator (``Pipeline(annotators=[MaskWriter(folder)])``, ``edge run --mask-dir``). File
    names: ``<file stem>.png`` for image files, ``<source>-<frame>.png`` for streams and cameras.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(f"cannot create mask folder {self.folder}: {reason}; check the path") from exc

    def __call__(self, outcome: Any, record: dict[str, Any]) -> None:
        result = outcome.result
        if not isinstance(result, SegmentationResult):
            return
        if outcome.source in (None, "files"):
            name = Path(str(outcome.input).split("#", 1)[0]).stem or "mask"
        else:
            name = f"{outcome.source}-{int(outcome.frame):06d}"
        record["mask"] = str(save_mask(result, self.folder / f"{_safe(name)}.png"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:120]
