"""The runtime against the bare interpreter in one run: a MobileNetV2-size int8 model and the digits CNN.

Inputs are real photos (scikit-image's astronaut, coffee, chelsea, rocket), cropped to the camera sizes
640x480 and 1280x720 and saved as JPEG (quality 90), as a camera or a snapshot URL delivers them.

- per-frame overhead of the pipeline (``edge run`` per input) over bare decode+resize plus bare invoke;
- pipelined throughput (``Pipeline.run``, its default decode workers) over the serial bare loop, one
  interpreter thread each, with the process pinned to 1 core, 2 cores and all cores (``sched_setaffinity``);
- decode alone on 2 cores: worker threads against worker processes (results through shared memory);
- cold start of ``edge run`` to its first result, in a fresh process, next to a bare script doing the same;
- peak RSS of ``edge run`` with the MobileNetV2-size model, next to TensorFlow's interpreter when installed,
  and of ``Pipeline.run`` with 4 decode workers on 1280x720 photos.

The bare loop decodes JPEGs with Pillow's draft mode (DCT scaling) as edge does: the ratio measures the
pipeline, not the decoder.

The MobileNetV2 is ``keras.applications.MobileNetV2(weights=None)`` (nothing downloaded) converted to int8
with random calibration data; it is built once and cached in ``.cache/bench-models``.
"""

from __future__ import annotations

import hashlib
import inspect
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
FLOW_ROUNDS = 5
DIGIT_FRAMES = 2000
CAMERA_SIZES = ((640, 480), (1280, 720))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def mobilenet_int8() -> Path:
    """MobileNetV2 (224x224, random weights) as int8 with uint8 io; built once."""
    key = hashlib.sha256(inspect.getsource(mobilenet_int8).encode()).hexdigest()[:12]  # only what builds it
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


def camera_photos(folder: Path, size: tuple[int, int]) -> list[Path]:
    """scikit-image's photos cropped to a camera's ``size`` (centre, aspect kept), as JPEG files."""
    from PIL import ImageOps
    from skimage import data as samples

    paths = []
    for name in PHOTOS:
        path = folder / f"{name}_{size[0]}x{size[1]}.jpg"
        photo = Image.fromarray(getattr(samples, name)()).convert("RGB")
        ImageOps.fit(photo, size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def bare_prepare(image_path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """What a careful hand-written loop does: open, draft (JPEG), convert, resize, to array (batch of one)."""
    with Image.open(image_path) as image:
        if image.format == "JPEG":
            image.draft(mode, size)
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


def core_counts() -> list[int]:
    """1, 2 and all usable cores (deduplicated, in order) that this machine has."""
    from edge.pipeline import usable_cores

    cores = usable_cores()
    return sorted({n for n in (1, 2, cores) if n <= cores})


def _pinned(cores: int) -> None:
    """Pin this thread (and the threads it starts from now on) to the first ``cores`` usable cores."""
    allowed = sorted(_ALL_CORES)
    os.sched_setaffinity(0, allowed[:cores])


_ALL_CORES: set[int] = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def throughput(
    model_path: Path, images: list[Path], size: tuple[int, int], mode: str, count: int = FRAMES
) -> dict[str, Any]:
    """Frames per second: the serial bare loop (all cores allowed) vs ``Pipeline.run`` (its default decode
    workers) pinned to 1, 2 and all cores; interleaved rounds, each ratio taken within its round."""
    from edge.model import load_model
    from edge.pipeline import Pipeline

    interpreter = bare_interpreter(model_path)
    model = load_model(model_path, threads=1, **_normalization(model_path))
    frames = (images * (count // len(images) + 1))[:count]
    counts = core_counts() if _ALL_CORES else [0]
    serial: list[float] = []
    pipelined: dict[int, list[float]] = {n: [] for n in counts}
    workers: dict[int, int] = {}
    for _ in range(FLOW_ROUNDS):
        start = time.perf_counter()
        for frame in frames:
            bare_invoke(interpreter, bare_prepare(frame, size, mode))
        serial.append(len(frames) / (time.perf_counter() - start))
        for n in counts:
            if n:
                _pinned(n)
            try:
                pipeline = Pipeline(model)  # made under the pin: its default worker count follows the cores
                start = time.perf_counter()
                count = sum(1 for result in pipeline.run(frames) if result.error is None)
                pipelined[n].append(count / (time.perf_counter() - start))
                workers[n] = pipeline.workers_used
            finally:
                if n:
                    os.sched_setaffinity(0, _ALL_CORES)
            assert count == len(frames)
    ratios = {n: [p / b for p, b in zip(pipelined[n], serial, strict=True)] for n in counts}
    return {"serial": serial, "pipelined": pipelined, "ratios": ratios, "workers": workers}


def _decode_only(path: Path) -> np.ndarray:
    from edge.preprocess import fit, load_upright

    image, upright = load_upright(path, (224, 224), "stretch")
    return fit(image, upright, 224, 224, 3, "stretch").pixels


_SHARED: Any = None


def _attach(name: str) -> None:
    from multiprocessing import shared_memory

    global _SHARED
    _SHARED = shared_memory.SharedMemory(name)


def _decode_into_shared(job: tuple[Path, int]) -> int:
    path, slot = job
    pixels = _decode_only(path)
    np.ndarray(pixels.shape, np.uint8, _SHARED.buf, offset=slot * pixels.nbytes)[:] = pixels
    return slot


def decoders(images: list[Path], workers: int = 2) -> dict[str, float]:
    """Decode + resize to 224x224 only (frames/s): serial, on worker threads, on worker processes that
    hand the pixels back through shared memory (the pool started beforehand, not timed)."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from multiprocessing import shared_memory

    frames = (images * (FRAMES // len(images) + 1))[:FRAMES]
    best = {"serial": 0.0, "threads": 0.0, "processes": 0.0}
    shared = shared_memory.SharedMemory(create=True, size=224 * 224 * 3 * len(frames))
    try:
        with ThreadPoolExecutor(workers) as threads, ProcessPoolExecutor(
            workers, initializer=_attach, initargs=(shared.name,)
        ) as processes:
            list(processes.map(_decode_into_shared, [(p, i) for i, p in enumerate(frames[:workers])]))
            for _ in range(ROUNDS):
                start = time.perf_counter()
                for frame in frames:
                    _decode_only(frame)
                best["serial"] = max(best["serial"], len(frames) / (time.perf_counter() - start))
                start = time.perf_counter()
                list(threads.map(_decode_only, frames))
                best["threads"] = max(best["threads"], len(frames) / (time.perf_counter() - start))
                start = time.perf_counter()
                list(processes.map(_decode_into_shared, [(p, i) for i, p in enumerate(frames)]))
                best["processes"] = max(best["processes"], len(frames) / (time.perf_counter() - start))
    finally:
        shared.close()
        shared.unlink()
    return best


WORKERS_RSS = """
import sys
from pathlib import Path
from edge.cli.commands.bench import peak_rss_mb
from edge.model import load_model
from edge.pipeline import Pipeline
pipeline = Pipeline(load_model(sys.argv[1], threads=1), decode_workers=int(sys.argv[2]), overlap=True)
files = sorted(Path(sys.argv[3]).glob("*.jpg")) * 8
assert all(result.ok for result in pipeline.run(files))
print("PEAK_RSS_MB", peak_rss_mb(), file=sys.stderr)
"""


def workers_rss_mb(model_path: Path, folder: Path, workers: int) -> float:
    """Peak RSS of a fresh process running ``Pipeline.run`` with ``workers`` decode threads."""
    done = subprocess.run(
        [sys.executable, "-c", WORKERS_RSS, str(model_path), str(workers), str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    for line in done.stderr.splitlines():
        if line.startswith("PEAK_RSS_MB"):
            return float(line.split()[1])
    raise RuntimeError(f"Pipeline.run with {workers} workers failed: {done.stderr.strip()[-300:]}")


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


def ceiling(frame: dict[str, float], cores: int) -> float:
    """The most pipelining can give with one interpreter thread: every core busy, or the interpreter never
    idle, whichever comes first (stages from the bare p50s; 0 cores: unpinned, all of them)."""
    from edge.pipeline import usable_cores

    decode, invoke = frame["decode"], frame["invoke"]
    return min(float(cores or usable_cores()), (decode + invoke) / invoke)


def _workers(count: int) -> str:
    return "serial" if count == 0 else f"{count} worker{'s' if count > 1 else ''}"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def run() -> str:
    from tests.assets import ensure_assets

    assets = ensure_assets()
    mobilenet = mobilenet_int8()
    digits_model = assets.model("digits_int8")
    with tempfile.TemporaryDirectory() as folder:
        camera: dict[tuple[int, int], list[Path]] = {}
        for size in CAMERA_SIZES:
            sub = Path(folder) / f"{size[0]}x{size[1]}"
            sub.mkdir()
            camera[size] = camera_photos(sub, size)
        digits = sorted(assets.digit_images.iterdir())
        pngs = []  # lossless camera frames: decode several times the invoke (the decode-bound case)
        for photo in camera[(1280, 720)]:
            pngs.append(photo.with_suffix(".png"))
            Image.open(photo).save(pngs[-1])
        cases = [
            *(
                (f"MobileNetV2 int8, {w}x{h} JPEG", mobilenet, camera[(w, h)], (224, 224), "RGB")
                for w, h in CAMERA_SIZES
            ),
            ("MobileNetV2 int8, 1280x720 PNG", mobilenet, pngs, (224, 224), "RGB"),
            ("digits CNN int8 (8x8x1), 8x8 PNG", digits_model, digits, (8, 8), "L"),
        ]
        rows = []
        for title, model, images, size, mode in cases:
            # rounds of ~0.2 s either way: 60 digits take 6 ms, which measures the scheduler, not us
            flow = throughput(model, images, size, mode, DIGIT_FRAMES if model == digits_model else FRAMES)
            rows.append((title, per_frame(model, images[0], size, mode), flow))
        decode = decoders(camera[(1280, 720)])
        cold = cold_start(mobilenet, camera[(640, 480)][0])
        rss_workers = workers_rss_mb(mobilenet, camera[(1280, 720)][0].parent, 4)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    counts = sorted(rows[0][2]["pipelined"])
    lines = [
        f"Backend: {_backend()}; {os.cpu_count()} cores (load average {load:.1f} at the end of the run); "
        "one interpreter thread on both sides; photos: scikit-image's astronaut, coffee, chelsea and rocket "
        f"cropped to camera sizes, JPEG q90. Throughput: {FLOW_ROUNDS} interleaved rounds of {FRAMES} "
        f"frames ({DIGIT_FRAMES} for the digits); "
        "the serial bare loop may use every core, the pipeline is pinned to N cores and takes its default "
        "decode workers for them; ratio = pipelined / serial within each round: median (min-max), then the "
        "ceiling min(N, (decode + invoke) / invoke) from the bare p50s above (one interpreter thread).",
        "",
        "| model, input | bare decode+resize p50 | bare invoke p50 | edge per frame p50 "
        "| overhead (goal <= 0.1 ms) |",
        "|---|---|---|---|---|",
    ]
    for title, frame, _flow in rows:
        overhead = frame["edge"] - frame["bare"]
        lines.append(
            f"| {title} | {frame['decode']:.3f} ms | {frame['invoke']:.3f} ms | {frame['edge']:.3f} ms | "
            f"{overhead:+.3f} ms ({frame['edge'] / frame['bare']:.2f}x) |"
        )
    lines.append("")

    def label(n: int) -> str:
        if n == 0:
            return "unpinned"
        return f"{n} core{'s' if n > 1 else ''}" + (" (all)" if n == max(counts) and n > 2 else "")

    header = " | ".join(f"{label(n)}: fps, ratio" for n in counts)
    lines.append(f"| model, input | serial bare fps | {header} |")
    lines.append("|---|---|" + "---|" * len(counts))
    for title, frame, flow in rows:
        cells = " | ".join(
            f"{max(flow['pipelined'][n]):.1f} ({_workers(flow['workers'][n])}), {_spread(flow['ratios'][n])} "
            f"of {ceiling(frame, n) if flow['workers'][n] else 1.0:.2f}x"
            for n in counts
        )
        lines.append(f"| {title} | {max(flow['serial']):.1f} | {cells} |")
    lines.append("")
    two = 2 if 2 in counts else counts[-1]
    for title, frame, flow in rows:
        median = statistics.median(flow["ratios"][two])
        goal = 0.9 if "digits" in title else 1.7
        verdict = "met" if median >= goal else "not met"
        top = ceiling(frame, two) if flow["workers"][two] else 1.0  # serial: the bare loop is the ceiling
        lines.append(
            f"- {title}: {median:.2f}x on {label(two)} (ceiling {top:.2f}x), "
            f"goal >= {goal}x: {verdict}."
        )
    lines.append("")
    lines.append(
        "| decode + resize to 224x224 only, 1280x720 JPEG, 2 workers | serial | 2 threads | "
        "2 processes (shared memory) |"
    )
    lines.append("|---|---|---|---|")
    lines.append(
        f"| frames/s (best of {ROUNDS}) | {decode['serial']:.0f} | {decode['threads']:.0f} "
        f"({decode['threads'] / decode['serial']:.2f}x) | {decode['processes']:.0f} "
        f"({decode['processes'] / decode['serial']:.2f}x) |"
    )
    lines.append("")
    lines.append("| cold start and memory, MobileNetV2 int8 | edge | baseline | goal |")
    lines.append("|---|---|---|---|")
    lines.append(
        f"| `edge run`, process start to first result | {cold['edge_s']:.2f} s "
        f"| bare script {cold['bare_s']:.2f} s "
        f"({cold['edge_s'] / cold['bare_s']:.2f}x) | <= 0.5 s |"
    )
    tf_note = "TF not installed"
    if "tf_rss_mb" in cold:
        tf_note = f"TensorFlow's interpreter: {cold['tf_rss_mb']:.0f} MB"
    lines.append(f"| `edge run` peak RSS, one photo | {cold['edge_rss_mb']:.0f} MB | {tf_note} | <= 80 MB |")
    lines.append(
        f"| `Pipeline.run` peak RSS, 4 decode workers, 1280x720 JPEGs | {rss_workers:.0f} MB | | <= 80 MB |"
    )
    return "\n".join(lines)


def _backend() -> str:
    from edge.backends import get_backend

    backend = get_backend("auto")
    return f"{backend.name} {backend.version()}"
