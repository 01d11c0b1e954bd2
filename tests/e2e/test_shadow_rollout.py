"""Shadow-tested rollouts as a user runs them: ``edge run`` on a live RTSP stream of held-out digits
(GStreamer's server), real models from ``edge convert`` (tests/shadow_models.py), ``edge push-model --shadow``
over a real mosquitto. A retrained model is promoted with its figures; a model with two classes swapped is
rejected with its agreement and the old model keeps serving; the CPU budget holds; a device killed mid-shadow
resumes the stage; a canary that fails its shadow stage stops the rollout.
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

from PIL import Image

from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher
from tests.shadow_models import ShadowModels, shadow_models  # noqa: F401

pytest_plugins = ["tests.streams"]

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]
SIZE = (320, 240)


def digit_stream(assets: Assets, rtsp_server: Any, count: int = 40, hold: int = 4) -> Any:
    """A looping live stream of ``count`` held-out digits (every label), each held ``hold`` frames, 15 fps."""
    from tests.streams import frames_from_images

    paths = sorted(assets.digit_images.iterdir())[:count]
    images = [Image.open(p).convert("L").resize((64, 64), Image.NEAREST) for p in paths]
    assert {p.stem.split("_")[1] for p in paths} == {str(d) for d in range(10)}
    return rtsp_server(frames_from_images(images, SIZE, hold), fps=15)


class Device:
    """``edge run`` waiting for pushed models, on the stream; JSON results collected."""

    def __init__(self, url: str, stream: str, state: Path, pub: Path, log: Path, name: str = "pi",
                 health_seconds: float = 2, extra: tuple[str, ...] = ()) -> None:
        command = [*EDGE, "run", stream, "--source-name", "cam", "--resize", "crop", "--mqtt", url,
                   "--device-id", name, "--state-dir", str(state), "--trust", str(pub), "--json",
                   "--health-seconds", str(health_seconds), "--health-inferences", "100000",
                   "--telemetry-interval", "0", "--profile", "none", *extra]
        self.log = log
        with log.open("ab") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                         env=dict(os.environ))
        self.records: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.records.put(json.loads(line))

    def serving(self, timeout: float = 30) -> dict[str, Any]:
        """The model of the newest result."""
        deadline = time.monotonic() + timeout
        record = self.records.get(timeout=timeout)
        while not self.records.empty() and time.monotonic() < deadline:
            record = self.records.get_nowait()
        return record["model"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(60)


def push(url: str, package: Path, key: Path, *flags: str, wait: float = 180,
         devices: tuple[str, ...] = ("pi",)) -> dict[str, Any]:
    command = [*EDGE, "push-model", str(package), "--key", str(key), "--mqtt", url, "--device", *devices,
               "--wait", str(wait), "--json", *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=wait + 60)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"push-model printed no JSON:\n{done.stdout}\n{done.stderr}") from None
    report["exit"] = done.returncode
    return report


def keys(tmp_path: Path) -> tuple[Path, Path]:
    subprocess.run([*EDGE, "keygen", "--out", str(tmp_path / "keys")], cwd=ROOT, check=True,
                   capture_output=True)
    return tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"


def test_a_good_candidate_is_promoted_and_a_bad_one_rejected_on_live_inputs(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    device = Device(mosquitto.url, server.url, tmp_path / "state", pub, tmp_path / "device.log")
    try:
        first = push(mosquitto.url, shadow_models.active, key)
        assert first["ok"], first
        assert device.serving(60) == {"name": "digits", "version": 1}

        # two trainings of one CNN agree on ~95 % of the digits; the swapped one on ~60 %: 0.85 between them
        good = push(mosquitto.url, shadow_models.good, key, "--shadow", "80", "--min-agreement", "0.85")
        assert good["ok"] and good["exit"] == 0, good
        figures = good["devices"]["pi"]["shadow"]
        assert figures["passed"] and figures["samples"] >= 80 and figures["agreement"] >= 0.85, figures
        assert figures["failures"] == 0 and figures["latency_ratio"] is not None
        # the CPU budget held: the candidate's invoke time stayed near 0.25 of the active model's, so it
        # skipped inputs rather than run on all of them
        assert figures["budget_used"] <= 0.3 and figures["skipped"] > 0, figures
        assert device.serving() == {"name": "digits", "version": 2}

        bad = push(mosquitto.url, shadow_models.bad, key, "--shadow", "40", "--min-agreement", "0.85")
        assert not bad["ok"] and bad["exit"] == 1, bad
        detail, figures = bad["devices"]["pi"]["detail"], bad["devices"]["pi"]["shadow"]
        assert "shadow stage failed: agreement" in detail and not figures["passed"], bad
        assert 0.3 <= figures["agreement"] < 0.8, figures  # 1, 3, 7 and 8 are about 40 % of the digits
        time.sleep(0.5)
        assert device.serving() == {"name": "digits", "version": 2}  # the old model keeps serving
        watch = Watcher(mosquitto.url, "edge/pi/model/status", client_id="st")
        status = json.loads(watch.next("status").payload)
        watch.close()
        assert status["state"] == "rejected" and status["shadow"]["agreement"] == figures["agreement"]
        assert status["active"]["version"] == 2
    finally:
        device.stop()


def test_a_device_killed_mid_shadow_resumes_the_stage(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    state, log = tmp_path / "state", tmp_path / "device.log"
    device = Device(mosquitto.url, server.url, state, pub, log)
    watch = Watcher(mosquitto.url, "edge/pi/model/status", client_id="status")
    try:
        assert push(mosquitto.url, shadow_models.active, key)["ok"]
        pusher = subprocess.Popen(
            [*EDGE, "push-model", str(shadow_models.good), "--key", str(key), "--mqtt", mosquitto.url,
             "--device", "pi", "--shadow", "150", "--wait", "240", "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seen = 0
        while seen < 60:  # well into the stage
            status = json.loads(watch.next("status", timeout=120).payload)
            if status["state"] == "shadowing":
                seen = status["shadow"]["samples"]
        device.stop(signal.SIGKILL)
        device = Device(mosquitto.url, server.url, state, pub, log)
        resumed = None
        while resumed is None:
            status = json.loads(watch.next("status", timeout=120).payload)
            if status["state"] == "shadowing":
                resumed = status["shadow"]["samples"]
        assert resumed >= seen  # taken up where it was, not from zero
        out, err = pusher.communicate(timeout=300)
        report = json.loads(out)
        assert report["ok"], (out, err)
        assert report["devices"]["pi"]["shadow"]["samples"] >= 150
        assert device.serving() == {"name": "digits", "version": 2}
    finally:
        watch.close()
        device.stop()


def test_a_canary_that_fails_its_shadow_stage_stops_the_rollout(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    fleet = [Device(mosquitto.url, server.url, tmp_path / name, pub, tmp_path / f"{name}.log", name)
             for name in ("pi", "pi2")]
    watch = Watcher(mosquitto.url, "edge/pi2/model/status", client_id="pi2-status")
    try:
        assert push(mosquitto.url, shadow_models.active, key, devices=("pi", "pi2"))["ok"]
        report = push(mosquitto.url, shadow_models.bad, key, "--shadow", "40", "--canary", "1",
                      devices=("pi", "pi2"))
        assert not report["ok"] and "canary failed" in (report["aborted"] or ""), report
        assert "shadow stage failed" in report["devices"]["pi"]["detail"]
        seen = [json.loads(m.payload) for m in watch.drain()]
        assert seen and all(s.get("version") != 3 for s in seen), seen  # pi2 never heard of v3
        assert all(device.serving()["version"] == 1 for device in fleet)
    finally:
        watch.close()
        for device in fleet:
            device.stop()


def test_a_device_killed_inside_the_health_window_watches_the_model_again(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    state, log = tmp_path / "state", tmp_path / "device.log"
    device = Device(mosquitto.url, server.url, state, pub, log, health_seconds=600)
    watch = Watcher(mosquitto.url, "edge/pi/model/status", client_id="health")
    try:
        assert push(mosquitto.url, shadow_models.active, key)["ok"]  # a first model serves at once
        second = push(mosquitto.url, shadow_models.good, key, wait=15)
        assert second["exit"] == 1 and "health check running" in second["devices"]["pi"]["detail"], second
        status = json.loads(watch.next("status", timeout=30).payload)
        while not (status["state"] == "active" and status["version"] == 2):
            status = json.loads(watch.next("status", timeout=30).payload)
        assert status["healthy"] is None
        device.stop(signal.SIGKILL)
        device = Device(mosquitto.url, server.url, state, pub, log, health_seconds=2)
        while not (status["state"] == "active" and status["healthy"] is True):
            status = json.loads(watch.next("status", timeout=60).payload)  # the window ran again, and ended
        assert status["version"] == 2
    finally:
        watch.close()
        device.stop()


def test_a_device_s_own_shadow_policy_applies_to_offers_without_one(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    device = Device(mosquitto.url, server.url, tmp_path / "state", pub, tmp_path / "device.log",
                    extra=("--shadow", "30", "--shadow-min-agreement", "0.9"))
    try:
        assert push(mosquitto.url, shadow_models.active, key)["ok"]  # a first model: nothing to compare with
        bad = push(mosquitto.url, shadow_models.bad, key)  # the publisher asked for no shadow stage
        assert not bad["ok"] and "shadow stage failed: agreement" in bad["devices"]["pi"]["detail"], bad
        assert bad["devices"]["pi"]["shadow"]["policy"]["samples"] == 30
        assert device.serving() == {"name": "digits", "version": 1}
    finally:
        device.stop()


def test_an_offer_withdrawn_during_its_shadow_stage_goes_no_further(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, shadow_models: ShadowModels, tmp_path: Path  # noqa: F811
) -> None:
    key, pub = keys(tmp_path)
    server = digit_stream(assets, rtsp_server)
    device = Device(mosquitto.url, server.url, tmp_path / "state", pub, tmp_path / "device.log")
    watch = Watcher(mosquitto.url, "edge/pi/model/status", client_id="withdraw")
    try:
        assert push(mosquitto.url, shadow_models.active, key)["ok"]
        # a stage longer than --wait: the rollout times out and withdraws its offer mid-shadow
        timed_out = push(mosquitto.url, shadow_models.good, key, "--shadow", "100000", wait=8)
        assert timed_out["exit"] == 1 and "shadowing" in timed_out["devices"]["pi"]["detail"], timed_out
        status = json.loads(watch.next("status", timeout=30).payload)
        while not (status["state"] == "idle" and status["reason"] == "offer withdrawn"):
            status = json.loads(watch.next("status", timeout=30).payload)
        assert status["version"] == 2 and status["active"]["version"] == 1
        time.sleep(1)
        assert device.serving() == {"name": "digits", "version": 1}
    finally:
        watch.close()
        device.stop()
