"""A ``.tflite`` as the source of ``edge convert``: packaged as it is, with what the model says about itself.

A TFLite model is already converted, so nothing is re-converted or re-quantized: the model bytes go into the
package unchanged except for our manifest, embedded in the metadata table (``converter.metadata`` keeps the
standard ``TFLITE_METADATA`` entry and re-appends the zip of associated files the TFLite Support writers put
at the end of the file). What the manifest needs comes from the first of: the command line (``--labels``,
``--mean/--std``, ``--task``, ``--name``, ``--version``), a manifest ``edge convert`` embedded earlier, the
standard TFLite metadata (``edge.tflite_metadata``), and the defaults below.

- labels: a classifier's first output's ``TENSOR_AXIS_LABELS`` file; a detector's class output's
  ``TENSOR_VALUE_LABELS`` (else axis labels) file; first locale;
- normalization: a float image input takes the metadata's ``NormalizationOptions`` mean/std. An integer
  (uint8/int8) input takes raw pixels, as the TFLite Task library, PyCoral and Frigate feed it: the Task
  library applies ``NormalizationOptions`` to float32 inputs only (the writers put them on quantized models
  too, e.g. 127/128 on EfficientNet-Lite0 int8, whose own quantization is 0.012566 / 131). In the manifest
  that is ``mean = zero_point`` (+128 for int8) and ``std = 1 / scale``, which the device recognizes as
  "the pixels as they are"; the metadata's values are kept in ``about.normalization``;
- name (made to fit our name rules), version (``v2`` -> 2, when higher than what the output folder holds),
  description, author, license: from the metadata; the verbatim strings are kept in ``about``;
- the score threshold: the first output's ``ScoreThresholdingOptions``;
- the task: what the runtime guesses from the file (``edge.model_defaults.guess_task``:
  ``TFLite_Detection_PostProcess``, YOLO heads, one ``[1, C]`` output, segmentation maps), else raw
  (``--task`` to choose).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import SourceModelError
from edge.errors import ModelError
from edge.manifest import Manifest
from edge.model_defaults import parse_label_lines
from edge.package import embedded_manifest, sha256_hex
from edge.tflite_file import FILE_IDENTIFIER, TensorInfo, TFLiteFileInfo, read_tflite
from edge.tflite_metadata import StandardMetadata, read_standard_metadata

log = logging.getLogger(__name__)

METADATA = "the standard TFLite metadata"
EDGETPU_OP = "edgetpu-custom-op"
INTEGER_TYPES = ("uint8", "int8")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_VERSION = re.compile(r"^\s*[vV]?(\d{1,9})\s*$")


@dataclass(frozen=True)
class TFLiteSource:
    """A readable ``.tflite`` with one input, its standard metadata (or None) and any manifest of ours."""

    path: Path
    data: bytes
    sha256: str
    info: TFLiteFileInfo
    metadata: StandardMetadata | None
    manifest: Manifest | None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.info.inputs[0].shape[1:])


@dataclass(frozen=True)
class Described:
    """What the manifest gets from the model itself, each value with where it came from."""

    name: str
    task: str
    task_from: str
    labels: tuple[str, ...]
    labels_from: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalization_from: str
    version: int | None = None  # a version the metadata suggests
    score_threshold: float | None = None
    about: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def is_tflite(path: Path) -> bool:
    """A file named ``*.tflite`` or carrying the TFLite identifier."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix == ".tflite":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(8)[4:8] == FILE_IDENTIFIER
    except OSError:
        return False


def load_tflite_source(path: Path) -> TFLiteSource:
    """Read the model, its standard metadata (problems are warnings) and any embedded manifest."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceModelError(f"cannot read source model {path}: {exc.strerror}") from exc
    try:
        info = read_tflite(data, source=str(path))
        manifest = embedded_manifest(info, source=str(path))
    except ModelError as exc:
        raise SourceModelError(
            f"{path} is already a TFLite model, so edge convert packages it as it is, but it cannot be "
            f"read: {exc}"
        ) from exc
    if len(info.inputs) != 1:
        raise SourceModelError(
            f"{path} has {len(info.inputs)} inputs; edge convert supports models with one input"
        )
    if any(op.name == EDGETPU_OP for op in info.operators):
        raise SourceModelError(
            f"{path} is compiled for the Edge TPU (it holds {EDGETPU_OP}); package the CPU .tflite it was "
            "compiled from (convert its Keras/SavedModel source with --mode edgetpu to get both)"
        )
    metadata = read_standard_metadata(data, str(path), entries=info.metadata, strict=False)
    return TFLiteSource(path, data, sha256_hex(data), info, metadata, manifest)


def describe(
    source: TFLiteSource,
    *,
    task: str | None,
    labels: tuple[str, ...] | None,
    labels_from: str,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> Described:
    """Resolve task, labels, normalization, name, version and threshold: flags, our manifest, metadata."""
    meta, ours, info = source.metadata, source.manifest, source.info
    notes = list(meta.problems if meta else ())
    if task:
        task_from = "--task"
    elif ours is not None:
        task, task_from = ours.task, "the manifest embedded in the model"
    else:
        task, task_from = guess_task(info, meta)
        if task == "raw":
            notes.append(f"task raw: {task_from}; pass --task classification or --task detection")

    if labels is None:
        labels, labels_from = (), ""
        if ours is not None and ours.labels:
            labels, labels_from = ours.labels, "the manifest embedded in the model"
        elif meta is not None:
            labels, labels_from = metadata_labels(meta, task)
    if labels and task == "classification" and info.outputs:
        classes = info.outputs[0].shape[-1] if info.outputs[0].shape else 1
        if classes != len(labels) and labels_from != "--labels":
            notes.append(
                f"{len(labels)} labels from {labels_from} for {classes} classes; check them or pass --labels"
            )

    tensor = info.inputs[0]
    spec = ours.inputs[0] if ours is not None and ours.inputs else None
    if mean is not None or std is not None:
        mean, std, norm_from = mean or (0.0,), std or (1.0,), "--mean/--std"
    elif spec is not None and (spec.mean or spec.std):
        mean, std, norm_from = spec.mean, spec.std, "the manifest embedded in the model"
    else:
        mean, std, norm_from, note = _normalization(tensor, meta)
        if note:
            notes.append(note)

    about: dict[str, Any] = {}
    threshold = None
    if meta is not None:
        about = {
            key: value
            for key, value in (
                ("name", meta.name),
                ("version", meta.version),
                ("description", meta.description),
                ("author", meta.author),
                ("license", meta.license),
            )
            if value
        }
        declared = meta.inputs[0].normalization if meta.inputs else None
        if declared is not None:
            about["normalization"] = declared.to_json()
        threshold = next((t.score_threshold for t in meta.outputs if t.score_threshold is not None), None)
        about["from"] = "TFLITE_METADATA"
    if ours is not None:
        name = ours.name
    else:
        name = metadata_name(meta.name) if meta is not None and meta.name else ""
        name = name or metadata_name(source.path.stem) or "model"
    version = metadata_version(meta.version) if meta is not None else None
    return Described(
        name=name,
        task=task,
        task_from=task_from,
        labels=tuple(labels),
        labels_from=labels_from,
        mean=tuple(mean),
        std=tuple(std),
        normalization_from=norm_from,
        version=version,
        score_threshold=threshold,
        about=about,
        notes=tuple(notes),
    )


def guess_task(info: TFLiteFileInfo, meta: StandardMetadata | None = None) -> tuple[str, str]:
    """(task, why): a bounding-box output in the metadata means detection; otherwise the runtime's own
    guess from the operators and output shapes (``edge.model_defaults.guess_task``)."""
    from edge.model_defaults import guess_task as runtime_guess

    guess = runtime_guess(info)
    if guess.task == "raw" and meta is not None and any(t.content == "bounding_box" for t in meta.outputs):
        return "detection", "its metadata describes a bounding box output"
    return guess.task, guess.reason


def metadata_labels(meta: StandardMetadata, task: str) -> tuple[tuple[str, ...], str]:
    """The labels the metadata gives for ``task``'s class output, and where exactly they came from."""
    if task == "detection":  # the class-id output: value labels, else axis labels
        order = [(i, kind) for kind in ("value", "axis") for i in range(len(meta.outputs))]
    else:
        order = [(i, kind) for i in range(len(meta.outputs)) for kind in ("axis", "value")]
    for index, kind in order:
        tensor = meta.outputs[index]
        files = tensor.value_label_files if kind == "value" else tensor.label_files
        labels = meta.value_labels_for_output(index) if kind == "value" else meta.labels_for_output(index)
        labels = parse_label_lines(labels)  # "id label" lines, b'...' reprs: as the runtime reads them
        if labels:
            named = tensor.name or f"output {index}"
            return labels, f"{METADATA} ({files[0].name} of {named})"
    return (), ""


def metadata_name(text: str) -> str:
    """``text`` made into a model name we allow: letters, digits, ``._-``, at most 64."""
    return _NAME_CHARS.sub("-", text).strip("-._")[:64].rstrip("-._")


def metadata_version(text: str) -> int | None:
    """``v2``, ``2`` -> 2; anything else (``1.0``, ``beta``) -> None."""
    match = _VERSION.match(text or "")
    return int(match.group(1)) if match and int(match.group(1)) >= 1 else None


def model_mode(info: TFLiteFileInfo) -> tuple[str, str]:
    """(mode, io type) the model was converted with, as far as its tensors tell."""
    first = info.inputs[0]
    if first.dtype in INTEGER_TYPES and first.is_quantized:
        return "int8", first.dtype
    dtypes = {t.dtype for t in info.tensors}
    if "float16" in dtypes:
        return "float16", "float32"
    if "int8" in dtypes:
        return "dynamic", "float32"
    return "float32", "float32"


def _normalization(
    tensor: TensorInfo, meta: StandardMetadata | None
) -> tuple[tuple[float, ...], tuple[float, ...], str, str]:
    declared = meta.inputs[0].normalization if meta is not None and meta.inputs else None
    if tensor.dtype in INTEGER_TYPES and tensor.is_quantized and len(tensor.scale) == 1:
        zero = float(tensor.zero_point[0] if tensor.zero_point else 0)
        zero += 128.0 if tensor.dtype == "int8" else 0.0
        raw = (zero,), (1.0 / float(tensor.scale[0]),)
        why = "raw pixels: an integer input's own quantization is its normalization"
        if declared is not None:
            why += f" (the Task library applies {METADATA}'s mean/std to float inputs only)"
        return raw[0], raw[1], why, ""
    if declared is not None and declared.mean and declared.std:
        return declared.mean, declared.std, METADATA, ""
    return (), (), "", (
        f"{tensor.dtype} input without normalization in its metadata: the manifest leaves mean/std empty "
        "(the device's default applies); pass --mean/--std if you know them"
    )
