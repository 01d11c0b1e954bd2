"""Source states over MQTT on a real broker and a real model: one retained state per source, telemetry's
``sources``, a connectivity binary_sensor per source in Home Assistant, republished after a broker restart."""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloud_sync.connection import Message, parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.homeassistant import SOURCE_TEMPLATE, origin, source_object_id
from cloud_sync.topics import DeviceTopics
from edge import __version__
from edge.cli.commands import run as edge_run
from edge.cli.sync_hooks import start_sync
from edge.errors import ConfigError
from edge.sources.base import SourceBoard, mask_url
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher, wait_for

PASSWORD = "s3cr3t-pw"
CAMERA_URL = f"rtsp://admin:{PASSWORD}@cam/stream"
TARGETS = {"front-door": ("stream", mask_url(CAMERA_URL)), "garage": ("video", "/videos/garage.mp4")}
NODE = "edge_cam-1"


@pytest.fixture(scope="module")
def pipeline(assets: Any) -> Iterator[Any]:
    from edge.model import load_model
    from edge.pipeline import Pipeline

    real = Pipeline(load_model(assets.model("digits_int8")), top_k=1)
    real.infer(sorted(assets.digit_images.iterdir())[0])  # telemetry then has real stats
    yield real
    real.close()


def make_board() -> SourceBoard:
    board = SourceBoard()
    for name, (kind, target) in TARGETS.items():
        board.add(name, kind, target)
    return board


def start_device(url: str, state_dir: Path, pipeline: Any, board: SourceBoard, **options: Any) -> DeviceSync:
    options.setdefault("telemetry_interval_s", 0)
    opts = DeviceOptions(broker=parse_broker_url(url), device_id="cam-1", state_dir=state_dir,
                         reconnect_max=1, **options)
    return DeviceSync(opts, pipeline, sources=board).start()


def next_state(watch: Watcher, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """The next state message of ``name`` (the watcher's other messages before it are skipped)."""
    return watch.next_json(f"/sources/{name}/state", timeout)


def states(watch: Watcher, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The next state message of each of ``names``, whatever order they come in."""
    found: dict[str, dict[str, Any]] = {}
    while len(found) < len(names):
        msg = watch.next("/sources/")
        name = msg.topic.split("/")[3]
        if name in names and name not in found:
            found[name] = json.loads(msg.payload)
    return found


def latest_retained(url: str, names: tuple[str, ...], client_id: str) -> dict[str, Message]:
    """What a subscriber arriving now gets: the retained state of each source."""
    late = Watcher(url, "edge/cam-1/sources/+/state", client_id=client_id)
    try:
        found: dict[str, Message] = {}
        while not set(names) <= set(found):
            msg = late.next("/sources/")
            found[msg.topic.split("/")[3]] = msg
        return found
    finally:
        late.close()


def test_states_retained_per_source_telemetry_and_final_states(
    mosquitto: Broker, tmp_path: Path, pipeline: Any
) -> None:
    watch = Watcher(mosquitto.url, "edge/cam-1/#")
    board = make_board()
    sync = start_device(mosquitto.url, tmp_path, pipeline, board, telemetry_interval_s=0.3)

    first = states(watch, tuple(TARGETS))  # sources known at start: connecting
    for name, (kind, target) in TARGETS.items():
        assert first[name] == board.snapshot()[name]
        assert first[name]["state"] == "connecting" and first[name]["kind"] == kind
        assert first[name]["target"] == target
    assert set(first["garage"]) >= {"source", "kind", "state", "reason", "since", "target", "captured",
                                    "inferred", "reconnects", "errors"}

    board.count("front-door", "captured", 25)
    board.count("front-door", "inferred", 5)
    board.set_state("front-door", "streaming")
    streaming = next_state(watch, "front-door")
    assert streaming == {**board.state("front-door").to_json(), **board.snapshot()["front-door"]}
    assert streaming["state"] == "streaming" and streaming["reason"] is None
    assert streaming["captured"] == 25 and streaming["inferred"] == 5
    board.set_state("garage", "down", "cannot open /videos/garage.mp4: No such file or directory")
    down = next_state(watch, "garage")
    assert down["state"] == "down" and down["reason"].startswith("cannot open") and down["source"] == "garage"

    retained = latest_retained(mosquitto.url, tuple(TARGETS), "late-1")
    assert all(msg.retain for msg in retained.values())
    assert json.loads(retained["front-door"].payload) == streaming
    assert json.loads(retained["garage"].payload) == down

    telemetry = watch.next_json("/telemetry")
    assert telemetry["sources"] == board.snapshot()
    assert telemetry["model"]["name"] == pipeline.model.name and telemetry["pipeline"]["count"] >= 1

    # clean shutdown: the caller sets the final states, close() publishes them before going offline
    board.set_state("front-door", "finished", "stopped")
    board.set_state("garage", "down", "stopped")
    watch.drain()
    sync.close()
    tail: list[Message] = []
    while not (tail and tail[-1].topic.endswith("/status")):
        tail.append(watch.next("cam-1/"))
    assert json.loads(tail[-1].payload)["state"] == "offline"
    finals = {m.topic.split("/")[3]: json.loads(m.payload) for m in tail if "/sources/" in m.topic}
    assert finals["front-door"]["state"] == "finished" and finals["front-door"]["reason"] == "stopped"
    assert finals["garage"]["state"] == "down" and finals["garage"]["reason"] == "stopped"
    watch.close()

    everything = latest_retained(mosquitto.url, tuple(TARGETS), "late-2")
    assert json.loads(everything["front-door"].payload)["state"] == "finished"
    for msg in [*everything.values(), *retained.values()]:
        assert PASSWORD not in msg.payload.decode() and "admin" not in msg.payload.decode()
    assert json.loads(everything["front-door"].payload)["target"] == "rtsp://***@cam/stream"


def test_a_flapping_source_is_throttled_and_ends_with_its_latest_state(
    mosquitto: Broker, tmp_path: Path, pipeline: Any
) -> None:
    watch = Watcher(mosquitto.url, "edge/cam-1/sources/front-door/state")
    board = make_board()
    sync = start_device(mosquitto.url, tmp_path, pipeline, board)
    assert next_state(watch, "front-door")["state"] == "connecting"
    flips = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a camera flapping as fast as it can for a second
        board.set_state("front-door", "stalled" if flips % 2 else "streaming", f"flip {flips}")
        flips += 1
    board.set_state("front-door", "down", "gave up")
    last = wait_for(lambda: next_state(watch, "front-door")["reason"] == "gave up", what="the latest state")
    assert last
    time.sleep(0.7)  # anything still scheduled would have gone out by now
    late = watch.drain()
    received = sync.source_states.published if sync.source_states else 0
    assert flips > 100
    assert received < 12, f"{received} messages for {flips} changes"  # at most ~2 a second per source
    assert [m for m in late if json.loads(m.payload)["reason"] != "gave up"] == []  # nothing after the latest
    retained = latest_retained(mosquitto.url, ("front-door",), "late")["front-door"]
    assert json.loads(retained.payload)["state"] == "down"
    sync.close()
    watch.close()


def test_broker_restart_republishes_the_latest_states(
    mosquitto: Broker, tmp_path: Path, pipeline: Any
) -> None:
    board = make_board()
    sync = start_device(mosquitto.url, tmp_path, pipeline, board)
    board.set_state("front-door", "streaming")
    wait_for(lambda: json.loads(latest_retained(mosquitto.url, ("front-door",), "w0")["front-door"].payload)
             ["state"] == "streaming", what="streaming retained")

    mosquitto.kill()  # SIGKILL: the broker saves nothing, its retained messages are gone
    wait_for(lambda: not sync.connection.connected, what="the device sees the broker gone")
    assert sync.source_states is not None
    sent = sync.source_states.published
    for reason in ("no frame for 5 s", "reconnecting", "connection refused"):  # changes while offline
        board.set_state("front-door", "stalled", reason)
    time.sleep(0.6)
    assert sync.source_states.published == sent  # nothing piles up while offline

    mosquitto.start()
    wait_for(lambda: sync.connection.connected, what="the device reconnects")
    retained = latest_retained(mosquitto.url, tuple(TARGETS), "w1")
    front, garage = (json.loads(retained[n].payload) for n in ("front-door", "garage"))
    assert (front["state"], front["reason"]) == ("stalled", "connection refused")  # the latest only
    assert garage == board.snapshot()["garage"] and garage["state"] == "connecting"  # unchanged, sent again
    assert front == board.snapshot()["front-door"]
    assert sync.source_states.published - sent <= 2 * len(TARGETS)  # one per source (2 connects at most)
    sync.close()


def render(template: str, state: str) -> str:
    """Render a value_template with jinja2 when installed, else evaluate its expression (valid Python too)."""
    if importlib.util.find_spec("jinja2") is not None:
        import jinja2

        return str(jinja2.Environment().from_string(template).render(value_json={"state": state}))
    expression = template.removeprefix("{{").removesuffix("}}").strip()
    return str(eval(expression, {"__builtins__": {}}, {"value_json": SimpleNamespace(state=state)}))


def source_config(name: str) -> dict[str, Any]:
    topic = f"edge/cam-1/sources/{name}/state"
    return {
        "name": f"Source {name}",
        "unique_id": f"{NODE}_source_{name}",
        "object_id": f"{NODE}_source_{name}",
        # what HA made of object_id: lower case, runs of other characters than a-z 0-9 one "_"
        "default_entity_id": "binary_sensor.edge_cam_1_source_" + name.lower().replace("-", "_"),
        "state_topic": topic,
        "value_template": "{{ 'ON' if value_json.state == 'streaming' else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "connectivity",
        "json_attributes_topic": topic,
        "device": {"identifiers": [NODE], "name": "Edge cam-1", "manufacturer": "edge-runtime",
                   "model": "digits_int8", "sw_version": __version__},
        "availability": [{"topic": "edge/cam-1/status", "value_template": "{{ value_json.state }}",
                          "payload_available": "online", "payload_not_available": "offline"}],
        "origin": origin(),
    }


def configs(watch: Watcher, wanted: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    while not wanted <= set(found):
        msg = watch.next("homeassistant/")
        if msg.topic.endswith("/config"):
            found[msg.topic] = json.loads(msg.payload)
    return found


def test_home_assistant_binary_sensor_per_source_through_start_sync(
    mosquitto: Broker, tmp_path: Path, pipeline: Any, assets: Any
) -> None:
    watch = Watcher(mosquitto.url, "homeassistant/#", "edge/cam-1/sources/#")
    board = make_board()
    parser = argparse.ArgumentParser()
    edge_run.add_arguments(parser)  # edge run's own flags, turned into its settings as edge run does
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    args = parser.parse_args([str(assets.model("digits_int8")), str(inbox), "--mqtt", mosquitto.url,
                              "--device-id", "cam-1", "--state-dir", str(tmp_path),
                              "--telemetry-interval", "0", "--ha-discovery"])
    settings = edge_run.settings_from(args)
    assert settings.mqtt is not None and settings.mqtt.device_id == "cam-1"
    assert settings.homeassistant.discovery and settings.sources.files == (str(inbox),)
    sync = start_sync(settings, pipeline, board)
    assert isinstance(sync, DeviceSync) and sync.sources is board

    topics = {name: f"homeassistant/binary_sensor/{NODE}/source_{name}/config" for name in TARGETS}
    found = configs(watch, set(topics.values()))
    for name, topic in topics.items():
        assert found[topic] == source_config(name)
    assert len([t for t in found if t.startswith("homeassistant/sensor/")]) == 5  # the others still there
    template = found[topics["front-door"]]["value_template"]
    assert template == SOURCE_TEMPLATE
    assert render(template, "streaming") == "ON"
    for other in ("connecting", "stalled", "down", "finished"):
        assert render(template, other) == "OFF"

    board.set_state("front-door", "streaming")  # what HA reads from state_topic / json_attributes_topic
    state = next_state(watch, "front-door")
    while state["state"] != "streaming":
        state = next_state(watch, "front-door")
    assert render(template, state["state"]) == "ON"
    assert state["target"] == "rtsp://***@cam/stream"

    board.add("porch", "camera", "/dev/video0")  # a source that appears later is announced by itself
    porch = f"homeassistant/binary_sensor/{NODE}/source_porch/config"
    assert configs(watch, {porch})[porch] == source_config("porch")
    assert next_state(watch, "porch")["state"] == "connecting"

    watch.drain()
    watch.conn.publish("homeassistant/status", b"online").wait(5)  # HA restarts: every config again
    again = configs(watch, {*topics.values(), porch})
    assert again[porch] == source_config("porch")
    sync.close()
    watch.close()


def test_names_as_topics_and_object_ids() -> None:
    topics = DeviceTopics("edge", "cam-1")
    assert topics.source_state("front-door") == "edge/cam-1/sources/front-door/state"
    for bad in ("a/b", "a+", "#", "", "two words"):
        with pytest.raises(ConfigError, match="cannot be used in an MQTT topic"):
            topics.source_state(bad)
    assert source_object_id("front-door") == "source_front-door"
    assert source_object_id("Cam_2") == "source_Cam_2"
    dotted, underscored = source_object_id("cam.1"), source_object_id("cam_1")
    assert dotted.startswith("source_cam_1_") and len(dotted) == len("source_cam_1_") + 6
    assert underscored == "source_cam_1" and dotted != underscored
