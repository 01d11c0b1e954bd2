"""``edge inspect``: what a model or package holds. Reads the FlatBuffer; never imports TensorFlow."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from edge.cli import EXIT_OK

if TYPE_CHECKING:
    from edge.package import LoadedModelSource

NAME = "inspect"
HELP = "show a model's manifest, tensors, operators and size (any .tflite or model package)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_PACKAGE", help="a .tflite file or a model package")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def describe(source: LoadedModelSource) -> dict[str, Any]:
    """The inspection as a JSON-ready dict."""
    info = source.info
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
    }


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
        lines.append("model      no manifest (third-party model); use --task/--mean/--std when running it")
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
