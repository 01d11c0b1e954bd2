"""The live pipeline while a candidate shadows it at the default budget, against not shadowing (issue 13).

One process, interleaved rounds (alternating which goes first): the MobileNetV2-size int8 model of
``benchmarks.edge`` serves 640x480 frames (scikit-image's astronaut and coffee, as a camera's decoded frames)
through ``Pipeline.run``; the candidate is the same network in a second interpreter (a shadow costs the
candidate's invokes, whatever it answers). Reported: throughput, per-frame latency p50/p95
(``timing_ms.total``), and the share of frames the shadow took under its 0.25 budget.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

FRAMES = 240
ROUNDS = 5


def _frames() -> list[Any]:
    from PIL import Image
    from skimage import data

    photos = [Image.fromarray(photo).resize((640, 480)) for photo in (data.astronaut(), data.coffee())]
    return [np.asarray(photos[i % 2]) for i in range(FRAMES)]


def _round(pipeline: Any, frames: list[Any]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    start = time.perf_counter()
    for result in pipeline.run(frames):
        latencies.append(result.timing.total)
    return len(frames) / (time.perf_counter() - start), latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run() -> str:
    from benchmarks.edge import mobilenet_int8
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.shadow import Shadow, ShadowPolicy

    path = mobilenet_int8()
    active = load_model(path, mean=127.5, std=127.5, threads=1)
    candidate = load_model(path, mean=127.5, std=127.5, threads=1)
    frames = _frames()
    plain: dict[str, list[float]] = {"fps": [], "lat": []}
    shadowed: dict[str, list[float]] = {"fps": [], "lat": []}
    taken: list[float] = []
    budget: list[float] = []
    def without() -> None:
        fps, lat = _round(Pipeline(active, top_k=1, overlap=True), frames)
        plain["fps"].append(fps)
        plain["lat"].extend(lat)

    def beside() -> None:
        pipeline = Pipeline(active, top_k=1, overlap=True)
        shadow = Shadow(candidate, ShadowPolicy(samples=1_000_000), lambda figures: None,
                        prepare=pipeline._prepare)
        pipeline.shadow = shadow
        fps, lat = _round(pipeline, frames)
        figures = shadow.figures()
        shadow.close()
        shadowed["fps"].append(fps)
        shadowed["lat"].extend(lat)
        taken.append(figures["samples"] / FRAMES)
        budget.append(figures["budget_used"])

    for number in range(ROUNDS):
        for step in (without, beside) if number % 2 == 0 else (beside, without):
            step()
    rows = []
    for name, figures in (("not shadowing", plain), ("shadowing (budget 0.25)", shadowed)):
        fps = statistics.median(figures["fps"])
        rows.append(f"| {name} | {fps:.1f} | {_pct(figures['lat'], 0.5):.2f} ms | "
                    f"{_pct(figures['lat'], 0.95):.2f} ms |")
    ratio = statistics.median(shadowed["fps"]) / statistics.median(plain["fps"])
    return "\n".join([
        f"MobileNetV2-size int8 (224x224, one interpreter thread each) on {FRAMES} 640x480 frames per "
        f"round, {ROUNDS} interleaved rounds; the candidate is the same network in a second interpreter.",
        "",
        "| pipeline | frames/s | latency p50 | latency p95 |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Throughput while shadowing: {ratio:.2f}x of not shadowing. The shadow took "
        f"{statistics.median(taken):.0%} of the frames and used {statistics.median(budget):.2f} of the "
        "active model's invoke time (its budget: 0.25).",
    ])
