"""Home Assistant discovery on a real broker: configs field by field, binary_sensor ON then OFF."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert sensors["latency"]["unit_of_measurement"] == "ms"
    assert sensors["last_label"]["value_template"] == "{{ value_json.label }}"
    assert binary == {
        "name": "person seen", "unique_id": f"{NODE}_seen_person", "object_id": f"{NODE}_seen_person",
        "state_topic": "edge/cam-1/presence/person", "payload_on": "ON", "payload_off": "OFF",
        "device_class": "occupancy", "device": device_block, "availability": availability,
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
