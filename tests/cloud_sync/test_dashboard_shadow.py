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
