"""The validation report: the source and the converted model on the same held-out inputs.

The converted model runs in the LiteRT interpreter (``ai_edge_litert``), one sample per invoke, the way
a device runs it; integer inputs are quantized and integer outputs dequantized with the model's own
scale and zero point.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge import model as edge_model

LATENCY_THREADS = 1


@dataclass(frozen=True)
class TFLiteRun:
    """Dequantized outputs by signature key (in the model's output order) and per-invoke latencies (s)."""

    outputs: dict[str, np.ndarray]
    latencies: list[float]


def _interpreter(model: bytes, threads: int) -> tuple[Any, dict[str, Any]]:
    """A LiteRT interpreter with tensors allocated, and the details of its one input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    return interpreter, input_detail


def run_tflite(model: bytes, x: np.ndarray, threads: int = LATENCY_THREADS) -> TFLiteRun:
    """Invoke ``model`` once per sample of ``x`` (float, model-input space)."""
    interpreter, input_detail = _interpreter(model, threads)
    keys = _output_keys(interpreter)
    collected: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    latencies = []
    for sample in x:
        interpreter.set_tensor(input_detail["index"], quantize(sample[np.newaxis], input_detail))
        start = time.perf_counter()
        interpreter.invoke()
        latencies.append(time.perf_counter() - start)
        for key, detail in keys.items():
            collected[key].append(dequantize(interpreter.get_tensor(detail["index"]), detail))
    return TFLiteRun({key: np.concatenate(v) for key, v in collected.items()}, latencies)


def golden_pair(model: bytes, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a device checks a package with (``edge.activation.golden_test``), for one sample of ``x``.

    The input tensor exactly as the model takes it (batch of 1, quantized when the input is an integer
    type) and the model's first output on it, raw: not dequantized, in the output's own dtype.
    """
    interpreter, input_detail = _interpreter(model, LATENCY_THREADS)
    tensor = quantize(sample[np.newaxis], input_detail)
    interpreter.set_tensor(input_detail["index"], tensor)
    interpreter.invoke()
    first = interpreter.get_output_details()[0]
    return tensor, np.array(interpreter.get_tensor(first["index"]))


def _output_keys(interpreter: Any) -> dict[str, dict[str, Any]]:
    """Output details keyed by signature name when the model has a signature, else output_<i>."""
    details = interpreter.get_output_details()
    by_index = {d["index"]: d for d in details}
    signatures = interpreter.get_signature_list()
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        named = {key: by_index[d["index"]] for key, d in runner.get_output_details().items()}
        return dict(sorted(named.items(), key=lambda kv: [d["index"] for d in details].index(kv[1]["index"])))
    return {f"output_{i}": d for i, d in enumerate(details)}


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float model-space values as the input tensor takes them (``edge.model.quantize``, per-channel too)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    quant = edge_model.quant_of(detail)
    if quant is None:  # an integer input without quantization parameters: the values as they are
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return edge_model.quantize(x, quant, dtype)


def dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32 reals (``edge.model.dequantize``, per-channel too)."""
    float_tensor = np.dtype(detail["dtype"]).kind == "f"
    return edge_model.dequantize(q, None if float_tensor else edge_model.quant_of(detail))


def compare(
    reference: dict[str, np.ndarray], converted: dict[str, np.ndarray], y: np.ndarray | None
) -> dict[str, Any]:
    """Top-1 agreement (first output, when it is a class score vector), accuracy, output errors."""
    keys = [k for k in converted if k in reference] or []
    if not keys:  # signature keys differ: fall back to output order
        pairs = list(zip(reference.values(), converted.values(), strict=False))
    else:
        pairs = [(reference[k], converted[k]) for k in keys]
    errors = np.concatenate([np.abs(r.astype(np.float32).reshape(-1) - c.reshape(-1)) for r, c in pairs])
    ref0, conv0 = pairs[0]
    result: dict[str, Any] = {
        "top1_agreement": None,
        "accuracy_source": None,
        "accuracy_converted": None,
        "mean_abs_error": float(errors.mean()),
        "max_abs_error": float(errors.max()),
    }
    if ref0.ndim == 2 and ref0.shape[1] > 1:
        ref_top, conv_top = ref0.argmax(axis=1), conv0.argmax(axis=1)
        result["top1_agreement"] = float((ref_top == conv_top).mean())
        if y is not None:
            result["accuracy_source"] = float((ref_top == y).mean())
            result["accuracy_converted"] = float((conv_top == y).mean())
    return result


def latency_summary(latencies: list[float], threads: int = LATENCY_THREADS) -> dict[str, Any]:
    times = np.asarray(latencies[1:] or latencies) * 1000.0  # first invoke warms up
    return {
        "median_ms": round(float(np.median(times)), 4),
        "p90_ms": round(float(np.percentile(times, 90)), 4),
        "invokes": len(latencies),
        "threads": threads,
        "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
        "machine": f"{platform.machine()} {platform.system()}",
    }


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    ev = report["eval"]
    rows: list[tuple[str, str]] = [
        ("mode", f"{report['mode']} (input/output {report['io_type']})"),
        ("evaluated on", f"{ev['samples']} samples from {ev['data']}"),
    ]
    calib = report.get("calibration")
    if calib:
        skipped = f", {calib['skipped']} undecodable skipped" if calib.get("skipped") else ""
        rows.append(("calibrated on", f"{calib['samples']} samples from {calib['data']}{skipped}"))
    labels = report.get("labels") or {}
    if report.get("packaged_as_is"):
        rows.insert(0, ("source", "a .tflite, packaged as it is (not re-converted)"))
        rows += [
            ("accuracy", _pct(report["accuracy_converted"])),
            ("model size", f"{report['model_size_bytes']:,} B"),
        ]
        kept = report.get("standard_metadata")
        if kept:
            files = ", ".join(kept.get("packed_files") or []) or "no associated files"
            rows.append(("tflite metadata", f"kept in the model (TFLITE_METADATA; zipped: {files})"))
    else:
        rows += [
            ("top-1 agreement", _pct(report["top1_agreement"])),
            ("accuracy source", _pct(report["accuracy_source"])),
            ("accuracy converted", _pct(report["accuracy_converted"])),
            ("mean abs error", f"{report['mean_abs_error']:.6g}"),
            ("max abs error", f"{report['max_abs_error']:.6g}"),
            ("model size", f"{report['model_size_bytes']:,} B"),
            ("float32 size", f"{report['float32_size_bytes']:,} B"),
            ("size ratio", f"{report['size_ratio']:.3f} of float32"),
        ]
    if labels:
        rows.append(("labels", f"{labels['count']} from {labels['from']}" if labels.get("count") else "none"))
    lat = report.get("latency_ms")
    if lat:
        rows.append(
            (
                "invoke latency",
                f"{lat['median_ms']:.3f} ms median, {lat['p90_ms']:.3f} ms p90 "
                f"({lat['threads']} thread, {lat['runtime']}, {lat['machine']})",
            )
        )
    if report.get("edgetpu"):
        tpu = report["edgetpu"]
        rows.append(("edge tpu ops", f"{tpu['ops_on_tpu']}/{tpu['ops_total']} would run on the Edge TPU"))
        rows += [
            ("  cpu fallback", f"{op['op']} (op {op['index']}): {op['reason']}") for op in tpu["cpu_ops"]
        ]
        rows.append(("edgetpu_compiler", tpu["compiler"]["message"]))
    width = max(len(name) for name, _ in rows)
    lines = ["validation report", "-" * 17]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)
