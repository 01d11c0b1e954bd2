"""``edge run MODEL FOLDER --mqtt URL`` as a user runs it: real model, real broker, real collector."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cloud_sync.outbox import read_stats
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher, collector, wait_for
from tests.cloud_sync.test_collector import complete, stored

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]


def edge_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, "run", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_edge_run_publishes_every_result_once(assets: Assets, mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    watch = Watcher(mosquitto.url, "edge/pi1/#")
    images = sorted(assets.digit_images.iterdir())
    done = edge_run(
        str(assets.model("digits_int8")), str(assets.digit_images), "--mqtt", mosquitto.url,
        "--device-id", "pi1", "--state-dir", str(tmp_path / "state"), "--telemetry-interval", "0.2",
        "--top-k", "1", "--json",
    )
    assert done.returncode == 0, done.stderr
    assert len([json.loads(line) for line in done.stdout.splitlines()]) == len(images)  # --json stays on
    wait_for(lambda: complete(coll, db, len(images)), what="every result collected")
    count, ids, seqs = stored(db)
    assert (count, ids, seqs) == (len(images), len(images), list(range(1, len(images) + 1)))

    results = []
    while len(results) < len(images):
        results.append(watch.next_json("/results"))
    correct = 0
    for result in results:
        assert result["device"] == "pi1" and result["model"]["name"]
        assert result["timing_ms"]["invoke"] > 0
        label = Path(result["input"]).stem.split("_")[1]  # files are <index>_<label>.png
        correct += result["classes"][0]["label"] == label
    assert correct >= 0.8 * len(images)  # a real model really classified them
    telemetry = watch.next_json("/telemetry")
    assert telemetry["backend"] and telemetry["model"]["name"] == results[0]["model"]["name"]
    status = json.loads(watch.next("/status").payload)
    assert status["state"] in ("online", "offline")

    out = subprocess.run([*EDGE, "outbox", "--state-dir", str(tmp_path / "state"), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    doc = json.loads(out.stdout)
    assert doc["pending"] == 0 and doc["last_seq"] == len(images)
    watch.close()
    coll.close()
    coll.store.close()


def test_device_started_before_the_broker(assets: Assets, mosquitto_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Results produced while the broker is down wait in the outbox and arrive once it starts."""
    broker = mosquitto_factory(start=False)
    watch_dir = tmp_path / "drop"
    watch_dir.mkdir()
    proc = subprocess.Popen(
        [*EDGE, "run", str(assets.model("digits_int8")), "--watch", str(watch_dir), "--mqtt", broker.url,
         "--device-id", "pi2", "--state-dir", str(tmp_path / "state"), "--telemetry-interval", "0.5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        state = tmp_path / "state"
        # running (its first telemetry is in the outbox): the folder is being watched now
        wait_for(lambda: (state / "outbox.sqlite").exists() and read_stats(state).pending >= 1,
                 timeout=60, what="edge run started")
        images = sorted(assets.digit_images.iterdir())[:5]
        for image in images:
            (watch_dir / image.name).write_bytes(image.read_bytes())
        wait_for(lambda: (state / "outbox.sqlite").exists() and read_stats(state).last_seq >= 5,
                 timeout=60, what="5 results committed while the broker is down")
        broker.start()
        db = tmp_path / "fleet.sqlite"
        coll = collector(broker.url, db)
        wait_for(lambda: complete(coll, db, 5), timeout=60, what="the 5 results delivered")
        coll.close()
        coll.store.close()

        # commands reach the real pipeline
        watch = Watcher(broker.url, "edge/pi2/cmd/+/reply", "edge/pi2/results")

        def ask(name: str, body: dict) -> dict:  # type: ignore[type-arg]
            watch.conn.publish(f"edge/pi2/cmd/{name}", json.dumps(body)).wait(10)
            return watch.next_json(f"cmd/{name}/reply", timeout=60)

        assert ask("set", {"top_k": 2})["applied"] == {"top_k": 2}
        before = ask("ping", {})["seq"]
        dropped = str((watch_dir / images[0].name).resolve())  # snapshot reads inside the watch folder only
        snap = ask("snapshot", {"input": dropped})
        assert snap["ok"] and len(snap["result"]["classes"]) == 2  # the new top_k applies
        assert watch.next_json("/results")["input"] == dropped
        refused = ask("snapshot", {"input": str(images[0])})  # a real image, but outside the watch folder
        assert not refused["ok"] and "outside the watch folder" in refused["error"]
        assert ask("ping", {})["seq"] == before + 1  # published once, not twice
        reloaded = ask("reload", {})
        assert reloaded["ok"], reloaded
        assert reloaded["model"]["name"] == snap["result"]["model"]["name"]
        bad = ask("set", {"threshold": 3})
        assert not bad["ok"] and "threshold" in bad["error"]
        watch.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert "not reachable" in (proc.stderr.read() if proc.stderr else "")
