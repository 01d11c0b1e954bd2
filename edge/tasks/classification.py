"""Classification: top-k classes above a threshold, with labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.tasks import TaskContext

NAME = "classification"
SMALL = 64  # classes up to which the top-k is taken in plain Python


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    index: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "score": round(self.score, 6)}


@dataclass(frozen=True, slots=True)
class ClassificationResult:
    classes: tuple[Classification, ...]

    def to_json(self) -> dict[str, Any]:
        return {"classes": [c.to_json() for c in self.classes]}


def scores_of(output: np.ndarray) -> np.ndarray:
    """One score per class. Outputs outside 0..1 (logits) get a softmax; probabilities stay as they are."""
    scores = np.asarray(output, dtype=np.float64).reshape(-1)
    if scores.size and (scores.min() < -1e-6 or scores.max() > 1.0 + 1e-6):  # noqa: PLR2004
        shifted = np.exp(scores - scores.max())
        scores = shifted / shifted.sum()
    return scores


def decode(outputs: list[np.ndarray], context: TaskContext) -> ClassificationResult:
    if not outputs:
        raise ModelError("classification needs one output with class scores; the model has none")
    output = outputs[0]
    if output.ndim > 2 or (output.ndim == 2 and output.shape[0] != 1):
        raise ModelError(
            f"classification expects one (1, classes) output, got shape {list(output.shape)}; try --task raw"
        )
    threshold, label = context.threshold, context.label
    if output.size <= SMALL:  # a few classes (digits): plain Python beats numpy's cost per call
        values = _small_scores(output.reshape(-1).tolist())
        # sorted() is stable with reverse=True: ties keep the lower index first, as argsort(-scores) does
        top = sorted(range(len(values)), key=values.__getitem__, reverse=True)[: max(context.top_k, 1)]
        return ClassificationResult(
            tuple(Classification(label(i), i, values[i]) for i in top if values[i] >= threshold)
        )
    scores = scores_of(output)
    order = np.argsort(-scores, kind="stable")[: max(context.top_k, 1)]
    chosen = (int(i) for i in order if scores[i] >= threshold)
    return ClassificationResult(tuple(Classification(label(i), i, float(scores[i])) for i in chosen))


def _small_scores(values: list[float]) -> list[float]:
    """``scores_of`` for a few classes, in plain Python."""
    if values and (min(values) < -1e-6 or max(values) > 1.0 + 1e-6):  # noqa: PLR2004
        peak = max(values)
        exps = [math.exp(v - peak) for v in values]
        total = math.fsum(exps)
        return [e / total for e in exps]
    return values
