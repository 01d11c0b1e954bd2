"""Per-frame cost of the task decoders against the model's invoke, in one run.

- segmentation (``edge.tasks.segmentation.decode``) on the real DeepLabV3 MobileNetV2 output (1, 257, 257, 21)
  for scikit-image's astronaut and chelsea, against that model's bare invoke (one interpreter thread); also
  the argmax alone (the floor any decoder of that output pays), a 256x256 one-class sigmoid mask (MediaPipe
  selfie-style, one smooth blob) and its worst case (independent random pixels: about 33 000 runs), and the
  ``--mask-dir`` writer (``mask_image`` plus PNG encoding; ``save_mask``'s fsync is disk time, shown apart);
- YOLO (``edge.tasks.detection.decode_yolo``) on a YOLOv8-shaped (1, 84, 8400) output: 80 classes of random
  low scores (0..0.05) and 8 objects, each seen by 20 jittered candidate boxes above the threshold (as a real
  head gives), NMS included. No YOLO model runs here (the machines reach PyPI only), so its ratio is taken
  against the DeepLab invoke; Ultralytics lists 8.7 GFLOPs for a YOLOv8n at 640x640, several times a
  MobileNetV2 backbone at 257x257, so on the same CPU the real ratio is smaller.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FRAMES = 60
ROUNDS = 3


def _p50(values: list[float]) -> float:
    return float(np.percentile(values, 50))


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def deeplab_inputs(path: Path) -> tuple[Any, list[str], dict[str, tuple[np.ndarray, Any]]]:
    """The interpreter, the labels and per photo (normalized input, geometry)."""
    from skimage import data

    from benchmarks.edge import bare_interpreter
    from edge.preprocess import geometry_for

    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        labels = archive.read("labelmap.txt").decode().splitlines()
    interpreter = bare_interpreter(path, threads=1)
    photos = {}
    for name, pixels in (("astronaut", data.astronaut()), ("chelsea", data.chelsea())):
        picture = Image.fromarray(pixels)
        resized = np.asarray(picture.resize((257, 257), Image.Resampling.BILINEAR), np.float32)
        x = ((resized - 127.5) / 127.5)[None]
        photos[name] = (x, geometry_for(picture.width, picture.height, 257, 257, "stretch"))
    return interpreter, labels, photos


def yolo_output(rng: np.random.Generator) -> np.ndarray:
    """(1, 84, 8400): cx, cy, w, h in 640-pixel units and 80 class scores; 8 objects x 20 candidates."""
    n, classes = 8400, 80
    out = np.empty((84, n), np.float32)
    out[0:2] = rng.uniform(0, 640, (2, n))
    out[2:4] = rng.uniform(8, 160, (2, n))
    out[4:] = rng.uniform(0, 0.05, (classes, n))
    slots = rng.choice(n, (8, 20), replace=False)
    for k, candidates in enumerate(slots):
        cx, cy, w, h = rng.uniform(80, 560), rng.uniform(80, 560), rng.uniform(40, 200), rng.uniform(60, 300)
        jitter = rng.normal(0, 4, (4, candidates.size))
        out[0:4, candidates] = np.array([[cx], [cy], [w], [h]]) + jitter
        out[4 + (k * 7) % classes, candidates] = rng.uniform(0.3, 0.9, candidates.size)
    return out[None]


def measure() -> dict[str, Any]:
    from edge.tasks import TaskContext
    from edge.tasks.detection import decode_yolo
    from edge.tasks.segmentation import MASK_COMPRESS_LEVEL as level
    from edge.tasks.segmentation import decode, mask_image, save_mask
    from tests.third_party import ensure_third_party

    path = ensure_third_party().models["segmentation"]
    interpreter, labels, photos = deeplab_inputs(path)
    index_in = interpreter.get_input_details()[0]["index"]
    index_out = interpreter.get_output_details()[0]["index"]

    def invoke(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(index_in, x)
        interpreter.invoke()
        output: np.ndarray = interpreter.get_tensor(index_out)
        return output

    contexts = {
        name: TaskContext((), labels.__getitem__, 5, 0.0, geometry, (257, 257), len(labels))
        for name, (_, geometry) in photos.items()
    }
    outputs = {name: invoke(x) for name, (x, _) in photos.items()}
    results = {name: decode([outputs[name]], contexts[name]) for name in photos}

    yy, xx = np.mgrid[:256, :256]
    blob = (xx - 128) ** 2 / 60**2 + (yy - 140) ** 2 / 90**2 < 1
    selfie = np.where(blob, 0.9, 0.1).astype(np.float32)[None, ..., None]
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 1, (1, 256, 256, 1)).astype(np.float32)
    mask_context = TaskContext((), str, 5, 0.0, None, (256, 256), 0)
    runs = int(np.count_nonzero(np.diff((noisy[0, :, :, 0] > 0.5).astype(np.int8), axis=1)) + 256)

    yolo = yolo_output(rng)
    yolo_context = TaskContext((), str, 5, 0.0, None, (640, 640), 80)
    found = len(decode_yolo(yolo, yolo_context).objects)

    times: dict[str, list[float]] = {}

    def add(key: str, fn: Callable[[], Any]) -> None:
        times.setdefault(key, []).append(_timed(fn))

    astronaut = results["astronaut"]
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "mask.png"
        for _ in range(3):  # warm-up
            for name in photos:
                invoke(photos[name][0])
                decode([outputs[name]], contexts[name])
            decode_yolo(yolo, yolo_context)
        for _ in range(ROUNDS):  # interleaved so drift on a shared machine hits all alike
            for _ in range(FRAMES // ROUNDS):
                for name in photos:
                    add(f"invoke {name}", functools.partial(invoke, photos[name][0]))
                    add(f"decode {name}", functools.partial(decode, [outputs[name]], contexts[name]))
                add("argmax", lambda: np.argmax(outputs["astronaut"][0], axis=-1))
                add("selfie", lambda: decode([selfie], mask_context))
                add("noisy", lambda: decode([noisy], mask_context))
                add("mask png", lambda: mask_image(astronaut).save(io.BytesIO(), "PNG", compress_level=level))
                add("save_mask", lambda: save_mask(astronaut, target))
                add("yolo", lambda: decode_yolo(yolo, yolo_context))
    p50 = {key: _p50(values) for key, values in times.items()}
    p50["invoke"] = _p50(times["invoke astronaut"] + times["invoke chelsea"])
    return {
        "p50": p50,
        "labels": {name: [c.label for c in r.classes if not c.background][:2] for name, r in results.items()},
        "runs": runs,
        "yolo_found": found,
    }


def _backend() -> str:
    from benchmarks.edge import _backend as backend

    return backend()


def run() -> str:
    m = measure()
    p50, invoke = m["p50"], m["p50"]["invoke"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def row(title: str, key: str, note: str = "") -> str:
        return f"| {title} | {p50[key]:.2f} ms | {p50[key] / invoke:.1%} | {note} |"

    seen = m["labels"]
    lines = [
        f"Backend: {_backend()}; {os.cpu_count()} cores (load average {load:.1f} at the end of the run); "
        f"one interpreter thread; p50 of {FRAMES} frames in {ROUNDS} interleaved rounds. Baseline: the bare "
        f"invoke of DeepLabV3 MobileNetV2 (float32, 257x257x3 in, 257x257x21 logits out): "
        f"**{invoke:.2f} ms** (astronaut {p50['invoke astronaut']:.2f} ms, "
        f"chelsea {p50['invoke chelsea']:.2f} ms).",
        "",
        "| decoder, per frame | p50 | against the invoke | what |",
        "|---|---|---|---|",
        row("segmentation, DeepLab, astronaut", "decode astronaut", "found " + ", ".join(seen["astronaut"])),
        row("segmentation, DeepLab, chelsea", "decode chelsea", "found " + ", ".join(seen["chelsea"])),
        row("of which the argmax over 21 classes", "argmax", "numpy, the floor for this output"),
        row("segmentation, 256x256 one-class mask", "selfie", "one smooth blob (selfie-style)"),
        row("segmentation, 256x256 random pixels", "noisy", f"worst case: {m['runs']} runs"),
        row("mask PNG 512x512 (`mask_image` + encode)", "mask png", "what `--mask-dir` adds per frame"),
        row("`save_mask` to disk (with fsync)", "save_mask", "plus the disk's fsync"),
        row(
            "YOLO `decode_yolo`, (1, 84, 8400)",
            "yolo",
            f"80 classes, 160 candidates, NMS: {m['yolo_found']} kept; vs DeepLab's invoke (see above)",
        ),
    ]
    return "\n".join(lines)
