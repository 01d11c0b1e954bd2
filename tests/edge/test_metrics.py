"""``edge run --metrics``: a real ``edge run`` process serving ``/metrics``, scraped over real HTTP (loopback)
and parsed with ``prometheus_client``'s own parser.

Waits are deadlines (a queue read or a poll with a timeout), never fixed sleeps.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge.errors import ConfigError
from edge.metrics import parse_address
from tests.edge.helpers import ROOT, edge_cli, interpreter_noise

DEADLINE = 30.0  # seconds any expected result or scrape may take on a loaded machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, Any]:
    """``{family name: {(sample name, sorted labels): value}}`` of one scrape of ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def value(metrics: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    return float(metrics[family][(sample or family, tuple(sorted(labels.items())))])


def total(metrics: dict[str, Any], family: str, **labels: str) -> float:
    """A counter's ``_total`` sample."""
    return value(metrics, family, f"{family}_total", **labels)


def scrape_until(port: int, done: Any, process: subprocess.Popen[str]) -> dict[str, Any]:
    """Scrape until ``done(metrics)``; fails at the deadline or when the run ends."""
    deadline = time.monotonic() + DEADLINE
    metrics: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"edge run ended ({process.returncode}): {process.communicate()[1]}")
        try:
            metrics = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            metrics = {}  # not listening yet
        try:
            if metrics and done(metrics):
                return metrics
        except KeyError:  # a family or sample not there yet
            pass
        time.sleep(0.1)
    pytest.fail(f"metrics never reached the expected values; last scrape: {metrics}")


class Lines:
    """A process's stdout lines in a queue, read by a thread, so the test waits with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def read() -> None:
            for line in stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=read, daemon=True).start()

    def take(self, n: int) -> list[dict[str, Any]]:
        records = []
        for _ in range(n):
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queue.Empty:
                pytest.fail(f"only {len(records)} of {n} results within {DEADLINE} s")
            assert line is not None, "edge run ended"
            records.append(json.loads(line))
        return records


def test_a_run_serves_its_metrics(assets, tmp_path: Path) -> None:
    images = sorted(assets.digit_images.iterdir())
    folder, inbox = tmp_path / "images", tmp_path / "inbox"
    folder.mkdir()
    inbox.mkdir()
    for image in images[:5]:
        shutil.copy(image, folder / image.name)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", str(assets.digits_package), str(folder), "--watch", str(inbox),
         "--json", "--metrics", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = Lines(process)
        records = lines.take(5)
        assert all(r["error"] is None and r["model"] == {"name": "digits", "version": 1} for r in records)
        # the histogram is a sink: it may see the last result just after the stats and the other sinks did
        metrics = scrape_until(port, lambda m: total(m, "edge_inferences") == 5 and value(
            m, "edge_inference_latency_seconds", "edge_inference_latency_seconds_count", stage="total"
        ) == 5, process)

        assert value(metrics, "edge_serving") == 1
        assert value(metrics, "edge_inference_errors", "edge_inference_errors_total") == 0
        (info,) = metrics["edge_model_info"]  # an info metric: a gauge of 1 in the text format
        labels = dict(info[1])
        assert labels["name"] == "digits" and labels["version"] == "1" and labels["task"] == "classification"
        assert labels["backend"]
        assert metrics["edge_model_info"][info] == 1
        # the histogram: every stage counted each of the 5 results; buckets cumulative up to +Inf
        for stage in ("decode", "preprocess", "invoke", "postprocess", "total"):
            family = "edge_inference_latency_seconds"
            assert value(metrics, family, f"{family}_count", stage=stage) == 5
            assert value(metrics, family, f"{family}_bucket", stage=stage, le="+Inf") == 5
            assert value(metrics, family, f"{family}_sum", stage=stage) > 0
            buckets = sorted(
                (float(dict(k[1])["le"]), v) for k, v in metrics[family].items()
                if k[0] == f"{family}_bucket" and dict(k[1])["stage"] == stage
            )
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)
            p50 = value(metrics, "edge_inference_latency_recent_seconds", stage=stage, quantile="0.5")
            p95 = value(metrics, "edge_inference_latency_recent_seconds", stage=stage, quantile="0.95")
            assert 0 < p50 <= p95 < 5
        assert value(metrics, "edge_inferences_per_second") >= 0
        # the sources: the folder is done, the watch folder runs; one state is 1 per source
        assert value(metrics, "edge_source_state", source="files", kind="files", state="finished") == 1
        assert value(metrics, "edge_source_state", source="watch", kind="watch", state="streaming") == 1
        states = [v for k, v in metrics["edge_source_state"].items() if dict(k[1])["source"] == "watch"]
        assert sorted(states) == [0, 0, 0, 0, 1]
        assert value(metrics, "edge_source_inferred", "edge_source_inferred_total", source="files") == 5
        assert value(metrics, "edge_source_frames_captured", "edge_source_frames_captured_total",
                     source="files") == 5
        for family in ("edge_source_reconnects", "edge_source_errors", "edge_source_frames_motion_skipped"):
            assert value(metrics, family, f"{family}_total", source="files") == 0
        assert "edge_outbox_pending_messages" not in metrics  # no --mqtt: no outbox

        # one more input, in the watched folder: the counters move
        shutil.copy(images[5], inbox / images[5].name)
        (record,) = lines.take(1)
        assert record["input"].endswith(images[5].name)
        # the source counts an input when it hands it over, the histogram once it is done: wait for both
        metrics = scrape_until(
            port, lambda m: total(m, "edge_source_inferred", source="watch") == 1 and value(
                m, "edge_inference_latency_seconds", "edge_inference_latency_seconds_count", stage="invoke"
            ) == 6, process
        )
        assert value(metrics, "edge_inferences", "edge_inferences_total") == 6
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "6 input(s), 0 failed (stopped)" in stderr and "Traceback" not in stderr
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)  # the server went with the run


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("abc", "--metrics 'abc': the port must be a number from 1 to 65535"),
        ("0", "--metrics '0': the port must be a number from 1 to 65535"),
        ("127.0.0.1:70000", "--metrics '127.0.0.1:70000': the port must be a number"),
        ("1:2:3", "--metrics '1:2:3': give PORT or HOST:PORT"),
        ("[::1", "--metrics '[::1': write an IPv6 address as [ADDRESS]:PORT"),
    ],
)
def test_a_bad_value_is_a_one_line_error(assets, given: str, message: str) -> None:
    done = edge_cli("run", str(assets.digits_package), str(assets.digit_images), "--metrics", given)
    assert done.returncode == 2
    lines = interpreter_noise(done.stderr).strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert done.stdout == ""


def test_a_port_in_use_is_a_one_line_error_naming_it(assets) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = edge_cli("run", str(assets.digits_package), str(assets.digit_images), "--metrics", str(port))
    assert done.returncode == 2
    lines = interpreter_noise(done.stderr).strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"--metrics 127.0.0.1:{port}: port {port} is in use" in lines[0]
    assert done.stdout == ""  # it failed before any input was inferred


def test_the_config_key_output_metrics(assets, tmp_path: Path) -> None:
    """``output.metrics`` in --config: a port number binds 127.0.0.1; a bad value names the key."""
    port = free_port()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "device.toml"
    config.write_text(
        f'profile = "none"\n[model]\npath = "{assets.digits_package}"\n[input]\nwatch = "{inbox}"\n'
        f"[output]\nmetrics = {port}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        metrics = scrape_until(port, lambda m: "edge_source_state" in m, process)
        assert value(metrics, "edge_source_state", source="watch", kind="watch", state="streaming") == 1
        assert value(metrics, "edge_inferences", "edge_inferences_total") == 0
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    config.write_text('[output]\nmetrics = "localhost:port"\n')
    from edge.config import load_config

    with pytest.raises(ConfigError, match=r"output\.metrics"):
        load_config(config)


def test_parse_address() -> None:
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address(9100) == ("127.0.0.1", 9100)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    assert parse_address("pi.local:9100") == ("pi.local", 9100)
    for bad in ("", ":9100", "9100:", "host:-1", "[::1]", "::1:9100"):
        with pytest.raises(ConfigError, match="--metrics"):
            parse_address(bad)


def test_prometheus_client_is_imported_only_with_metrics() -> None:
    code = (
        "import sys, edge, edge.metrics, edge.cli.commands.run, edge.config\n"
        "assert 'prometheus_client' not in sys.modules, sorted(m for m in sys.modules if 'prom' in m)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_missing_prometheus_client_names_the_extra(assets, tmp_path: Path) -> None:
    """Without prometheus_client (hidden by a module that fails to import), one line names the extra."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "prometheus_client.py").write_text("raise ImportError('hidden by the test')\n")
    import os

    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "edge", "run", str(assets.digits_package), str(assets.digit_images),
         "--metrics", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 2
    lines = interpreter_noise(done.stderr).strip().splitlines()
    assert len(lines) == 1 and "pip install 'edge-runtime[metrics]'" in lines[0], done.stderr


def test_with_mqtt_the_outbox_depth_and_age(assets, mosquitto_factory, tmp_path: Path) -> None:
    """Broker down: results wait in the outbox (depth and age grow); broker up: the outbox drains to 0."""
    broker = mosquitto_factory(start=False)
    folder = tmp_path / "images"
    folder.mkdir()
    for image in sorted(assets.digit_images.iterdir())[:3]:
        shutil.copy(image, folder / image.name)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", str(assets.digits_package), str(folder), "--watch", str(inbox),
         "--json", "--metrics", str(port), "--mqtt", broker.url, "--device-id", "pi-metrics",
         "--state-dir", str(tmp_path / "state"), "--telemetry-interval", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        Lines(process).take(3)
        metrics = scrape_until(
            port, lambda m: value(m, "edge_outbox_pending_messages") >= 3
            and value(m, "edge_outbox_oldest_age_seconds") > 0, process,
        )
        assert value(metrics, "edge_outbox_pending_bytes") > 0
        assert total(metrics, "edge_inferences") == 3
        broker.start()
        scrape_until(port, lambda m: value(m, "edge_outbox_pending_messages") == 0
                     and value(m, "edge_outbox_oldest_age_seconds") == 0, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr


def test_the_latest_model_update_and_its_shadow_stage(assets) -> None:
    """The update agent's status (a device shadowing a candidate) as gauges, read by Prometheus' parser."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from edge.metrics import RunCollector
    from edge.model import load_model
    from edge.pipeline import Pipeline

    status = SimpleNamespace(state="shadowing", progress=0.35, version=3,
                             shadow={"agreement": 0.8, "samples": 70})
    collector = RunCollector()
    pipeline = Pipeline(load_model(assets.model("digits_int8")))
    collector.attach(pipeline, None, updates=SimpleNamespace(status=status))
    registry = CollectorRegistry()
    registry.register(collector)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    assert samples[("edge_update_state", (("state", "shadowing"),))] == 1.0
    assert samples[("edge_update_state", (("state", "active"),))] == 0.0
    assert samples[("edge_update_progress_ratio", ())] == 0.35 and samples[("edge_update_version", ())] == 3
    assert samples[("edge_update_shadow_agreement_ratio", ())] == 0.8
    assert samples[("edge_update_shadow_samples", ())] == 70
