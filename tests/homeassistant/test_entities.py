"""The entities whose device side is still being written (event engine) or needs a model push (update
agent), seen through a real Home Assistant: a real MQTT client publishes ``Discovery``'s own configs and the
documented payloads (``edge.event/1`` via ``build_result``, ``update_protocol.Status.to_bytes()``, retained
JPEGs and counts), and the tests read what Home Assistant made of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cloud_sync.homeassistant import UPDATE_TEMPLATE, Discovery, count_template, event_template
from cloud_sync.messages import EVENT_SCHEMA, build_result, dumps
from cloud_sync.topics import DeviceTopics
from cloud_sync.update_protocol import Status, status_topic
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher
from tests.homeassistant.hass import Hass, StateLog

DEVICE = "cam9"
NODE = f"edge_{DEVICE}"
SOURCE = "driveway"
S = f"{NODE}_source_{SOURCE}"
TOPICS = DeviceTopics("edge", DEVICE)
DISCOVERY = Discovery(TOPICS, labels=("person",), model_name="ssd", sources=(SOURCE,),
                      zones={SOURCE: ("drive",)}, events=True, updates=True)
ENTITIES = {
    f"image.{S}_snapshot", f"image.{S}_person_snapshot", f"event.{S}_event",
    f"sensor.{S}_person_count", f"sensor.{S}_drive_person_count",
    f"binary_sensor.{S}_person_occupancy", f"binary_sensor.{S}_drive_person_occupancy",
    f"binary_sensor.{S}", f"update.{NODE}_model_update", f"button.{NODE}_reload", f"button.{NODE}_snapshot",
}
SHA = "ab" * 32


class Publisher:
    """What the device will publish, by a plain MQTT client."""

    def __init__(self, broker: Broker) -> None:
        self.watch = Watcher(broker.url, f"edge/{DEVICE}/cmd/#", client_id="ha-publisher")

    def send(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.watch.conn.publish(topic, payload, qos=1, retain=retain).wait(5)

    def online(self, state: str = "online") -> None:
        self.send(TOPICS.status, dumps({"state": state}), retain=True)


@pytest.fixture(scope="module")
def publisher(hass: Hass, ha_broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(ha_broker)
    for topic, config in DISCOVERY.configs(DISCOVERY.sources).items():
        pub.send(topic, dumps(config), retain=True)
    pub.online()
    yield pub
    pub.watch.close()


def known(state: dict[str, Any]) -> bool:
    return state["state"] not in ("unavailable",)


def test_every_entity_exists_under_the_device(hass: Hass, publisher: Publisher) -> None:
    for entity in ENTITIES:
        hass.wait_state(entity, known)
    registry = hass.entities()
    assert set(registry) >= ENTITIES
    assert len({registry[e]["device_id"] for e in ENTITIES}) == 1
    count = hass.state(f"sensor.{S}_person_count")
    assert count is not None and count["attributes"]["state_class"] == "measurement"


def test_counts_and_occupancy(hass: Hass, publisher: Publisher) -> None:
    counts = TOPICS.counts(SOURCE)
    publisher.send(counts, dumps({"labels": {"person": 2, "car": 1}, "zones": {"drive": {"person": 1}}}),
                   retain=True)
    assert hass.wait_state(f"sensor.{S}_person_count", lambda s: s["state"] == "2")
    assert hass.wait_state(f"sensor.{S}_drive_person_count", lambda s: s["state"] == "1")
    assert hass.wait_state(f"binary_sensor.{S}_person_occupancy", lambda s: s["state"] == "on")
    assert hass.wait_state(f"binary_sensor.{S}_drive_person_occupancy", lambda s: s["state"] == "on")
    publisher.send(counts, dumps({"labels": {"car": 1}, "zones": {}}), retain=True)  # nobody: absent label
    assert hass.wait_state(f"sensor.{S}_person_count", lambda s: s["state"] == "0")
    assert hass.wait_state(f"sensor.{S}_drive_person_count", lambda s: s["state"] == "0")
    assert hass.wait_state(f"binary_sensor.{S}_person_occupancy", lambda s: s["state"] == "off")
    assert hass.wait_state(f"binary_sensor.{S}_drive_person_occupancy", lambda s: s["state"] == "off")


def test_images_serve_the_retained_jpeg(hass: Hass, publisher: Publisher, assets: Assets) -> None:
    frame = assets.images["astronaut.jpg"].read_bytes()
    best = assets.images["chelsea_exif6.jpg"].read_bytes()
    publisher.send(TOPICS.snapshot(SOURCE), frame, retain=True)
    publisher.send(TOPICS.snapshot(SOURCE, "person"), best, retain=True)
    for entity, data in ((f"image.{S}_snapshot", frame), (f"image.{S}_person_snapshot", best)):
        state = hass.wait_state(entity, lambda s: s["state"] not in ("unknown", "unavailable"))
        assert state["state"].startswith("20")  # an image's state is when it last changed
        reply = hass.get(f"/api/image_proxy/{entity}")
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
        assert reply.content == data


def event(kind: str, source: str = SOURCE, **fields: Any) -> bytes:
    record = {"type": kind, "event_id": "ev-1", "source": source, "label": "person", "track_id": 3,
              "zones": ["drive"], "entered_zones": ["drive"], "start": 1764570000.0,
              "end": 1764570030.0 if kind == "end" else None, "score": 0.91, "box": [0.1, 0.2, 0.5, 0.6],
              "snapshot": "ev-1", "model": {"name": "ssd", "version": 4}, **fields}
    return dumps(build_result(record, device=DEVICE, stream="s1", seq=7, schema=EVENT_SCHEMA))


def test_event_entity_fires_for_its_source_only(
    hass: Hass, publisher: Publisher, hass_states: StateLog
) -> None:
    entity = f"event.{S}_event"
    hass.wait_state(entity, known)
    seen = len(hass_states.of(entity))
    publisher.send(TOPICS.events, event("new", source="backyard"))  # another source's event: not ours
    publisher.send(TOPICS.events, b"not json")  # a bad message changes nothing either
    publisher.send(TOPICS.events, event("new"))
    state = hass.wait_state(entity, lambda s: s["attributes"].get("event_type") == "new")
    attributes = state["attributes"]
    assert attributes["label"] == "person" and attributes["event_id"] == "ev-1"
    assert attributes["entered_zones"] == ["drive"] and attributes["track_id"] == 3
    assert attributes["event_types"] == ["new", "update", "end"]
    publisher.send(TOPICS.events, event("end"))
    state = hass.wait_state(entity, lambda s: s["attributes"].get("event_type") == "end")
    assert state["attributes"]["end"] == 1764570030.0
    assert len(hass_states.of(entity)) - seen == 2  # new and end: the other source's event fired nothing


def status(state: str, version: int, progress: float, active: int, reason: str = "") -> bytes:
    return Status(device=DEVICE, state=state, name="ssd", version=version, progress=progress, reason=reason,
                  sha256=SHA, active={"name": "ssd", "version": active, "sha256": SHA}).to_bytes()


def test_update_entity_shows_a_push(hass: Hass, publisher: Publisher) -> None:
    entity = f"update.{NODE}_model_update"
    topic = status_topic("edge", DEVICE)
    newer = hass.release >= (2024, 11)  # in_progress / update_percentage from MQTT since 2024.11
    publisher.send(topic, status("downloading", 5, 0.4, 4), retain=True)
    state = hass.wait_state(entity, lambda s: s["attributes"].get("latest_version") == "5")
    attributes = state["attributes"]
    assert state["state"] == "on" and attributes["installed_version"] == "4"
    assert attributes["title"] == "ssd"
    if newer:
        assert attributes["in_progress"] is True and attributes["update_percentage"] == 40.0, attributes
    publisher.send(topic, status("validating", 5, 1.0, 4), retain=True)
    if newer:
        assert hass.wait_state(entity, lambda s: s["attributes"].get("update_percentage") == 100.0)
    publisher.send(topic, status("active", 5, 1.0, 5), retain=True)
    state = hass.wait_state(entity, lambda s: s["attributes"].get("installed_version") == "5")
    assert state["state"] == "off" and state["attributes"]["latest_version"] == "5"
    if newer:
        assert state["attributes"]["in_progress"] is False
    publisher.send(topic, status("rejected", 6, 0.0, 5, reason="signature does not verify"), retain=True)
    state = hass.wait_state(entity, lambda s: s["attributes"].get("release_summary"))
    assert state["attributes"]["release_summary"] == "rejected: signature does not verify"
    assert state["state"] == "off" and state["attributes"]["latest_version"] == "5"  # nothing to install
    assert "supported_features" in state["attributes"]
    assert state["attributes"]["supported_features"] & 1 == 0  # no Install: the device has no hold yet


def test_buttons_publish_the_commands(hass: Hass, publisher: Publisher) -> None:
    for name in ("reload", "snapshot"):
        hass.call("button", "press", entity_id=f"button.{NODE}_{name}")
        message = publisher.watch.next(f"edge/{DEVICE}/cmd/{name}")
        assert json.loads(message.payload) == {}


def test_offline_makes_everything_unavailable(hass: Hass, publisher: Publisher) -> None:
    publisher.online("offline")
    for entity in ENTITIES:
        hass.wait_state(entity, lambda s: s["state"] == "unavailable")
    publisher.online()
    for entity in ENTITIES:
        hass.wait_state(entity, known)


def test_templates_as_home_assistant_renders_them(hass: Hass) -> None:
    """Home Assistant's engine on the edge cases the entities above do not reach."""
    def update(**fields: Any) -> dict[str, Any]:
        status = Status(device=DEVICE, name="ssd", active={"name": "ssd", "version": 4, "sha256": SHA},
                        **fields).to_json()
        return json.loads(hass.render(UPDATE_TEMPLATE, value_json=status))

    assert update(state="downloading", version=5, progress=0.25) == {
        "installed_version": "4", "latest_version": "5", "title": "ssd", "in_progress": True,
        "update_percentage": 25.0}
    assert update(state="rolled_back", version=5, progress=1.0, reason="unhealthy")["latest_version"] == "4"
    shadow = {"agreement": 0.8, "samples": 70, "latency_ratio": 1.08, "converter": {"top1_agreement": 1.0}}
    shadowing = update(state="shadowing", version=5, progress=0.35, shadow=shadow)
    assert shadowing["in_progress"] is True and shadowing["update_percentage"] == 35.0
    assert shadowing["release_summary"] == (
        "shadow stage: agreement 0.8 on 70 live inputs (converter 1.0), latency 1.08x")
    rejected = update(state="rejected", version=5, progress=0.35, shadow=shadow,
                      reason="shadow stage failed: agreement 0.800 < 0.9")
    assert rejected["latest_version"] == "4" and rejected["release_summary"].startswith(
        "rejected: shadow stage failed: agreement 0.800 < 0.9; shadow stage: agreement 0.8 on 70")
    idle = json.loads(hass.render(UPDATE_TEMPLATE, value_json={"state": "idle", "active": None}))
    assert idle == {"in_progress": False, "update_percentage": None}  # no null strings (2025's schema)
    counts = {"labels": {"Bob's car": 3}, "zones": {"it's \\ here": {"Bob's car": 1}}}
    assert hass.render(count_template("Bob's car"), value_json=counts) == "3"
    assert hass.render(count_template("Bob's car", "it's \\ here"), value_json=counts) == "1"
    assert hass.render(count_template("Bob's car"), value_json={}) == "0"
    assert hass.render(event_template("o'clock"), value_json={"type": "end", "source": "o'clock"}).startswith(
        '{"event_type":')
    assert hass.render(event_template("o'clock"), value_json={"type": "end", "source": "other"}) == ""
