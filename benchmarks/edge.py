"""The runtime against the bare interpreter in one run: a MobileNetV2-size int8 model and the digits CNN.

- per-frame overhead of the pipeline (``edge run`` per input) over bare decode+resize plus bare invoke;
- pipelined throughput (``Pipeline.run``) over the serial bare loop, one interpreter thread each;
- cold start of ``edge run`` to its first result, in a fresh process, next to a bare script doing the same;
- peak RSS of ``edge run`` with the MobileNetV2-size model, next to TensorFlow's interpreter when installed.

The MobileNetV2 is ``keras.applications.MobileNetV2(weights=None)`` (nothing downloaded) converted to int8
with random calibration data; it is built once and cached in ``.cache/bench-models``.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench-models"
FRAMES = 60
ROUNDS = 3


def mobilenet_int8() -> Path:
    """MobileNetV2 (224x224, random weights) as int8 with uint8 io; built once."""
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    path = CACHE / f"mobilenet_v2_int8_{key}.tflite"
    if path.exists():
        return path
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", model.call, input_signature=[tf.TensorSpec((1, 224, 224, 3), tf.float32, name="image")]
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)] for _ in range(16)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        data = converter.convert()
    from edge.fsutil import atomic_write_bytes

    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def _p50(values: list[float]) -> float:
    return float(np.percentile(values, 50))


def _normalization(model_path: Path) -> dict[str, float]:
    """MobileNetV2 expects (pixel - 127.5) / 127.5, which its int8 input quantization undoes (fast path)."""
    return {"mean": 127.5, "std": 127.5} if "mobilenet" in model_path.name else {}


def bare_interpreter(path: Path, threads: int = 1) -> Any:
    from edge.backends import get_backend

    interpreter = get_backend("auto").interpreter_class()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def bare_prepare(image_path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """What a hand-written loop does: open, convert, resize, to array (uint8, batch of one)."""
    with Image.open(image_path) as image:
        pixels = np.asarray(image.convert(mode).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels[None]


def bare_invoke(interpreter: Any, tensor: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])  # type: ignore[no-any-return]


def per_frame(model_path: Path, image: Path, size: tuple[int, int], mode: str) -> dict[str, float]:
    """p50 ms of bare decode+resize, bare invoke, and a pipeline inference of the same file."""
    from edge.model import load_model
    from edge.pipeline import Pipeline

    interpreter = bare_interpreter(model_path)
    pipeline = Pipeline(load_model(model_path, threads=1, **_normalization(model_path)))
    decode_ms, invoke_ms, edge_ms = [], [], []
    tensor = bare_prepare(image, size, mode)
    for _ in range(3):
        bare_invoke(interpreter, tensor)
        pipeline.infer(image)
    for _ in range(ROUNDS):  # interleaved so drift on a shared machine hits both alike
        for _ in range(FRAMES // ROUNDS):
            start = time.perf_counter()
            tensor = bare_prepare(image, size, mode)
            decoded = time.perf_counter()
            bare_invoke(interpreter, tensor)
            done = time.perf_counter()
            result = pipeline.infer(image)
            finished = time.perf_counter()
            assert result.error is None, result.error
            decode_ms.append((decoded - start) * 1000)
            invoke_ms.append((done - decoded) * 1000)
            edge_ms.append((finished - done) * 1000)
    bare = _p50(decode_ms) + _p50(invoke_ms)
    return {"decode": _p50(decode_ms), "invoke": _p50(invoke_ms), "bare": bare, "edge": _p50(edge_ms)}


def throughput(model_path: Path, images: list[Path], size: tuple[int, int], mode: str) -> dict[str, float]:
    """Frames per second: the serial bare loop vs ``Pipeline.run`` (decode overlapped with invoke)."""
    from edge.model import load_model
    from edge.pipeline import Pipeline

    interpreter = bare_interpreter(model_path)
    pipeline = Pipeline(load_model(model_path, threads=1, **_normalization(model_path)))
    frames = (images * (FRAMES // len(images) + 1))[:FRAMES]
    serial, pipelined = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for frame in frames:
            bare_invoke(interpreter, bare_prepare(frame, size, mode))
        serial.append(len(frames) / (time.perf_counter() - start))
        start = time.perf_counter()
        count = sum(1 for result in pipeline.run(frames) if result.error is None)
        pipelined.append(count / (time.perf_counter() - start))
    # best of the interleaved rounds: on a shared machine the slow rounds measure the neighbours, not us
    return {"serial_fps": max(serial), "pipelined_fps": max(pipelined)}


def _first_line_seconds(command: list[str]) -> float:
    """Seconds until the first stdout line of ``command``."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.stdout.read()
    process.wait()
    if not line:
        raise RuntimeError(f"{command} printed nothing (exit {process.returncode})")
    return elapsed


PEAK_WRAPPER = """
import sys
from edge.cli import main
from edge.cli.commands.bench import peak_rss_mb
code = main(sys.argv[1:])
print("PEAK_RSS_MB", peak_rss_mb(), file=sys.stderr)
"""


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS (VmHWM: this process image only, not the parent's pages before exec) of ``edge ARGS``."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_RSS_MB"):
            return float(line.split()[1])
    raise RuntimeError(f"edge {' '.join(args)} failed: {done.stderr.strip()[-300:]}")


BARE_SCRIPT = """
import sys, numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter
i = Interpreter(model_path=sys.argv[1], num_threads=1); i.allocate_tensors()
d = i.get_input_details()[0]
h, w = int(d["shape"][1]), int(d["shape"][2])
x = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((w, h)), dtype=np.uint8)[None]
i.set_tensor(d["index"], x); i.invoke()
print(int(np.argmax(i.get_tensor(i.get_output_details()[0]["index"]))), flush=True)
"""


def cold_start(model_path: Path, image: Path) -> dict[str, float]:
    edge_run = [
        sys.executable,
        "-m",
        "edge",
        "run",
        str(model_path),
        str(image),
        "--json",
        "--threads",
        "1",
        "--mean",
        "127.5",
        "--std",
        "127.5",
    ]
    bare = [sys.executable, "-c", BARE_SCRIPT, str(model_path), str(image)]
    edge_times, bare_times = [], []
    for _ in range(3):
        edge_times.append(_first_line_seconds(edge_run))
        bare_times.append(_first_line_seconds(bare))
    run_args = edge_run[3:]
    result = {
        "edge_s": statistics.median(edge_times),
        "bare_s": statistics.median(bare_times),
        "edge_rss_mb": peak_rss_mb(run_args),
    }
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        result["tf_rss_mb"] = peak_rss_mb(run_args + ["--backend", "tensorflow"])
    return result


def run() -> str:
    from tests.assets import ensure_assets

    assets = ensure_assets()
    mobilenet = mobilenet_int8()
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "astronaut.png"  # PNG: no JPEG draft shortcut: like for like
        Image.open(assets.images["astronaut.jpg"]).save(photo)
        photos = [photo]
        for name in ("coffee.webp", "chelsea.gif", "camera.png"):
            converted = Path(folder) / f"{name}.png"
            Image.open(assets.images[name]).convert("RGB").save(converted)
            photos.append(converted)
        digits = sorted(assets.digit_images.iterdir())
        cases = [
            ("MobileNetV2 int8 (224x224x3)", mobilenet, [photo], photos, (224, 224), "RGB"),
            ("digits CNN int8 (8x8x1)", assets.model("digits_int8"), digits[:1], digits, (8, 8), "L"),
        ]
        rows, lines = [], []
        for title, model, single, many, size, mode in cases:
            frame = per_frame(model, single[0], size, mode)
            flow = throughput(model, many, size, mode)
            rows.append((title, model, frame, flow))
        cold = cold_start(mobilenet, photo)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(
        f"Backend: {_backend()}; {os.cpu_count()} cores (load average {load:.1f} at the end of the run); "
        "one interpreter thread on both sides; throughput is the best of 3 interleaved rounds of "
        f"{FRAMES} frames."
    )
    lines.append("")
    lines.append(
        "| model | bare decode+resize p50 | bare invoke p50 | edge per frame p50 "
        "| overhead (goal <= 0.3 ms) | serial bare fps | pipelined fps | ratio (goal >= 1.2x) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for title, _model, frame, flow in rows:
        overhead = frame["edge"] - frame["bare"]
        ratio = flow["pipelined_fps"] / flow["serial_fps"]
        lines.append(
            f"| {title} | {frame['decode']:.2f} ms | {frame['invoke']:.2f} ms | {frame['edge']:.2f} ms | "
            f"{overhead:+.2f} ms ({frame['edge'] / frame['bare']:.2f}x) | {flow['serial_fps']:.1f} | "
            f"{flow['pipelined_fps']:.1f} | {ratio:.2f}x |"
        )
    lines.append("")
    lines.append("| cold start and memory, MobileNetV2 int8 | edge run | bare script | goal |")
    lines.append("|---|---|---|---|")
    lines.append(
        f"| process start to first result | {cold['edge_s']:.2f} s | {cold['bare_s']:.2f} s "
        f"({cold['edge_s'] / cold['bare_s']:.2f}x) | <= 0.5 s |"
    )
    tf_note = "TF not installed"
    if "tf_rss_mb" in cold:
        tf_note = f"TensorFlow's interpreter: {cold['tf_rss_mb']:.0f} MB"
    lines.append(f"| peak RSS | {cold['edge_rss_mb']:.0f} MB | {tf_note} | <= 80 MB |")
    return "\n".join(lines)


def _backend() -> str:
    from edge.backends import get_backend

    backend = get_backend("auto")
    return f"{backend.name} {backend.version()}"
