"""Raw: every output tensor by name, dequantized, as nested lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.tasks import TaskContext

NAME = "raw"


@dataclass(frozen=True, slots=True)
class RawResult:
    outputs: tuple[tuple[str, np.ndarray], ...]

    def to_json(self) -> dict[str, Any]:
        return {"outputs": {name: value.tolist() for name, value in self.outputs}}

    def __getitem__(self, name: str) -> np.ndarray:
        for key, value in self.outputs:
            if key == name:
                return value
        raise KeyError(name)


def decode(outputs: list[np.ndarray], context: TaskContext) -> RawResult:
    names = list(context.output_names) + [
        f"output_{i}" for i in range(len(context.output_names), len(outputs))
    ]
    seen: dict[str, int] = {}
    pairs = []
    for name, value in zip(names, outputs, strict=False):
        key = name or "output"
        if key in seen:
            seen[key] += 1
            key = f"{key}_{seen[key]}"
        else:
            seen[key] = 0
        pairs.append((key, np.asarray(value)))
    return RawResult(tuple(pairs))
