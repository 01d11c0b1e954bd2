"""Task decoders, one module each: model outputs (dequantized float32) to a typed result.

Each module has ``NAME`` and ``decode(outputs, context) -> result``; results are immutable dataclasses
whose ``to_json()`` gives the task's part of the result record (``classes``, ``objects`` or ``outputs``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.preprocess import Geometry

TASK_MODULES = {
    "classification": "classification",
    "detection": "detection",
    "raw": "raw",
    "segmentation": "segmentation",
}


class TaskResult(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class TaskContext(NamedTuple):
    """What a decoder needs besides the outputs."""

    output_names: tuple[str, ...]
    label: Callable[[int], str]
    top_k: int = 5
    threshold: float = 0.0
    geometry: Geometry | None = None
    input_size: tuple[int, int] = (0, 0)  # model input (width, height)
    num_labels: int = 0


Decoder = Callable[[list[np.ndarray], TaskContext], TaskResult]


def get_decoder(task: str) -> Decoder:
    """The ``decode`` function of ``task``."""
    module = TASK_MODULES.get(task)
    if module is None:
        raise ConfigError(f"task {task!r} is not known; choose one of: {', '.join(TASK_MODULES)}")
    decode: Decoder = importlib.import_module(f"edge.tasks.{module}").decode
    return decode
