"""The source model: a Keras file (``.keras``, ``.h5``) or a SavedModel folder.

Loads it with TensorFlow, hashes it, finds its (single) input, runs it for reference outputs, and
exports a SavedModel with a fixed input signature for the TFLite converter.

Labels that live in a Keras model: Keras keeps no class names of its own (``image_dataset_from_directory``'s
``class_names`` stay on the dataset), so the one place a saved model holds them is a lookup layer. A model
that answers with the label, ``StringLookup(vocabulary=class_names, invert=True)`` (or ``IntegerLookup``)
applied to the argmax of its class scores, gives its vocabulary as the labels, and the model is converted up
to those scores: the lookup (a string tensor, not a TFLite builtin) and the argmax are left to the device,
which decodes the scores with the labels. Class id ``i`` gets vocabulary entry ``i``, exactly as the lookup
maps it: with ``num_oov_indices=1`` (Keras' default) entry 0 is the out-of-vocabulary token ``[UNK]``, so
pass ``num_oov_indices=0`` to the lookup when class 0 is a real class.
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
    labels: tuple[str, ...] = ()  # labels the model itself holds (a lookup layer's vocabulary)
    labels_from: str = ""
    notes: tuple[str, ...] = ()

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
    labels: tuple[str, ...] = ()
    labels_from = ""
    notes: tuple[str, ...] = ()
    found = _label_lookup(model)
    if found is not None:
        model, labels, labels_from, notes = found
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
    return SourceModel(
        path, "keras", digest, "inputs", shape, _dtype_name(dtype), model, call, labels, labels_from, notes
    )


def _label_lookup(model: Any) -> tuple[Any, tuple[str, ...], str, tuple[str, ...]] | None:
    """A model answering with labels through an inverted lookup: (the model up to its scores, the labels,
    where they came from, notes), or None when it has no such output."""
    import keras

    outputs = list(getattr(model, "outputs", None) or [])
    lookups = (keras.layers.StringLookup, keras.layers.IntegerLookup)
    for index, output in enumerate(outputs):
        layer = _producer(output)
        if not isinstance(layer, lookups) or not getattr(layer, "invert", False):
            continue
        vocabulary = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in layer.get_vocabulary())
        scores = _scores_before(output)
        classes = int(scores.shape[-1]) if scores is not None else 0
        if scores is None or classes > len(vocabulary):
            log.info("lookup %s is not fed by class scores (at most %d classes); labels not taken",
                     layer.name, len(vocabulary))
            return None
        others = [o for i, o in enumerate(outputs) if i != index and o is not scores]
        if others:
            return None  # more outputs than the scores: not the plain classifier this handles
        head = keras.Model(model.inputs, scores, name=model.name)
        kind = type(layer).__name__
        extra = len(vocabulary) - classes
        vocabulary = vocabulary[:classes]  # class id i -> entry i, as the lookup maps it
        note = (
            f"labels: the {classes}-entry vocabulary of the model's {kind} {layer.name!r} (invert=True); "
            f"converted up to its class scores ({_producer(scores).name!r}): the device decodes them with "
            "those labels instead of running the lookup"
            + (f" ({extra} vocabulary entries beyond the class count left out)" if extra else "")
        )
        return head, vocabulary, f"the Keras model's {kind} {layer.name!r} vocabulary", (note,)
    return None


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def _scores_before(tensor: Any) -> Any:
    """Walking back through single-input operations (argmax, cast, ...): the first float tensor that is a
    batch of class scores ``(batch, classes)``, or None."""
    for _ in range(8):
        history = getattr(tensor, "_keras_history", None)
        if not history:
            return None
        operation, node_index, _ = history
        nodes = getattr(operation, "_inbound_nodes", [])
        if node_index >= len(nodes):
            return None
        inputs = list(nodes[node_index].input_tensors)
        if len(inputs) != 1:
            return None
        tensor = inputs[0]
        shape = tuple(tensor.shape)
        if len(shape) == 2 and shape[-1] and "float" in str(tensor.dtype):
            return tensor
    return None


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
