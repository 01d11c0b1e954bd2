"""Detection: SSD-style post-processed outputs and YOLO-style raw outputs, boxes in original image pixels.

SSD-style (TFLite_Detection_PostProcess and alike): boxes (1, N, 4) as ymin, xmin, ymax, xmax, classes (1, N),
scores (1, N) and count (1,), recognised by shape and values, not by their order: boxes end in 4, count has
one value, classes are whole numbers while scores are fractions (ties fall back to the usual order).

YOLO-style raw head: one (1, 4 + C, N) (YOLOv8) or (1, N, 5 + C) (YOLOv5, with objectness when the label
count says so) tensor of cx, cy, w, h and class scores; filtered by score, then class-aware NMS.

Box coordinates at most 1.5 are taken as normalized to the model input; boxes are then mapped through the
resize geometry (letterbox-aware) to the original image and clipped to it. With threshold 0 the default
minimum score ``DEFAULT_MIN_SCORE`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.tasks import TaskContext

NAME = "detection"
DEFAULT_MIN_SCORE = 0.25
IOU_THRESHOLD = 0.45
MAX_OBJECTS = 100


@dataclass(frozen=True, slots=True)
class DetectedObject:
    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in original image pixels

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "index": self.index,
            "score": round(self.score, 6),
            "box": [round(v, 2) for v in self.box],
        }


@dataclass(frozen=True, slots=True)
class DetectionResult:
    objects: tuple[DetectedObject, ...]

    def to_json(self) -> dict[str, Any]:
        return {"objects": [o.to_json() for o in self.objects]}


def min_score(context: TaskContext) -> float:
    return context.threshold if context.threshold > 0 else DEFAULT_MIN_SCORE


def decode(outputs: list[np.ndarray], context: TaskContext) -> DetectionResult:
    if len(outputs) == 1 and outputs[0].ndim == 3:
        return decode_yolo(outputs[0], context)
    if 3 <= len(outputs) <= 4:
        return decode_ssd(outputs, context)
    raise ModelError(
        f"detection expects SSD-style outputs (boxes, classes, scores, count) or one YOLO-style (1, 4+C, N) "
        f"output, got shapes {[list(o.shape) for o in outputs]}; try --task raw"
    )


def identify_ssd(outputs: list[np.ndarray], names: tuple[str, ...] = ()) -> tuple[int, int, int, int | None]:
    """Indices of (boxes, classes, scores, count) among SSD-style outputs, by shape and values."""
    boxes = [i for i, o in enumerate(outputs) if o.ndim >= 2 and o.shape[-1] == 4 and o.size > 4]
    counts = [i for i, o in enumerate(outputs) if o.size == 1]
    if len(boxes) != 1 or len(counts) > 1:
        raise ModelError(
            f"cannot tell SSD outputs apart: shapes {[list(o.shape) for o in outputs]}; try --task raw"
        )
    n = outputs[boxes[0]].size // 4
    rest = [i for i, o in enumerate(outputs) if i not in boxes + counts and o.size == n]
    if len(rest) != 2:
        raise ModelError(
            f"SSD-style outputs need classes and scores of {n} values each, got shapes "
            f"{[list(o.shape) for o in outputs]}; try --task raw"
        )
    classes, scores = _classes_and_scores(outputs, rest, names)
    return boxes[0], classes, scores, counts[0] if counts else None


def _classes_and_scores(
    outputs: list[np.ndarray], pair: list[int], names: tuple[str, ...]
) -> tuple[int, int]:
    a, b = pair
    name_a = names[a].lower() if a < len(names) else ""
    name_b = names[b].lower() if b < len(names) else ""
    if "class" in name_a and "score" not in name_a or "score" in name_b and "class" not in name_b:
        return a, b
    if "class" in name_b and "score" not in name_b or "score" in name_a and "class" not in name_a:
        return b, a
    whole_a, whole_b = _whole(outputs[a]), _whole(outputs[b])
    if whole_a != whole_b:
        return (a, b) if whole_a else (b, a)
    big_a, big_b = float(outputs[a].max(initial=0)) > 1.0, float(outputs[b].max(initial=0)) > 1.0
    if big_a != big_b:
        return (a, b) if big_a else (b, a)
    return a, b  # TFLite_Detection_PostProcess order: classes before scores


def _whole(values: np.ndarray) -> bool:
    return bool(np.all(np.abs(values - np.rint(values)) < 1e-4))


def decode_ssd(outputs: list[np.ndarray], context: TaskContext) -> DetectionResult:
    bi, ci, si, ni = identify_ssd(outputs, context.output_names)
    boxes = outputs[bi].reshape(-1, 4).astype(np.float64)
    classes = outputs[ci].reshape(-1)
    scores = outputs[si].reshape(-1).astype(np.float64)
    count = (
        len(scores) if ni is None else int(np.clip(round(float(outputs[ni].reshape(-1)[0])), 0, len(scores)))
    )
    floor = min_score(context)
    keep = sorted((i for i in range(count) if scores[i] >= floor), key=lambda i: -scores[i])
    width, height = context.input_size
    normalized = boxes.size == 0 or float(np.abs(boxes).max()) <= 1.5
    objects = []
    for i in keep[:MAX_OBJECTS]:
        ymin, xmin, ymax, xmax = boxes[i]
        if normalized:
            xmin, xmax, ymin, ymax = xmin * width, xmax * width, ymin * height, ymax * height
        index = int(round(float(classes[i])))
        objects.append(
            DetectedObject(
                context.label(index), index, float(scores[i]), _map(context, xmin, ymin, xmax, ymax)
            )
        )
    return DetectionResult(tuple(objects))


def _map(
    context: TaskContext, xmin: float, ymin: float, xmax: float, ymax: float
) -> tuple[float, float, float, float]:
    if context.geometry is None:
        return float(xmin), float(ymin), float(xmax), float(ymax)
    x0, y0, x1, y1 = context.geometry.box_to_original(xmin, ymin, xmax, ymax)
    return x0, y0, x1, y1


def decode_yolo(output: np.ndarray, context: TaskContext) -> DetectionResult:
    rows = output[0] if output.shape[0] == 1 else output
    labels = context.num_labels
    fits = (4 + labels, 5 + labels) if labels else ()
    if (
        rows.shape[0] in fits
        and rows.shape[1] not in fits
        or (rows.shape[1] not in fits and rows.shape[0] < rows.shape[1])
    ):
        rows = rows.T  # (4 + C, N) -> (N, 4 + C)
    attributes = rows.shape[1]
    if attributes < 5:
        raise ModelError(f"YOLO-style output needs at least 5 values per box, got shape {list(output.shape)}")
    with_objectness = context.num_labels > 0 and attributes == 5 + context.num_labels
    geometry = rows[:, :4].astype(np.float64)
    class_scores = rows[:, 5:] * rows[:, 4:5] if with_objectness else rows[:, 4:]
    best = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(rows)), best].astype(np.float64)
    keep = np.flatnonzero(scores >= min_score(context))
    width, height = context.input_size
    if geometry.size and float(np.abs(geometry).max()) <= 1.5:
        geometry = geometry * np.array([width, height, width, height], dtype=np.float64)
    cx, cy, w, h = geometry[keep].T
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    chosen = nms(corners, scores[keep], best[keep], IOU_THRESHOLD)[:MAX_OBJECTS]
    objects = tuple(
        DetectedObject(
            context.label(int(best[keep[i]])),
            int(best[keep[i]]),
            float(scores[keep[i]]),
            _map(context, *corners[i]),
        )
        for i in chosen
    )
    return DetectionResult(objects)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over union of one (xmin, ymin, xmax, ymax) box with each of ``others``."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> list[int]:
    """Greedy class-aware non-maximum suppression; indices kept, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if not order:
            break
        rest = np.array(order)
        overlap = iou(boxes[best], boxes[rest])
        suppressed = (overlap > threshold) & (classes[rest] == classes[best])
        order = [int(i) for i in rest[~suppressed]]
    return kept
