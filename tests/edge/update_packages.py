"""Helpers for the model-update tests: real packages of any version built around a real ``.tflite``.

No TensorFlow here: the model bytes come from the ``assets`` fixture (real conversions, cached).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edge.manifest import Manifest, Quantization, TensorSpec
from edge.package import build_package_bytes
from edge.tflite_file import TensorInfo, read_tflite

DIGITS_LABELS = tuple(str(d) for d in range(10))


def _spec(tensor: TensorInfo, is_input: bool) -> TensorSpec:
    quant = (
        Quantization(tensor.scale, tensor.zero_point, tensor.quantized_dimension)
        if tensor.is_quantized
        else None
    )
    if is_input:
        return TensorSpec(tensor.name, tensor.shape, tensor.dtype, quant, "NHWC", (0.0,), (1.0,))
    return TensorSpec(tensor.name, tensor.shape, tensor.dtype, quant)


def manifest_for(
    model: bytes,
    version: int,
    name: str = "digits",
    task: str = "classification",
    labels: tuple[str, ...] = DIGITS_LABELS,
) -> Manifest:
    """A manifest describing ``model``'s real tensors."""
    info = read_tflite(model)
    return Manifest(
        name=name,
        version=version,
        task=task,
        inputs=tuple(_spec(t, True) for t in info.inputs),
        outputs=tuple(_spec(t, False) for t in info.outputs),
        labels=labels,
        mode="test",
        created_at="2026-01-01T00:00:00Z",
    )


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def make_package(
    model_path: Path,
    version: int,
    *,
    name: str = "digits",
    task: str = "classification",
    labels: tuple[str, ...] = DIGITS_LABELS,
    golden: tuple[np.ndarray, np.ndarray] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """Package bytes (unsigned) holding the real model at ``model_path`` as version ``version``."""
    model = Path(model_path).read_bytes()
    files = {"model.tflite": model, "labels.txt": ("\n".join(labels) + "\n").encode()}
    if golden is not None:
        files["golden/input.npy"] = npy_bytes(golden[0])
        files["golden/output.npy"] = npy_bytes(golden[1])
    files.update(extra or {})
    return build_package_bytes(manifest_for(model, version, name, task, labels), files)
