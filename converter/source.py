"""The source model: a Keras file (``.keras``, ``.h5``) or a SavedModel folder.

Loads it with TensorFlow, hashes it, finds its (single) input, runs it for reference outputs, and
exports a SavedModel with a fixed input signature for the TFLite converter.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import SourceModelError
from edge.package import ZIP_MAGIC  # a .keras file is a zip

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PREDICT_BATCH = 64


@dataclass
class SourceModel:
    """A loaded source model with one input. ``predict`` returns outputs by signature key."""

    path: Path
    kind: str  # "keras" | "savedmodel"
    sha256: str
    input_name: str
    input_shape: tuple[int | None, ...]  # with batch axis; None where dynamic
    input_dtype: str
    _model: Any
    _call: Callable[[Any], dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name if self.kind == "savedmodel" else self.path.stem

    def sample_shape(self, override: tuple[int, ...] | None) -> tuple[int, ...]:
        """The input shape without batch, static. Dynamic dims need ``override`` (--input-shape)."""
        known = self.input_shape[1:]
        if override is not None:
            shape = tuple(override)
            if len(shape) == len(self.input_shape):
                shape = shape[1:]
            if len(shape) != len(known) or any(
                k is not None and k != s for k, s in zip(known, shape, strict=True)
            ):
                raise SourceModelError(
                    f"--input-shape {','.join(map(str, override))} does not fit the model input "
                    f"{_fmt_shape(self.input_shape)}; give every dimension, e.g. "
                    f"{','.join(str(k or 224) for k in known)}"
                )
            if any(s < 1 for s in shape):
                raise SourceModelError(f"--input-shape {','.join(map(str, override))} has a dimension < 1")
            return shape
        if any(k is None for k in known):
            raise SourceModelError(
                f"{self.path} has a dynamic input shape {_fmt_shape(self.input_shape)}; pass --input-shape "
                f"with every dimension, e.g. --input-shape {','.join(str(k or 224) for k in known)}"
            )
        return tuple(int(k) for k in known if k is not None)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Reference outputs, batched, keyed like the converted model's signature outputs."""
        import tensorflow as tf

        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(x), PREDICT_BATCH):
            batch = tf.constant(x[start : start + PREDICT_BATCH], dtype=self.input_dtype)
            for key, value in self._call(batch).items():
                parts.setdefault(key, []).append(np.asarray(value))
        return {key: np.concatenate(values) for key, values in parts.items()}

    def export(self, folder: Path, sample_shape: tuple[int, ...], batch: int | None) -> Path:
        """Write a SavedModel whose serving signature takes ``(batch, *sample_shape)``."""
        import tensorflow as tf

        spec = tf.TensorSpec((batch, *sample_shape), self.input_dtype, name=self.input_name)
        if self.kind == "keras":
            self._model.export(str(folder), format="tf_saved_model", input_signature=[spec], verbose=False)
            return folder
        module = tf.Module()
        module.source = self._model
        signature = self._model.signatures["serving_default"]
        name = self.input_name
        function = tf.function(lambda x: signature(**{name: x}), input_signature=[spec])
        tf.saved_model.save(module, str(folder), signatures={"serving_default": function})
        return folder


def load_source(path: Path) -> SourceModel:
    """Load SRC; every failure is a one-line ``SourceModelError``."""
    path = Path(path)
    if not path.exists():
        raise SourceModelError(f"source model {path} not found; check the path")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise SourceModelError(
                f"{path} is a folder but not a SavedModel (no saved_model.pb); pass a SavedModel folder "
                "or a .keras/.h5 file"
            )
        digest = hash_tree(path)
        return _load_saved_model(path, digest)
    if not os.access(path, os.R_OK):
        raise SourceModelError(f"cannot read source model {path}: permission denied; fix its permissions")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
        digest = hash_file(path)
    except OSError as exc:
        raise SourceModelError(f"cannot read source model {path}: {exc.strerror}") from exc
    if path.suffix == ".tflite" or head[4:8] == b"TFL3":
        raise SourceModelError(
            f"{path} is already a TFLite model; edge convert takes a Keras file or SavedModel folder "
            "(use 'edge inspect' to look at a .tflite)"
        )
    if path.suffix not in KERAS_SUFFIXES or not (head.startswith(HDF5_MAGIC) or head.startswith(ZIP_MAGIC)):
        raise SourceModelError(
            f"{path} is not a model: expected a Keras file (.keras, .h5) or a SavedModel folder"
        )
    return _load_keras(path, digest)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(folder: Path) -> str:
    """sha256 over every file's relative path and contents, in sorted order (a SavedModel folder)."""
    digest = hashlib.sha256()
    try:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix().encode("utf-8")
            digest.update(len(rel).to_bytes(4, "big") + rel)
            digest.update(bytes.fromhex(hash_file(file)))
    except OSError as exc:
        raise SourceModelError(f"cannot read source model {folder}: {exc}") from exc
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _load_keras(path: Path, digest: str) -> SourceModel:
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds (ValueError, OSError, TypeError, ...)
        raise SourceModelError(
            f"{path} could not be loaded as a Keras model ({_first_line(exc)}); "
            "check it was saved with model.save() or export it as a SavedModel"
        ) from exc
    inputs = model.inputs
    if len(inputs) != 1:
        raise SourceModelError(
            f"{path} has {len(inputs)} inputs; edge convert supports models with one input"
        )
    tensor = inputs[0]
    shape = tuple(None if d is None else int(d) for d in tensor.shape)

    def call(x: Any) -> dict[str, Any]:
        out = model(x, training=False)
        if isinstance(out, dict):
            return {str(k): v for k, v in out.items()}
        if isinstance(out, list | tuple):
            return {f"output_{i}": v for i, v in enumerate(out)}
        return {"output_0": out}

    dtype = str(getattr(tensor, "dtype", "float32")) or "float32"
    return SourceModel(path, "keras", digest, "inputs", shape, _dtype_name(dtype), model, call)


def _load_saved_model(path: Path, digest: str) -> SourceModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises OSError, ValueError, its own errors
        raise SourceModelError(
            f"{path} could not be loaded as a SavedModel ({_first_line(exc)}); re-export it"
        ) from exc
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise SourceModelError(
            f"SavedModel {path} has no 'serving_default' signature; export it with one "
            "(tf.saved_model.save(..., signatures=...) or model.export())"
        )
    _, kwargs = signature.structured_input_signature
    if len(kwargs) != 1:
        raise SourceModelError(
            f"SavedModel {path} takes {len(kwargs)} inputs {sorted(kwargs)}; edge convert supports one input"
        )
    ((name, spec),) = kwargs.items()
    shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())

    def call(x: Any) -> dict[str, Any]:
        return {str(k): v for k, v in signature(**{name: x}).items()}

    return SourceModel(path, "savedmodel", digest, name, shape, spec.dtype.name, loaded, call)


def _dtype_name(dtype: str) -> str:
    return dtype.rsplit(".", 1)[-1].replace("'>", "").replace("<dtype: '", "")


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
