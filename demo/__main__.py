"""``python -m demo`` (``make demo``): the whole system in one command, through the real ``edge`` CLIs.

 1. train a small CNN on scikit-learn's bundled digits (the "cloud"; ``converter.digits``), and the same
    CNN again with another seed (the next version, for the rollout),
 2. ``edge convert --mode int8 --min-agreement 0.98``: validated, quantized model packages v1 and v2,
 3. ``edge keygen``: an Ed25519 key pair; ``edge push-model`` signs with it, the device trusts signing.pub,
 4. a local mosquitto on a free port (``cloud_sync.local_broker``), or the broker in ``$MQTT_URL``,
 5. ``edge collect --db results.sqlite --http 127.0.0.1:PORT`` (the cloud-side collector and its live fleet
    dashboard, URL printed); a live MJPEG camera on 127.0.0.1 (``demo.camera``, like an ESP32-CAM) showing
    the held-out digits (the test split, never trained on); ``edge run`` with an empty model store,
    ``--trust``, ``--mqtt`` and the camera's ``/stream`` URL (``--source-name camera --resize crop``): a
    device waiting for its first model (it opens its sources only once it serves one),
 6. ``edge push-model --wait``: v1 goes over MQTT; the device verifies, validates and activates it,
 7. the camera starts its show: each digit held for ``HOLD`` frames at ``FPS``, so frame ``n`` shows digit
    ``n // HOLD``; after the last frame the stream ends and the camera answers 503 from then on, so the
    device's result for the last frame is its last result,
 8. meanwhile ``edge push-model --shadow 100``: v2 runs beside v1 on the camera's live frames (within its CPU
    budget) and is promoted only once it agrees with v1 on them (its figures beside the converter's own),
 9. the device stopped (SIGTERM) once every result reached the collector; the results read back from the
    collector's database: accuracy of each result against the digit its ``frame`` showed, latency p50/p95
    from ``timing_ms``, capture-to-result p50/p95, results sent, stored and lost, per model version, and the
    frames the device skipped for a newer one (live semantics: skipped, never queued; not lost).

Everything it started is stopped at the end, on failure and on Ctrl-C. Exit 0 only when every step worked,
nothing was lost, every digit shown got a result and v2 passed its shadow stage; otherwise 1 with a one-line
reason. ``--json`` adds the summary as a last JSON line."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.camera import DigitCamera
from demo.processes import EDGE, DemoError, Service, display, run_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_WORKDIR = Path("demo-out")
MARKER = ".edge-demo"
MIN_AGREEMENT = "0.98"
PUSH_WAIT_S = 60
SOURCE = "camera"  # the device's name for the camera (--source-name): in every result and MQTT topic
FPS = 60.0  # the camera's frame rate...
HOLD = 3  # ...and the frames each digit stays on: 450 digits in 22.5 s, each on screen for 50 ms
FRAME_SIZE = 240  # the camera's picture: each 8x8 digit scaled up 30 times, NEAREST
COUNTERS = re.compile(
    rf"^edge run: source {SOURCE}: (?P<captured>\d+) frame\(s\) captured, (?P<inferred>\d+) inferred, "
    r"(?P<skipped>\d+) skipped for a newer one, (?P<motion_skipped>\d+) without motion, "
    r"(?P<reconnects>\d+) reconnect\(s\), (?P<errors>\d+) error\(s\); (?P<state>\S+)$"
)
STEPS = 9
SHADOW_SAMPLES = 100  # the retrained model's shadow stage: live inputs it must agree on before it serves
SHADOW_AGREEMENT = 0.85  # two trainings of one CNN, both ~97 % right, agree on ~95 % of the frames...
SHORT_SHOW_AGREEMENT = 0.7  # ...which 10 samples of a short show (--limit) measure to within +-0.15


@dataclass
class Summary:
    """What the demo measured; ``to_json()`` is the machine-readable last line of ``--json``."""

    model: str = ""
    version: int = 0
    mode: str = ""
    device: str = ""
    broker: str = ""
    camera: str = ""  # the camera's /stream URL
    fps: float = 0.0
    hold: int = 0  # frames each digit is shown
    held_out: int = 0  # digits the camera showed
    frames: int = 0  # frames the camera sent (held_out * hold)
    captured: int = 0  # frames the device decoded (its counter for the source)
    skipped: int = 0  # frames the device skipped for a newer one (its counter; never queued, not lost)
    answered: int = 0  # digits with at least one stored result
    correct: int = 0  # stored results naming the digit their frame showed
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    sent: int = 0  # results the device numbered in its outbox
    stored: int = 0  # results in the collector's database
    duplicates: int = 0
    gaps: int = 0
    wall_s: float = 0.0
    workdir: str = ""
    dashboard: str = ""  # the collector's dashboard URL
    shadow: dict[str, Any] = field(default_factory=dict)  # the retrained model's shadow figures
    promoted: int = 0  # the version serving at the end (the retrained one once it passed its shadow stage)
    by_version: dict[str, int] = field(default_factory=dict)  # stored results per model version

    @property
    def accuracy(self) -> float:
        return self.correct / self.stored if self.stored else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data.update(accuracy=round(self.accuracy, 4), lost=self.lost, ok=self.ok())
        return data

    def ok(self) -> bool:
        promoted = self.promoted == self.version + 1 and bool(self.shadow.get("passed"))
        return self.lost == 0 and self.gaps == 0 and self.answered == self.held_out > 0 and promoted

    def render(self) -> str:
        total, invoke = self.latency_ms.get("total", {}), self.latency_ms.get("invoke", {})
        converter = self.shadow.get("converter") or {}
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.by_version.items()))
        verdict = f"promoted: v{self.promoted} serves" if self.promoted > self.version else "not promoted"
        capture = self.latency_ms.get("capture_to_result", {})
        return "\n".join(
            [
                "summary",
                "-------",
                f"model        {self.model} v{self.version} ({self.mode}), pushed over MQTT to device "
                f"{self.device} via {self.broker}",
                f"rollout      v{self.version + 1} (retrained, seed 1) shadowed v{self.version} on "
                f"{self.shadow.get('samples', 0)} live frames: agreement {self.shadow.get('agreement')} "
                f"(the converter's own {converter.get('top1_agreement')}), latency "
                f"{self.shadow.get('latency_ratio')}x, CPU {self.shadow.get('budget_used')} of "
                f"v{self.version}'s; {verdict}",
                f"by version   {versions or 'none'} results stored",
                f"dashboard    {self.dashboard or 'off'} (the collector's fleet view and /metrics; "
                "it stops with the demo)",
                f"camera       {self.camera}: MJPEG, {self.held_out} held-out digits x {self.hold} frames "
                f"= {self.frames} frames at {self.fps:g} fps",
                f"accuracy     {self.accuracy:.2%} of {self.stored} results name the digit their frame "
                f"showed ({self.correct} correct); {self.answered} of {self.held_out} digits answered",
                f"latency      p50 {total.get('p50', 0):.2f} ms, p95 {total.get('p95', 0):.2f} ms per frame "
                f"(decode to result; invoke alone p50 {invoke.get('p50', 0):.2f} ms, "
                f"p95 {invoke.get('p95', 0):.2f} ms)",
                f"capture      p50 {capture.get('p50', 0):.2f} ms, p95 {capture.get('p95', 0):.2f} ms "
                "from the frame decoded on the device to its result",
                f"results      {self.sent} sent, {self.stored} stored, {self.lost} lost, "
                f"{self.duplicates} duplicate(s) dropped by the collector, {self.gaps} seq gap(s)",
                f"frames       {self.frames} sent by the camera, {self.captured} captured by the device, "
                f"{self.sent} inferred; frames skipped for a newer one: {self.skipped} (not lost)",
                f"wall time    {self.wall_s:.1f} s",
                f"work folder  {self.workdir}",
            ]
        )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def note(text: str) -> None:
    print(f"      {text}", flush=True)


def percentile_summary(values: list[float]) -> dict[str, float]:
    from edge.stats import percentiles

    stats = percentiles(values)
    return {"p50": round(stats["p50"], 3), "p95": round(stats["p95"], 3)}


class Demo:
    """The run: its work folder, the processes and the camera it started, and the results it read back."""

    def __init__(self, workdir: Path, limit: int | None) -> None:
        self.workdir = workdir
        self.limit = limit
        self.logs = workdir / "logs"
        self.token = secrets.token_hex(3)
        self.broker: Any = None
        self.url = ""
        self.device_id = ""
        self.camera: DigitCamera | None = None
        self.labels: list[str] = []  # the label of each digit the camera shows, in order
        self.device: Service | None = None
        self.collector: Service | None = None
        self.shadow_push: Service | None = None
        self.printed = 0  # result records the device printed
        self.last_frame = -1  # the highest camera frame the device printed a result for
        self.summary = Summary(workdir=str(workdir.resolve()))
        self.started = time.monotonic()

    # ----------------------------------------------------------------------------------- steps

    def run(self) -> Summary:
        self.prepare()
        assets, x_test, y_test = self.train()
        package = self.convert(assets)
        retrained = self.convert(assets, retrained=True)
        keys = self.keygen()
        self.start_broker()
        self.start_collector()
        self.start_camera(x_test, y_test)
        self.start_device(keys / "signing.pub")
        self.push(package, keys / "signing.key")
        self.stream(lambda: self.start_shadowed_push(retrained, keys / "signing.key"))
        self.finish_shadowed_push()
        self.wait_collected()
        self.finish()
        self.summary.wall_s = round(time.monotonic() - self.started, 1)
        return self.summary

    def prepare(self) -> None:
        from cloud_sync.connection import parse_broker_url

        external = os.environ.get("MQTT_URL", "").strip()
        if external:
            parse_broker_url(external)  # a bad URL fails now, in one line, not after the training
        work = self.workdir
        if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
            raise DemoError(f"{work} is not empty and was not made by the demo; pass another work folder")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / MARKER).write_text("made by python -m demo; removed and rebuilt on each run\n")

    def train(self) -> tuple[dict[str, Path], Any, Any]:
        """Train and save the model; returns the assets and the held-out digits (pixels, labels)."""
        import numpy as np

        from converter.digits import load_digits_pixels, save_digits_assets
        from converter.tf_import import import_tensorflow_quietly

        data = load_digits_pixels()
        step(
            1,
            f"training a small CNN on scikit-learn's bundled digits ({len(data.x_train)} for training, "
            f"{len(data.x_test)} held out)",
        )
        began = time.monotonic()
        import_tensorflow_quietly()
        assets = save_digits_assets(self.workdir / "assets", data)
        from converter.digits import train_digits_model

        assets["retrained"] = assets["model"].with_name("digits_seed1.keras")
        train_digits_model(data, seed=1).save(assets["retrained"])  # the next version: the same CNN, seed 1
        note(f"{assets['model']} and, for the rollout, {assets['retrained'].name} (seed 1) in "
             f"{time.monotonic() - began:.1f} s")
        held_out = np.load(assets["eval"])
        x_test, y_test = held_out["x"], held_out["y"]
        if self.limit is not None:
            x_test, y_test = x_test[: self.limit], y_test[: self.limit]
        return assets, x_test, y_test

    def convert(self, assets: dict[str, Path], retrained: bool = False) -> Path:
        models = self.workdir / "models"
        models.mkdir(exist_ok=True)
        source = assets["retrained" if retrained else "model"]
        argv = [
            *EDGE,
            "convert",
            str(source),
            "-o",
            f"{models}/",
            "--version",
            "2" if retrained else "1",
            "--mode",
            "int8",
            "--calib",
            str(assets["calib"]),
            "--eval",
            str(assets["eval"]),
            "--labels",
            str(assets["labels"]),
            "--name",
            "digits",
            "--min-agreement",
            MIN_AGREEMENT,
            "--json",
        ]
        if retrained:
            note(" ".join(display(argv[:-1])))
        else:
            step(2, " ".join(display(argv[:-1])))
        began = time.monotonic()
        done = run_command("convert-v2" if retrained else "convert", argv, self.logs, timeout=300)
        try:
            result = json.loads("\n".join(done.lines["out"]))
        except ValueError as exc:
            raise DemoError(
                f"edge convert --json printed no JSON ({exc}); see {self.logs}/convert.out"
            ) from exc
        report = result["report"]
        if not retrained:
            self.summary.model, self.summary.version = result["name"], result["version"]
            self.summary.mode = f"{report['mode']}, {report['io_type']} I/O"
        accuracy = report.get("accuracy_converted")
        note(
            f"{result['output']}: {report['output_size_bytes']:,} B "
            f"({report['output_ratio']:.2f} of float32), "
            f"top-1 agreement with the Keras model {report['top1_agreement']:.2%}"
            + (f", accuracy {accuracy:.2%} in the converter's check" if accuracy is not None else "")
            + f" ({time.monotonic() - began:.1f} s)"
        )
        return Path(result["output"])

    def keygen(self) -> Path:
        keys = self.workdir / "keys"
        argv = [*EDGE, "keygen", "--out", str(keys)]
        step(3, " ".join(display(argv)))
        run_command("keygen", argv, self.logs, timeout=60)
        note(f"{keys / 'signing.key'} signs the package; the device trusts {keys / 'signing.pub'}")
        return keys

    def start_broker(self) -> None:
        from cloud_sync.local_broker import LocalBroker

        external = os.environ.get("MQTT_URL", "").strip()
        if external:
            self.url, self.device_id = external, f"demo-{self.token}"  # a shared broker: our own topics
            step(4, f"broker from MQTT_URL: {external}")
        else:
            self.broker = LocalBroker(self.workdir / "broker").start()
            self.url, self.device_id = self.broker.url, "demo"
            step(
                4,
                f"mosquitto on {self.url} (config and log in {self.workdir / 'broker'}; "
                "set MQTT_URL to use your own broker)",
            )
        self.summary.broker, self.summary.device = self.url, self.device_id

    def start_collector(self) -> None:
        db = self.workdir / "results.sqlite"
        argv = [
            *EDGE,
            "collect",
            "--mqtt",
            self.url,
            "--db",
            str(db),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--client-id",
            f"demo-collect-{self.token}",
        ]
        step(5, " ".join(display(argv[:-2])))
        self.collector = Service("collect", argv, self.logs).start()
        collector = self.collector
        collector.wait_for(
            lambda: any("dashboard and /metrics on " in line for line in collector.lines["err"]),
            60,
            "it subscribed and served its dashboard",
        )
        for line in collector.lines["err"]:
            if "dashboard and /metrics on " in line:
                self.summary.dashboard = line.rsplit(" on ", 1)[1].strip()
        note(f"fleet dashboard: {self.summary.dashboard} (live; open it in a browser while the demo runs)")

    def start_camera(self, x_test: Any, y_test: Any) -> None:
        self.labels = [str(int(label)) for label in y_test]
        self.camera = DigitCamera(list(x_test), fps=FPS, hold=HOLD, size=FRAME_SIZE).start()
        camera = self.camera
        self.summary.camera, self.summary.fps, self.summary.hold = camera.url, camera.fps, camera.hold
        self.summary.held_out, self.summary.frames = len(self.labels), camera.frames
        note(
            f"camera {camera.url}: MJPEG (multipart/x-mixed-replace), {FRAME_SIZE}x{FRAME_SIZE} at "
            f"{camera.fps:g} fps, {len(self.labels)} held-out digits x {camera.hold} frames; "
            "it shows them once the device serves the model"
        )

    def start_device(self, public_key: Path) -> None:
        assert self.camera is not None
        state = self.workdir / "device" / "state"
        argv = [
            *EDGE,
            "run",
            "--state-dir",
            str(state),
            "--trust",
            str(public_key),
            "--mqtt",
            self.url,
            "--device-id",
            self.device_id,
            self.camera.url,
            "--source-name",
            SOURCE,
            "--resize",
            "crop",
            "--json",
            "--telemetry-interval",
            "5",
        ]
        note(" ".join(display(argv)))
        self.device = Service("device", argv, self.logs, on_line=self._device_line).start()
        device = self.device
        device.wait_for(
            lambda: any("waiting for a model" in line for line in device.lines["out"]),
            60,
            "it waited for a model",
        )
        note(
            f"device {self.device_id}: empty model store in {state}; "
            f"it opens source {SOURCE} once it serves a model"
        )

    def _device_line(self, stream: str, line: str) -> None:
        if stream != "out" or not line.startswith("{"):
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict) or "input" not in record:
            return
        self.printed += 1
        frame = record.get("frame")
        if record.get("source") == SOURCE and isinstance(frame, int):
            self.last_frame = max(self.last_frame, frame)

    def push(self, package: Path, key: Path) -> None:
        argv = [*EDGE, "push-model", str(package), "--key", str(key), "--mqtt", self.url]
        argv += ["--device", self.device_id, "--wait", str(PUSH_WAIT_S), "--json"]
        step(6, " ".join(display(argv[:-1])))
        code, outcome, push = self._wait_push(self._start_push("push-model", argv))
        if code != 0:
            detail = str(outcome.get("detail") or push.last_error())
            raise DemoError(f"edge push-model failed (exit {code}): {detail}")

    def _start_push(self, name: str, argv: list[str]) -> Service:
        """``edge push-model`` in the background, its progress lines shown as they come."""
        def show(stream: str, line: str) -> None:
            if stream == "err" and line.strip():
                note(line.strip())

        return Service(name, argv, self.logs, on_line=show).start()

    def _wait_push(self, push: Service) -> tuple[int, dict[str, Any], Service]:
        """Its exit code and this device's entry of its ``--json`` report ({} when there is none)."""
        try:
            code = push.wait_exit(PUSH_WAIT_S + 60)
        finally:
            push.stop(grace=5)
        try:
            outcome = json.loads("\n".join(push.lines["out"]))["devices"][self.device_id]
        except (ValueError, KeyError, TypeError):
            outcome = {}
        return code, outcome, push

    def start_shadowed_push(self, package: Path, key: Path) -> None:
        """Push the retrained v2 while the camera plays: each device runs it beside v1 on the live frames
        and promotes it only if it agrees (``--shadow``)."""
        samples = self.shadow_samples()
        agreement = SHADOW_AGREEMENT if samples >= 50 else SHORT_SHOW_AGREEMENT
        argv = [*EDGE, "push-model", str(package), "--key", str(key), "--mqtt", self.url, "--device",
                self.device_id, "--shadow", str(samples), "--min-agreement", str(agreement),
                "--wait", str(PUSH_WAIT_S), "--json"]
        step(8, " ".join(display(argv[:-1])) + "  (while the camera plays)")
        self.shadow_push = self._start_push("push-model-v2", argv)

    def shadow_samples(self) -> int:
        """Samples the show can give the shadow within its budget (a quarter of the frames at most), so a
        short show (``--limit``) still ends the stage: an eighth of the frames, 10 to 100."""
        assert self.camera is not None
        return max(10, min(SHADOW_SAMPLES, self.camera.frames // 8))

    def finish_shadowed_push(self) -> None:
        push = self.shadow_push
        assert push is not None
        code, outcome, push = self._wait_push(push)
        self.summary.shadow = dict(outcome.get("shadow") or {})
        if code != 0:
            detail = str(outcome.get("detail") or push.last_error())
            raise DemoError(f"the shadowed rollout of v2 failed (exit {code}): {detail}")
        figures = self.summary.shadow
        self.summary.promoted = self.summary.version + 1
        note(f"v2 promoted after {figures.get('samples')} live frames beside v1: agreement "
             f"{figures.get('agreement')}, latency {figures.get('latency_ratio')}x, "
             f"{figures.get('skipped')} frames left to v1 alone (the shadow's CPU budget)")

    def stream(self, during: Any = None) -> None:
        """Start the camera's show (and ``during()`` then); wait for the device's result for its last frame
        (always inferred: a live source keeps its newest frame, and no frame ever comes after it)."""
        assert self.camera is not None and self.device is not None
        camera, device = self.camera, self.device
        step(
            7,
            f"the camera shows the {len(self.labels)} held-out digits: {camera.frames} frames at "
            f"{camera.fps:g} fps ({camera.seconds:.1f} s), read live by the device from {camera.url}",
        )
        camera.show()
        if during is not None:
            during()
        last = camera.frames - 1
        try:
            device.wait_for(
                lambda: self.last_frame >= last,
                camera.seconds + 30,
                f"the device's result for the camera's last frame ({last})",
            )
        except DemoError as exc:
            states = [line for line in device.lines["err"] if line.startswith(f"edge run: source {SOURCE}: ")]
            seen = f"; its last result was for frame {self.last_frame}" if self.last_frame >= 0 else ""
            raise DemoError(
                f"{exc}{seen}; {states[-1] if states else 'it never opened the camera'}"
            ) from None
        # the camera marks its show finished just after writing the last frame: the device may answer first
        if not camera.wait_finished(5) or self.last_frame > last:
            raise DemoError(
                f"the device's frame numbers ran past the camera's show (frame {self.last_frame} of "
                f"{camera.frames}): its connection to the camera dropped mid-stream "
                f"(see {self.logs}/device.err)"
            )
        note(
            f"the stream ended after {camera.finished_at - camera.shown_at:.1f} s; the device printed "
            f"{self.printed} results, the last for frame {last}"
        )

    def wait_collected(self) -> None:
        began = time.monotonic()
        deadline = began + 60
        while (stored := self.stored_count()) < self.printed:
            if self.collector is None or not self.collector.running:
                raise DemoError(
                    f"edge collect stopped: {self.collector.last_error() if self.collector else ''}"
                )
            if time.monotonic() > deadline:
                note(f"only {stored} of {self.printed} results reached the collector within 60 s")
                return
            time.sleep(0.1)
        note(f"the collector stored all {stored} results in {time.monotonic() - began:.1f} s")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.workdir / 'results.sqlite'}?mode=ro", uri=True, timeout=10)

    def stored_count(self) -> int:
        try:
            with self._db() as db:
                row = db.execute(
                    "SELECT count(*) FROM results WHERE device_id = ?", (self.device_id,)
                ).fetchone()
        except sqlite3.Error:
            return 0  # not created yet
        return int(row[0])

    def finish(self) -> None:
        step(
            9, "stopping the device and the collector; reading the results back from the collector's database"
        )
        assert self.device is not None and self.collector is not None
        code = self.device.stop()
        if code != 0:
            raise DemoError(f"edge run exited with status {code}: {self.device.last_error()}")
        for line in self.device.lines["err"]:
            if line.startswith("edge run: ") and (" input(s), " in line or COUNTERS.match(line)):
                note(line)
        self.read_counters()
        outbox = run_command(
            "outbox",
            [*EDGE, "outbox", "--state-dir", str(self.workdir / "device" / "state"), "--json"],
            self.logs,
            timeout=60,
        )
        pending = json.loads("\n".join(outbox.lines["out"]))
        self.summary.sent = int(pending["last_seq"])
        if pending["pending"]:
            note(f"{pending['pending']} message(s) still in the device's outbox (sent on its next start)")
        if self.summary.sent != self.printed:
            raise DemoError(
                f"the device printed {self.printed} results but its outbox numbered {self.summary.sent}"
            )
        self.collector.stop()
        try:
            report = json.loads("\n".join(self.collector.lines["out"]))
        except ValueError as exc:
            raise DemoError(f"edge collect printed no report ({exc}); see {self.logs}/collect.out") from exc
        streams = report.get("devices", {}).get(self.device_id, {})
        self.summary.duplicates = int(report.get("duplicates", 0))
        self.summary.gaps = sum(len(s["missing"]) for s in streams.values())
        self.read_results()
        if self.summary.stored != sum(int(s["stored"]) for s in streams.values()):
            raise DemoError("the collector's report and its database disagree on the results stored")
        if self.broker is None:
            self.forget_retained()
        self.stop_broker()

    def read_counters(self) -> None:
        """The device's own counters for the camera (its end-of-run summary), checked against the show."""
        assert self.device is not None
        found = [m for m in map(COUNTERS.match, self.device.lines["err"]) if m]
        if not found:
            raise DemoError(f"edge run printed no counters for source {SOURCE} (see {self.logs}/device.err)")
        counters = {k: int(v) for k, v in found[-1].groupdict().items() if k != "state"}
        self.summary.captured, self.summary.skipped = counters["captured"], counters["skipped"]
        frames = self.summary.frames
        if counters["captured"] != frames:
            raise DemoError(
                f"the device captured {counters['captured']} of the camera's {frames} frames, so its frame "
                "numbers no longer tell which digit a result saw"
            )
        if counters["inferred"] + counters["skipped"] + counters["motion_skipped"] != frames:
            raise DemoError(
                f"the device's counters do not add up: {counters['inferred']} inferred + "
                f"{counters['skipped']} skipped + {counters['motion_skipped']} without motion for {frames} "
                "frames captured"
            )
        if counters["inferred"] != self.printed:
            raise DemoError(
                f"the device counted {counters['inferred']} frames inferred but printed "
                f"{self.printed} results"
            )

    def read_results(self) -> None:
        with self._db() as db:
            rows = db.execute("SELECT payload FROM results WHERE device_id = ?", (self.device_id,)).fetchall()
        self.summary.stored = len(rows)
        frames: set[int] = set()
        totals: list[float] = []
        invokes: list[float] = []
        captures: list[float] = []
        for (payload,) in rows:
            result = json.loads(payload)
            frame = result.get("frame")
            shown = isinstance(frame, int) and 0 <= frame < self.summary.frames
            if result.get("source") != SOURCE or not shown:
                raise DemoError(
                    f"the collector stored a result of source {result.get('source')!r}, frame {frame!r}: "
                    f"not one of the camera's {self.summary.frames} frames"
                )
            version = (result.get("model") or {}).get("version")
            if version not in (self.summary.version, self.summary.version + 1):
                raise DemoError(
                    f"the result for frame {frame} names {result.get('model')}, not a model pushed"
                )
            self.summary.by_version[str(version)] = self.summary.by_version.get(str(version), 0) + 1
            frames.add(frame)
            classes = result.get("classes") or []
            label = self.labels[frame // self.summary.hold]  # the digit the frame showed
            self.summary.correct += bool(classes) and classes[0]["label"] == label
            timing = result.get("timing_ms") or {}
            if result.get("error") is None and "total" in timing:
                totals.append(float(timing["total"]))
                invokes.append(float(timing["invoke"]))
            if "capture_to_result" in timing:
                captures.append(float(timing["capture_to_result"]))
        self.summary.answered = len({frame // self.summary.hold for frame in frames})
        left_out = self.summary.frames - len(frames)  # the frame gaps of the stored results
        if self.summary.lost == 0 and left_out != self.summary.skipped:
            raise DemoError(
                f"the device counted {self.summary.skipped} frames skipped for a newer one, but its stored "
                f"results leave {left_out} of the camera's frames out"
            )
        self.summary.latency_ms = {
            "total": percentile_summary(totals),
            "invoke": percentile_summary(invokes),
            "capture_to_result": percentile_summary(captures),
        }

    # -------------------------------------------------------------------------------- clean-up

    def forget_retained(self) -> None:
        """On a broker the demo does not own (``MQTT_URL``), clear the retained messages its device and
        ``edge push-model`` left under ``edge/<device>/`` (status, model offer, model status)."""
        from cloud_sync.connection import MqttConnection, parse_broker_url, unique_client_id

        topics: set[str] = set()

        def seen(message: Any) -> None:
            if message.retain and message.payload:
                topics.add(message.topic)

        connection = MqttConnection(parse_broker_url(self.url), unique_client_id("demo-clean"))
        connection.subscribe(f"edge/{self.device_id}/#", seen)
        try:
            connection.start()
            time.sleep(1.0)  # the broker sends retained messages right after the subscription
            deliveries = [connection.publish(topic, b"", qos=1, retain=True) for topic in sorted(topics)]
            cleared = sum(delivery.wait(10) for delivery in deliveries)
        finally:
            connection.close()
        note(f"cleared {cleared} retained message(s) under edge/{self.device_id}/ on {self.url}")

    def stop_broker(self) -> None:
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop()

    def close(self) -> None:
        """Stop what still runs: the device first (it flushes), the camera, the collector, the broker."""
        if self.device is not None:
            self.device.stop(grace=15)
        if self.camera is not None:
            self.camera.close()
        if self.collector is not None:
            self.collector.stop(grace=15)
        self.stop_broker()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="train, convert, sign, push over MQTT to a device, infer on a live camera showing "
        "held-out digits, collect, report",
    )
    parser.add_argument(
        "workdir",
        nargs="?",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"work folder, rebuilt on each run (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="show only the first N held-out digits")
    parser.add_argument("--json", action="store_true", help="end with the summary as one JSON line")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv: list[str] | None = None) -> int:
    from edge.errors import EdgeError

    args = parse_args(argv)
    demo = Demo(args.workdir, args.limit)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        summary = demo.run()
    except (DemoError, EdgeError) as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        try:
            demo.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
    print()
    print(summary.render())
    if args.json:
        print(json.dumps(summary.to_json(), separators=(",", ":")))
    if not summary.ok():
        reason = (
            f"{summary.lost} result(s) lost"
            if summary.lost
            else f"{summary.gaps} seq gap(s)"
            if summary.gaps
            else f"{summary.held_out - summary.answered} held-out digit(s) without a result "
            "(every frame showing them was skipped for a newer one)"
        )
        print(f"demo: failed: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
