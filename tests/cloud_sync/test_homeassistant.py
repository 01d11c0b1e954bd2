"""Home Assistant discovery on a real broker: configs field by field (entity ids, origin), binary_sensor ON
then OFF, states after a failed input, segmentation labels, the last will."""

from __future__ import annotations

import importlib.util
import json
import queue
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from cloud_sync import event_publisher
from cloud_sync.homeassistant import SENSORS, Discovery, HomeAssistant, origin, topic_level
from cloud_sync.topics import DeviceTopics
from edge import __version__
from tests.broker import Broker
from tests.cloud_sync.fakes import record
from tests.cloud_sync.helpers import Watcher, device, wait_for

NODE = "edge_cam-1"  # a valid HA node id is kept as is, so the ACL (edge_%u) matches


def configs(watch: Watcher, n: int) -> dict[str, dict]:  # type: ignore[type-arg]
    out = {}
    while len(out) < n:
        msg = watch.next("homeassistant/")
        if msg.topic.endswith("/config"):
            out[msg.topic] = json.loads(msg.payload)
    return out


def test_discovery_configs_and_binary_sensor(mosquitto: Broker, tmp_path: Path) -> None:
    watch = Watcher(mosquitto.url, "homeassistant/#", "edge/#")
    sync = device(mosquitto.url, tmp_path, device_id="cam-1", telemetry_interval_s=0, ha_discovery=True,
                  ha_labels=("person",), ha_off_delay_s=0.6, ha_threshold=0.5)
    found = configs(watch, 6)
    sensors = {t.split("/")[3]: c for t, c in found.items() if t.startswith("homeassistant/sensor/")}
    assert set(sensors) == {"last_label", "last_score", "latency", "fps", "model_version"}
    assert all(t.split("/")[2] == NODE for t in found)
    binary = found[f"homeassistant/binary_sensor/{NODE}/seen_person/config"]

    availability = [{"topic": "edge/cam-1/status", "value_template": "{{ value_json.state }}",
                     "payload_available": "online", "payload_not_available": "offline"}]
    device_block = {"identifiers": [NODE], "name": "Edge cam-1", "manufacturer": "edge-runtime",
                    "model": "digits", "sw_version": __version__}
    for object_id, config in sensors.items():
        assert config["unique_id"] == f"{NODE}_{object_id}"
        assert config["state_topic"] == "edge/cam-1/state"
        assert config["availability"] == availability
        assert config["device"] == device_block
        assert config["value_template"].startswith("{{ value_json.")
        assert config["object_id"] == f"{NODE}_{object_id}"  # Home Assistant before 2025.10
        assert config["default_entity_id"] == f"sensor.edge_cam_1_{object_id}"  # 2025.10 on: the same id
        assert config["origin"] == origin() and config["origin"]["name"] == "edge-runtime"
    assert sensors["latency"]["unit_of_measurement"] == "ms"
    assert sensors["last_label"]["value_template"] == (
        "{{ value_json.label if value_json.label != None else 'unknown' }}")
    assert binary == {
        "name": "person seen", "unique_id": f"{NODE}_seen_person", "object_id": f"{NODE}_seen_person",
        "default_entity_id": "binary_sensor.edge_cam_1_seen_person",
        "state_topic": "edge/cam-1/presence/person", "payload_on": "ON", "payload_off": "OFF",
        "device_class": "occupancy", "device": device_block, "availability": availability,
        "origin": {"name": "edge-runtime", "sw_version": __version__, **(
            {"support_url": origin()["support_url"]} if "support_url" in origin() else {})},
    }
    assert watch.next("presence/person").payload == b"OFF"  # initial state

    sync.sinks[0].emit(record("a.jpg", label="person", score=0.3))  # below the threshold: stays OFF
    state = watch.next_json("edge/cam-1/state")
    assert state == {"label": "person", "score": 0.3, "latency_ms": 3.6, "fps": 12.5, "model_version": 3}
    sync.sinks[0].emit(record("b.jpg", label="person", score=0.9))
    on = watch.next("presence/person")
    assert on.payload == b"ON"
    off = watch.next("presence/person", timeout=10)  # nobody seen for ha_off_delay_s
    assert off.payload == b"OFF"

    # Home Assistant restarts: its birth message makes the device publish the configs again
    watch.drain()
    watch.conn.publish("homeassistant/status", b"online").wait(5)
    assert len(configs(watch, 6)) == 6
    sync.close()
    status = wait_for(lambda: watch.next_json("edge/cam-1/status"))
    assert status["state"] == "offline"  # availability goes offline
    watch.close()


def render(template: str, **value_json: object) -> str:
    """Render a value_template as Home Assistant does (jinja2's sandbox) when jinja2 is installed, else
    evaluate its expression: ours are valid Python too (``!= None``, not jinja's ``is not none``)."""
    if importlib.util.find_spec("jinja2") is not None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        return str(ImmutableSandboxedEnvironment().from_string(template).render(value_json=value_json))
    expression = template.removeprefix("{{").removesuffix("}}").strip()
    return str(eval(expression, {"__builtins__": {}}, {"value_json": SimpleNamespace(**value_json)}))


def failed(item: str) -> dict:  # type: ignore[type-arg]
    """A failed input as the pipeline reports it: no classes, an error, a timing of (almost) nothing."""
    return {"schema": 1, "time": "2026-11-22T17:19:06.000Z", "input": item,
            "model": {"name": "digits", "version": 3}, "task": "classification",
            "timing_ms": {"decode": 0.0, "preprocess": 0.0, "invoke": 0.0, "postprocess": 0.0, "total": 0.0},
            "error": f"cannot read {item}: not an image; check the file"}


def segmentation(item: str, *segments: tuple[str, float, bool]) -> dict:  # type: ignore[type-arg]
    """A segmentation record (docs/results-schema.md): (label, share, background) per class present."""
    return {"schema": 1, "time": "2026-11-22T17:19:07.000Z", "input": item,
            "model": {"name": "deeplab", "version": 1}, "task": "segmentation",
            "segments": [{"label": label, "index": i, "share": share, "box": [0.0, 0.0, 10.0, 10.0],
                          "region_share": share, "background": background}
                         for i, (label, share, background) in enumerate(segments)],
            "timing_ms": {"decode": 1.0, "preprocess": 0.5, "invoke": 40.0, "postprocess": 2.0,
                          "total": 43.5},
            "error": None}


def states(watch: Watcher, n: int) -> list[dict]:  # type: ignore[type-arg]
    return [watch.next_json("edge/cam-1/state", timeout=10) for _ in range(n)]


def test_entity_ids_origin_on_every_config(mosquitto: Broker, tmp_path: Path) -> None:
    """default_entity_id is <component>.<what HA made of object_id>; both keys stay (see the module doc)."""
    watch = Watcher(mosquitto.url, "homeassistant/#")
    sync = device(mosquitto.url, tmp_path, device_id="cam-1", telemetry_interval_s=0, ha_discovery=True,
                  ha_labels=("person", "Traffic Light"))
    found = configs(watch, 7)
    ids = {c["unique_id"]: c["default_entity_id"] for c in found.values()}
    assert ids == {
        f"{NODE}_last_label": "sensor.edge_cam_1_last_label",
        f"{NODE}_last_score": "sensor.edge_cam_1_last_score",
        f"{NODE}_latency": "sensor.edge_cam_1_latency",
        f"{NODE}_fps": "sensor.edge_cam_1_fps",
        f"{NODE}_model_version": "sensor.edge_cam_1_model_version",
        f"{NODE}_seen_person": "binary_sensor.edge_cam_1_seen_person",
        f"{NODE}_seen_traffic_light": "binary_sensor.edge_cam_1_seen_traffic_light",
    }
    for topic, config in found.items():
        component = topic.split("/")[1]
        domain, _, entity = config["default_entity_id"].partition(".")
        assert domain == component and re.fullmatch(r"(?!_)[a-z0-9_]+(?<!_)", entity)  # HA's entity id rule
        assert "__" not in entity
        assert config["object_id"] == config["unique_id"]  # for Home Assistant before 2025.10
        assert config["origin"]["name"] == "edge-runtime" and config["origin"]["sw_version"] == __version__
        assert set(config["origin"]) <= {"name", "sw_version", "support_url"}
        assert str(config["origin"].get("support_url", "https://")).startswith(("https://", "http://"))
    sync.close()
    watch.close()


def test_failed_input_leaves_label_score_and_latency(mosquitto: Broker, tmp_path: Path) -> None:
    watch = Watcher(mosquitto.url, "edge/cam-1/state")
    sync = device(mosquitto.url, tmp_path, device_id="cam-1", telemetry_interval_s=0, ha_discovery=True,
                  ha_labels=("person",))
    sink = sync.sinks[0]

    sink.emit(failed("first.jpg"))  # nothing inferred yet: unknown, never the text None or 0.0 ms
    first = watch.next_json("edge/cam-1/state")
    assert first == {"label": None, "score": None, "latency_ms": None, "fps": 12.5, "model_version": 3}
    templates = {object_id: template for object_id, _, template, _, _ in SENSORS}
    assert render(templates["last_label"], **first) == "unknown"
    assert render(templates["latency"], **first) == "None"  # a numeric sensor makes "None" unknown

    sink.emit(record("a.jpg", label="person", score=0.9))
    good = watch.next_json("edge/cam-1/state")  # waits for min_interval_s, sent by the ticker
    assert good == {"label": "person", "score": 0.9, "latency_ms": 3.6, "fps": 12.5, "model_version": 3}
    assert render(templates["last_label"], **good) == "person"
    for n in range(3):
        sink.emit(failed(f"bad{n}.jpg"))
    after = watch.next_json("edge/cam-1/state")  # the same values: HA records no new state
    assert after == good
    assert render(templates["latency"], **after) == "3.6"
    for message in watch.drain():
        body = json.loads(message.payload)
        assert body["label"] == "person" and body["latency_ms"] == 3.6
    sync.close()
    watch.close()


def test_segments_count_as_labels_seen(mosquitto: Broker, tmp_path: Path) -> None:
    watch = Watcher(mosquitto.url, "edge/cam-1/state", "edge/cam-1/presence/#")
    sync = device(mosquitto.url, tmp_path, device_id="cam-1", telemetry_interval_s=0, ha_discovery=True,
                  ha_labels=("person", "background", "dog"), ha_off_delay_s=60)
    for label in ("person", "background", "dog"):
        assert watch.next(f"presence/{label}").payload == b"OFF"
    sync.sinks[0].emit(segmentation("s.jpg", ("background", 0.7, True), ("person", 0.2, False),
                                    ("dog", 0.1, False)))
    turned = {watch.next("presence/").topic.rsplit("/", 1)[1] for _ in range(2)}
    assert turned == {"person", "dog"}  # each segment other than the background, whatever its share
    state = watch.next_json("edge/cam-1/state")
    # the largest segment; a share is not a confidence, so no score
    assert state == {"label": "person", "score": None, "latency_ms": 43.5, "fps": 12.5, "model_version": 1}
    with pytest.raises(queue.Empty):
        watch.next("presence/background", timeout=1.0)  # the background is never "seen"
    sync.close()
    watch.close()


def test_last_will_carries_no_time(mosquitto: Broker, tmp_path: Path) -> None:
    """The will is fixed at connect time, so it says offline and nothing about when."""
    watch = Watcher(mosquitto.url, "edge/cam-1/status")
    sync = device(mosquitto.url, tmp_path, device_id="cam-1", telemetry_interval_s=0, ha_discovery=True)
    online = wait_for(lambda: watch.next_json("edge/cam-1/status"))
    assert online["state"] == "online" and isinstance(online["ts"], float)  # online: the connect time
    sync.connection._client._sock_close()  # the device vanishes without DISCONNECT: the broker sends the will
    sync.connection._client.loop_stop()
    will = watch.next_json("edge/cam-1/status")
    assert will == {"state": "offline"}
    sync.close(drain_timeout=0)
    watch.close()


def test_event_engine_buttons_and_update_configs() -> None:
    """Ids, topics and the common blocks of the newer entities; announced per source as sources come."""
    published: list[tuple[str, bytes]] = []
    discovery = Discovery(DeviceTopics("edge", "cam-1"), labels=("person", "Bob's car"),
                          sources=("drive-way",), zones={"drive-way": ("gate",)}, events=True, updates=True)
    ha = HomeAssistant(discovery, lambda t, p, q, r: published.append((t, p)))
    assert ha.sources == ("drive-way",)  # the sources given to Discovery are announced too
    found = discovery.configs(ha.sources)
    ids = {c["default_entity_id"] for c in found.values()}
    s = "edge_cam_1_source_drive_way"
    assert {f"image.{s}_snapshot", f"image.{s}_person_snapshot", f"event.{s}_event",
            f"sensor.{s}_person_count", f"sensor.{s}_gate_person_count",
            f"binary_sensor.{s}_person_occupancy", f"binary_sensor.{s}_gate_person_occupancy",
            f"sensor.{s}_bob_s_car_count", "button.edge_cam_1_reload", "button.edge_cam_1_snapshot",
            "update.edge_cam_1_model_update"} <= ids
    snapshot = {c["default_entity_id"]: c for c in found.values()}[f"image.{s}_bob_s_car_snapshot"]
    assert snapshot["image_topic"] == "edge/cam-1/drive-way/Bob's_car/snapshot"  # as the events name it
    for name in ("Bob's car", "a/b+c#d", "tab\there", "plain"):
        assert topic_level(name) == event_publisher.topic_level(name)
    by_id = {c["default_entity_id"]: c for c in found.values()}
    assert by_id[f"image.{s}_snapshot"]["image_topic"] == "edge/cam-1/drive-way/snapshot"
    assert by_id[f"image.{s}_person_snapshot"]["content_type"] == "image/jpeg"
    assert by_id[f"event.{s}_event"]["state_topic"] == "edge/cam-1/events"
    assert by_id[f"event.{s}_event"]["event_types"] == ["new", "update", "end"]
    assert by_id["button.edge_cam_1_reload"]["command_topic"] == "edge/cam-1/cmd/reload"
    assert by_id["button.edge_cam_1_snapshot"]["payload_press"] == "{}"
    assert by_id["update.edge_cam_1_model_update"]["state_topic"] == "edge/cam-1/model/status"
    for config in found.values():
        assert config["origin"] == origin() and config["object_id"] == config["unique_id"]
        assert config["availability"][0]["topic"] == "edge/cam-1/status"

    # (what Home Assistant renders of these templates: tests/homeassistant/test_entities.py)
    ha.add_sources(["porch"])  # a later source gets all its entities at once
    porch = {t for t, _ in published if "/edge_cam-1/source_porch" in t}
    assert porch == set(discovery.source_configs("porch"))
    by_function = Discovery(DeviceTopics("edge", "cam-1"), labels=("person",), events=True,
                            zones=lambda source: ("gate",) if source == "porch" else ())
    assert "homeassistant/sensor/edge_cam-1/source_porch_gate_person_count/config" in (
        by_function.source_configs("porch"))
    assert not [t for t in by_function.source_configs("yard") if "gate" in t]
    assert len(porch) == len([t for t in found if "/source_drive-way" in t]) - 4  # no zones: no gate entities

