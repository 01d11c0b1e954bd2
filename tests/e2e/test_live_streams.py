"""``edge run`` on real streams, as a user runs it: video files, GStreamer's RTSP server and an HTTP MJPEG
camera (tests/streams.py), the digits model, a real mosquitto for the source states.

The streams show the held-out digits (white on black, fitted into the frame, one digit a second); the model
must name them, in order, frame after frame.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher

pytest_plugins = ["tests.streams"]  # the rtsp_server, mjpeg_server and video_file fixtures

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]
SIZE = (320, 240)  # a digit fills the centre 240x240; --resize crop gives the model just that square
HOLD = 15


def digits(assets: Assets, count: int = 8) -> tuple[list[Image.Image], list[str]]:
    """``count`` held-out digit images of different labels, and their labels."""
    chosen: dict[str, Path] = {}
    for path in sorted(assets.digit_images.iterdir()):
        label = path.stem.split("_")[1]
        chosen.setdefault(label, path)
    picked = sorted(chosen.items())[:count]
    images = [Image.open(p).convert("L").resize((64, 64), Image.NEAREST) for _, p in picked]
    return images, [label for label, _ in picked]


def digit_frames(assets: Assets, hold: int = HOLD) -> tuple[list[np.ndarray], list[str]]:
    from tests.streams import frames_from_images  # after pytest registered it as a plugin

    images, labels = digits(assets)
    return frames_from_images(images, SIZE, hold), labels


class LiveRun:
    """``edge run`` in the background: JSON records from stdout as they come, stderr kept."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*EDGE, "run", *args, "--json", "--profile", "none"], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
        )
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.startswith("{"):  # "waiting for a model..." while the store is empty
                continue
            record = json.loads(line)
            self.all.append(record)
            self.records.put(record)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def take(self, n: int, timeout: float = 60.0, source: str | None = None) -> list[dict[str, Any]]:
        """The next ``n`` records (of ``source``), waiting at most ``timeout`` seconds in all."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                record = self.records.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                why = f"{len(got)} of {n} results in {timeout} s; stderr:\n{self.stderr}"
                raise AssertionError(why) from None
            if source is None or record.get("source") == source:
                got.append(record)
        return got

    def wait_stderr(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in stderr after {timeout} s:\n{self.stderr}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def runs() -> Any:
    started: list[LiveRun] = []

    def start(*args: str) -> LiveRun:
        run = LiveRun(*args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def label_of(record: dict[str, Any]) -> str:
    assert record["error"] is None, record["error"]
    return str(record["classes"][0]["label"])


def shown(frame: int, labels: list[str], hold: int = HOLD) -> str:
    return labels[(frame // hold) % len(labels)]


def mostly_right(
    records: list[dict[str, Any]], labels: list[str], hold: int = HOLD, live: bool = False
) -> float:
    """The share of records naming the digit their frame shows; a live stream may start anywhere in its loop,
    so there the best offset of the loop counts (the order must still hold)."""
    offsets = range(hold * len(labels)) if live else [0]
    return max(
        sum(label_of(r) == shown(r["frame"] + offset, labels, hold) for r in records) / len(records)
        for offset in offsets
    )


@pytest.mark.parametrize(
    ("name", "codec"),
    [("clip.mp4", "h264"), ("clip.webm", "vp9"), ("clip.avi", "mjpeg"), ("clip.mkv", "hevc"),
     ("clip.mov", "mpeg4")],
)
def test_a_video_file_is_read_frame_by_frame_in_order(
    assets: Assets, video_file: Any, name: str, codec: str
) -> None:
    frames, labels = digit_frames(assets, hold=4)
    path = video_file(name, frames, fps=15, codec=codec)
    done = subprocess.run([*EDGE, "run", str(assets.model("digits_int8")), str(path), "--json", "--resize",
                           "crop", "--top-k", "1", "--profile", "none"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert {r["source"] for r in records} == {"clip"}
    # the full frame size, also for MJPEG, which decodes at 1/8 scale here (the 8x8 model needs no more)
    assert all(r["image"] == {"width": SIZE[0], "height": SIZE[1]} for r in records)
    assert all(r["input"] == f"clip#{r['frame']}" for r in records)
    assert mostly_right(records, labels, hold=4) >= 0.9
    captured = [r["captured_at"] for r in records]
    assert captured == sorted(captured) and abs(captured[0] - time.time()) < 120
    assert all(r["timing_ms"]["capture_to_result"] >= r["timing_ms"]["invoke"] for r in records)
    assert "source clip: finished" in done.stderr


def test_realtime_paces_a_video_file_at_its_frame_rate(assets: Assets, video_file: Any) -> None:
    frames, labels = digit_frames(assets, hold=10)  # 80 frames: 5.3 s at 15 fps
    path = video_file("paced.mp4", frames, fps=15)
    command = [*EDGE, "run", str(assets.model("digits_int8")), str(path), "--json", "--resize", "crop",
               "--profile", "none"]
    fast = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    paced = subprocess.run([*command, "--realtime"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert fast.returncode == 0 and paced.returncode == 0, paced.stderr
    for done in (fast, paced):
        records = [json.loads(line) for line in done.stdout.splitlines()]
        span = records[-1]["captured_at"] - records[0]["captured_at"]
        if done is paced:
            assert span >= 0.8 * (len(frames) - 1) / 15  # as a camera would deliver them
            assert mostly_right(records, labels, hold=10) >= 0.9
        else:
            assert len(records) == len(frames)


def test_an_hls_stream_over_http(assets: Assets, tmp_path: Path, runs: Any) -> None:
    import functools
    import http.server

    import av

    frames, labels = digit_frames(assets, hold=8)
    folder = tmp_path / "hls"
    folder.mkdir()
    with av.open(str(folder / "index.m3u8"), "w", format="hls",
                 options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}) as out:
        stream = out.add_stream("libx264", rate=15, options={"x264-params": "keyint=15:scenecut=0"})
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        out.mux(stream.encode(None))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        run = runs(str(assets.model("digits_int8")), url, "--resize", "crop", "--source-name", "hls")
        records = run.take(40, source="hls")
        assert mostly_right(records, labels, hold=8, live=True) >= 0.8
        assert run.stop() == 0
    finally:
        server.shutdown()
        server.server_close()


def test_rtsp_over_udp(assets: Assets, rtsp_server: Any, runs: Any) -> None:
    frames, labels = digit_frames(assets)
    server = rtsp_server(frames, fps=15)
    run = runs(str(assets.model("digits_int8")), server.url, "--resize", "crop", "--rtsp-transport", "udp",
               "--source-name", "udpcam")
    records = run.take(30, source="udpcam")
    assert mostly_right(records, labels, live=True) >= 0.7
    assert run.stop() == 0


def test_a_corrupt_video_file_fails_its_frames_not_the_run(
    assets: Assets, video_file: Any, tmp_path: Path
) -> None:
    frames, labels = digit_frames(assets, hold=4)
    broken = video_file("broken.mp4", frames, fps=15, corrupt="overwrite")
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(os.urandom(20000))
    done = subprocess.run([*EDGE, "run", str(assets.model("digits_int8")), str(broken), str(garbage),
                           str(assets.digit_images), "--json", "--resize", "crop", "--profile", "none"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    images = [r for r in records if r["source"] == "files"]
    assert len(images) == len(list(assets.digit_images.iterdir()))  # the other source went on
    failed = [r for r in records if r["source"] == "garbage"]
    assert len(failed) == 1 and "garbage.mkv" in failed[0]["error"] and "\n" not in failed[0]["error"]
    decoded = [r for r in records if r["source"] == "broken" and r["error"] is None]
    assert 0 < len(decoded) <= len(frames)  # what could be decoded was
    assert done.returncode == 1, done.stderr


def test_rtsp_results_in_order_with_the_right_classes(assets: Assets, rtsp_server: Any, runs: Any) -> None:
    frames, labels = digit_frames(assets)
    server = rtsp_server(frames, fps=15, user="viewer", password="s3cret-pw")
    run = runs(str(assets.model("digits_int8")), server.url, "--resize", "crop", "--top-k", "1",
               "--source-name", "door")
    records = run.take(45, source="door")
    assert run.stop() == 0
    indices = [r["frame"] for r in records]
    assert indices == sorted(set(indices))
    assert mostly_right(records, labels, live=True) >= 0.8
    assert all(r["captured_at"] <= time.time() for r in records)
    everything = json.dumps(run.all) + run.stderr
    assert "s3cret-pw" not in everything and "viewer" not in everything  # masked everywhere
    assert "source door: streaming" in run.stderr


def test_wrong_password_and_refused_host_are_one_line_each_and_files_go_on(
    assets: Assets, rtsp_server: Any, runs: Any
) -> None:
    server = rtsp_server(fps=15, user="viewer", password="right")
    run = runs(str(assets.model("digits_int8")), server.url_for("viewer", "wrong-pw"),
               "rtsp://127.0.0.1:9/nothing", str(assets.digit_images), "--source-name", "cam",
               "--source-name", "gone")
    files = run.take(len(list(assets.digit_images.iterdir())), source="files")
    assert all(r["error"] is None for r in files)
    run.wait_stderr("source cam: down")
    run.wait_stderr("source gone: down")
    lines = [line for line in run.stderr.splitlines() if ": down" in line]
    assert any("401" in line or "password" in line for line in lines if "cam:" in line), lines
    assert any("refused" in line.lower() for line in lines if "gone:" in line), lines
    assert "wrong-pw" not in run.stderr
    assert run.stop() == 1  # two sources never delivered a frame: the run failed, though the files went on


def test_rtsp_server_killed_and_restarted_the_run_reconnects(
    assets: Assets, rtsp_server: Any, mosquitto: Broker, runs: Any, tmp_path: Path
) -> None:
    frames, labels = digit_frames(assets)
    server = rtsp_server(frames, fps=15)
    watch = Watcher(mosquitto.url, "edge/pi/sources/#")
    run = runs(str(assets.model("digits_int8")), server.url, "--resize", "crop", "--source-name", "yard",
               "--stall-timeout", "2", "--mqtt", mosquitto.url, "--device-id", "pi",
               "--state-dir", str(tmp_path / "state"))
    before = run.take(10, source="yard")
    server.kill()
    run.wait_stderr("source yard: down", timeout=30)
    server.restart()
    deadline = time.monotonic() + 60
    while run.stderr.count("source yard: streaming") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = run.take(10, source="yard")
    assert after[0]["frame"] > before[-1]["frame"] and mostly_right(after, labels, live=True) >= 0.5
    states = [json.loads(m.payload)["state"] for m in watch.drain() if m.topic.endswith("/yard/state")]
    first_streaming = states.index("streaming")
    assert "down" in states[first_streaming:], states  # seen on MQTT: streaming, down, ..., streaming
    assert states[-1] == "streaming", states
    assert run.stop(signal.SIGINT) in (0, 130)
    watch.close()


def test_mjpeg_camera_stall_corruption_and_restart(
    assets: Assets, mjpeg_server: Any, runs: Any
) -> None:
    frames, labels = digit_frames(assets)
    camera = mjpeg_server(frames, fps=15)
    run = runs(str(assets.model("digits_int8")), camera.url, camera.snapshot_url, "--resize", "crop",
               "--source-name", "esp32", "--source-name", "snap", "--interval", "0.5",
               "--stall-timeout", "1.5")
    first = run.take(20, source="esp32")
    assert all(r["error"] is None for r in first)
    assert {label_of(r) for r in first} <= set(labels)
    snaps = run.take(2, source="snap")  # the snapshot URL (image/jpeg) is polled, not streamed
    assert all(r["error"] is None for r in snaps)
    camera.corrupt(5)
    run.take(5, source="esp32")  # goes on after garbage parts
    camera.stall(4)
    run.wait_stderr("source esp32: stalled", timeout=30)
    run.wait_stderr("source esp32: streaming", timeout=30)
    camera.restart()
    later = run.take(10, source="esp32", timeout=90)
    assert later[-1]["frame"] > first[-1]["frame"]
    assert run.stop() == 0
    assert "source esp32:" in run.stderr and "reconnect" in run.stderr


def test_a_camera_that_ends_its_stream_is_reopened_from_the_first_backoff_step(
    assets: Assets, mjpeg_server: Any, runs: Any
) -> None:
    frames, _ = digit_frames(assets, hold=2)  # 16 frames per connection, then the camera hangs up
    camera = mjpeg_server(frames, fps=20, loop=False)
    run = runs(str(assets.model("digits_int8")), camera.url, "--resize", "crop", "--source-name", "cam")
    run.take(3 * len(frames), source="cam", timeout=60)  # three connections' worth
    assert run.stop() == 0
    downs = [line for line in run.stderr.splitlines() if "source cam: down" in line]
    assert downs and all("the stream ended" in line for line in downs), downs
    assert "retrying" not in " ".join(downs)  # an end after frames is not a failure with backoff
    assert "0 error(s)" in run.stderr


def test_a_missing_camera_is_one_line_and_the_rest_carries_on(assets: Assets, tmp_path: Path) -> None:
    done = subprocess.run([*EDGE, "run", str(assets.model("digits_int8")), "/dev/video9", "picamera:0",
                           str(assets.digit_images), "--json", "--profile", "none"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    errors = {r["source"]: r["error"] for r in records if r["error"]}
    assert set(errors) == {"video9", "picamera0"}
    assert "/dev/video9" in errors["video9"] and "no such camera" in errors["video9"]
    assert "python3-picamera2" in errors["picamera0"]
    assert sum(1 for r in records if r["source"] == "files" and r["error"] is None) == len(
        list(assets.digit_images.iterdir())
    )
    assert done.returncode == 1


def test_latest_frame_never_builds_a_backlog(assets: Assets, rtsp_server: Any) -> None:
    """30 fps stream, a model slowed to ~100 ms: capture-to-result stays under two frames plus the invoke."""
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.sources.base import SourceBoard
    from edge.sources.feeds import SourceSpec, SourcesSettings, build_feeds
    from edge.sources.live import SourceMux

    frames, _ = digit_frames(assets, hold=30)
    server = rtsp_server(frames, fps=30)
    model = load_model(assets.model("digits_int8"))
    real_invoke = model.invoke

    def slow_invoke(tensor: Any) -> Any:  # the real model, plus 100 ms of "bigger model"
        start = time.perf_counter()
        out = real_invoke(tensor)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - start)))
        return out

    model.invoke = slow_invoke  # type: ignore[method-assign]
    board, stop = SourceBoard(), threading.Event()
    mux = SourceMux(build_feeds(SourcesSettings(sources=(SourceSpec(server.url, "cam"),))), board, stop)
    pipeline = Pipeline(model, overlap=False)
    latency, invoke = [], []
    deadline = time.monotonic() + 60
    try:
        for result in pipeline.run(mux):
            assert result.error is None, result.error
            latency.append(result.timing.capture_to_result)
            invoke.append(result.timing.invoke)
            if time.monotonic() > deadline:
                break
    finally:
        mux.close()
    counts = board.snapshot()["cam"]
    frame_ms = 1000 / 30
    p95 = float(np.percentile(latency[5:], 95))
    assert p95 < 2 * frame_ms + float(np.median(invoke)) + 10, (p95, np.median(invoke))
    assert counts["skipped"] > 0.6 * counts["captured"]  # ~2 of every 3 frames skipped, counted
    assert counts["inferred"] == len(latency)


def test_ctrl_c_during_a_stream_stops_cleanly_and_loses_nothing(
    assets: Assets, rtsp_server: Any, mosquitto: Broker, runs: Any, tmp_path: Path
) -> None:
    from cloud_sync.outbox import read_stats

    server = rtsp_server(fps=30)
    watch = Watcher(mosquitto.url, "edge/pi/results")
    state = tmp_path / "state"
    run = runs(str(assets.model("digits_int8")), server.url, "--source-name", "cam", "--mqtt", mosquitto.url,
               "--device-id", "pi", "--state-dir", str(state))
    run.take(30, source="cam")
    assert run.stop(signal.SIGINT) in (0, 130)
    printed = len(run.all)
    assert "edge run:" in run.stderr and "Traceback" not in run.stderr
    assert "source cam:" in run.stderr  # the per-source summary
    received = []
    deadline = time.monotonic() + 30
    while len(received) < printed and time.monotonic() < deadline:
        with_timeout = max(0.1, deadline - time.monotonic())
        received.append(watch.next_json("/results", timeout=with_timeout))
    assert len(received) == printed  # every result produced reached the broker
    assert sorted(r["frame"] for r in received) == sorted(r["frame"] for r in run.all)
    stats = read_stats(state)
    assert stats.pending == 0 and stats.last_seq == printed
    watch.close()


def test_frames_of_one_video_convert_on_two_decode_workers_at_once(assets: Assets, video_file: Any) -> None:
    """A video read frame by frame goes through the pipeline's decode workers; each thread has its own
    scaler (one FFmpeg scaler used from two threads at once hangs)."""
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.sources.base import SourceBoard
    from edge.sources.feeds import SourceSpec, SourcesSettings, build_feeds
    from edge.sources.live import SourceMux

    frames, labels = digit_frames(assets, hold=6)
    path = video_file("workers.mp4", frames, fps=15)
    model = load_model(assets.model("digits_int8"))
    pipeline = Pipeline(model, resize="crop", decode_workers=2, overlap=True)
    mux = SourceMux(build_feeds(SourcesSettings(sources=(SourceSpec(str(path), "clip"),))), SourceBoard(),
                    threading.Event())
    records: list[dict[str, Any]] = []
    def consume() -> None:
        records.extend(r.to_json() for r in pipeline.run(mux))

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(120)
    mux.close()
    assert not worker.is_alive(), "the pipeline hung"
    assert [r["frame"] for r in records] == list(range(len(frames)))
    assert mostly_right(records, labels, hold=6) >= 0.9


def test_one_interpreter_per_source(assets: Assets, video_file: Any, tmp_path: Path) -> None:
    frames, labels = digit_frames(assets, hold=4)
    first = video_file("left.mp4", frames, fps=15)
    second = video_file("right.webm", frames, fps=15)
    model, images = str(assets.model("digits_int8")), str(assets.digit_images)
    command = [*EDGE, "run", model, str(first), str(second), images, "--interpreters", "per-source", "--json",
               "--resize", "crop", "--profile", "none", "--threads", "2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 interpreters, one per source" in done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    for name in ("left", "right"):
        own = [r for r in records if r["source"] == name]
        assert [r["frame"] for r in own] == list(range(len(frames)))
        assert mostly_right(own, labels, hold=4) >= 0.9
    assert sum(r["source"] == "files" for r in records) == len(list(assets.digit_images.iterdir()))


def test_a_swap_reaches_every_interpreter_of_a_group(assets: Assets) -> None:
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.pipelines import PipelineGroup

    path = assets.model("digits_int8")
    pipelines = [Pipeline(load_model(path)) for _ in range(3)]
    group = PipelineGroup(pipelines, copy_model=lambda new: load_model(new.path))
    new = load_model(assets.digits_package)  # another model: a package with its own name and version
    group.swap_model(new)
    assert group.model is new
    members = [p.model for p in pipelines]
    assert len({id(m) for m in members}) == 3  # each its own interpreter
    assert all((m.name, m.version) == (new.name, new.version) for m in members)
    image = sorted(assets.digit_images.iterdir())[0]
    for pipeline in pipelines:
        assert pipeline.infer(image).ok
    assert group.stats()["count"] == 3  # one set of statistics for the group


def test_a_pushed_model_reaches_every_interpreter_of_a_per_source_run(
    assets: Assets, mjpeg_server: Any, mosquitto: Broker, runs: Any, tmp_path: Path
) -> None:
    from tests.cloud_sync.test_update_edge_run import push
    from tests.cloud_sync.update_support import make_keys
    from tests.edge.update_packages import make_package

    keys = make_keys(tmp_path / "keys")
    frames, _ = digit_frames(assets, hold=4)
    cameras = [mjpeg_server(frames, fps=10), mjpeg_server(frames, fps=10)]
    run = runs(cameras[0].url, cameras[1].url, "--source-name", "a", "--source-name", "b", "--interpreters",
               "per-source", "--resize", "crop", "--mqtt", mosquitto.url, "--device-id", "kitchen",
               "--state-dir", str(tmp_path / "state"), "--trust", str(keys.pub), "--health-seconds", "1",
               "--telemetry-interval", "0")
    push(mosquitto.url, keys.sign(make_package(assets.model("digits_int8"), 1)))
    assert {r["model"]["version"] for r in run.take(10)} == {1}
    push(mosquitto.url, keys.sign(make_package(assets.model("digits_float32"), 2)))
    latest: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while set(latest.values()) != {2} or len(latest) < 2:
        record = run.take(1, timeout=max(1.0, deadline - time.monotonic()))[0]
        assert record["error"] is None, record["error"]
        latest[record["source"]] = record["model"]["version"]
    assert "2 interpreters, one per source" in run.stderr
    assert run.stop() == 0


def test_two_sources_from_a_config_file_with_their_own_options(
    assets: Assets, video_file: Any, tmp_path: Path
) -> None:
    frames, labels = digit_frames(assets, hold=4)
    left = video_file("left.mp4", frames, fps=15)
    right = video_file("right.mkv", frames, fps=15)
    config = tmp_path / "cams.toml"
    config.write_text(f'''model.path = "{assets.model("digits_int8")}"
profile = "none"

[input]
fps = 100

[[source]]
name = "door"
input = "{left}"
resize = "crop"
top_k = 1

[[source]]
name = "yard"
input = "{right}"
resize = "crop"
threshold = 0.99
''')
    done = subprocess.run([*EDGE, "run", "--config", str(config), "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    door = [r for r in records if r["source"] == "door"]
    yard = [r for r in records if r["source"] == "yard"]
    assert len(door) == len(yard) == len(frames)
    assert all(len(r["classes"]) == 1 for r in door) and mostly_right(door, labels, hold=4) >= 0.9
    assert all(c["score"] >= 0.99 for r in yard for c in r["classes"])  # its own threshold
