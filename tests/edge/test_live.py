"""Running sources side by side: names, masking, newest-frame slots, round-robin, --fps, the motion gate,
backoff and failure isolation, frames through the real pipeline, and [[source]] tables."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.config import check_config
from edge.errors import ConfigError, SourceError
from edge.model import load_model
from edge.motion import MotionGate, changed_percent
from edge.pipeline import Pipeline
from edge.sources import live
from edge.sources.base import (
    CONNECTING,
    DOWN,
    FINISHED,
    STREAMING,
    InputItem,
    SourceBoard,
    mask_in,
    mask_url,
    source_name_for,
)
from edge.sources.feeds import kind_of, name_sources
from edge.sources.live import Feed, FeedOptions, SourceContext, SourceMux, from_iterator, reconnecting
from edge.sources.picamera import ArrayFrame, picamera_feed


def run_mux(feeds: list[Feed], limit: int | None = None, board: SourceBoard | None = None) -> list[InputItem]:
    board = board or SourceBoard()
    mux = SourceMux(feeds, board, threading.Event())
    items: list[InputItem] = []
    try:
        for item in mux:
            items.append(item)
            if limit and len(items) >= limit:
                break
    finally:
        mux.close()
    return items


def listed(prefix: str, n: int) -> Feed:
    def items(stop: threading.Event) -> Iterator[InputItem]:
        return iter([InputItem(f"{prefix}{i}", b"x") for i in range(n)])

    return Feed(prefix, "files", prefix, from_iterator(items), latest=False)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@cam.local:554/Streaming/101", "rtsp://***@cam.local:554/Streaming/101"),
        ("http://cam/video.cgi?user=admin&password=hunter2&ch=1", "http://cam/video.cgi?user=***&password=***&ch=1"),
        ("rtsp://cam/stream", "rtsp://cam/stream"),
        ("/dev/video0", "/dev/video0"),
        ("rtsp://admin:hun/ter2#x@cam:554/s", "rtsp://***@cam:554/s"),  # raw / and # in the password
        ("rtsp://dvr/user=admin&password=hunter2&channel=1.sdp", "rtsp://dvr/user=***&password=***&channel=1.sdp"),
        ("rtsp://admin:hunter2@[fe80::1/x", "rtsp://***@[fe80::1/x"),  # not even a valid URL
    ],
)
def test_credentials_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    message = mask_in(f"cannot open {url}: Connection refused", url)
    assert "hunter2" not in message and "hun/ter2" not in message and masked in message
    assert "hunter2" not in source_name_for(url) and "admin" not in source_name_for(url)


def test_source_names_and_kinds() -> None:
    assert source_name_for("rtsp://u:p@door.local/live/main") == "door.local-main"
    assert source_name_for("/dev/video0") == "video0"
    assert source_name_for("/srv/clips/garden cam.mp4") == "garden-cam"
    assert source_name_for("picamera:1") == "picamera1"
    named = name_sources(["rtsp://a/x"] * 3 + ["/dev/video0"], ["front"])
    assert named == ["front", "a-x", "a-x-2", "video0"]
    with pytest.raises(ConfigError, match="--source-name given 2 times for 1"):
        name_sources(["rtsp://a/x"], ["a", "b"])
    with pytest.raises(ConfigError, match="source name 'a b'"):
        name_sources(["rtsp://a/x"], ["a b"])
    kinds = ["rtsp://c/s", "rtsps://c/s", "rtmp://c/s", "http://c/mjpeg", "/dev/video2", "picamera:0",
             "clip.MP4", "clip.webm", "photo.jpg", "photos/"]
    expected = ["stream"] * 4 + ["camera", "picamera", "video", "video", "files", "files"]
    assert [kind_of(k) for k in kinds] == expected


def test_round_robin_is_fair_between_lossless_sources() -> None:
    items = run_mux([listed("a", 4), listed("b", 4), listed("c", 2)])
    names = [i.name for i in items]
    assert sorted(names) == sorted([f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)] + ["c0", "c1"])
    # each source's own order holds, and no source waits while another gives two in a row
    for prefix in "abc":
        own = [n for n in names if n.startswith(prefix)]
        assert own == sorted(own)
    first_six = names[:6]
    assert {n[0] for n in first_six} == {"a", "b", "c"}
    assert [i.frame for i in items if i.source == "a"] == [0, 1, 2, 3]


def frames(seed: int, n: int, size: tuple[int, int] = (96, 64)) -> list[ArrayFrame]:
    rng = np.random.default_rng(seed)
    return [ArrayFrame(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def camera(name: str, pictures: list[Any], period: float, options: FeedOptions | None = None) -> Feed:
    """A live source handing over ``pictures`` every ``period`` seconds, then ending."""

    def produce(context: SourceContext) -> None:
        context.set_state(STREAMING)
        for picture in pictures:
            context.emit(InputItem("", picture))
            if context.wait(period):
                return

    return Feed(name, "camera", name, produce, latest=True, options=options)


def test_a_live_source_keeps_only_its_newest_frame_and_counts_the_rest() -> None:
    board = SourceBoard()
    mux = SourceMux([camera("cam", frames(1, 200), 0.002)], board, threading.Event())
    taken = []
    for item in mux:
        taken.append(item)
        time.sleep(0.03)  # a slow model: frames keep coming meanwhile
    mux.close()
    counts = board.snapshot()["cam"]
    assert counts["captured"] == 200
    assert counts["skipped"] > 100  # most frames were replaced by a newer one, never queued
    assert counts["inferred"] == len(taken) and counts["captured"] == counts["inferred"] + counts["skipped"]
    indices = [i.frame for i in taken]
    assert indices == sorted(set(indices))  # newest first-come: strictly increasing, gaps are skipped frames
    assert all(i.name == f"cam#{i.frame}" and i.captured_at is not None for i in taken)


def test_fps_caps_inferences_per_source() -> None:
    board = SourceBoard()
    capped = camera("capped", frames(2, 150), 0.005, FeedOptions(fps=4))
    free = camera("free", frames(3, 150), 0.005)
    items = run_mux([capped, free], board=board)
    per_source = {name: sum(1 for i in items if i.source == name) for name in ("capped", "free")}
    seconds = 150 * 0.005
    assert per_source["capped"] <= 4 * seconds + 2  # at most fps x duration (plus the first frame)
    assert per_source["free"] > 2 * per_source["capped"]


def test_the_motion_gate_skips_frames_that_did_not_change(assets: Any) -> None:
    photo = np.asarray(Image.open(assets.images["astronaut.jpg"]).convert("RGB").resize((160, 120)))
    moved = photo.copy()
    moved[20:80, 30:110] = 255 - moved[20:80, 30:110]  # something walked in
    still = [ArrayFrame(photo)] * 10 + [ArrayFrame(moved)] * 5 + [ArrayFrame(photo)]
    board = SourceBoard()
    items = run_mux([camera("room", still, 0.01, FeedOptions(motion=1.0))], board=board)
    counts = board.snapshot()["room"]
    # three frames are inferred: the first, the one that changed, the one that changed back
    assert len(items) == 3, [i.frame for i in items]
    assert counts["motion_skipped"] + counts["skipped"] + counts["inferred"] == counts["captured"] == 16
    assert counts["motion_skipped"] >= 10
    gate = MotionGate(5.0)
    assert gate.changed(ArrayFrame(photo)) and not gate.changed(ArrayFrame(photo))
    assert changed_percent(photo[:, :, 0], moved[:, :, 0]) > 20


def test_a_failing_source_is_reopened_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "BACKOFF_START_S", 0.05)
    monkeypatch.setattr(live, "BACKOFF_MAX_S", 0.2)
    attempts: list[float] = []

    def session(context: SourceContext) -> bool:
        attempts.append(time.monotonic())
        if len(attempts) == 6:
            context.set_state(STREAMING)
            context.emit(InputItem("", frames(4, 1)[0]))
            context.stop.set()
            return True
        raise SourceError("cannot open rtsp://***@cam/s: Connection refused")

    board = SourceBoard()
    states: list[tuple[str, str | None]] = []
    feed = Feed("cam", "stream", "rtsp://***@cam/s", reconnecting(session, retry=True), latest=True)
    mux = SourceMux([feed], board, threading.Event())
    board.subscribe(lambda s: states.append((s.state, s.reason)))
    list(mux)
    mux.close()
    downs = [reason for state, reason in states if state == DOWN]
    delays = [d.rsplit("retrying in ", 1)[1] for d in downs[:5]]
    assert delays == ["0.05 s", "0.1 s", "0.2 s", "0.2 s", "0.2 s"]
    assert all("Connection refused" in d for d in downs)
    gaps = np.diff(attempts)
    assert gaps[1] > gaps[0] * 1.5  # it backs off
    assert (CONNECTING, None) in states and board.snapshot()["cam"]["reconnects"] == 5


def test_the_backoff_starts_again_after_a_source_that_streamed_then_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "BACKOFF_START_S", 0.05)
    calls = 0

    def session(context: SourceContext) -> bool:
        nonlocal calls
        calls += 1
        if calls > 4:
            context.stop.set()
            return False
        context.set_state(STREAMING)
        context.emit(InputItem("", frames(5, 1)[0]))
        raise SourceError("camera dropped the connection")  # after it delivered a frame

    board = SourceBoard()
    states: list[str | None] = []
    mux = SourceMux([Feed("cam", "stream", "cam", reconnecting(session, retry=True), latest=True)], board,
                    threading.Event())
    board.subscribe(lambda s: states.append(s.reason) if s.state == DOWN else None)
    list(mux)
    mux.close()
    assert [r.rsplit("retrying in ", 1)[1] for r in states if r] == ["0.05 s"] * 4


def test_one_broken_source_does_not_stop_the_others() -> None:
    def broken(context: SourceContext) -> None:
        raise RuntimeError("driver crashed")

    board = SourceBoard()
    items = run_mux([Feed("bad", "camera", "bad", broken, latest=True), listed("good", 5)], board=board)
    good = [i for i in items if i.source == "good"]
    assert len(good) == 5
    bad = [i for i in items if i.source == "bad"]
    assert len(bad) == 1 and bad[0].error is not None and "driver crashed" in board.state("bad").reason
    assert board.state("bad").state == DOWN and board.state("good").state == FINISHED


def test_picamera_without_picamera2_is_one_line_naming_the_package() -> None:
    board = SourceBoard()
    items = run_mux([picamera_feed("pi", "picamera:0"), listed("files", 2)], board=board)
    errors = [i.error for i in items if i.error]
    assert len(errors) == 1 and "python3-picamera2" in errors[0] and "\n" not in errors[0]
    assert sum(1 for i in items if i.source == "files") == 2


def test_frames_go_through_the_pipeline_at_the_models_size_with_boxes_in_frame_pixels(assets: Any) -> None:
    """A frame scaled by its source gives the same detections, in full-frame pixels, as the file."""
    model = load_model(assets.model("ssd"), task="detection", mean=(0.0,), std=(255.0,))
    pipeline = Pipeline(model, threshold=0.3, resize="letterbox", overlap=False)
    picture = np.zeros((300, 400, 3), dtype=np.uint8)
    picture[150:300, 0:150, 1] = 255  # green, bottom-left quadrant of the letterboxed input
    path = Path(assets.images["astronaut.jpg"]).parent / "_green_test.png"
    Image.fromarray(picture).save(path)
    try:
        from_file = pipeline.infer(InputItem(str(path), path)).to_json()
    finally:
        path.unlink()
    item = InputItem("cam#7", ArrayFrame(picture), source="cam", frame=7, captured_at=time.time(),
                     captured_mono=time.perf_counter())
    record = pipeline.infer(item).to_json()
    assert record["error"] is None and record["image"] == {"width": 400, "height": 300}
    assert [o["label"] for o in record["objects"]] == [o["label"] for o in from_file["objects"]]
    for got, want in zip(record["objects"], from_file["objects"], strict=True):
        assert np.allclose(got["box"], want["box"], atol=4.0)
    assert (record["source"], record["frame"]) == ("cam", 7)
    assert record["captured_at"] == pytest.approx(time.time(), abs=5)
    assert record["timing_ms"]["capture_to_result"] >= record["timing_ms"]["invoke"]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text('model.path = "m.tflite"\n' + text)
    return path


def test_source_tables_are_checked_key_by_key(tmp_path: Path) -> None:
    good = write_config(tmp_path, """
[input]
fps = 5
motion = true
paths = ["rtsp://u:p@cam/s", "clips/"]

[[source]]
name = "door"
input = "http://cam2:81/stream"
fps = 2
threshold = 0.6

[[source]]
input = "garden.mp4"
realtime = true
""")
    config, errors = check_config(good)
    assert errors == [] and config is not None
    tables = config.values["source"]
    assert tables[0] == {"name": "door", "input": "http://cam2:81/stream", "fps": 2.0, "threshold": 0.6}
    assert tables[1]["input"] == str(tmp_path / "garden.mp4") and tables[1]["realtime"] is True
    assert config.values["input.paths"] == ["rtsp://u:p@cam/s", str(tmp_path / "clips")]
    assert config.values["input.motion"] == 1.0
    bad = write_config(tmp_path, """
[[source]]
input = "rtsp://cam/s"
fsp = 3

[[source]]
name = "x y"
""")
    _, errors = check_config(bad)
    assert any("unknown key 'source[1].fsp' (did you mean 'fps'?)" in e for e in errors), errors
    assert any(e.startswith("source[2].name is 'x y'") for e in errors), errors
    assert any("source[2] has no input" in e for e in errors), errors


def test_the_readme_two_camera_config_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "cams.toml"
    path.write_text(block)
    config, errors = check_config(path)
    assert errors == [] and config is not None
    assert [t["name"] for t in config.values["source"]] == ["driveway", "door"]


def test_basic_auth_goes_to_the_camera_only_never_to_where_it_redirects() -> None:
    import http.server

    from edge.sources.snapshot import fetch_snapshot

    seen: dict[str, str | None] = {}

    def server(handle: Any) -> http.server.ThreadingHTTPServer:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        made = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=made.serve_forever, daemon=True).start()
        return made

    def other(handler: Any) -> None:
        seen["other"] = handler.headers.get("Authorization")
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.end_headers()
        handler.wfile.write(b"\xff\xd8 not much of a jpeg")

    target = server(other)

    def camera(handler: Any) -> None:
        seen["camera"] = handler.headers.get("Authorization")
        handler.send_response(302)
        handler.send_header("Location", f"http://127.0.0.1:{target.server_address[1]}/snap.jpg")
        handler.end_headers()

    first = server(camera)
    try:
        item = fetch_snapshot(f"http://admin:hunter2@127.0.0.1:{first.server_address[1]}/snap.jpg", "snap")
    finally:
        first.shutdown()
        target.shutdown()
    assert item.error is None and seen["camera"] == "Basic YWRtaW46aHVudGVyMg=="
    assert seen["other"] is None


def test_a_snapshot_camera_answering_garbage_is_a_failed_fetch_and_down_not_a_crash() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def garbage() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"ICY 200 OK\r\n\r\nnot http")
            conn.close()

    threading.Thread(target=garbage, daemon=True).start()
    from edge.sources.feeds import SourcesSettings, build_feeds

    board = SourceBoard()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/snap.jpg"
    try:
        items = run_mux(build_feeds(SourcesSettings(url=url, interval=0.05)), limit=3, board=board)
    finally:
        listener.close()
    assert len(items) == 3 and all(i.error and "cannot fetch" in i.error for i in items)
    assert board.state("snapshot").state == DOWN  # a connectivity sensor that says so


def test_items_read_but_not_inferred_at_stop_are_named(caplog: pytest.LogCaptureFixture) -> None:
    board = SourceBoard()
    mux = SourceMux([listed("drop", 6)], board, threading.Event())
    taken = []
    for item in mux:
        taken.append(item)
        if len(taken) == 2:
            time.sleep(0.2)  # the source read ahead meanwhile
            break
    with caplog.at_level("WARNING"):
        mux.close()
    assert any("stopped before inferring" in r.message and "drop2" in r.message for r in caplog.records)


@pytest.mark.parametrize("flags", [["--fps", "nan"], ["--stall-timeout", "nan"], ["--fps", "0"]])
def test_not_a_number_is_refused_with_one_line(assets: Any, flags: list[str]) -> None:
    from tests.edge.helpers import edge_cli

    model = str(assets.model("digits_int8"))
    done = edge_cli("run", model, "rtsp://127.0.0.1:9/x", *flags, "--profile", "none")
    assert done.returncode == 2 and "error:" in done.stderr and flags[0] in done.stderr
    assert "Traceback" not in done.stderr


def test_the_frame_rate_falls_to_zero_when_a_camera_stops() -> None:
    from edge.stats import _fps

    finished = [i / 15 for i in range(30)]  # 15 inferences a second
    assert _fps(finished, finished[-1] + 0.05) == pytest.approx(15.0)
    assert _fps(finished, finished[-1] + 60) < 0.5  # telemetry must not show 15 fps for a dead camera
