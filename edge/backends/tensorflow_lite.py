"""The fallback backend: ``tensorflow.lite``, used only when TensorFlow happens to be installed.

Importing TensorFlow costs seconds and hundreds of MB, and the device side must import without it, so
TensorFlow is loaded by name only when this backend is actually used (never when the module is imported).
"""

from __future__ import annotations

import importlib
from typing import Any


def _tf_lite() -> Any:
    return importlib.import_module("tensorflow").lite


def interpreter_class() -> Any:
    return _tf_lite().Interpreter


def load_delegate(library: str, options: dict[str, str] | None = None) -> Any:
    return _tf_lite().experimental.load_delegate(library, options)
