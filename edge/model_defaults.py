"""What a model says about itself, and what the runtime assumes when it says nothing.

For a model without our manifest (anything from the wild) three things decide whether its answers are right:
how its input is normalized, which task its outputs are, and how its labels line up with its class ids.
Each value comes from the first of: the caller's options (command-line flags), our manifest, the standard
TFLite metadata (``edge.tflite_metadata``), and the defaults here, which follow the ecosystem (PyCoral,
Frigate, the TFLite examples and Task library):

- an integer (uint8/int8) image input with no normalization is fed raw pixels: its quantization *is* the
  normalization (uint8 takes the pixel, int8 the pixel - 128);
- a float image input with none gets ``[-1, 1]`` (``(pixel - 127.5) / 127.5``: TF Hub, Keras and MediaPipe
  classifiers, DeepLab, BlazeFace), or ``[0, 1]`` for a YOLO-style head (Ultralytics exports), with one
  warning that suggests ``--mean/--std``;
- the task from the outputs (``guess_task``); the label offset from the labels against the class count
  (``label_offset``); COCO's 90-id map for TensorFlow Object Detection API detectors with 80 COCO names.

Every choice carries the reason, which ``edge inspect`` prints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from edge.tflite_file import STANDARD_METADATA_NAME, TFLiteFileInfo

if TYPE_CHECKING:
    from edge.package import LoadedModelSource
    from edge.tflite_metadata import StandardMetadata

log = logging.getLogger(__name__)

SSD_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
SSD_ROLES = ("boxes", "classes", "scores", "count")  # the op's outputs, in its order
BACKGROUND_LABELS = frozenset({"background", "???", "__background__", "bg", "unlabeled", "unlabelled", "n/a"})
RAW_FLOAT_MEAN, RAW_FLOAT_STD = 127.5, 127.5  # [-1, 1]
YOLO_FLOAT_MEAN, YOLO_FLOAT_STD = 0.0, 255.0  # [0, 1]
SEGMENTATION_FRACTIONS = (1, 2, 4, 8, 16)  # output size = input size / one of these
_ID_LABEL = r"^\s*(\d+)(?:\s*[:,]\s*|\s+)(\S.*?)\s*$"  # Coral's "0  person", "0: person"

# COCO's 80 category names (the order of YOLO and of most label files) and their ids in COCO's 90-id
# space, which the TensorFlow Object Detection API's SSDs output (0-based, background removed).
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
COCO90_IDS = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27, 30, 31, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 66, 69, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89,
)


class Choice(NamedTuple):
    """One resolved value and where it came from (``flags``, ``manifest``, ``metadata``, ``default``...)."""

    source: str
    reason: str = ""


class TaskGuess(NamedTuple):
    task: str
    reason: str


def guess_task(
    info: TFLiteFileInfo, output_shapes: Sequence[tuple[int, ...]] | None = None
) -> TaskGuess:
    """The task of a model from its operators and output shapes (the allocated ones when given)."""
    shapes = [t.shape for t in info.outputs] if output_shapes is None else [tuple(s) for s in output_shapes]
    if any(op.name == SSD_POSTPROCESS_OP for op in info.operators):
        return TaskGuess("detection", f"it ends in {SSD_POSTPROCESS_OP}: boxes, classes, scores, count")
    if len(shapes) in (3, 4) and any(len(s) == 3 and s[-1] == 4 for s in shapes):
        return TaskGuess("detection", f"SSD-style outputs {_listed(shapes)}: boxes, classes, scores[, count]")
    if len(shapes) == 1:
        shape = shapes[0]
        if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
            return TaskGuess("classification", f"one output {list(shape)}: {shape[1]} class scores")
        if yolo_head(shape):
            return TaskGuess("detection", f"one output {list(shape)}: a YOLO-style head (boxes, scores)")
        fraction = _segmentation_fraction(shape, info)
        if fraction:
            at = "the input's resolution" if fraction == 1 else f"1/{fraction} of the input's resolution"
            return TaskGuess("segmentation", f"one output {list(shape)} at {at}: per-pixel class scores")
    return TaskGuess("raw", f"no known output layout in {_listed(shapes)}; pass --task to decode it")


def yolo_head(shape: tuple[int, ...]) -> bool:
    """``[1, 4 + C, N]`` (YOLOv8/v11) or ``[1, N, 5 + C]`` (YOLOv5): many more boxes than values per box."""
    if len(shape) != 3 or shape[0] != 1:
        return False
    values, boxes = sorted(shape[1:])
    return values >= 5 and boxes >= 100 and boxes >= 4 * values


def _segmentation_fraction(shape: tuple[int, ...], info: TFLiteFileInfo) -> int | None:
    if len(shape) != 4 or shape[0] != 1 or not info.inputs:
        return None
    in_shape = info.inputs[0].shape
    if len(in_shape) != 4:
        return None
    in_h, in_w = in_shape[1], in_shape[2]
    h, w = shape[1], shape[2]
    if h < 8 or w < 8:
        return None
    for fraction in SEGMENTATION_FRACTIONS:
        if abs(h * fraction - in_h) < fraction and abs(w * fraction - in_w) < fraction:
            return fraction
    return None


def ssd_output_roles(info: TFLiteFileInfo, output_indices: Sequence[int]) -> tuple[str, ...] | None:
    """For a model ending in the post-processing op: each output's role (boxes, classes, scores, count),
    from the op's own output order, whatever order the model lists its outputs in."""
    for op in info.operators:
        if op.name == SSD_POSTPROCESS_OP and len(op.outputs) == len(SSD_ROLES):
            role_of = dict(zip(op.outputs, SSD_ROLES, strict=True))
            roles = tuple(role_of.get(index, "") for index in output_indices)
            return roles if all(roles) else None
    return None


# ------------------------------------------------------------------------------------------ normalization


def default_normalization(
    dtype: str, scale: float | None, zero_point: int | None, yolo: bool = False
) -> tuple[float, float, Choice]:
    """(mean, std, why) for an image input that nothing describes."""
    if dtype in ("uint8", "int8") and scale:
        shift = 128 if dtype == "int8" else 0
        return (
            float(zero_point or 0) + shift,
            1.0 / scale,
            Choice("default", f"raw pixels: a {dtype} input's quantization is its normalization"),
        )
    if dtype in ("uint8", "int8", "int16", "int32"):
        return 0.0, 1.0, Choice("default", f"raw pixels: a {dtype} input without quantization")
    if yolo:
        return YOLO_FLOAT_MEAN, YOLO_FLOAT_STD, Choice("default", "[0, 1]: a YOLO-style float model")
    return RAW_FLOAT_MEAN, RAW_FLOAT_STD, Choice("default", "[-1, 1]: a float model without normalization")


Values = tuple[float, ...]


def resolve_normalization(
    given: tuple[Values | None, Values | None],
    manifest: tuple[Values, Values] | None,
    metadata: tuple[Values, Values] | None,
    dtype: str,
    quantization: tuple[float, int] | None,
    is_image: bool,
    yolo: bool = False,
) -> tuple[Values, Values, Choice]:
    """(mean, std, where from): the caller's ``given`` (mean, std) first, each on its own; then our
    ``manifest``'s (a package without one means none: 0 and 1), the standard ``metadata``'s (a float input's
    only: an integer input is fed its raw pixels, whatever the metadata says, as the TFLite Task library
    and the model's own calibration do), the default.

    ``quantization``: the input's per-tensor (scale, zero point), None when float or per-channel.
    """
    mean, std = given
    source = "flags" if mean is not None or std is not None else ""
    if metadata is not None and dtype not in ("float32", "float16"):
        metadata = None  # as the TFLite Task library: the metadata's normalization is for float inputs only
    stated = manifest if manifest is not None else metadata
    if stated is not None and (stated[0] or stated[1] or manifest is not None):
        mean = mean if mean is not None else (stated[0] or (0.0,))
        std = std if std is not None else (stated[1] or (1.0,))
        return mean, std, Choice(source or ("manifest" if manifest is not None else "metadata"))
    if source:  # the caller gave one of them: the other is neutral (``--std 255`` means [0, 1])
        return mean or (0.0,), std or (1.0,), Choice(source)
    if not is_image:
        return (0.0,), (1.0,), Choice("default", "not an image: arrays as given")
    scale, zero = quantization if quantization else (None, None)
    default_mean, default_std, why = default_normalization(dtype, scale, zero, yolo)
    return (default_mean,), (default_std,), why


def float_default_warning(model: str, mean: float, std: float) -> str:
    return (
        f"{model}: a float input and no normalization in the model; feeding (pixel - {mean:g}) / {std:g}. "
        "If its answers look wrong, pass --mean/--std (e.g. --mean 0 --std 255 for [0, 1], "
        "--mean 127.5 --std 127.5 for [-1, 1], --mean 0 --std 1 for 0..255)"
    )


# ------------------------------------------------------------------------------------------------- labels


def parse_label_lines(lines: Sequence[str]) -> tuple[str, ...]:
    """Labels as a dense tuple indexed by class id: plain lines, or Coral's ``id label`` lines (gaps: "")."""
    rows = [_unwrapped(line) for line in lines if line.strip()]
    matches = [re.match(_ID_LABEL, line) for line in rows]
    if rows and all(matches):
        ids = {int(m.group(1)): m.group(2) for m in matches if m}
        if len(ids) == len(rows):
            return tuple(ids.get(i, "") for i in range(max(ids) + 1))
    return tuple(line.strip() for line in rows)


def _unwrapped(line: str) -> str:
    """A label written as a Python bytes repr (``b'print'``, seen in AutoML exports) as its text."""
    text = line.strip()
    if len(text) >= 3 and text[0] == "b" and text[1] == text[-1] and text[1] in "'\"":
        return text[2:-1]
    return line


def is_background(label: str) -> bool:
    return label.strip().lower() in BACKGROUND_LABELS


def label_offset(labels: Sequence[str], task: str, classes: int | None) -> tuple[int, str]:
    """(offset, why): class id ``k`` is ``labels[k + offset]``.

    - classification: a label list one longer than the class scores is offset by 1 (its first line is no
      class), one shorter by -1 (the model's class 0, the background, has no line); as long: 0;
    - detection: a background first line is skipped (the SSD post-processing op removes the background class);
    - segmentation and the rest: 0 (class 0 is the background pixel class).
    """
    if not labels:
        return 0, ""
    first = labels[0]
    if task == "classification" and classes:
        if len(labels) == classes + 1:
            return 1, f"{len(labels)} labels for {classes} classes: the first ({first!r}) is not a class"
        if len(labels) == classes - 1:
            return -1, f"{len(labels)} labels for {classes} classes: class 0 (the background) has none"
        return 0, ""
    if task == "detection" and is_background(first):
        return 1, f"the first label ({first!r}) is the background, which detections do not report"
    return 0, ""


def coco90(labels: Sequence[str], info: TFLiteFileInfo) -> tuple[str, ...] | None:
    """80 COCO names for a TF Object Detection API detector, spread to COCO's 90-id space; else None."""
    if tuple(label.strip().lower() for label in labels) != COCO80:
        return None
    if not any(op.name == SSD_POSTPROCESS_OP for op in info.operators):
        return None
    spread = [""] * (COCO90_IDS[-1] + 1)
    for name, index in zip(labels, COCO90_IDS, strict=True):
        spread[index] = name
    return tuple(spread)


def resolve_labels(
    given: Sequence[str] | None,
    manifest: Sequence[str] | None,
    metadata: Sequence[str],
    task: str,
    classes: int | None,
    info: TFLiteFileInfo,
    offset: int | None = None,
) -> tuple[tuple[str, ...], Choice]:
    """The labels indexed by class id, and where they came from and how they were aligned.

    The caller's (``given``) first, then our manifest's (aligned by ``edge convert``), then the standard
    metadata's. ``offset`` (``--label-offset``) overrides the conventions; ``classes``: the class count of
    a classifier's single output, when known.
    """
    if given:
        found, source = tuple(given), "flags"
    elif manifest:
        labels = tuple(manifest)
        return (labels if offset is None else _shifted(labels, offset)), Choice("manifest")
    elif metadata:
        found, source = tuple(metadata), "metadata"
    else:
        return (), Choice("none", "no labels: results name class ids")
    if offset is not None:  # the caller's word: no convention applied
        return _shifted(found, offset), Choice(source, f"--label-offset {offset}")
    offset, why = label_offset(found, task, classes)
    aligned = _shifted(found, offset)
    spread = coco90(aligned, info)
    if spread is not None:
        coco = "80 COCO names for a TF Object Detection API detector: COCO's 90 ids"
        aligned, why = spread, f"{why}; {coco}" if why else coco
    return aligned, Choice(source, why)


def _shifted(labels: tuple[str, ...], offset: int) -> tuple[str, ...]:
    return labels[offset:] if offset >= 0 else ("",) * -offset + labels


# ---------------------------------------------------------------------------------- the standard metadata


def standard_metadata(source: LoadedModelSource) -> StandardMetadata | None:
    """The standard TFLite metadata, if the model has it; damaged metadata is a warning, not a failure."""
    if STANDARD_METADATA_NAME not in source.info.metadata:
        return None  # the reader (a dozen dataclasses, ~15 ms) is imported only for models that have it
    from edge.tflite_metadata import read_standard_metadata

    return read_standard_metadata(
        source.model_bytes, source=str(source.path), entries=source.info.metadata, strict=False
    )


def metadata_labels(metadata: StandardMetadata | None) -> tuple[str, ...]:
    """Labels from the metadata: the first output that has a labels file (a detector's class output)."""
    if metadata is None:
        return ()
    for index in range(len(metadata.outputs)):
        found = metadata.labels_for_output(index) or metadata.value_labels_for_output(index)
        if found:
            return parse_label_lines(found)
    return ()


def metadata_threshold(metadata: StandardMetadata | None) -> float:
    if metadata is None:
        return 0.0
    return next((float(t.score_threshold) for t in metadata.outputs if t.score_threshold), 0.0)



def _listed(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes) or "no outputs"
