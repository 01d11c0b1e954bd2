"""The default backend: Google's ai-edge-litert (``ai_edge_litert.interpreter``)."""

from __future__ import annotations

from typing import Any


def interpreter_class() -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter


def load_delegate(library: str, options: dict[str, str] | None = None) -> Any:
    from ai_edge_litert.interpreter import load_delegate as _load

    return _load(library, options)
