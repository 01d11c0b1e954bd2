"""``edge run`` with no MODEL (real processes, real broker): it waits for a first pushed model, serves it, hot
swaps to the next one, and after a ``kill -9`` serves the store's active model again."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cloud_sync.update_support import make_keys, publishing
from tests.edge.update_packages import make_package

ROOT = Path(__file__).resolve().parents[2]


class EdgeRun:
    """``edge run --watch`` as a child process; stdout JSON lines collected by a thread."""

    def __init__(self, url: str, state: Path, inbox: Path, pub: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "edge",
            "run",
            "--mqtt",
            url,
            "--device-id",
            "kitchen",
            "--state-dir",
            str(state),
            "--trust",
            str(pub),
            "--watch",
            str(inbox),
            "--json",
            "--health-seconds",
            "2",
            "--telemetry-interval",
            "0",
        ]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.lines.put(json.loads(line))

    def result(self, timeout: float = 30.0) -> dict:
        return self.lines.get(timeout=timeout)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


def test_edge_run_waits_for_a_model_then_hot_swaps_and_restarts_from_the_store(mosquitto, tmp_path, assets):
    keys = make_keys(tmp_path / "keys")
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    image = sorted(assets.digit_images.glob("*.png"))[0]
    v1 = keys.sign(make_package(assets.model("digits_float32"), 1))
    v2 = keys.sign(make_package(assets.model("digits_int8"), 2))
    run = EdgeRun(mosquitto.url, state, inbox, keys.pub)
    try:
        for version, package in ((1, v1), (2, v2)):
            with publishing(mosquitto.url, package) as publisher:
                publisher.offer_devices(["kitchen"])
                assert publisher.wait(["kitchen"], time.monotonic() + 90), publisher.rollout.devices[
                    "kitchen"
                ]
            time.sleep(0.5)  # the first model: edge run loads it and starts watching
            shutil.copy(image, inbox / f"v{version}-{image.name}")
            record = run.result()
            assert record["model"] == {"name": "digits", "version": version} and record["error"] is None
    finally:
        run.kill()
    run = EdgeRun(mosquitto.url, state, inbox, keys.pub)
    try:
        time.sleep(2.0)
        shutil.copy(image, inbox / f"after-restart-{image.name}")
        record = run.result()
        assert record["model"]["version"] == 2 and record["error"] is None
    finally:
        run.kill()
