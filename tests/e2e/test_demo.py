"""``make demo`` (``python -m demo``) as a user runs it: train, convert, sign, push over MQTT, infer, collect.

Every run is the real path: TensorFlow training and conversion, real mosquitto, ``edge run``,
``edge push-model`` and ``edge collect`` as subprocesses. The summary's last line (``--json``) is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

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


def test_make_demo_classifies_the_held_out_digits_and_loses_nothing(tmp_path: Path) -> None:
    work = tmp_path / "demo-out"
    done = run_demo(work, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["ok"] is True
    assert summary["held_out"] == summary["answered"] == HELD_OUT
    assert summary["accuracy"] >= 0.95, summary
    assert summary["accuracy"] == pytest.approx(summary["correct"] / HELD_OUT, abs=1e-4)
    assert summary["lost"] == 0 and summary["gaps"] == 0
    assert summary["sent"] == summary["stored"] == HELD_OUT + summary["probes"] >= HELD_OUT + 1
    assert summary["model"] == "digits" and summary["version"] == 1 and summary["mode"].startswith("int8")
    total, invoke = summary["latency_ms"]["total"], summary["latency_ms"]["invoke"]
    assert 0 < invoke["p50"] <= total["p50"] <= total["p95"]
    assert summary["broker"].startswith("mqtt://127.0.0.1:") and summary["device"] == "demo"
    # what the user reads: every step, the summary, the work folder
    for text in ("[1/8]", "edge convert", "edge keygen", "edge push-model", "[8/8]", "summary"):
        assert text in done.stdout
    assert str(work.resolve()) in done.stdout
    # the real artefacts are there: package, keys, the collector's database, the dropped PNG files
    assert (work / "models" / "digits-v1.edgepkg").is_file() and (work / "keys" / "signing.pub").is_file()
    assert (work / "results.sqlite").is_file()
    assert len(list((work / "device" / "inbox").glob("digit-*-label-*.png"))) == HELD_OUT
    assert processes_using(tmp_path) == []  # device, collector and broker stopped


def test_demo_uses_the_broker_in_mqtt_url(mosquitto: Any, tmp_path: Path) -> None:
    work = tmp_path / "out"
    done = run_demo(work, "--limit", "25", "--json", mqtt_url=mosquitto.url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = summary_of(done)
    assert summary["broker"] == mosquitto.url and summary["device"].startswith("demo-")
    assert summary["held_out"] == summary["answered"] == 25 and summary["lost"] == 0
    assert not (work / "broker").exists()  # no local mosquitto was started
    # it leaves no retained messages for its device on a broker it does not own
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
