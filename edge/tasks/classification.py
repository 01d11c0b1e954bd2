"""Classification: top-k classes above a threshold, with labels."""

from __future__ import annotations

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
    scores = scores_of(output)
    k = min(max(context.top_k, 1), scores.size)
    threshold, label = context.threshold, context.label
    if scores.size <= SMALL:  # a few classes (digits): Python's sort beats numpy's per-call overhead
        values = scores.tolist()
        # sorted() is stable with reverse=True: ties keep the lower index first, as argsort(-scores) does
        top = sorted(range(len(values)), key=values.__getitem__, reverse=True)[:k]
        return ClassificationResult(
            tuple(Classification(label(i), i, values[i]) for i in top if values[i] >= threshold)
        )
    order = np.argsort(-scores, kind="stable")[:k]
    chosen = (int(i) for i in order if scores[i] >= threshold)
    return ClassificationResult(tuple(Classification(label(i), i, float(scores[i])) for i in chosen))
