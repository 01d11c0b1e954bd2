"""``edge bench``: how fast a model runs here, like TFLite's benchmark_model, per backend.

Init time, first inference, warm-up, N timed runs (min/mean/std/p50/p95/p99), peak RSS and model size.
``--backend all`` runs each installed backend in its own process so init time and peak RSS are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.cli import EXIT_ERROR, EXIT_OK
from edge.errors import ConfigError

NAME = "bench"
HELP = "benchmark a model: init time, first inference, latency percentiles, peak RSS (--backend all compares)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a .tflite file or model package")
    parser.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--backend", default="auto", help="auto, litert, tflite-runtime, tensorflow or all")
    parser.add_argument("--threads", type=int, help="interpreter threads")
    parser.add_argument("--delegate", help="edgetpu, cpu, or a delegate library path")
    parser.add_argument("--device", help="Edge TPU device: usb, usb:N, pci, pci:N")
    parser.add_argument("--json", action="store_true", help="print JSON")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status (ru_maxrss would carry over the parent's peak across fork+exec).
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def summarize(samples_ms: list[float]) -> dict[str, float]:
    import numpy as np

    array = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "min": float(array.min()),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(array.max()),
    }


def bench_one(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """Benchmark in this process with one backend."""
    import numpy as np

    from edge.model import load_model

    start = time.perf_counter()
    model = load_model(
        args.model,
        backend=backend,
        threads=args.threads,
        delegate=args.delegate,
        device=args.device,
        warmup=False,
    )
    init_ms = (time.perf_counter() - start) * 1000
    spec = model.input.tensor
    rng = np.random.default_rng(0)
    if np.issubdtype(spec.dtype, np.integer):
        info = np.iinfo(spec.dtype)
        tensor = rng.integers(info.min, info.max, size=spec.shape, endpoint=True).astype(spec.dtype)
    else:
        tensor = rng.random(spec.shape, dtype=np.float32).astype(spec.dtype)
    start = time.perf_counter()
    model.invoke(tensor)
    first_ms = (time.perf_counter() - start) * 1000
    for _ in range(args.warmup):
        model.invoke(tensor)
    samples = []
    for _ in range(args.runs):
        start = time.perf_counter()
        model.invoke(tensor)
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "backend": model.backend_name,
        "version": _backend_version(model.backend_name),
        "model": str(model.path),
        "model_size_bytes": len(model.source.model_bytes),
        "threads": args.threads,
        "accelerator": model.accelerator,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup_runs": args.warmup,
        "runs": args.runs,
        "latency_ms": summarize(samples),
        "peak_rss_mb": peak_rss_mb(),
    }


def _backend_version(name: str) -> str | None:
    from edge.backends import BACKENDS

    return BACKENDS[name].version()


def bench_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each installed backend in a fresh process (``python -m edge bench --json``)."""
    from edge.backends import installed_backends

    reports = []
    for backend in installed_backends():
        command = [
            sys.executable,
            "-m",
            "edge",
            "bench",
            str(args.model),
            "--json",
            "--backend",
            backend.name,
        ]
        command += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
        for flag in ("threads", "delegate", "device"):
            if getattr(args, flag) is not None:
                command += [f"--{flag}", str(getattr(args, flag))]
        env = {k: v for k, v in os.environ.items() if k != "EDGE_BACKEND"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            reports.append(
                {"backend": backend.name, "error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
            )
            continue
        reports.extend(json.loads(done.stdout)["results"])
    return reports


def run(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.warmup < 0:
        raise ConfigError(
            f"--runs must be at least 1 and --warmup at least 0, got {args.runs} and {args.warmup}"
        )
    reports = bench_all(args) if args.backend == "all" else [bench_one(args, args.backend)]
    if args.json:
        print(json.dumps({"results": reports}, indent=2))
    else:
        print(render(reports))
    return EXIT_OK if any("error" not in r for r in reports) else EXIT_ERROR


def render(reports: list[dict[str, Any]]) -> str:
    header = (
        f"{'backend':<16}{'version':<10}{'init ms':>9}{'first ms':>10}{'min':>8}{'mean':>8}{'std':>7}"
        f"{'p50':>8}{'p95':>8}{'p99':>8}{'RSS MB':>8}"
    )
    lines = [header]
    for r in reports:
        if "error" in r:
            lines.append(f"{r['backend']:<16}error: {r['error'][0] if r['error'] else ''}")
            continue
        lat = r["latency_ms"]
        lines.append(
            f"{r['backend']:<16}{(r['version'] or '?'):<10}{r['init_ms']:>9.1f}"
            f"{r['first_inference_ms']:>10.2f}"
            f"{lat['min']:>8.3f}{lat['mean']:>8.3f}{lat['std']:>7.3f}{lat['p50']:>8.3f}{lat['p95']:>8.3f}"
            f"{lat['p99']:>8.3f}{r['peak_rss_mb']:>8.1f}"
        )
    first = next((r for r in reports if "error" not in r), None)
    if first:
        lines.append(
            f"model {first['model']} ({first['model_size_bytes']:,} bytes), {first['runs']} runs after "
            f"{first['warmup_runs']} warm-up, latencies in ms"
        )
    return "\n".join(lines)
