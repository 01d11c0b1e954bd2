"""The dashboard's rollout view shows a shadow stage: its stage name and each device's figures."""

from __future__ import annotations

from pathlib import Path

from cloud_sync.dashboard.data import FleetData, StoreCounts
from cloud_sync.dashboard.live import LiveFleet
from cloud_sync.store import open_store
from cloud_sync.update_protocol import Status


def test_a_shadowing_device_shows_its_figures_in_the_rollout(tmp_path: Path) -> None:
    live = LiveFleet()
    figures = {"samples": 70, "target": 200, "agreement": 0.8, "latency_ratio": 1.08, "budget_used": 0.24,
               "failures": 0, "passed": False, "reason": "agreement 0.800 < 0.9",
               "converter": {"top1_agreement": 1.0}, "state": {"samples": 70}, "entry": {"file": "x"}}
    live.observe("model_status", "pi", Status(device="pi", state="shadowing", name="digits", version=3,
                                              progress=0.35, shadow=figures))
    live.observe("model_status", "pi2", Status(device="pi2", state="active", name="digits", version=2,
                                               progress=1.0, active={"name": "digits", "version": 2}))
    store = open_store(str(tmp_path / "fleet.sqlite"))
    try:
        doc = FleetData(live, store, StoreCounts(store)).rollout()
    finally:
        store.close()
    rollout = next(r for r in doc["rollouts"] if r["version"] == 3)
    assert rollout["stage"] == "shadow"
    device = next(d for d in rollout["devices"] if d["device"] == "pi")
    assert device["state"] == "shadowing" and device["progress"] == 0.35
    assert device["shadow"]["agreement"] == 0.8 and device["shadow"]["converter_agreement"] == 1.0
    assert "state" not in device["shadow"] and "entry" not in device["shadow"]  # counts stay on the device


def test_fleet_status_and_the_collector_s_history_carry_the_shadow_figures(mosquitto, tmp_path: Path
                                                                          ) -> None:
    """``edge fleet status`` and the collector's model history (its store) on a real broker."""
    import json
    import subprocess
    import sys

    from cloud_sync.store import open_store as reopen
    from tests.cloud_sync.helpers import Watcher, collector, wait_for

    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    figures = {"samples": 200, "agreement": 0.97, "latency_ratio": 1.1, "passed": True,
               "converter": {"top1_agreement": 1.0}}
    status = Status(device="pi", state="active", name="digits", version=3, progress=1.0, healthy=True,
                    active={"name": "digits", "version": 3}, shadow=figures)
    pub = Watcher(mosquitto.url, "edge/none", client_id="status-pub")
    pub.conn.publish("edge/pi/model/status", status.to_bytes(), qos=1, retain=True).wait(5)
    done = subprocess.run([sys.executable, "-m", "edge", "fleet", "status", "--mqtt", mosquitto.url],
                          capture_output=True, text=True, timeout=60)
    want = ("active v3 (healthy) [shadow stage: agreement 0.97 on 200 live inputs (converter 1.0), "
            "latency 1.1x")
    assert want in done.stdout, done.stdout
    as_json = subprocess.run([sys.executable, "-m", "edge", "fleet", "status", "--mqtt", mosquitto.url,
                              "--json"], capture_output=True, text=True, timeout=60)
    row = next(r for r in json.loads(as_json.stdout)["devices"] if r["device"] == "pi")
    assert row["update"]["shadow"]["agreement"] == 0.97
    store = reopen(str(db))

    def history() -> list:
        return store.model_history("pi")

    rows = wait_for(history, timeout=10, what="the model history stored")
    assert any("shadow stage: agreement 0.97 on 200" in str(r) for r in rows), rows
    store.close()
    pub.close()
    coll.close()
    coll.store.close()
