"""``edge inspect``: what a model or package holds. Reads the FlatBuffer; never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from edge.cli import EXIT_OK

if TYPE_CHECKING:
    from edge.package import LoadedModelSource
    from edge.tflite_metadata import StandardMetadata

NAME = "inspect"
HELP = (
    "show a model's manifest or standard metadata, tensors, operators and size, and what edge run will "
    "assume (task, normalization, labels) and why (any .tflite or model package)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_PACKAGE", help="a .tflite file or a model package")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def describe(source: LoadedModelSource) -> dict[str, Any]:
    """The inspection as a JSON-ready dict."""
    info = source.info
    metadata = _standard_metadata(source)
    package_files = None
    if source.package is not None:
        package_files = {name: len(data) for name, data in sorted(source.package.files.items())}
    return {
        "path": str(source.path),
        "kind": "package" if source.package is not None else "tflite",
        "size_bytes": source.path.stat().st_size,
        "model_size_bytes": info.size,
        "files": package_files,
        "signed": bool(source.package and source.package.signature),
        "manifest": source.manifest.to_json() if source.manifest else None,
        "inputs": [t.to_json() for t in info.inputs],
        "outputs": [t.to_json() for t in info.outputs],
        "operators": info.op_counts(),
        "operator_count": len(info.operators),
        "subgraphs": info.subgraph_count,
        "metadata_keys": sorted(info.metadata),
        "standard_metadata": metadata.to_json() if metadata else None,
        "assumed": assumptions(source, metadata),
    }


def assumptions(source: LoadedModelSource, metadata: StandardMetadata | None) -> dict[str, Any]:
    """What ``edge run`` will take the task, the normalization and the labels to be, and why, from the
    file alone (no interpreter: shapes the model sets at run time are not known here)."""
    from edge.model_defaults import (
        guess_task,
        metadata_labels,
        resolve_labels,
        resolve_normalization,
        yolo_head,
    )

    info, manifest = source.info, source.manifest
    if manifest is not None:
        task = {"task": manifest.task, "source": "manifest"}
    else:
        guess = guess_task(info)
        task = {"task": guess.task, "source": "guessed", "reason": guess.reason}
    assumed: dict[str, Any] = {"task": task}
    if info.inputs:
        tensor = info.inputs[0]
        spec = manifest.inputs[0] if manifest and manifest.inputs else None
        stated = ((tuple(spec.mean or ()), tuple(spec.std or ())) if spec else ((), ())) if manifest else None
        meta_norm = metadata.inputs[0].normalization if metadata and metadata.inputs else None
        per_tensor = tensor.is_quantized and len(tensor.scale) == 1
        mean, std, why = resolve_normalization(
            (None, None),
            stated,
            (meta_norm.mean, meta_norm.std) if meta_norm else None,
            tensor.dtype,
            (tensor.scale[0], tensor.zero_point[0]) if per_tensor else None,
            is_image=len(tensor.shape) in (3, 4),
            yolo=task["task"] == "detection" and len(info.outputs) == 1 and yolo_head(info.outputs[0].shape),
        )
        assumed["normalization"] = _compact({"mean": list(mean), "std": list(std), "source": why.source,
                                             "reason": why.reason})
    outputs = info.outputs
    classes = outputs[0].shape[-1] if len(outputs) == 1 and outputs[0].shape else None
    labels, why = resolve_labels(
        None, manifest.labels if manifest else None, metadata_labels(metadata), task["task"], classes, info
    )
    named = [label for label in labels if label]
    assumed["labels"] = _compact({"count": len(named), "first": named[:5], "source": why.source,
                                  "reason": why.reason})
    return assumed


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in ("", None, [])}


def _standard_metadata(source: LoadedModelSource) -> StandardMetadata | None:
    """The standard metadata; damaged metadata is a warning here (and in ``edge run``), not a failure."""
    from edge.model_defaults import standard_metadata

    return standard_metadata(source)


def run(args: argparse.Namespace) -> int:
    from edge.package import load_model_source

    source = load_model_source(args.model)
    report = describe(source)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return EXIT_OK


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['path']}  ({report['kind']}, {report['size_bytes']:,} bytes)"]
    manifest = report["manifest"]
    if manifest:
        lines.append(
            f"model      {manifest['name']} v{manifest['version']}  task={manifest['task']}  "
            f"mode={manifest['mode']}  created {manifest['created_at']}"
        )
        if manifest["labels"]:
            shown = ", ".join(manifest["labels"][:10])
            more = f" (+{len(manifest['labels']) - 10} more)" if len(manifest["labels"]) > 10 else ""
            lines.append(f"labels     {len(manifest['labels'])}: {shown}{more}")
        for spec in manifest["inputs"]:
            if spec.get("mean") or spec.get("std"):
                lines.append(
                    f"normalize  {spec['name']}: (pixel - {spec['mean']}) / {spec['std']}, {spec['layout']}"
                )
        converter = manifest.get("converter") or {}
        if converter:
            lines.append("converter  " + ", ".join(f"{k}={v}" for k, v in sorted(converter.items())))
        lines.append(f"signed     {'yes' if report['signed'] else 'no'}")
        if manifest.get("report"):
            lines.append("report     " + _report_summary(manifest["report"]))
    else:
        lines.append("model      no manifest (third-party model)")
    standard = report.get("standard_metadata")
    if standard:
        keys = [key for key in ("version", "author", "license") if standard.get(key)]
        about = ", ".join(f"{key} {standard[key]}" for key in keys)
        lines.append(f"metadata   {standard.get('name', '(no name)')}" + (f" ({about})" if about else ""))
        if standard.get("description"):
            lines.append(f"           {_one_line(standard['description'])}")
        for problem in standard.get("problems", []):
            lines.append(f"warning    {problem}")
    for line in _assumed_lines(report.get("assumed") or {}):
        lines.append(line)
    for title, tensors in (("input", report["inputs"]), ("output", report["outputs"])):
        for tensor in tensors:
            quant = tensor["quantization"]
            q = ""
            if quant:
                scale = quant["scale"]
                zp = quant["zero_point"]
                if len(scale) == 1:
                    q = f"  scale={scale[0]:.6g} zero_point={zp[0]}"
                else:
                    q = f"  per-channel ({len(scale)} scales, axis {quant['axis']})"
            lines.append(
                f"{title:<10} {tensor['name']}  {tensor['dtype']}{list(tensor['shape_signature'])}{q}"
            )
    ops = ", ".join(f"{name}×{count}" for name, count in sorted(report["operators"].items()))
    lines.append(f"operators  {report['operator_count']} in {report['subgraphs']} subgraph(s): {ops}")
    if report["files"]:
        lines.append("files      " + ", ".join(f"{n} ({s:,} B)" for n, s in report["files"].items()))
    return "\n".join(lines)


def _assumed_lines(assumed: dict[str, Any]) -> list[str]:
    """``edge run`` will take: the task, normalization and labels, each with where it came from."""
    lines = []
    task = assumed.get("task")
    if task:
        lines.append(f"task       {task['task']} ({_why(task)})")
    norm = assumed.get("normalization")
    if norm:
        mean, std = _values(norm["mean"]), _values(norm["std"])
        lines.append(f"normalize  (pixel - {mean}) / {std} ({_why(norm)}); override with --mean/--std")
    labels = assumed.get("labels")
    if labels and labels.get("count"):
        shown = ", ".join(labels["first"]) + (", ..." if labels["count"] > len(labels["first"]) else "")
        lines.append(f"labels     {labels['count']}: {shown} ({_why(labels)})")
    elif labels:
        lines.append("labels     none: results name class ids; pass --labels FILE")
    return lines


def _why(choice: dict[str, Any]) -> str:
    return f"{choice['source']}: {choice['reason']}" if choice.get("reason") else choice["source"]


def _values(values: list[float]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _report_summary(report: dict[str, Any]) -> str:
    """One line from the conversion's validation report."""
    parts = []
    agreement = report.get("top1_agreement")
    evaluation = report.get("eval") or {}
    if agreement is not None:
        parts.append(
            f"top-1 agreement {100 * agreement:.2f}% on {evaluation.get('samples', '?')} samples "
            f"({evaluation.get('data', '?')})"
        )
    if report.get("accuracy_converted") is not None:
        parts.append(f"accuracy {100 * report['accuracy_converted']:.2f}%")
    if report.get("size_ratio") is not None:
        parts.append(f"size {report['size_ratio']:.3f} of float32")
    latency = report.get("latency_ms") or {}
    if latency.get("median_ms") is not None:
        parts.append(f"{latency['median_ms']:.3f} ms/invoke at conversion")
    return ", ".join(parts) or "present"
