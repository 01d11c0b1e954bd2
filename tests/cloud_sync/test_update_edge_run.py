"""``edge run`` with no MODEL (real processes, real broker): it waits for a first pushed model, serves it, hot
swaps to the next one, after a ``kill -9`` serves the store's active model again, and its final summary names
the model serving at the end."""

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

    def __init__(self, url: str, state: Path, inbox: Path, pub: Path, log: Path) -> None:
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
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"{"):
                self.lines.put(json.loads(line))

    def result(self, timeout: float = 30.0) -> dict:
        return self.lines.get(timeout=timeout)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=60)
        if self.proc.stdout:
            self.proc.stdout.close()

    def summary(self) -> str:
        """Stop with SIGTERM (a clean shutdown) and return the final summary line from stderr."""
        self.kill(signal.SIGTERM)
        lines = [line for line in self.log.read_text().splitlines() if line.startswith("edge run: ")]
        assert lines and "input(s)" in lines[-1], self.log.read_text()
        return lines[-1]


def push(url: str, package: bytes) -> None:
    with publishing(url, package) as publisher:
        publisher.offer_devices(["kitchen"])
        assert publisher.wait(["kitchen"], time.monotonic() + 90), publisher.rollout.devices["kitchen"]


def test_edge_run_waits_for_a_model_then_hot_swaps_and_restarts_from_the_store(mosquitto, tmp_path, assets):
    keys = make_keys(tmp_path / "keys")
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    image = sorted(assets.digit_images.glob("*.png"))[0]
    v1 = keys.sign(make_package(assets.model("digits_float32"), 1))
    v2 = keys.sign(make_package(assets.model("digits_int8"), 2))
    v3 = keys.sign(make_package(assets.model("digits_float32"), 3))
    run = EdgeRun(mosquitto.url, state, inbox, keys.pub, tmp_path / "run1.log")
    try:
        for version, package in ((1, v1), (2, v2)):
            push(mosquitto.url, package)
            time.sleep(0.5)  # the first model: edge run loads it and starts watching
            shutil.copy(image, inbox / f"v{version}-{image.name}")
            record = run.result()
            assert record["model"] == {"name": "digits", "version": version} and record["error"] is None
    finally:
        run.kill()
    run = EdgeRun(mosquitto.url, state, inbox, keys.pub, tmp_path / "run2.log")
    try:
        time.sleep(2.0)
        shutil.copy(image, inbox / f"after-restart-{image.name}")
        record = run.result()
        assert record["model"]["version"] == 2 and record["error"] is None
        push(mosquitto.url, v3)  # hot swap in the restarted process, then a clean stop
        inputs = 1
        for attempt in range(20):  # the status 'active' goes out just before the swap itself
            shutil.copy(image, inbox / f"v3-{attempt}-{image.name}")
            record = run.result()
            inputs += 1
            assert record["error"] is None
            if record["model"]["version"] == 3:
                break
        assert record["model"] == {"name": "digits", "version": 3}
        summary = run.summary()
        # the run started on v2; the summary names the model serving at the end
        assert f"{inputs} input(s), 0 failed (stopped); digits v3 on " in summary, summary
    finally:
        run.kill()


def test_hot_swaps_keep_only_the_active_model_and_the_one_before(mosquitto, tmp_path, assets):
    # Each interpreter runs a thread of its own: from the first swap on the count stays where it is (the
    # soak saw one thread and ~1.3 MB more after the second push: the run kept its first model forever).
    keys = make_keys(tmp_path / "keys")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    image = sorted(assets.digit_images.glob("*.png"))[0]
    run = EdgeRun(mosquitto.url, tmp_path / "state", inbox, keys.pub, tmp_path / "run.log")

    def threads() -> int:  # the fewest of a few looks: a short-lived thread (a reconnect) does not count
        counts = []
        for _ in range(5):
            counts.append(len(os.listdir(f"/proc/{run.proc.pid}/task")))
            time.sleep(0.2)
        return min(counts)

    try:
        counts = []
        for version in range(1, 6):
            model = assets.model("digits_int8" if version % 2 else "digits_float32")
            push(mosquitto.url, keys.sign(make_package(model, version)))
            time.sleep(0.5)
            shutil.copy(image, inbox / f"v{version}-{image.name}")
            assert run.result()["model"]["version"] == version
            time.sleep(2.0)  # past the health window: the swap is settled
            counts.append(threads())
        assert len(set(counts[1:])) == 1, counts  # from v2 on: the active model and the one before it
    finally:
        run.kill()
