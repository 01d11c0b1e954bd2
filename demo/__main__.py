"""``python -m demo`` (``make demo``): the whole system in one command, through the real ``edge`` CLIs.

 1. train a small CNN on scikit-learn's bundled digits (the "cloud"; ``converter.digits``),
 2. ``edge convert --mode int8 --min-agreement 0.98``: a validated, quantized model package,
 3. ``edge keygen``: an Ed25519 key pair; ``edge push-model`` signs with it, the device trusts signing.pub,
 4. a local mosquitto on a free port (``cloud_sync.local_broker``), or the broker in ``$MQTT_URL``,
 5. ``edge collect --db results.sqlite`` (the cloud-side collector) and ``edge run`` with an empty model
    store, ``--trust``, ``--mqtt`` and ``--watch``: a device waiting for its first model,
 6. ``edge push-model --wait``: the model goes over MQTT; the device verifies, validates and activates it,
 7. the held-out digits (the test split, never trained on) dropped as PNG files into the watch folder,
 8. the results read back from the collector's database: accuracy against the labels in the file names,
    latency p50/p95 from the results' ``timing_ms``, results sent, stored and lost.

Everything it started is stopped at the end, on failure and on Ctrl-C. Exit 0 only when every step worked
and nothing was lost; otherwise 1 with a one-line reason. ``--json`` adds the summary as a last JSON line.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import operator
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

from demo.processes import EDGE, DemoError, Service, display, run_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_WORKDIR = Path("demo-out")
MARKER = ".edge-demo"
MIN_AGREEMENT = "0.98"
PUSH_WAIT_S = 60
HELD_OUT = re.compile(r"^digit-(\d+)-label-(\d)\.png$")
STEPS = 8


@dataclass
class Summary:
    """What the demo measured; ``to_json()`` is the machine-readable last line of ``--json``."""

    model: str = ""
    version: int = 0
    mode: str = ""
    device: str = ""
    broker: str = ""
    held_out: int = 0
    correct: int = 0
    answered: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    probes: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    gaps: int = 0
    wall_s: float = 0.0
    workdir: str = ""

    @property
    def accuracy(self) -> float:
        return self.correct / self.held_out if self.held_out else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    def to_json(self) -> dict[str, Any]:
        data = dict(vars(self))
        data.update(accuracy=round(self.accuracy, 4), lost=self.lost, ok=self.ok())
        return data

    def ok(self) -> bool:
        return self.lost == 0 and self.gaps == 0 and self.answered == self.held_out > 0

    def render(self) -> str:
        total, invoke = self.latency_ms.get("total", {}), self.latency_ms.get("invoke", {})
        return "\n".join(
            [
                "summary",
                "-------",
                f"model        {self.model} v{self.version} ({self.mode}), pushed over MQTT to device "
                f"{self.device} via {self.broker}",
                f"accuracy     {self.accuracy:.2%} on {self.held_out} held-out digits "
                f"({self.correct} correct, {self.answered} answered)",
                f"latency      p50 {total.get('p50', 0):.2f} ms, p95 {total.get('p95', 0):.2f} ms per image "
                f"(decode to result; invoke alone p50 {invoke.get('p50', 0):.2f} ms, "
                f"p95 {invoke.get('p95', 0):.2f} ms)",
                f"results      {self.sent} sent ({self.held_out} digits + {self.probes} readiness probe(s)), "
                f"{self.stored} stored, {self.lost} lost, "
                f"{self.duplicates} duplicate(s) dropped by the collector, {self.gaps} seq gap(s)",
                f"wall time    {self.wall_s:.1f} s",
                f"work folder  {self.workdir}",
            ]
        )


def step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def note(text: str) -> None:
    print(f"      {text}", flush=True)


def percentile_summary(values: list[float]) -> dict[str, float]:
    from edge.stats import percentiles

    stats = percentiles(values)
    return {"p50": round(stats["p50"], 3), "p95": round(stats["p95"], 3)}


def png_bytes(pixels: Any) -> bytes:
    """A grayscale 8-bit PNG of one digit (pixels 0..255, shape (8, 8) or (8, 8, 1))."""
    import numpy as np
    from PIL import Image

    array = np.clip(np.rint(np.asarray(pixels, dtype=np.float32).reshape(8, 8)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Demo:
    """The run: its work folder, the processes it started, and the results it read back."""

    def __init__(self, workdir: Path, limit: int | None) -> None:
        self.workdir = workdir
        self.limit = limit
        self.logs = workdir / "logs"
        self.token = secrets.token_hex(3)
        self.broker: Any = None
        self.url = ""
        self.device_id = ""
        self.device: Service | None = None
        self.collector: Service | None = None
        self.results: dict[str, dict[str, Any]] = {}  # file name -> the result the device printed
        self.summary = Summary(workdir=str(workdir.resolve()))
        self.started = time.monotonic()

    # ----------------------------------------------------------------------------------- steps

    def run(self) -> Summary:
        self.prepare()
        assets, probe, x_test, y_test = self.train()
        package = self.convert(assets)
        keys = self.keygen()
        self.start_broker()
        self.start_collector()
        self.start_device(keys / "signing.pub")
        self.push(package, keys / "signing.key")
        self.wait_until_serving(probe)
        names = self.drop(x_test, y_test)
        self.wait_collected(names)
        self.finish(names)
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

    def train(self) -> tuple[dict[str, Path], Any, Any, Any]:
        """Train and save the model; returns the assets, a training digit (the probe) and the held-out set."""
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
        note(f"{assets['model']} in {time.monotonic() - began:.1f} s")
        held_out = np.load(assets["eval"])
        x_test, y_test = held_out["x"], held_out["y"]
        if self.limit is not None:
            x_test, y_test = x_test[: self.limit], y_test[: self.limit]
        return assets, data.x_train[0], x_test, y_test

    def convert(self, assets: dict[str, Path]) -> Path:
        models = self.workdir / "models"
        models.mkdir()
        argv = [
            *EDGE,
            "convert",
            str(assets["model"]),
            "-o",
            f"{models}/",
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
        step(2, " ".join(display(argv[:-1])))
        began = time.monotonic()
        done = run_command("convert", argv, self.logs, timeout=300)
        try:
            result = json.loads("\n".join(done.lines["out"]))
        except ValueError as exc:
            raise DemoError(
                f"edge convert --json printed no JSON ({exc}); see {self.logs}/convert.out"
            ) from exc
        report = result["report"]
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
            "--client-id",
            f"demo-collect-{self.token}",
        ]
        step(5, " ".join(display(argv[:-2])))
        self.collector = Service("collect", argv, self.logs).start()
        collector = self.collector
        collector.wait_for(
            lambda: any("listening" in line for line in collector.lines["err"]),
            60,
            "it subscribed",
        )

    def start_device(self, public_key: Path) -> None:
        state, inbox = self.workdir / "device" / "state", self.workdir / "device" / "inbox"
        inbox.mkdir(parents=True)
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
            "--watch",
            str(inbox),
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
        note(f"device {self.device_id}: empty model store in {state}, watching {inbox}")

    def _device_line(self, stream: str, line: str) -> None:
        if stream != "out" or not line.startswith("{"):
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            self.results[Path(record["input"]).name] = record

    def push(self, package: Path, key: Path) -> None:
        argv = [*EDGE, "push-model", str(package), "--key", str(key), "--mqtt", self.url]
        argv += ["--device", self.device_id, "--wait", str(PUSH_WAIT_S), "--json"]
        step(6, " ".join(display(argv[:-1])))

        def show(stream: str, line: str) -> None:
            if stream == "err" and line.strip():
                note(line.strip())

        push = Service("push-model", argv, self.logs, on_line=show).start()
        try:
            code = push.wait_exit(PUSH_WAIT_S + 60)
        finally:
            push.stop(grace=5)
        try:
            outcome = json.loads("\n".join(push.lines["out"]))["devices"][self.device_id]
        except (ValueError, KeyError, TypeError):
            outcome = {}
        if code == 0:
            return
        detail = str(outcome.get("detail") or push.last_error())
        raise DemoError(f"edge push-model failed (exit {code}): {detail}")

    def wait_until_serving(self, pixels: Any) -> None:
        """The watcher takes files created after it started: drop a probe until the device answers it."""
        from edge.fsutil import atomic_write_bytes

        assert self.device is not None
        inbox = self.workdir / "device" / "inbox"
        deadline = time.monotonic() + 60
        attempt = 0
        while True:
            attempt += 1
            name = f"probe-{attempt}.png"
            atomic_write_bytes(inbox / name, png_bytes(pixels))
            try:
                self.device.wait_for(
                    functools.partial(operator.contains, self.results, name),
                    3,
                    f"the device's answer to {name}",
                )
                break
            except DemoError:
                if not self.device.running or time.monotonic() > deadline:
                    raise
        model = self.results[name].get("model") or {}
        if model.get("version") != self.summary.version:
            raise DemoError(f"the device serves {model} instead of v{self.summary.version} it was sent")

    def drop(self, x_test: Any, y_test: Any) -> list[str]:
        from edge.fsutil import atomic_write_bytes

        inbox = self.workdir / "device" / "inbox"
        step(7, f"dropping {len(x_test)} held-out digits as grayscale PNG files into {inbox}")
        names = []
        for index, (pixels, label) in enumerate(zip(x_test, y_test, strict=True)):
            name = f"digit-{index:04d}-label-{int(label)}.png"
            atomic_write_bytes(inbox / name, png_bytes(pixels))  # temp name, then rename: never half a file
            names.append(name)
        self.summary.held_out = len(names)
        return names

    def wait_collected(self, names: list[str]) -> None:
        assert self.device is not None
        began = time.monotonic()
        self.device.wait_for(
            lambda: all(n in self.results for n in names),
            max(60.0, 0.2 * len(names)),
            f"the device's results for {len(names)} images",
        )
        note(f"the device answered all {len(names)} in {time.monotonic() - began:.1f} s")
        deadline = time.monotonic() + 60
        while (stored := self.stored_count()) < len(self.results):
            if self.collector is None or not self.collector.running:
                raise DemoError(
                    f"edge collect stopped: {self.collector.last_error() if self.collector else ''}"
                )
            if time.monotonic() > deadline:
                note(f"only {stored} of {len(self.results)} results reached the collector within 60 s")
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

    def finish(self, names: list[str]) -> None:
        step(
            8, "stopping the device and the collector; reading the results back from the collector's database"
        )
        assert self.device is not None and self.collector is not None
        code = self.device.stop()
        device_summary = [line for line in self.device.lines["err"] if line.startswith("edge run:")]
        if code != 0:
            raise DemoError(f"edge run exited with status {code}: {self.device.last_error()}")
        if device_summary:
            note(device_summary[-1])
        outbox = run_command(
            "outbox",
            [*EDGE, "outbox", "--state-dir", str(self.workdir / "device" / "state"), "--json"],
            self.logs,
            timeout=60,
        )
        pending = json.loads("\n".join(outbox.lines["out"]))
        self.summary.sent = int(pending["last_seq"])
        self.summary.probes = sum(name.startswith("probe-") for name in self.results)
        if pending["pending"]:
            note(f"{pending['pending']} message(s) still in the device's outbox (sent on its next start)")
        if self.summary.sent != len(self.results):
            raise DemoError(
                f"the device printed {len(self.results)} results but its outbox numbered {self.summary.sent}"
            )
        self.collector.stop()
        try:
            report = json.loads("\n".join(self.collector.lines["out"]))
        except ValueError as exc:
            raise DemoError(f"edge collect printed no report ({exc}); see {self.logs}/collect.out") from exc
        streams = report.get("devices", {}).get(self.device_id, {})
        self.summary.duplicates = int(report.get("duplicates", 0))
        self.summary.gaps = sum(len(s["missing"]) for s in streams.values())
        self.read_results(names)
        if self.summary.stored != sum(int(s["stored"]) for s in streams.values()):
            raise DemoError("the collector's report and its database disagree on the results stored")
        if self.broker is None:
            self.forget_retained()
        self.stop_broker()

    def read_results(self, names: list[str]) -> None:
        with self._db() as db:
            rows = db.execute("SELECT payload FROM results WHERE device_id = ?", (self.device_id,)).fetchall()
        self.summary.stored = len(rows)
        wanted = set(names)
        totals: list[float] = []
        invokes: list[float] = []
        for (payload,) in rows:
            result = json.loads(payload)
            name = Path(str(result.get("input", ""))).name
            match = HELD_OUT.match(name)
            if name not in wanted or match is None:
                continue  # the probe
            wanted.discard(name)
            self.summary.answered += 1
            if (result.get("model") or {}).get("version") != self.summary.version:
                raise DemoError(f"the result for {name} names {result.get('model')}, not the model pushed")
            classes = result.get("classes") or []
            self.summary.correct += bool(classes) and classes[0]["label"] == match.group(2)
            timing = result.get("timing_ms") or {}
            if result.get("error") is None and "total" in timing:
                totals.append(float(timing["total"]))
                invokes.append(float(timing["invoke"]))
        self.summary.latency_ms = {"total": percentile_summary(totals), "invoke": percentile_summary(invokes)}

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
        """Stop what still runs: the device first (it flushes), then the collector, then the broker."""
        for service in (self.device, self.collector):
            if service is not None:
                service.stop(grace=15)
        self.stop_broker()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="train, convert, sign, push over MQTT to a device, infer on held-out digits, "
        "collect, report",
    )
    parser.add_argument(
        "workdir",
        nargs="?",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"work folder, rebuilt on each run (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="drop only the first N held-out digits")
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
            else f"{summary.held_out - summary.answered} held-out digit(s) without a result"
        )
        print(f"demo: failed: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
