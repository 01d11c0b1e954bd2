"""A real model push to a real ``edge run --trust`` (update agent, signed packages, chunked transfer) seen
through Home Assistant's update entity: installed and latest versions, in progress while the package is
fetched and checked (with a percentage on releases that read it), and the new version installed after.

The device announces the update entity itself (``--ha-discovery`` with ``--trust``); the first test also
publishes its config beforehand (``Discovery``'s own, retained) so the entity exists before the first push;
the second relies on the device's own announcement alone. The statuses are the device's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cloud_sync.homeassistant import Discovery
from cloud_sync.messages import dumps
from cloud_sync.topics import DeviceTopics
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher
from tests.cloud_sync.update_support import make_keys, publishing
from tests.edge.update_packages import make_package
from tests.homeassistant.hass import Hass, StateLog, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "upd1"
ENTITY = f"update.edge_{DEVICE}_model_update"


def push(url: str, package: bytes) -> None:
    with publishing(url, package) as publisher:
        publisher.offer_devices([DEVICE])
        assert publisher.wait([DEVICE], time.monotonic() + 90), publisher.rollout.devices[DEVICE]


def test_a_real_push_in_the_update_entity(
    hass: Hass, hass_states: StateLog, ha_broker: Broker, assets: Assets, tmp_path: Path
) -> None:
    discovery = Discovery(DeviceTopics("edge", DEVICE), updates=True)
    watch = Watcher(ha_broker.url, "homeassistant/#", client_id="ha-update")
    for topic, config in discovery.device_configs().items():
        watch.conn.publish(topic, dumps(config), qos=1, retain=True).wait(5)
    watch.close()
    hass.wait_state(ENTITY)
    keys = make_keys(tmp_path / "keys")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (tmp_path / "edge.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--mqtt", ha_broker.url, "--device-id", DEVICE,
             "--state-dir", str(tmp_path / "state"), "--trust", str(keys.pub), "--watch", str(inbox),
             "--health-seconds", "1", "--telemetry-interval", "0", "--ha-discovery"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        push(ha_broker.url, keys.sign(make_package(assets.model("digits_float32"), 1)))
        first = hass.wait_state(ENTITY, lambda s: s["attributes"].get("installed_version") == "1")
        assert first["state"] == "off" and first["attributes"]["latest_version"] == "1"
        assert first["attributes"]["title"] == "digits"
        seen = len(hass_states.full(ENTITY))
        push(ha_broker.url, keys.sign(make_package(assets.model("digits_int8"), 2)))
        done = hass.wait_state(ENTITY, lambda s: s["attributes"].get("installed_version") == "2")
        assert done["state"] == "off" and done["attributes"]["latest_version"] == "2"
        shown: list[dict[str, Any]] = [s["attributes"] for s in hass_states.full(ENTITY)[seen:]]
        pending = [a for a in shown if a.get("installed_version") == "1" and a.get("latest_version") == "2"]
        assert pending, shown  # v2 offered while v1 was still installed: "update available"
        if hass.release >= (2024, 11):
            assert all(a["in_progress"] for a in pending), pending  # fetched, verified, validated
            percent = [a["update_percentage"] for a in pending]
            assert percent == sorted(percent) and percent[-1] == 100.0, percent  # chunks, then the checks
            assert all(a["in_progress"] is False for a in shown if a.get("installed_version") == "2")
        assert wait_until(lambda: run.poll() is None, what="edge run still serving")
    finally:
        run.terminate()
        run.wait(60)


def test_install_in_home_assistant_activates_a_held_model(
    hass: Hass, ha_broker: Broker, assets: Assets, tmp_path: Path
) -> None:
    """``edge run --updates approve``: an update of a serving device is held, Home Assistant offers Install,
    and pressing it (service ``update.install``) lets the device fetch, check and activate it."""
    device, entity = "appr1", "update.edge_appr1_model_update"
    keys = make_keys(tmp_path / "keys")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (tmp_path / "edge.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--mqtt", ha_broker.url, "--device-id", device,
             "--state-dir", str(tmp_path / "state"), "--trust", str(keys.pub), "--watch", str(inbox),
             "--updates", "approve", "--health-seconds", "1", "--telemetry-interval", "0", "--ha-discovery"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        with publishing(ha_broker.url, keys.sign(make_package(assets.model("digits_float32"), 1))) as first:
            first.offer_devices([device])  # an empty store takes its first model unasked
            assert first.wait([device], time.monotonic() + 90), first.rollout.devices[device]
        hass.wait_state(entity, lambda s: s["attributes"].get("installed_version") == "1")
        with publishing(ha_broker.url, keys.sign(make_package(assets.model("digits_int8"), 2))) as second:
            second.offer_devices([device])
            held = hass.wait_state(entity, lambda s: s["attributes"].get("latest_version") == "2")
            assert held["state"] == "on" and held["attributes"]["installed_version"] == "1"  # held, not taken
            assert held["attributes"]["supported_features"] & 1  # INSTALL
            assert held["attributes"]["in_progress"] is False
            time.sleep(2)
            still = hass.state(entity)
            assert still is not None and still["attributes"]["installed_version"] == "1"  # waits for approval
            hass.call("update", "install", entity_id=entity)
            assert second.wait([device], time.monotonic() + 90), second.rollout.devices[device]
        done = hass.wait_state(entity, lambda s: s["attributes"].get("installed_version") == "2")
        assert done["state"] == "off"
    finally:
        run.terminate()
        run.wait(60)
