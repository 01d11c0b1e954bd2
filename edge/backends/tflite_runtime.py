"""The legacy backend: ``tflite_runtime`` (2.14, numpy<2), still the only wheel on some boards."""

from __future__ import annotations

from typing import Any


def interpreter_class() -> Any:
    from tflite_runtime.interpreter import Interpreter

    return Interpreter


def load_delegate(library: str, options: dict[str, str] | None = None) -> Any:
    from tflite_runtime.interpreter import load_delegate as _load

    return _load(library, options)
