"""Live paths of ``edge run``, each against a bare baseline measured in the same run, the digits int8 model.

One function per part, ``run()`` joins their sections:

- ``cold_start``: ``edge run MODEL IMAGE --json --profile none`` in a fresh process, to its first result line
  and to its exit, against a bare script that loads the same model with the same interpreter (ai_edge_litert)
  and runs one inference on the same image with Pillow; p50 over interleaved runs. Goal <= 1.3x.
- ``watch_folder``: a PNG renamed into ``edge run --watch DIR --mqtt URL``'s folder (written under a temporary
  name first, as a camera does) to its result arriving at an MQTT subscriber, through a real mosquitto,
  against a bare in-process loop (rename, decode, invoke, paho publish QoS 1) through the same broker.
  Goal <= 20 ms p50.
- ``rtsp``: a live 1280x720 H.264 RTSP stream (GStreamer, ``tests.streams.RtspServer``) of scikit-image's
  sample photos, each held a second, at 15 and 30 fps, into ``edge run MODEL rtsp://... --json --profile
  none`` with the MobileNetV2-size int8 model (``benchmarks.edge.mobilenet_int8``), against a bare loop in its
  own process (PyAV on the same URL with the same options, one decoder thread, the newest frame to the
  model's size with ``frame.to_ndarray(width=, height=, format="rgb24")``, ai_edge_litert invoke):
  capture-to-result p50/p95, inferences/s and process CPU (utime+stime from ``/proc/PID/stat`` over a
  steady-state window, divided by its wall time). Rounds interleave the two sides. Goals: CPU <= 1.1x the
  bare loop, and the latency difference under one frame interval.
- ``motion_gate``: a 1280x720 RTSP stream of one still photo at 15 fps into ``edge run`` without and with
  ``--motion``: process CPU, inferences/s and the ratio, plus the motion-skipped frames from the run's
  summary on stderr.

Child processes run with bytecode cached (in ``.cache/bench-pycache``, as after a ``pip install``), both
sides alike, even when the calling environment sets ``PYTHONDONTWRITEBYTECODE``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYCACHE = ROOT / ".cache" / "bench-pycache"
COLD_RUNS = 15
DROPS = 100
WARMUP_DROPS = 3
MESSAGE_TIMEOUT_S = 30.0
COLD_GOAL = 1.3
WATCH_GOAL_MS = 20.0

BARE_SCRIPT = """
import sys, numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter
i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors()
d = i.get_input_details()[0]
_, h, w, c = (int(v) for v in d["shape"])
x = np.asarray(Image.open(sys.argv[2]).convert("L" if c == 1 else "RGB").resize((w, h)), dtype=d["dtype"])
i.set_tensor(d["index"], x.reshape(1, h, w, c)); i.invoke()
print(int(np.argmax(i.get_tensor(i.get_output_details()[0]["index"]))), flush=True)
"""


def _child_env() -> dict[str, str]:
    """The environment of both sides' processes: bytecode written and reused, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def _timed_process(command: list[str]) -> tuple[float, float]:
    """(seconds to the first stdout line, seconds to exit) of ``command``; it must print and exit 0."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    first = time.perf_counter() - start
    process.stdout.read()
    err = process.stderr.read()
    code = process.wait()
    ended = time.perf_counter() - start
    if not line or code != 0:
        raise RuntimeError(f"{command[:4]}... printed {line!r}, exit {code}: {err.strip()[-300:]}")
    return first, ended


def cold_start(model: Path, image: Path, runs: int = COLD_RUNS) -> str:
    """The cold-start section: process start to first result and to exit, edge run vs the bare script."""
    edge = [sys.executable, "-m", "edge", "run", str(model), str(image), "--json", "--profile", "none"]
    bare = [sys.executable, "-c", BARE_SCRIPT, str(model), str(image)]
    for command in (edge, bare):  # untimed: writes the bytecode cache, warms the page cache
        _timed_process(command)
    times: dict[str, list[tuple[float, float]]] = {"edge": [], "bare": []}
    for _ in range(runs):  # interleaved so drift on a shared machine hits both alike
        times["edge"].append(_timed_process(edge))
        times["bare"].append(_timed_process(bare))
    p50 = {
        (side, part): statistics.median(t[part] for t in samples)
        for side, samples in times.items()
        for part in (0, 1)
    }
    ratio = {  # the median of the paired ratios: each pair ran back to back, under the same load
        part: statistics.median(e[part] / b[part] for e, b in zip(times["edge"], times["bare"], strict=True))
        for part in (0, 1)
    }
    first_ratio, exit_ratio = ratio[0], ratio[1]
    verdict = "met" if first_ratio <= COLD_GOAL else "NOT met"
    return "\n".join([
        "### cold start",
        "",
        f"`edge run MODEL IMAGE --json --profile none` against a bare script (same interpreter, "
        f"ai_edge_litert, default threads; Pillow decode; one inference), {runs} interleaved runs each, "
        "a fresh process every time, bytecode cached; p50, and the median of the per-pair ratios:",
        "",
        "| | bare script | edge run | ratio |",
        "|---|---:|---:|---:|",
        f"| process start to first result line | {p50['bare', 0] * 1000:.0f} ms | "
        f"{p50['edge', 0] * 1000:.0f} ms | {first_ratio:.2f}x |",
        f"| process start to exit | {p50['bare', 1] * 1000:.0f} ms | {p50['edge', 1] * 1000:.0f} ms | "
        f"{exit_ratio:.2f}x |",
        "",
        f"Goal: first result <= {COLD_GOAL}x the bare script: {verdict} ({first_ratio:.2f}x).",
    ])


class _Arrivals:
    """A paho subscriber that records when each result message arrives, keyed by the input's file name."""

    def __init__(self, port: int, topics: Sequence[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Condition()
        self._seen: dict[str, float] = {}
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-live-sub", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the benchmark's subscriber did not subscribe within 10 s")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        arrived = time.perf_counter()
        name = Path(str(json.loads(message.payload).get("input", ""))).name
        with self._lock:
            self._seen.setdefault(name, arrived)  # the first copy (QoS 1 may deliver twice)
            self._lock.notify_all()

    def wait_for(self, name: str, timeout: float = MESSAGE_TIMEOUT_S) -> float:
        """perf_counter() time at which the result for ``name`` arrived."""
        with self._lock:
            if not self._lock.wait_for(lambda: name in self._seen, timeout):
                raise RuntimeError(f"no result for {name} within {timeout:g} s")
            return self._seen[name]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _drop(png: bytes, folder: Path, name: str) -> float:
    """Write ``png`` as ``folder/name`` the way a camera should: temp name, fsync, rename; the rename time."""
    temp = folder / f".{name}.tmp"
    with temp.open("wb") as handle:
        handle.write(png)
        handle.flush()
        os.fsync(handle.fileno())
    renamed = time.perf_counter()
    os.rename(temp, folder / name)
    return renamed


def _drop_latencies(png: bytes, folder: Path, arrivals: _Arrivals, prefix: str, count: int,
                    after_rename: Callable[[Path], None] | None = None) -> list[float]:
    """ms from each rename into ``folder`` to its result's arrival; one drop at a time."""
    latencies = []
    for i in range(count):
        name = f"{prefix}{i:04d}.png"
        renamed = _drop(png, folder, name)
        if after_rename is not None:
            after_rename(folder / name)
        latencies.append((arrivals.wait_for(name) - renamed) * 1000)
    return latencies


def _wait_until_watching(png: bytes, folder: Path, arrivals: _Arrivals, timeout: float = 60.0) -> None:
    """Drop probe files under new names until one comes back: files there before the watch began never do."""
    deadline = time.monotonic() + timeout
    for i in range(10_000):
        name = f"probe{i:04d}.png"
        _drop(png, folder, name)
        try:
            arrivals.wait_for(name, timeout=1.0)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"edge run gave no result for {folder} within {timeout:g} s") from None


def _bare_publisher(model: Path, port: int) -> tuple[Callable[[Path], None], Callable[[], None]]:
    """The bare baseline: (handle(path): decode, invoke, publish QoS 1 and wait for the PUBACK; close)."""
    import paho.mqtt.client as mqtt
    from ai_edge_litert.interpreter import Interpreter
    from paho.mqtt.enums import CallbackAPIVersion
    from PIL import Image

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    output = interpreter.get_output_details()[0]["index"]
    _, h, w, c = (int(v) for v in detail["shape"])
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-live-bare", protocol=mqtt.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()

    def handle(path: Path) -> None:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if c == 1 else "RGB").resize((w, h)), dtype=detail["dtype"])
        interpreter.set_tensor(detail["index"], pixels.reshape(1, h, w, c))
        interpreter.invoke()
        scores = interpreter.get_tensor(output)[0]
        payload = json.dumps({"input": str(path), "classes": [{"index": int(np.argmax(scores))}]})
        client.publish("bare/bench/results", payload, qos=1).wait_for_publish(10)

    def close() -> None:
        client.disconnect()
        client.loop_stop()

    return handle, close


def _start_device(model: Path, inbox: Path, url: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "edge", "run", str(model), "--watch", str(inbox), "--mqtt", url,
        "--device-id", "bench", "--profile", "none", "--state-dir", str(state), "--telemetry-interval", "0",
    ]
    with log.open("wb") as err:
        return subprocess.Popen(command, cwd=ROOT, env=_child_env(), stdout=subprocess.DEVNULL, stderr=err)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _latency_row(title: str, values: Sequence[float], baseline: Sequence[float]) -> str:
    p50 = _percentile(values, 50)
    return (
        f"| {title} | {p50:.1f} ms | {_percentile(values, 95):.1f} ms | {max(values):.1f} ms | "
        f"{p50 / _percentile(baseline, 50):.2f}x |"
    )


def watch_folder(model: Path, png: bytes, drops: int = DROPS) -> str:
    """The watch-folder section: file drop to result on MQTT, edge run vs the bare in-process loop."""
    from cloud_sync.local_broker import LocalBroker

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        root = Path(tmp)
        broker = LocalBroker(root / "broker").start()
        arrivals = _Arrivals(broker.port, ["edge/bench/results", "bare/bench/results"])
        inbox, bare_inbox, log = root / "inbox", root / "bare-inbox", root / "edge.log"
        inbox.mkdir()
        bare_inbox.mkdir()
        device = _start_device(model, inbox, broker.url, root / "state", log)
        handle, close_bare = _bare_publisher(model, broker.port)
        try:
            _wait_until_watching(png, inbox, arrivals)
            _drop_latencies(png, inbox, arrivals, "edge-warm", WARMUP_DROPS)  # names: one result each
            _drop_latencies(png, bare_inbox, arrivals, "bare-warm", WARMUP_DROPS, handle)
            edge_ms = _drop_latencies(png, inbox, arrivals, "edge", drops)
            bare_ms = _drop_latencies(png, bare_inbox, arrivals, "bare", drops, handle)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; edge run's log: {log.read_text(errors='replace')[-500:]}") from exc
        finally:
            close_bare()
            _stop(device)
            arrivals.close()
            broker.stop()
    edge_p50 = _percentile(edge_ms, 50)
    verdict = "met" if edge_p50 <= WATCH_GOAL_MS else "NOT met"
    return "\n".join([
        "### watch folder",
        "",
        f"{drops} PNG files (8x8 digit, {len(png)} B), one at a time, each written under a temporary name, "
        "fsynced and renamed into the watched folder; latency from the rename to the result's arrival at a "
        "paho subscriber (QoS 1) through a local mosquitto. Device: `edge run MODEL --watch DIR --mqtt URL "
        "--device-id bench --profile none` (results through its durable outbox). Bare baseline, same broker, "
        "in process: rename, Pillow decode, invoke, paho publish QoS 1, nothing watching the folder.",
        "",
        "| path | p50 | p95 | max | p50 vs bare |",
        "|---|---:|---:|---:|---:|",
        _latency_row("bare: rename -> decode -> invoke -> publish (baseline)", bare_ms, bare_ms),
        _latency_row("`edge run --watch --mqtt`: rename -> result on MQTT", edge_ms, bare_ms),
        "",
        f"Goal: p50 <= {WATCH_GOAL_MS:g} ms: {verdict} ({edge_p50:.1f} ms; "
        f"{edge_p50 - _percentile(bare_ms, 50):+.1f} ms over the bare loop).",
    ])


# ------------------------------------------------------------------------------------- live RTSP streams

RTSP_SIZE = (1280, 720)
RTSP_RATES = (15, 30)
RTSP_ROUNDS = 2  # interleaved rounds per rate: edge, bare, edge, bare
RTSP_WINDOW_S = 10.0  # measured seconds per round and side (20 s per side and rate)
MOTION_ROUNDS = 2
MOTION_WINDOW_S = 7.5  # 15 s per side
SETTLE_S = 2.0  # after the first result, before the window opens: the decoder and interpreter warm
FIRST_RESULT_TIMEOUT_S = 60.0
RTSP_CPU_GOAL = 1.1
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")
MOTION_PHOTO = "astronaut"
# The container options edge's stream source opens an rtsp:// URL with (edge/sources/stream.py), written out
# here so the bare side imports nothing of edge: tests.streams.RTSP_OPTIONS plus nobuffer and video only.
BARE_RTSP_OPTIONS = {"fflags": "nobuffer", "allowed_media_types": "video"}
# MobileNetV2's own normalization, (pixel - 127.5) / 127.5, as benchmarks/edge.py gives it: its uint8 input
# quantization (scale 1/127.5, zero point 127) undoes it, so edge feeds the RGB pixels as they are, exactly
# what the bare loop does. Without it edge would quantize raw 0..255 values (a different, float, path).
NORMALIZATION = ("--mean", "127.5", "--std", "127.5")
SUMMARY = re.compile(
    r"source (?P<name>\S+): (?P<captured>\d+) frame\(s\) captured, (?P<inferred>\d+) inferred, "
    r"(?P<skipped>\d+) skipped for a newer one, (?P<motion_skipped>\d+) without motion"
)

BARE_RTSP_SCRIPT = """
import json, sys, threading, time
import av, numpy as np
from ai_edge_litert.interpreter import Interpreter
url, options = sys.argv[1], json.loads(sys.argv[3])
interpreter = Interpreter(model_path=sys.argv[2]); interpreter.allocate_tensors()
detail = interpreter.get_input_details()[0]
output = interpreter.get_output_details()[0]["index"]
_, h, w, _ = (int(v) for v in detail["shape"])
newest, ready = [], threading.Condition()

def decode():  # every frame, one decoder thread; only the newest is kept
    try:
        with av.open(url, options=options, timeout=(20.0, 10.0)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            for index, frame in enumerate(container.decode(stream)):
                item = (index, frame, time.time(), time.perf_counter())
                with ready:
                    newest[:] = [item]
                    ready.notify()
    finally:
        with ready:
            newest[:] = [None]
            ready.notify()

threading.Thread(target=decode, daemon=True).start()
while True:
    with ready:
        ready.wait_for(lambda: newest)
        item = newest.pop()
    if item is None:
        break
    index, frame, wall, mono = item
    pixels = frame.to_ndarray(width=w, height=h, format="rgb24")
    interpreter.set_tensor(detail["index"], pixels[None])
    interpreter.invoke()
    top = int(np.argmax(interpreter.get_tensor(output)[0]))
    ms = (time.perf_counter() - mono) * 1000
    print(json.dumps({"source": "bare", "frame": index, "captured_at": round(wall, 3), "class": top,
                      "timing_ms": {"capture_to_result": round(ms, 3)}}), flush=True)
"""


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) ``pid`` has used so far, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


@dataclass(frozen=True, slots=True)
class _Window:
    """What one process did over a measured window; ``log`` is its whole stderr (the summary at the end)."""

    records: list[dict[str, Any]]
    cpu_s: float
    wall_s: float
    server_cpu_s: float
    log: str

    @property
    def latencies(self) -> list[float]:
        values = (r.get("timing_ms", {}).get("capture_to_result") for r in self.records)
        return [float(v) for v in values if v is not None]  # a failed frame has no result to time


def _measure(command: list[str], window_s: float, server_pid: int, log_path: Path) -> _Window:
    """Start ``command``, wait for its first result line and ``SETTLE_S``, measure ``window_s``, stop it.

    stdout is read line by line on a thread (one JSON record a line); stderr goes to ``log_path``. The
    process is ended with SIGTERM (its summary lands in the log), killed if it does not end, always.
    """
    lines: list[str] = []
    first = threading.Event()
    with log_path.open("wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=err)
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for raw in stdout:
            lines.append(raw.decode(errors="replace"))
            first.set()
        first.set()

    reader = threading.Thread(target=read, name="bench-live-reader", daemon=True)
    reader.start()
    try:
        if not first.wait(FIRST_RESULT_TIMEOUT_S) or not lines:
            code = process.poll()
            why = f"exited with {code}" if code is not None else f"gave none in {FIRST_RESULT_TIMEOUT_S:g} s"
            raise RuntimeError(
                f"{command[:5]}... {why} before a first result: {log_path.read_text(errors='replace')[-500:]}"
            )
        time.sleep(SETTLE_S)

        def sample() -> tuple[float, float, float, int]:
            return time.perf_counter(), _cpu_seconds(process.pid), _cpu_seconds(server_pid), len(lines)

        start, cpu0, server0, n0 = sample()
        time.sleep(window_s)
        end, cpu1, server1, n1 = sample()
        if process.poll() is not None:
            raise RuntimeError(f"{command[:5]}... exited during the window: "
                               f"{log_path.read_text(errors='replace')[-500:]}")
    finally:
        _stop(process)
        reader.join(10)
        stdout.close()
    records = [json.loads(line) for line in lines[n0:n1] if line.strip()]
    return _Window(records, cpu1 - cpu0, end - start, server1 - server0, log_path.read_text(errors="replace"))


def _merge(windows: Sequence[_Window]) -> dict[str, Any]:
    """One side's figures over its rounds: pooled latencies, summed counts, CPU and wall time."""
    latencies = [v for w in windows for v in w.latencies]
    wall = sum(w.wall_s for w in windows)
    if not latencies:
        raise RuntimeError(f"no results in the measured windows; last log: {windows[-1].log[-500:]}")
    return {
        "p50": _percentile(latencies, 50),
        "p95": _percentile(latencies, 95),
        "rate": len(latencies) / wall,
        "cpu": 100 * sum(w.cpu_s for w in windows) / wall,
        "server_cpu": 100 * sum(w.server_cpu_s for w in windows) / wall,
        "count": len(latencies),
        "wall": wall,
    }


def _rtsp_server(workdir: Path, frames: Sequence[np.ndarray], fps: int) -> Any:
    from tests.streams import RtspServer

    return RtspServer(workdir, frames, fps=fps, size=RTSP_SIZE).start()


def _photo_frames(names: Sequence[str], hold: int) -> list[np.ndarray]:
    import skimage.data

    from tests.streams import frames_from_images

    return frames_from_images([getattr(skimage.data, name)() for name in names], RTSP_SIZE, hold)


def _edge_stream_command(model: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge", "run", str(model), url, "--source-name", "cam", "--json",
            "--profile", "none", *NORMALIZATION, *extra]


def rtsp(model: Path, rates: Sequence[int] = RTSP_RATES, rounds: int = RTSP_ROUNDS,
         window_s: float = RTSP_WINDOW_S) -> str:
    """The RTSP section: capture to result, inferences/s and CPU, edge run vs the bare PyAV loop."""
    from tests.streams import RTSP_OPTIONS

    options = json.dumps({**RTSP_OPTIONS, **BARE_RTSP_OPTIONS})
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rtsp-") as tmp:
        root = Path(tmp)
        for fps in rates:
            server = _rtsp_server(root / f"server{fps}", _photo_frames(PHOTOS, hold=fps), fps)
            try:
                edge = _edge_stream_command(model, server.url)
                bare = [sys.executable, "-c", BARE_RTSP_SCRIPT, server.url, str(model), options]
                assert server.process is not None
                pid = server.process.pid
                windows: dict[str, list[_Window]] = {"edge": [], "bare": []}
                for round_ in range(rounds):  # interleaved so drift on a shared machine hits both alike
                    for side, command in (("edge", edge), ("bare", bare)):
                        log = root / f"{side}-{fps}-{round_}.log"
                        windows[side].append(_measure(command, window_s, pid, log))
            finally:
                server.stop()
            rows.append((fps, _merge(windows["bare"]), _merge(windows["edge"])))
    lines = [
        "### RTSP 1280x720 H.264",
        "",
        f"A live RTSP stream (GStreamer x264 `tune=zerolatency`, 2 Mbit/s, a key frame a second, its own "
        f"process on this machine) of {len(PHOTOS)} scikit-image sample photos ({', '.join(PHOTOS)}) "
        f"fitted to {RTSP_SIZE[0]}x{RTSP_SIZE[1]} and held a second each. `edge run MODEL rtsp://... "
        "--source-name cam --json --profile none --mean 127.5 --std 127.5` (MobileNetV2's normalization, "
        "which its uint8 input quantization undoes: the pixels go in as they are, as on the bare side) "
        "against a bare loop in its own process: PyAV opens the "
        "same URL with the same options, decodes every frame on one decoder thread, the inference thread "
        "takes the newest, `frame.to_ndarray(width=224, height=224, format='rgb24')`, ai_edge_litert "
        "invoke (default threads on both sides), one JSON line a result. Latency: decode to result, "
        "`timing_ms.capture_to_result` on both sides. CPU: utime+stime of the process (every thread) from "
        f"`/proc/PID/stat` over the window, divided by its wall time (100% = one core). {rounds} "
        f"interleaved rounds per rate and side, {window_s:g} s measured each (from {SETTLE_S:g} s after "
        "the first result), pooled. Server CPU: the GStreamer server's process over the same windows (mean "
        "of both sides'), on the same two cores.",
        "",
        "| rate | bare p50 / p95 | edge p50 / p95 | p50 difference (vs one frame interval) "
        "| bare inferences/s | edge inferences/s | bare CPU | edge CPU | CPU ratio (goal <= 1.1x) "
        "| server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for fps, bare_side, edge_side in rows:
        interval = 1000.0 / fps
        diff = edge_side["p50"] - bare_side["p50"]
        ratio = edge_side["cpu"] / bare_side["cpu"]
        server_cpu = (bare_side["server_cpu"] + edge_side["server_cpu"]) / 2
        lines.append(
            f"| {fps} fps | {bare_side['p50']:.1f} / {bare_side['p95']:.1f} ms | "
            f"{edge_side['p50']:.1f} / {edge_side['p95']:.1f} ms | {diff:+.1f} ms "
            f"({diff / interval:+.2f} of {interval:.1f} ms) | {bare_side['rate']:.1f} | "
            f"{edge_side['rate']:.1f} | {bare_side['cpu']:.0f}% | {edge_side['cpu']:.0f}% | {ratio:.2f}x | "
            f"{server_cpu:.0f}% |"
        )
        cpu_ok = "met" if ratio <= RTSP_CPU_GOAL else "NOT met"
        latency_ok = "met" if diff < interval else "NOT met"
        verdicts.append(
            f"{fps} fps: CPU <= {RTSP_CPU_GOAL:g}x the bare loop: {cpu_ok} ({ratio:.2f}x); latency "
            f"difference under one frame interval: {latency_ok} ({diff:+.1f} ms of {interval:.1f} ms)."
        )
    lines += ["", "Goals. " + " ".join(verdicts)]
    return "\n".join(lines)


def motion_gate(model: Path, rounds: int = MOTION_ROUNDS, window_s: float = MOTION_WINDOW_S) -> str:
    """The motion-gate section: a still scene, edge run without and with ``--motion``."""
    fps = 15
    runs: dict[str, list[_Window]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="bench-motion-") as tmp:
        root = Path(tmp)
        server = _rtsp_server(root / "server", _photo_frames([MOTION_PHOTO], hold=fps), fps)
        try:
            assert server.process is not None
            commands = {"without": _edge_stream_command(model, server.url),
                        "with": _edge_stream_command(model, server.url, "--motion")}
            for round_ in range(rounds):
                for side, command in commands.items():
                    log = root / f"motion-{side}-{round_}.log"
                    runs[side].append(_measure(command, window_s, server.process.pid, log))
        finally:
            server.stop()
    figures = {}
    for side, windows in runs.items():
        wall = sum(w.wall_s for w in windows)
        counters = [SUMMARY.search(w.log) for w in windows]
        if not all(counters):
            raise RuntimeError(f"no source summary in edge run's stderr: {windows[-1].log[-500:]}")
        fields = ("captured", "inferred", "motion_skipped")
        totals = {k: sum(int(m[k]) for m in counters if m) for k in fields}
        figures[side] = {
            "cpu": 100 * sum(w.cpu_s for w in windows) / wall,
            "rate": sum(len(w.records) for w in windows) / wall,
            **totals,
        }
    without, gated = figures["without"], figures["with"]
    ratio = gated["cpu"] / without["cpu"]
    rate_ratio = gated["rate"] / without["rate"] if without["rate"] else float("nan")
    return "\n".join([
        "### motion gate on a still scene",
        "",
        f"A {RTSP_SIZE[0]}x{RTSP_SIZE[1]} RTSP stream of one still photo ({MOTION_PHOTO}) at {fps} fps, "
        "same server, model and flags as above; `edge run MODEL rtsp://... --source-name cam --json` "
        f"without and with `--motion` (1.0 %), {rounds} interleaved rounds of {window_s:g} s measured each "
        "(CPU and inferences/s over those windows). Counters: from the summary `edge run` prints on stderr "
        "when it ends (SIGTERM), whole runs (start-up included), summed over the rounds.",
        "",
        "| `edge run` | CPU | inferences/s | frames captured | inferred | skipped without motion |",
        "|---|---:|---:|---:|---:|---:|",
        f"| without `--motion` (baseline) | {without['cpu']:.0f}% | {without['rate']:.1f} | "
        f"{without['captured']} | {without['inferred']} | {without['motion_skipped']} |",
        f"| with `--motion` | {gated['cpu']:.0f}% | {gated['rate']:.1f} | {gated['captured']} | "
        f"{gated['inferred']} | {gated['motion_skipped']} |",
        f"| ratio with / without | {ratio:.2f}x | {rate_ratio:.2f}x | | | |",
    ])


def run() -> str:
    from benchmarks.edge import mobilenet_int8
    from edge.backends import get_backend
    from tests.assets import ensure_assets

    assets = ensure_assets()
    model = assets.model("digits_int8")
    image = sorted(assets.digit_images.iterdir())[0]
    PYCACHE.mkdir(parents=True, exist_ok=True)
    backend = get_backend("auto")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mobilenet = mobilenet_int8()
    parts = [cold_start(model, image), watch_folder(model, image.read_bytes()), rtsp(mobilenet),
             motion_gate(mobilenet)]
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (
        f"Backend: {backend.name} {backend.version()}; {os.cpu_count()} cores (load average {load:.1f} at "
        f"the start, {end_load:.1f} at the end); models: the digits CNN int8 (8x8x1, uint8 io), "
        f"`{model.name}`, for the cold start and the watch folder; the MobileNetV2-size int8 (224x224x3, "
        f"uint8 io, random weights, `benchmarks.edge.mobilenet_int8`), `{mobilenet.name}`, for the streams; "
        f"Python {sys.version.split()[0]}."
    )
    return "\n\n".join([header, *parts])


if __name__ == "__main__":
    print(run())
