"""The event engine of a real ``edge run --events`` (tracker, zones, events, counts, snapshots) seen through
a real Home Assistant: the moving red square of tests/e2e/test_tracking_cli.py through the test SSD model
gives one event (new, update on entering the right half, end), counts that go up and down and the best
frame of the event, and Home Assistant shows each of them.

The device announces these entities itself (``--ha-discovery`` with ``--events``); the test publishes the
same configs (``Discovery``'s own, retained) before the run as well, so Home Assistant's subscriptions are
live before the one-second clip starts; everything else is the device's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cloud_sync.connection import Message
from cloud_sync.homeassistant import Discovery
from cloud_sync.messages import EVENT_SCHEMA, build_result, dumps
from cloud_sync.topics import DeviceTopics
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher
from tests.e2e.test_tracking_cli import moving_square
from tests.homeassistant.hass import Hass, StateLog, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "evt1"
S = f"edge_{DEVICE}_source_yard"
TOPICS = DeviceTopics("edge", DEVICE)


def collect(watch: Watcher, topic: str) -> list[Message]:
    """Messages on ``topic`` the watcher got so far (kept across calls)."""
    for message in watch.drain():
        watch.seen.append(message)  # type: ignore[attr-defined]
    return [m for m in watch.seen if m.topic == topic]  # type: ignore[attr-defined]


def test_a_real_event_engine_in_home_assistant(
    hass: Hass, hass_states: StateLog, ha_broker: Broker, assets: Assets, tmp_path: Path
) -> None:
    # "probe": a second source's event entity on the same topic, fired by the test until Home Assistant
    # shows it, so its subscription to the events topic is live before the (fast) run starts
    discovery = Discovery(TOPICS, labels=("0",), model_name="ssd", sources=("yard", "probe"),
                          zones=("right",), events=True)
    watch = Watcher(ha_broker.url, "edge/evt1/#", client_id="ha-events")
    watch.seen = []  # type: ignore[attr-defined]
    try:
        for topic, config in discovery.configs(discovery.sources).items():
            watch.conn.publish(topic, dumps(config), qos=1, retain=True).wait(5)
        event, count, zone_count = f"event.{S}_event", f"sensor.{S}_0_count", f"sensor.{S}_right_0_count"
        occupancy, image = f"binary_sensor.{S}_0_occupancy", f"image.{S}_0_snapshot"
        for entity in (event, count, zone_count, occupancy, image):
            hass.wait_state(entity)
        probe = dumps(build_result({"type": "new", "event_id": "p", "source": "probe", "label": "0",
                                    "model": {"name": "ssd"}}, device=DEVICE, stream="p", seq=1,
                                   schema=EVENT_SCHEMA))
        watch.conn.publish(TOPICS.status, dumps({"state": "online"}), qos=1, retain=True).wait(5)

        def probed() -> bool:
            watch.conn.publish(TOPICS.events, probe, qos=1).wait(5)
            state = hass.state(f"event.edge_{DEVICE}_source_probe_event")
            return state is not None and state["attributes"].get("event_type") == "new"

        wait_until(probed, what="Home Assistant subscribed to the events topic")
        clip = moving_square(tmp_path / "square.mp4")
        done = subprocess.run(
            [sys.executable, "-m", "edge", "run", str(assets.model("ssd")), str(clip), "--std", "255",
             "--resize", "letterbox", "--source-name", "yard", "--events", "--min-frames", "2",
             "--zone", "right=0.5,0,1,0,1,1,0.5,1", "--mqtt", ha_broker.url, "--device-id", DEVICE,
             "--state-dir", str(tmp_path / "state"), "--telemetry-interval", "0", "--profile", "none"],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        # the run has ended (the device said offline): Home Assistant fired each event the device sent
        sent = wait_until(lambda: [e for e in (json.loads(m.payload) for m in collect(watch, TOPICS.events))
                                   if e["source"] == "yard"] or None, what="the device's events")
        assert [e["type"] for e in sent][:2] == ["new", "update"] and sent[-1]["type"] == "end", sent

        def fired_states() -> list[dict[str, Any]]:
            return [s for s in hass_states.full(event)
                    if s["state"] not in ("unavailable", "unknown") and s["attributes"].get("event_type")]

        shown = wait_until(lambda: len(fired_states()) >= len(sent) and fired_states(), what="every event")
        assert [(s["attributes"]["event_type"], s["attributes"]["event_id"]) for s in shown] == [
            (e["type"], e["event_id"]) for e in sent]
        assert all(s["attributes"]["label"] == "0" for s in shown)
        assert shown[1]["attributes"]["entered_zones"] == ["right"]  # the update is the zone entry
        counts = [s for s in hass_states.of(count) if s != "unavailable"]
        assert "1" in counts and counts[-1] == "0", counts  # the square was there, then it left
        assert "1" in hass_states.of(zone_count)  # it entered the right half
        assert hass_states.of(occupancy).count("on") >= 1 and "off" in hass_states.of(occupancy)
        assert any(s.startswith("20") for s in hass_states.of(image))  # a snapshot arrived

        # the picture Home Assistant serves is the retained best frame (shown while the device is online)
        late = Watcher(ha_broker.url, "edge/evt1/yard/0/snapshot", client_id="ha-late")
        best = late.next("edge/evt1/yard/0/snapshot").payload  # the retained one: the latest best frame
        late.close()
        watch.conn.publish(TOPICS.status, dumps({"state": "online"}), qos=1, retain=True).wait(5)
        hass.wait_state(image, lambda s: s["state"] != "unavailable")
        reply = hass.get(f"/api/image_proxy/{image}")
        assert reply.status_code == 200 and reply.content == best and best[:2] == b"\xff\xd8"  # a JPEG
    finally:
        watch.close()
