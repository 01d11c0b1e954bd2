"""Classification: top-k classes above a threshold, with labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.tasks import TaskContext

NAME = "classification"


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
    if scores.size and (scores.min() < -1e-6 or scores.max() > 1.0 + 1e-6):
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
    scores = scores_of(output)
    k = min(max(context.top_k, 1), scores.size)
    top = np.argsort(-scores, kind="stable")[:k]
    classes = tuple(
        Classification(context.label(int(i)), int(i), float(scores[i]))
        for i in top
        if scores[i] >= context.threshold
    )
    return ClassificationResult(classes)
