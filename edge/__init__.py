"""Edge inference runtime: the device side.

``import edge`` must stay light: no TensorFlow, no interpreter, no numpy, no MQTT at import time. The Python
API (``docs/python-api.md``) is exported lazily: ``from edge import load_model`` imports ``edge.api`` (and
with it numpy, Pillow and the pipeline) only then.

    from edge import load_model
    model = load_model("model.edgepkg")
    print(model.predict("photo.jpg").to_json())

``edge.load_model`` is the high-level one (a ``Predictor``); ``edge.model.load_model`` stays the low-level
loader of one interpreter (a ``Model``), which the ``Predictor`` wraps.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself is not imported: it would cost more than the rest of this module

__version__ = "0.1.0"

# public name -> the module it lives in, imported at first use
_LAZY = {
    "load_model": "edge.api",
    "Predictor": "edge.api",
    "Stream": "edge.api",
    "InferenceResult": "edge.pipeline",
    "Timing": "edge.pipeline",
    "ClassificationResult": "edge.tasks.classification",
    "Classification": "edge.tasks.classification",
    "DetectionResult": "edge.tasks.detection",
    "DetectedObject": "edge.tasks.detection",
    "RawResult": "edge.tasks.raw",
    "EdgeError": "edge.errors",
    "ModelError": "edge.errors",
    "PackageError": "edge.errors",
    "BackendError": "edge.errors",
    "InputError": "edge.errors",
    "SourceError": "edge.errors",
    "ConfigError": "edge.errors",
}

__all__ = [  # the same names as _LAZY (a test checks), spelled out for linters and readers
    "BackendError", "Classification", "ClassificationResult", "ConfigError", "DetectedObject",
    "DetectionResult", "EdgeError", "InferenceResult", "InputError", "ModelError", "PackageError",
    "Predictor", "RawResult", "SourceError", "Stream", "Timing", "__version__", "load_model",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from typing import Any

    from edge.api import Predictor, Stream, load_model
    from edge.errors import (
        BackendError,
        ConfigError,
        EdgeError,
        InputError,
        ModelError,
        PackageError,
        SourceError,
    )
    from edge.pipeline import InferenceResult, Timing
    from edge.tasks.classification import Classification, ClassificationResult
    from edge.tasks.detection import DetectedObject, DetectionResult
    from edge.tasks.raw import RawResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
