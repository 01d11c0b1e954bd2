"""``python -m benchmarks convert``: every conversion mode on the same two models.

Models: the digits CNN (trained on scikit-learn's digits, 8x8x1) and MobileNetV2 (alpha 0.35, 96x96x3,
random weights: nothing is downloaded). Per mode: conversion time, model size, top-1 agreement with
the source model, and median invoke latency in the LiteRT interpreter (1 thread). Sizes and latencies
are also given as ratios to float32 measured in the same run, which is what to compare across machines.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODES = (
    ("float32", "float"),
    ("float16", "float"),
    ("dynamic", "float"),
    ("int8", "uint8"),
    ("edgetpu", "uint8"),
)


def _digits(folder: Path) -> dict[str, Path]:
    from converter.digits import save_digits_assets

    assets = save_digits_assets(folder / "digits")
    return {"model": assets["model"], "calib": assets["calib"], "eval": assets["eval"]}


def _mobilenet(folder: Path) -> dict[str, Path]:
    """MobileNetV2 0.35 at 96x96 with random weights; calibration/eval: crops of scikit-image photos."""
    import keras
    from PIL import Image
    from skimage import data

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    path = folder / "mobilenet_v2_035_96.keras"
    model.save(path)
    images = folder / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, photo in (
        ("astronaut", data.astronaut()),
        ("coffee", data.coffee()),
        ("chelsea", data.chelsea()),
        ("camera", data.camera()),
    ):
        pil = Image.fromarray(photo)
        for k in range(40):
            size = int(rng.integers(96, min(pil.size)))
            x, y = int(rng.integers(0, pil.size[0] - size)), int(rng.integers(0, pil.size[1] - size))
            pil.crop((x, y, x + size, y + size)).save(images / f"{name}_{k:02d}.png")
    return {"model": path, "calib": images}


def _measure(model: dict[str, Path], out: Path, mode: str, io_type: str, std: float) -> dict:
    from converter.convert import ConvertOptions, convert

    started = time.perf_counter()
    result = convert(
        ConvertOptions(
            source=model["model"],
            output=out / f"{mode}.tflite",
            mode=mode,
            io_type=io_type,
            calib=model["calib"],
            calib_samples=120,
            eval_data=model.get("eval"),
            mean=(127.5,) if std != 1.0 else (0.0,),
            std=(std,),
        )
    )
    report = dict(result.report)
    report["wall_s"] = time.perf_counter() - started
    return report


def _table(title: str, reports: dict[str, dict]) -> list[str]:
    base = reports["float32"]
    lines = [
        f"**{title}**",
        "",
        "| mode | convert (s) | edge convert total (s) | size | size vs float32 | top-1 agreement | "
        "invoke median (ms) | latency vs float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in reports.items():
        size_ratio = r["model_size_bytes"] / base["model_size_bytes"]
        agreement = "n/a" if r["top1_agreement"] is None else f"{100 * r['top1_agreement']:.1f}%"
        lines.append(
            f"| {mode} ({r['io_type']} I/O) | {r['conversion_s']:.2f} | {r['wall_s']:.1f} | "
            f"{r['model_size_bytes'] / 1024:,.0f} KiB | {size_ratio:.2f} | "
            f"{agreement} on {r['eval']['samples']} | {r['latency_ms']['median_ms']:.3f} | "
            f"{r['latency_ms']['median_ms'] / base['latency_ms']['median_ms']:.2f} |"
        )
    return lines


def run() -> str:
    """Run every mode on both models; return the Markdown section."""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "latency: LiteRT interpreter, 1 thread, one sample per invoke, median over the evaluation samples. "
        '"convert" is the TFLite converter call alone; "edge convert total" adds loading, export, '
        "the float32 baseline conversion, calibration data, the validation report and writing.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        folder = Path(tmp)
        models = {
            "digits CNN (8x8x1, trained; eval: 450 held-out digits)": (_digits(folder), 1.0),
            "MobileNetV2 alpha 0.35 (96x96x3, random weights; eval: held-out photo crops)": (
                _mobilenet(folder),
                127.5,
            ),
        }
        for title, (model, std) in models.items():
            out = folder / f"out-{len(lines)}"
            reports = {mode: _measure(model, out, mode, io, std) for mode, io in MODES}
            lines += _table(title, reports) + [""]
    lines.append(
        "MobileNet has random weights, so its agreement says little about a trained model's; the trained "
        "digits CNN is the realistic agreement figure. Its sizes and latency ratios are the useful part."
    )
    return "\n".join(lines)
