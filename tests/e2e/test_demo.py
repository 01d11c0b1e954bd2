"""``make demo`` (``python -m demo``) as a user runs it: train, convert, sign, push over MQTT, infer on a live
camera, collect.

Every run is the real path: TensorFlow training and conversion, real mosquitto, the demo's MJPEG camera
(``demo.camera``, read over HTTP by FFmpeg inside ``edge run``), ``edge run``, ``edge push-model`` and
``edge collect`` as subprocesses. The summary's last line (``--json``) is checked, and so is the collector's
database against the digits the camera showed.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cloud_sync.connection import MqttConnection, parse_broker_url
from tests.broker import free_port

pytestmark = pytest.mark.tf
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = 450  # the test split of scikit-learn's 1797 digits (25%)


def run_demo(
    workdir: Path, *args: str, mqtt_url: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MQTT_URL"}
    if mqtt_url is not None:
        env["MQTT_URL"] = mqtt_url
    return subprocess.run(
        [sys.executable, "-m", "demo", str(workdir), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    return summary


def processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention ``folder`` (what the demo started and left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def stored_results(work: Path, device: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{work / 'results.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT payload FROM results WHERE device_id = ?", (device,)).fetchall()
    return [json.loads(payload) for (payload,) in rows]


def test_make_demo_classifies_a_live_camera_showing_the_held_out_digits_and_loses_nothing(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo-out"
    done = run_demo(work, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["ok"] is True
    hold = summary["hold"]
    assert hold >= 1 and summary["fps"] > 0
    assert summary["held_out"] == summary["answered"] == HELD_OUT
    assert summary["frames"] == summary["captured"] == HELD_OUT * hold  # the device decoded every frame
    # every frame was inferred or skipped for a newer one (live: never queued); every result reached the db
    assert summary["sent"] == summary["stored"] == summary["frames"] - summary["skipped"] > 0
    assert summary["lost"] == 0 and summary["gaps"] == 0 and summary["skipped"] >= 0
    assert summary["accuracy"] >= 0.95, summary
    assert summary["accuracy"] == pytest.approx(summary["correct"] / summary["stored"], abs=1e-4)
    assert summary["model"] == "digits" and summary["version"] == 1 and summary["mode"].startswith("int8")
    total, invoke = summary["latency_ms"]["total"], summary["latency_ms"]["invoke"]
    capture = summary["latency_ms"]["capture_to_result"]
    assert 0 < invoke["p50"] <= total["p50"] <= total["p95"]
    assert 0 < capture["p50"] <= capture["p95"]
    assert summary["broker"].startswith("mqtt://127.0.0.1:") and summary["device"] == "demo"
    assert summary["camera"].startswith("http://127.0.0.1:") and summary["camera"].endswith("/stream")
    # what the user reads: every step, the device on the camera's URL, the summary, the work folder
    for text in ("[1/9]", "edge convert", "edge keygen", "edge push-model", "[7/9]", "--shadow", "[9/9]",
                 "summary"):
        assert text in done.stdout
    assert f"{summary['camera']} --source-name camera --resize crop" in done.stdout
    assert f"frames skipped for a newer one: {summary['skipped']} (not lost)" in done.stdout
    assert str(work.resolve()) in done.stdout
    # the real artefacts are there: package, keys, the collector's database; no watch folder any more
    assert (work / "models" / "digits-v1.edgepkg").is_file() and (work / "keys" / "signing.pub").is_file()
    assert (work / "models" / "digits-v2.edgepkg").is_file()
    # the shadowed rollout: v2 ran beside v1 on the live frames, agreed, and took over between two frames
    shadow = summary["shadow"]
    assert shadow["passed"] and shadow["samples"] >= 10 and shadow["agreement"] >= 0.85, shadow
    assert shadow["budget_used"] <= 0.4 and shadow["converter"]["top1_agreement"] >= 0.98
    assert summary["promoted"] == 2 and summary["dashboard"].startswith("http://127.0.0.1:")
    assert not (work / "device" / "inbox").exists()
    device_log = (work / "logs" / "device.err").read_text()
    assert "edge run: source camera: streaming" in device_log
    # the accounting, redone from the collector's database and the held-out labels
    results = stored_results(work, "demo")
    assert len(results) == summary["stored"]
    frames = sorted(r["frame"] for r in results)
    assert len(set(frames)) == len(frames) and frames[0] >= 0 and frames[-1] == summary["frames"] - 1
    assert {r["source"] for r in results} == {"camera"}
    assert all(r["model"]["name"] == "digits" and r["error"] is None for r in results)
    by_frame = sorted((r["frame"], r["model"]["version"]) for r in results)
    versions = [version for _, version in by_frame]
    assert versions == sorted(versions) and set(versions) <= {1, 2} and versions[-1] == 2  # one switch
    assert summary["by_version"] == {str(v): versions.count(v) for v in set(versions)}
    assert all(r["captured_at"] > 0 and r["timing_ms"]["capture_to_result"] > 0 for r in results)
    labels = np.load(work / "assets" / "eval.npz")["y"]
    right = sum(r["classes"][0]["label"] == str(labels[r["frame"] // hold]) for r in results)
    assert right == summary["correct"]
    assert {f // hold for f in frames} == set(range(HELD_OUT))
    assert summary["frames"] - len(frames) == summary["skipped"]  # the frame gaps are the skipped frames
    assert processes_using(tmp_path) == []  # device, collector and broker stopped


def test_demo_uses_the_broker_in_mqtt_url(mosquitto: Any, tmp_path: Path) -> None:
    work = tmp_path / "out"
    done = run_demo(work, "--limit", "25", "--json", mqtt_url=mosquitto.url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["broker"] == mosquitto.url and summary["device"].startswith("demo-")
    assert summary["held_out"] == summary["answered"] == 25 and summary["lost"] == 0
    assert summary["frames"] == summary["captured"] == 25 * summary["hold"]
    assert summary["stored"] == summary["frames"] - summary["skipped"]
    assert not (work / "broker").exists()  # no local mosquitto was started
    # it leaves no retained messages for its device on a broker it does not own (status, model offer,
    # model status, the state of source camera)
    watcher = MqttConnection(parse_broker_url(mosquitto.url), "demo-test-watcher")
    retained: list[str] = []
    watcher.subscribe(
        f"edge/{summary['device']}/#", lambda m: retained.append(m.topic) if m.payload else None
    )
    watcher.start()
    time.sleep(1.0)
    watcher.close()
    assert retained == []
    assert processes_using(work) == []  # the test's own broker lives on in tmp_path


def test_demo_fails_in_one_line_and_stops_what_it_started_when_the_broker_is_unreachable(
    tmp_path: Path,
) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    done = run_demo(tmp_path / "out", "--limit", "5", mqtt_url=url)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("demo: failed: ") and "not reachable" in last and url in last, done.stderr
    assert processes_using(tmp_path) == []


def test_demo_refuses_a_bad_mqtt_url_and_a_folder_it_did_not_make(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "a", mqtt_url="http://broker", timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "demo: failed: broker URL 'http://broker' is not valid; "
        "use mqtt://[user:pass@]host[:port] or mqtts://host[:port]"
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    done = run_demo(foreign, timeout=60)
    assert done.returncode == 1 and "was not made by the demo" in done.stderr
    assert (foreign / "thesis.txt").read_text() == "keep me"


def digit_images(count: int) -> tuple[list[np.ndarray], list[int]]:
    """The first ``count`` of scikit-learn's digits as 0..255 pixels, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [image * (255.0 / 16.0) for image in digits.images[:count]], [
        int(t) for t in digits.target[:count]
    ]


def parts_of(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a ``multipart/x-mixed-replace`` body: their headers and their JPEG bytes."""
    parts = []
    for chunk in body.split(f"--{boundary}\r\n".encode())[1:]:
        head, _, rest = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers, rest[: int(headers["Content-Length"])]))
    return parts


def test_the_demo_camera_shows_each_digit_for_hold_frames_once_then_refuses() -> None:
    from demo.camera import BOUNDARY, DigitCamera

    images, _ = digit_images(3)
    camera = DigitCamera(images, fps=50, hold=2, size=80).start()
    try:
        assert camera.url == f"http://127.0.0.1:{camera.port}/stream" and camera.frames == 6
        # a connection made before show() gets its headers at once, then no frame until show()
        early = http.client.HTTPConnection("127.0.0.1", camera.port, timeout=10)
        early.request("GET", "/stream")
        response = early.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == f"multipart/x-mixed-replace;boundary={BOUNDARY}"
        time.sleep(0.3)
        assert not camera.shown.is_set() and not camera.finished.is_set()
        camera.show()
        parts = parts_of(response.read(), BOUNDARY)  # read() returns: the camera ended the stream
        early.close()
        assert camera.finished.is_set()
        assert [headers["X-Frame"] for headers, _ in parts] == [str(n) for n in range(6)]
        for n, (headers, jpeg) in enumerate(parts):
            assert headers["Content-Type"] == "image/jpeg"
            picture = Image.open(io.BytesIO(jpeg))
            assert picture.size == (80, 80)
            small = np.asarray(picture.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
            errors = [float(np.abs(small - image).mean()) for image in images]
            assert int(np.argmin(errors)) == n // 2 and errors[n // 2] < 8, errors  # frame n shows digit n//2
        # after the show: every request is refused at once (no frame is ever sent again)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(camera.url, timeout=5)
        assert refused.value.code == 503
        refused.value.close()
    finally:
        camera.close()


def test_the_demo_camera_never_holds_up_its_close() -> None:
    """A client waiting for the show and one reading it: close() ends both and returns at once."""
    from demo.camera import DigitCamera

    images, _ = digit_images(1)
    camera = DigitCamera(images, fps=10, hold=1000).start()  # a 100 s show
    clients = [http.client.HTTPConnection("127.0.0.1", camera.port, timeout=10) for _ in range(2)]
    for client in clients:
        client.request("GET", "/stream")
    responses = [client.getresponse() for client in clients]
    assert [r.status for r in responses] == [200, 200]
    camera.show()
    threading.Thread(target=responses[1].read, daemon=True).start()  # one reads, the other never does
    time.sleep(0.5)
    began = time.monotonic()
    camera.close()
    assert time.monotonic() - began < 3
    assert not camera.finished.is_set()
    with pytest.raises(OSError):
        urllib.request.urlopen(camera.url, timeout=2)  # no longer listening
    for client in clients:
        client.close()
