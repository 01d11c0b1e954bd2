"""``convert(ConvertOptions(...))``: Keras/SavedModel -> validated, self-describing TFLite package.

Steps: check options, load SRC, read calibration/evaluation data, convert in the chosen mode (and in
float32 for the size baseline), check quantization, run the validation report, check Edge TPU ops and
compile, embed the manifest in the ``.tflite``, record the golden input and output (packages only: the
first sample the report used, for the device's check before it activates the model), then write OUT
atomically. Nothing is written before every check has passed.

A ``.tflite`` SRC (a third-party model) is packaged as it is (``converter.tflite_source``): its standard
TFLite metadata gives the manifest's labels, normalization, name, version and score threshold unless flags
do, and stays in the model bytes with its zip of associated files. Labels a Keras model holds (an inverted
lookup layer, ``converter.source``) are taken the same way. Flags always win.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import edge
from converter import checks, modes
from converter.data import Samples, load_samples
from converter.edgetpu import compile_for_edgetpu
from converter.errors import CalibrationError, ConverterError, QuantizationError, ValidationError
from converter.metadata import embed_manifest
from converter.preprocess import normalize
from converter.report import compare, golden_pair, latency_summary, run_tflite
from converter.source import SourceModel, load_source
from converter.tflite_source import TFLiteSource, describe, is_tflite, load_tflite_source, model_mode
from edge.activation import GOLDEN_INPUT, GOLDEN_OUTPUT
from edge.fsutil import atomic_write_bytes
from edge.manifest import TASKS, Manifest, Quantization, TensorSpec
from edge.package import (
    EDGETPU_MODEL_NAME,
    LABELS_NAME,
    MODEL_NAME,
    PACKAGE_SUFFIX,
    existing_versions,
    manifest_json_for_embedding,
    write_package,
)
from edge.profiles import CONVERT_MODES, IO_TYPES
from edge.tflite_file import TensorInfo, TFLiteFileInfo, read_tflite

log = logging.getLogger(__name__)

HOLDOUT_SAMPLES = 100  # calibration samples kept apart for the report when no --eval is given
EVAL_LIMIT = 1000
RANDOM_SAMPLES = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ConvertOptions:
    """What ``edge convert`` takes; see ``edge convert --help``."""

    source: Path
    output: Path
    mode: str = "float32"
    io_type: str = "uint8"
    calib: Path | None = None
    calib_samples: int = 200
    eval_data: Path | None = None
    labels: Path | None = None
    task: str | None = None  # None: classification, or what a .tflite's outputs say
    name: str | None = None
    version: int | None = None
    mean: tuple[float, ...] | None = None  # None: 0 (a .tflite: its metadata or quantization)
    std: tuple[float, ...] | None = None  # None: 1
    input_shape: tuple[int, ...] | None = None
    min_agreement: float | None = None


@dataclass(frozen=True)
class ConvertResult:
    """The written file, its manifest (with file digests for a package) and the validation report."""

    output_path: Path
    manifest: Manifest
    report: dict[str, Any] = field(default_factory=dict)


def convert(options: ConvertOptions) -> ConvertResult:
    """Convert, validate and write. Raises a ``ConverterError`` (or ``EdgeError``) with nothing written."""
    _check_options(options)
    if is_tflite(Path(options.source)):
        return _package_tflite(options)
    options = replace(
        options,
        task=options.task or "classification",
        mean=options.mean or (0.0,),
        std=options.std or (1.0,),
    )
    source = load_source(Path(options.source))
    if options.labels:
        labels, labels_from = read_labels(options.labels), f"--labels {Path(options.labels).name}"
    else:
        labels, labels_from = source.labels, source.labels_from
    sample_shape = source.sample_shape(options.input_shape)
    _check_normalization(options, sample_shape)
    name = _checked_name(options.name or source.name)
    output = Path(options.output)
    folder = output if output.is_dir() else output.parent
    version = choose_version(folder, name, options.version)
    if folder is output:
        output = folder / f"{name}-v{version}{PACKAGE_SUFFIX}"

    calib, evaluation, notes = _samples(options, source, sample_shape, labels)
    notes = [*source.notes, *notes]
    with tempfile.TemporaryDirectory(prefix="edge-convert-") as tmp:
        batch = 1 if options.mode == "edgetpu" else None
        saved = source.export(Path(tmp) / "saved_model", sample_shape, batch)
        started = time.perf_counter()
        model = modes.convert_saved_model(
            saved, options.mode, options.io_type, None if calib is None else calib.x
        )
        conversion_s = time.perf_counter() - started
        float32_size = (
            len(model) if options.mode == "float32" else len(modes.convert_saved_model(saved, "float32"))
        )
    info = read_tflite(model, source="converted model")
    if modes.needs_calibration(options.mode):
        left_float = checks.float_ops(info)
        if left_float:
            raise QuantizationError(
                f"{len(left_float)} op(s) cannot be quantized for --mode {options.mode}: "
                + "; ".join(str(i) for i in left_float[:5])
                + "; use --mode dynamic or float16, or replace those ops"
            )
    _check_labels(labels, info, str(options.task))

    report = _report(options, source, model, evaluation, calib, float32_size, notes)
    report["conversion_s"] = round(conversion_s, 3)
    report["labels"] = _labels_summary(labels, labels_from)
    files: dict[str, bytes] = {}
    edgetpu_info = None
    if options.mode == "edgetpu":
        edgetpu_info, files = _edgetpu(info, model)
        report["edgetpu"] = edgetpu_info
    _check_agreement(options.min_agreement, report)

    converter = {
        "edge": edge.__version__,
        "tensorflow": _tf_version(),
        "io_type": modes.io_type_for(options.mode, options.io_type),
    }
    if labels:
        converter["labels_from"] = labels_from
    manifest = Manifest(
        name=name,
        version=version,
        task=str(options.task),
        inputs=tuple(_spec(t, options.mean or (), options.std or ()) for t in info.inputs),
        outputs=tuple(_spec(t) for t in info.outputs),
        labels=labels,
        mode=options.mode,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        source={"file": source.path.name, "kind": source.kind, "sha256": source.sha256},
        converter=converter,
        report=report,
        edgetpu=edgetpu_info,
    )
    return _write(output, manifest, model, files, evaluation, report, float32_size)


def _write(
    output: Path,
    manifest: Manifest,
    model: bytes,
    files: dict[str, bytes],
    evaluation: Samples | None,
    report: dict[str, Any],
    baseline_size: int,
) -> ConvertResult:
    """Embed the manifest, write the bare model or the package (golden files, labels) atomically."""
    model = embed_manifest(model, manifest_json_for_embedding(manifest))
    if output.suffix == ".tflite":
        atomic_write_bytes(output, model)
    else:
        files[MODEL_NAME] = model
        if evaluation is not None:
            files.update(golden_files(model, evaluation))
        if manifest.labels:
            files[LABELS_NAME] = ("\n".join(manifest.labels) + "\n").encode("utf-8")
        manifest = write_package(output, manifest, files)
    written = output.stat().st_size
    result_report = dict(report, output_size_bytes=written, output_ratio=round(written / baseline_size, 4))
    log.info("wrote %s (%d bytes)", output, written)
    return ConvertResult(output, manifest, result_report)


def _package_tflite(options: ConvertOptions) -> ConvertResult:
    """A ``.tflite`` SRC: packaged as it is, with what it says about itself (``converter.tflite_source``)."""
    given = [
        flag
        for flag, used in (
            (f"--mode {options.mode}", options.mode != "float32"),
            ("--calib", options.calib is not None),
            ("--input-shape", options.input_shape is not None),
            ("--min-agreement", options.min_agreement is not None),
        )
        if used
    ]
    if given:
        raise ConverterError(
            f"{', '.join(given)} do(es) not apply to a .tflite source: it is already converted, so edge "
            "convert packages it as it is (nothing to re-quantize or compare with); drop the option, or "
            "convert the Keras/SavedModel it came from"
        )
    source = load_tflite_source(Path(options.source))
    labels = read_labels(options.labels) if options.labels else None
    about = describe(
        source,
        task=options.task,
        labels=labels,
        labels_from=f"--labels {Path(options.labels).name}" if options.labels else "",
        mean=options.mean,
        std=options.std,
    )
    if about.task not in TASKS:
        raise ConverterError(f"task {about.task!r} is not known to this runtime; pass --task")
    resolved = replace(options, mean=about.mean or (0.0,), std=about.std or (1.0,))
    _check_normalization(resolved, source.sample_shape)
    if labels:
        _check_labels(labels, source.info, about.task)
    name = _checked_name(options.name or about.name)
    output = Path(options.output)
    folder = output if output.is_dir() else output.parent
    notes = list(about.notes)
    version = _tflite_version(folder, name, options.version, about.version, notes)
    if folder is output:
        output = folder / f"{name}-v{version}{PACKAGE_SUFFIX}"
    mode, io_type = model_mode(source.info)
    evaluation, report = _tflite_report(options, source, about, mode, io_type, notes)
    converter: dict[str, Any] = {"edge": edge.__version__, "tensorflow": _tf_version(), "io_type": io_type}
    converter["packaged"] = "as it is (a .tflite source: not re-converted)"
    if about.labels:
        converter["labels_from"] = about.labels_from
    if about.normalization_from:
        converter["normalization_from"] = about.normalization_from
    manifest = Manifest(
        name=name,
        version=version,
        task=about.task,
        inputs=tuple(_spec(t, about.mean, about.std, image=True) for t in source.info.inputs),
        outputs=tuple(_spec(t) for t in source.info.outputs),
        labels=about.labels,
        mode=mode,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        source={"file": source.path.name, "kind": "tflite", "sha256": source.sha256},
        converter=converter,
        report=report,
        about=about.about,
        score_threshold=about.score_threshold,
    )
    return _write(output, manifest, source.data, {}, evaluation, report, len(source.data))


def _tflite_version(
    folder: Path, name: str, requested: int | None, suggested: int | None, notes: list[str]
) -> int:
    """--version, else the metadata's version when it is higher than what ``folder`` holds, else the next."""
    if requested is not None or suggested is None:
        return choose_version(folder, name, requested)
    highest = max(existing_versions(folder, name), default=0)
    if suggested > highest:
        return suggested
    notes.append(
        f"the model's metadata says version {suggested}, but {folder} already has version {highest} of "
        f"{name!r}: packaged as version {highest + 1}"
    )
    return highest + 1


def _tflite_report(
    o: ConvertOptions, source: TFLiteSource, about: Any, mode: str, io_type: str, notes: list[str]
) -> tuple[Samples | None, dict[str, Any]]:
    """Latency, accuracy on --eval, and the golden sample: the model on this machine's interpreter."""
    shape = source.sample_shape
    mean, std = about.mean or (0.0,), about.std or (1.0,)
    if o.eval_data is not None:
        path = Path(o.eval_data)
        evaluation = load_samples(
            path,
            shape,
            option="--eval",
            mean=mean,
            std=std,
            limit=EVAL_LIMIT,
            class_folders=path.is_dir(),
            labels=about.labels,
        )
    else:
        rng = np.random.default_rng(0)
        pixels = rng.uniform(0.0, 255.0, size=(RANDOM_SAMPLES, *shape)).astype(np.float32)
        evaluation = Samples(normalize(pixels, mean, std), None, "random inputs")
    report: dict[str, Any] = {
        "mode": mode,
        "io_type": io_type,
        "packaged_as_is": True,
        "eval": {
            "data": evaluation.source,
            "samples": len(evaluation),
            "labelled": evaluation.y is not None,
            "skipped": evaluation.skipped,
        },
        "calibration": None,
        "top1_agreement": None,
        "accuracy_source": None,
        "accuracy_converted": None,
        "mean_abs_error": None,
        "max_abs_error": None,
        "model_size_bytes": len(source.data),
        "float32_size_bytes": None,
        "size_ratio": None,
        "labels": _labels_summary(about.labels, about.labels_from),
    }
    if source.metadata is not None:
        report["standard_metadata"] = {
            "kept": True,
            "packed_files": list(source.metadata.packed_files),
        }
    custom = sorted({op.name for op in source.info.operators if op.custom} - {"TFLite_Detection_PostProcess"})
    try:
        if custom:
            raise RuntimeError(f"custom op(s) {', '.join(custom)}")
        run = run_tflite(source.data, evaluation.x)
    except (RuntimeError, ValueError) as exc:
        notes.append(f"not run on this machine ({exc}): no latency, no accuracy, no golden files")
        report.update(latency_ms=None, notes=notes)
        return None, report
    first = next(iter(run.outputs.values()))
    if evaluation.y is not None and about.task == "classification" and first.ndim == 2 and first.shape[1] > 1:
        report["accuracy_converted"] = float((first.argmax(axis=1) == evaluation.y).mean())
    if o.eval_data is None:
        notes.append(
            "no --eval given: run on random inputs for the latency and the golden sample only; pass --eval "
            "for an accuracy"
        )
    report.update(latency_ms=latency_summary(run.latencies), notes=notes)
    return evaluation, report


def _labels_summary(labels: tuple[str, ...], labels_from: str) -> dict[str, Any]:
    return {"count": len(labels), "from": labels_from if labels else None}


def golden_files(model: bytes, evaluation: Samples) -> dict[str, bytes]:
    """``golden/input.npy`` and ``golden/output.npy`` for the first evaluation sample (none without one)."""
    if not len(evaluation):
        return {}
    given, expected = golden_pair(model, evaluation.x[0])
    return {GOLDEN_INPUT: _npy_bytes(given), GOLDEN_OUTPUT: _npy_bytes(expected)}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line; blank lines ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConverterError(f"--labels {path} not found; pass a text file with one label per line") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConverterError(f"--labels {path} cannot be read as UTF-8 text ({exc})") from exc
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ConverterError(f"--labels {path} is empty; put one label per line")
    return labels


def choose_version(folder: Path, name: str, requested: int | None) -> int:
    """The next version after the highest of ``name`` in ``folder``; an explicit one must be higher."""
    existing = existing_versions(folder, name)
    highest = max(existing, default=0)
    if requested is None:
        return highest + 1
    if requested < 1:
        raise ConverterError(f"--version {requested} is not allowed; versions are positive integers")
    if requested <= highest:
        raise ConverterError(
            f"--version {requested} is not higher than version {highest} of {name!r} already in {folder}; "
            f"versions only grow: use --version {highest + 1} or leave it out"
        )
    return requested


def _check_options(o: ConvertOptions) -> None:
    if o.mode not in CONVERT_MODES:
        raise ConverterError(f"--mode {o.mode!r} is not known; choose one of {', '.join(CONVERT_MODES)}")
    if o.io_type not in IO_TYPES:
        raise ConverterError(f"--io {o.io_type!r} is not known; choose one of {', '.join(IO_TYPES)}")
    if o.task is not None and o.task not in TASKS:
        raise ConverterError(f"--task {o.task!r} is not known; choose one of {', '.join(TASKS)}")
    if o.calib_samples < 1:
        raise ConverterError(f"--calib-samples {o.calib_samples} must be at least 1")
    if o.min_agreement is not None and not 0.0 <= o.min_agreement <= 1.0:
        raise ConverterError(f"--min-agreement {o.min_agreement} must be between 0 and 1 (e.g. 0.98)")
    if o.std is not None and any(s == 0 for s in o.std):
        raise ConverterError(f"--std {','.join(map(str, o.std))} has a zero; std divides the pixels")
    if modes.needs_calibration(o.mode) and o.calib is None:
        raise CalibrationError(
            f"--mode {o.mode} needs calibration data: "
            "pass --calib with a folder of images or a .npy/.npz array"
        )


def _check_normalization(o: ConvertOptions, sample_shape: tuple[int, ...]) -> None:
    channels = sample_shape[-1] if sample_shape else 1
    for option, values in (("--mean", o.mean or ()), ("--std", o.std or ())):
        if values and len(values) not in (1, channels):
            raise ConverterError(
                f"{option} has {len(values)} values but the input has {channels} channels; "
                f"give 1 or {channels}"
            )


def _check_labels(labels: tuple[str, ...], info: TFLiteFileInfo, task: str) -> None:
    if not labels or task != "classification" or not info.outputs:
        return
    classes = info.outputs[0].shape[-1] if info.outputs[0].shape else 1
    if classes != len(labels):
        raise ConverterError(
            f"--labels has {len(labels)} labels but the model's output has {classes} classes; "
            "fix the labels file"
        )


def _samples(
    o: ConvertOptions, source: SourceModel, sample_shape: tuple[int, ...], labels: tuple[str, ...]
) -> tuple[Samples | None, Samples, list[str]]:
    notes: list[str] = []
    calib = None
    if o.calib is not None:
        extra = 0 if o.eval_data is not None else HOLDOUT_SAMPLES
        calib = load_samples(
            Path(o.calib),
            sample_shape,
            option="--calib",
            mean=o.mean or (0.0,),
            std=o.std or (1.0,),
            limit=o.calib_samples + extra,
        )
    if o.eval_data is not None:
        path = Path(o.eval_data)
        evaluation = load_samples(
            path,
            sample_shape,
            option="--eval",
            mean=o.mean or (0.0,),
            std=o.std or (1.0,),
            limit=EVAL_LIMIT,
            class_folders=path.is_dir(),
            labels=labels,
        )
        return calib, evaluation, notes
    if calib is not None and not modes.needs_calibration(o.mode):
        notes.append(f"--mode {o.mode} needs no calibration: the --calib data served only the report")
        return None, calib, notes
    if calib is not None:
        if len(calib) > o.calib_samples:
            held = calib.take(o.calib_samples)
            calib = calib.take(0, o.calib_samples)
        elif len(calib) >= 2:
            cut = len(calib) - max(1, len(calib) // 5)
            held, calib = calib.take(cut), calib.take(0, cut)
        else:
            held = calib
            notes.append("only 1 calibration sample: the report uses that same sample; pass --eval")
        evaluation = Samples(held.x, held.y, f"held-out part of {held.source} (not used to calibrate)")
        return calib, evaluation, notes
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.0, 255.0, size=(RANDOM_SAMPLES, *sample_shape)).astype(np.float32)
    x = normalize(pixels, o.mean or (0.0,), o.std or (1.0,))
    notes.append(
        "no --eval or --calib given: compared on random inputs (pixels uniform in 0..255, normalized with "
        "--mean/--std); agreement and error only, no accuracy; pass --eval for a meaningful report"
    )
    return None, Samples(x, None, "random inputs"), notes


def _report(
    o: ConvertOptions,
    source: SourceModel,
    model: bytes,
    evaluation: Samples,
    calib: Samples | None,
    float32_size: int,
    notes: list[str],
) -> dict[str, Any]:
    reference = source.predict(evaluation.x)
    run = run_tflite(model, evaluation.x)
    report: dict[str, Any] = {
        "mode": o.mode,
        "io_type": modes.io_type_for(o.mode, o.io_type),
        "eval": {
            "data": evaluation.source,
            "samples": len(evaluation),
            "labelled": evaluation.y is not None,
            "skipped": evaluation.skipped,
        },
        "calibration": None
        if calib is None
        else {"data": calib.source, "samples": len(calib), "skipped": calib.skipped},
    }
    report.update(compare(reference, run.outputs, evaluation.y))
    report.update(
        model_size_bytes=len(model),
        float32_size_bytes=float32_size,
        size_ratio=round(len(model) / float32_size, 4),
        latency_ms=latency_summary(run.latencies),
        notes=notes,
    )
    return report


def _edgetpu(info: TFLiteFileInfo, model: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    cpu_ops = checks.edgetpu_fallback_ops(info)
    compiled = compile_for_edgetpu(model)
    files: dict[str, bytes] = {}
    if compiled.ran:
        files["edgetpu_compiler.log"] = compiled.log.encode("utf-8")
    if compiled.model is not None:
        files[EDGETPU_MODEL_NAME] = compiled.model
    summary = {
        "ops_total": len(info.operators),
        "ops_on_tpu": len(info.operators) - len(cpu_ops),
        "cpu_ops": [op.to_json() for op in cpu_ops],
        "compiler": compiled.to_json(),
    }
    return summary, files


def _check_agreement(minimum: float | None, report: dict[str, Any]) -> None:
    if minimum is None:
        return
    agreement = report["top1_agreement"]
    if agreement is None:
        raise ValidationError(
            "--min-agreement needs a classification output (N, classes) to compare top-1; drop the option",
            report,
        )
    if agreement < minimum:
        raise ValidationError(
            f"top-1 agreement {agreement:.4f} is below --min-agreement {minimum}; nothing was written. "
            "Use more or better --calib data, another --mode, or a lower threshold",
            report,
        )


def _spec(
    t: TensorInfo, mean: tuple[float, ...] = (), std: tuple[float, ...] = (), image: bool = False
) -> TensorSpec:
    quant = Quantization(t.scale, t.zero_point, t.quantized_dimension) if t.is_quantized else None
    layout = "NHWC" if (mean or image) and len(t.shape) == 4 else "other"
    return TensorSpec(t.name, t.shape, t.dtype, quant, layout, tuple(mean), tuple(std))


def _tf_version() -> str:
    import tensorflow as tf

    return str(tf.__version__)


def _checked_name(name: str) -> str:
    """A package name as the manifest allows it, or a ConverterError saying what to pass."""
    if not NAME_PATTERN.match(name):
        raise ConverterError(
            f"model name {name!r} is not allowed; use --name with letters, digits, '.', '_' or '-' (max 64)"
        )
    return name
