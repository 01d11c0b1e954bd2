"""A real ``edge run --mqtt ... --ha-discovery`` device seen through a real Home Assistant's API: every
entity with its id, state, unit and device; states after a failed input; the buttons; availability on
SIGTERM and SIGKILL; everything back after a Home Assistant restart that lost the retained configs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher
from tests.homeassistant.hass import Hass, StateLog, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "ha1"
NODE = f"edge_{DEVICE}"
LABEL = "7"
SENSORS = {  # entity id -> unit
    f"sensor.{NODE}_last_label": None,
    f"sensor.{NODE}_last_score": None,
    f"sensor.{NODE}_latency": "ms",
    f"sensor.{NODE}_fps": "fps",
    f"sensor.{NODE}_model_version": None,
}
BINARY = f"binary_sensor.{NODE}_seen_{LABEL}"
BUTTONS = (f"button.{NODE}_reload", f"button.{NODE}_snapshot")


class Device:
    """``edge run`` on a watch folder, startable again after a SIGTERM or SIGKILL."""

    def __init__(self, assets: Assets, broker: Broker, folder: Path) -> None:
        self.watch = folder / "drop"
        self.watch.mkdir(parents=True, exist_ok=True)
        self.log = folder / "edge.log"
        self.command = [
            sys.executable, "-m", "edge", "run", str(assets.model("digits_int8")), "--watch", str(self.watch),
            "--mqtt", broker.url, "--device-id", DEVICE, "--state-dir", str(folder / "state"),
            "--telemetry-interval", "5", "--ha-discovery", "--ha-label", LABEL, "--ha-off-delay", "60",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Device:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def drop(self, image: Path, name: str | None = None) -> Path:
        target = self.watch / (name or image.name)
        shutil.copyfile(image, target)
        return target


@pytest.fixture(scope="module")
def device(assets: Assets, ha_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    dev = Device(assets, ha_broker, tmp_path_factory.mktemp("edge-ha")).start()
    try:
        yield dev
    finally:
        dev.stop()


def available(state: dict[str, Any]) -> bool:
    return state["state"] != "unavailable"


def known(state: dict[str, Any]) -> bool:
    return state["state"] not in ("unknown", "unavailable")


def labelled(images: Path) -> dict[str, Path]:
    """label -> one digit image of it (files are ``<index>_<label>.png``)."""
    out: dict[str, Path] = {}
    for image in sorted(images.iterdir()):
        out.setdefault(image.stem.split("_")[1], image)
    return out


def test_every_entity_under_one_device(hass: Hass, device: Device, assets: Assets) -> None:
    expected = [*SENSORS, BINARY, *BUTTONS]
    entities = wait_until(lambda: (found := hass.entities()) and all(e in found for e in expected) and found,
                          what=f"every entity of {NODE} registered")
    sources = sorted(e for e in entities if e.startswith(f"binary_sensor.{NODE}_source_"))
    assert len(sources) == 1, sources  # the watch folder is the one source
    ours = {e: entities[e] for e in [*expected, *sources]}
    for entity in expected:  # unique id edge_ha1_<object>, entity id <component>.edge_ha1_<object>
        assert ours[entity]["unique_id"] == entity.split(".", 1)[1], ours[entity]
    device_ids = {e["device_id"] for e in ours.values()}
    assert len(device_ids) == 1
    record = hass.devices()[device_ids.pop()]
    assert ["mqtt", NODE] in record["identifiers"]
    assert record["name"] == f"Edge {DEVICE}" and record["manufacturer"] == "edge-runtime"
    assert record["model"] == "digits_int8"

    image = labelled(assets.digit_images)[LABEL]
    device.drop(image)
    label = hass.wait_state(f"sensor.{NODE}_last_label", known)
    assert label["state"] == LABEL  # the real model read the digit
    latency = hass.wait_state(f"sensor.{NODE}_latency", known)
    assert float(latency["state"]) > 0
    for entity, unit in SENSORS.items():
        assert hass.wait_state(entity, available)["attributes"].get("unit_of_measurement") == unit
    assert 0 < float(hass.state(f"sensor.{NODE}_last_score")["state"]) <= 1  # type: ignore[index]
    assert hass.wait_state(BINARY, lambda s: s["state"] == "on")["attributes"]["device_class"] == "occupancy"
    source = hass.wait_state(sources[0], available)
    assert source["attributes"]["device_class"] == "connectivity" and source["state"] in ("on", "off")
    assert hass.state(BUTTONS[0])["state"] == "unknown"  # type: ignore[index]  # never pressed


def test_failed_input_changes_nothing(hass: Hass, device: Device, hass_states: StateLog, assets: Assets,
                                      ha_broker: Broker) -> None:
    watch = Watcher(ha_broker.url, f"edge/{DEVICE}/results", f"edge/{DEVICE}/state",
                    client_id="ha-failed-input")
    try:
        images = labelled(assets.digit_images)
        first, second = images["1"], images["4"]
        device.drop(first)
        hass.wait_state(f"sensor.{NODE}_last_label", lambda s: s["state"] == "1")
        before = {e: hass.state(e) for e in (f"sensor.{NODE}_latency", f"sensor.{NODE}_last_score")}
        seen = len(hass_states.changes)
        watch.drain()  # the state that said "1" is shown already
        broken = device.watch / "broken.png"
        broken.write_bytes(b"this is not an image")
        result, after = None, None
        while result is None or after is None:  # the device read it, failed, and published its state
            message = watch.next(f"edge/{DEVICE}/")
            body = json.loads(message.payload)
            if message.topic.endswith("/state"):
                after = body  # (rate-limited: sent once the failure was observed)
            elif body["input"].endswith("broken.png"):
                result = body
        assert result.get("error")
        assert after["label"] == "1" and after["latency_ms"], after  # the failure changed nothing
        device.drop(second)
        hass.wait_state(f"sensor.{NODE}_last_label", lambda s: s["state"] == "4")
        changes = hass_states.changes[seen:]
        for entity in (f"sensor.{NODE}_last_label", f"sensor.{NODE}_latency", f"sensor.{NODE}_last_score"):
            shown = [state for e, state in changes if e == entity]
            assert not {"None", "unknown", "unavailable", "0.0", "0"} & set(shown), (entity, shown)
        assert [s for e, s in changes if e == f"sensor.{NODE}_last_label"] == ["4"]  # nothing in between
        for entity, earlier in before.items():  # the failure wrote no value: only the good image did
            assert earlier is not None and all(s != "0.0" for s in hass_states.of(entity)), entity
    finally:
        watch.close()


def test_buttons_send_commands(hass: Hass, device: Device, ha_broker: Broker) -> None:
    watch = Watcher(ha_broker.url, f"edge/{DEVICE}/cmd/#", client_id="ha-buttons")
    try:
        hass.wait_state(BUTTONS[0], available)
        hass.call("button", "press", entity_id=BUTTONS[0])
        assert watch.next(f"edge/{DEVICE}/cmd/reload").payload == b"{}"
        reply = watch.next_json("cmd/reload/reply")
        assert reply["ok"] and reply["model"]["name"] == "digits_int8", reply
        hass.call("button", "press", entity_id=BUTTONS[1])
        reply = watch.next_json("cmd/snapshot/reply", timeout=60)
        assert reply["ok"] and reply["result"]["input"].startswith(str(device.watch.resolve())), reply
        pressed = hass.wait_state(BUTTONS[1], lambda s: s["state"] != "unknown")
        assert pressed["state"].startswith("20")  # a button's state is the time it was last pressed
    finally:
        watch.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_availability_follows_the_process(hass: Hass, device: Device, sig: int) -> None:
    everything = [*SENSORS, BINARY, *BUTTONS]
    for entity in everything:
        hass.wait_state(entity, available, timeout=60)
    device.stop(sig)  # SIGTERM: the device says offline; SIGKILL: the broker sends its last will
    for entity in everything:
        assert hass.wait_state(entity, lambda s: s["state"] == "unavailable")
    device.start()
    for entity in everything:
        hass.wait_state(entity, available, timeout=60)
    assert hass.state(f"sensor.{NODE}_model_version")["state"] not in ("None", "unknown")  # type: ignore[index]


def test_restart_without_retained_configs(hass: Hass, device: Device, ha_broker: Broker) -> None:
    """Home Assistant restarts and the broker has lost the retained configs: the device re-announces on
    Home Assistant's birth message, and the same entities come back with their ids and values."""
    everything = [*SENSORS, BINARY, *BUTTONS]
    for entity in everything:
        hass.wait_state(entity, available, timeout=60)
    label = hass.state(f"sensor.{NODE}_last_label")["state"]  # type: ignore[index]
    watch = Watcher(ha_broker.url, "homeassistant/+/" + NODE + "/+/config", client_id="ha-clear")
    try:
        configs = wait_until(lambda: [m.topic for m in watch.drain() if m.payload], what="retained configs")
        hass.stop()
        for topic in configs:
            watch.conn.publish(topic, b"", qos=1, retain=True).wait(5)  # the broker forgets them
    finally:
        watch.close()
    check = Watcher(ha_broker.url, "homeassistant/+/" + NODE + "/+/config", client_id="ha-check")
    try:
        assert not [m for m in _settle(check) if m.payload]  # nothing retained any more
    finally:
        check.close()
    hass.start()
    for entity in everything:
        hass.wait_state(entity, available, timeout=60)
    assert hass.wait_state(f"sensor.{NODE}_last_label", lambda s: s["state"] == label)
    assert set(everything) <= set(hass.entities())


def _settle(watch: Watcher) -> list[Any]:
    """What a fresh subscriber got within a second (retained messages come at once)."""
    time.sleep(1.0)
    return watch.drain()
