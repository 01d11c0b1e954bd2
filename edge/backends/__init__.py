"""Interpreter backends, one module each, chosen at run time; none is imported until used.

``auto`` picks the first installed of ai-edge-litert, tflite-runtime, ``tensorflow.lite`` (or the backend
named by the ``EDGE_BACKEND`` environment variable). An explicit backend that is not installed is a
``BackendError`` naming the package to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from edge.errors import BackendError, ConfigError

AUTO = "auto"
ENV_BACKEND = "EDGE_BACKEND"


class Backend(NamedTuple):
    """One interpreter implementation: where it lives and how to make an interpreter with it."""

    name: str
    module: str  # the importable module that proves it is installed
    package: str  # what to ``pip install``
    loader: str  # edge.backends.<loader> holds interpreter_class() and load_delegate()

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def version(self) -> str | None:
        import importlib.metadata  # ~20 ms: only when asked

        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def _impl(self) -> Any:
        return importlib.import_module(f"edge.backends.{self.loader}")

    def interpreter_class(self) -> Callable[..., Any]:
        if not self.installed():
            raise BackendError(f"backend {self.name!r} is not installed; run: pip install {self.package}")
        return self._impl().interpreter_class()

    def load_delegate(self, library: str, options: dict[str, str] | None = None) -> Any:
        return self._impl().load_delegate(library, options)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("litert", "ai_edge_litert", "ai-edge-litert", "litert"),
        Backend("tflite-runtime", "tflite_runtime", "tflite-runtime", "tflite_runtime"),
        Backend("tensorflow", "tensorflow", "tensorflow", "tensorflow_lite"),
    )
}
ALIASES = {
    "ai-edge-litert": "litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow-lite": "tensorflow",
    "tf": "tensorflow",
}


def backend_names() -> list[str]:
    return list(BACKENDS)


def installed_backends() -> list[Backend]:
    return [b for b in BACKENDS.values() if b.installed()]


def get_backend(name: str | None = AUTO) -> Backend:
    """The backend called ``name`` (``auto``: $EDGE_BACKEND, else the first installed in preference order)."""
    name = (name or AUTO).strip().lower()
    if name == AUTO:
        name = os.environ.get(ENV_BACKEND, "").strip().lower() or AUTO
    if name == AUTO:
        for backend in BACKENDS.values():
            if backend.installed():
                return backend
        raise BackendError(
            "no TFLite interpreter is installed; run: pip install ai-edge-litert "
            "(or tflite-runtime on platforms without ai-edge-litert)"
        )
    found = BACKENDS.get(ALIASES.get(name, name))
    if found is None:
        raise ConfigError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    backend = found
    if not backend.installed():
        raise BackendError(f"backend {backend.name!r} is not installed; run: pip install {backend.package}")
    return backend
