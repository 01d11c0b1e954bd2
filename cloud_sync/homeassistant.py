"""Home Assistant MQTT discovery: one device, five sensors, one binary_sensor per watched label and one
connectivity binary_sensor per input source.

Configs go to ``homeassistant/<component>/edge_<id>/<object>/config`` (retained) and are re-published
when ``homeassistant/status`` says ``online``. Sensor values come from ``<prefix>/<id>/state`` (JSON,
retained, at most ``min_interval_s`` apart); each label binary_sensor reads ``<prefix>/<id>/presence/<label>``
(``ON``/``OFF``, retained): ON when the label is seen with a score at or above the threshold, OFF once it
has not been seen for ``off_delay_s``. Each source binary_sensor reads the retained JSON on
``<prefix>/<id>/sources/<name>/state`` (published by ``cloud_sync.device``): ON while ``streaming``, and
shows the whole JSON (state, reason, target, counters) as attributes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cloud_sync.messages import dumps
from cloud_sync.topics import DeviceTopics, is_topic_part
from edge import __version__

log = logging.getLogger(__name__)

DISCOVERY_PREFIX = "homeassistant"
BIRTH_TOPIC = f"{DISCOVERY_PREFIX}/status"
SENSORS = (
    # object id, name, value template, unit, extra
    ("last_label", "Last label", "{{ value_json.label }}", None, {"icon": "mdi:tag"}),
    ("last_score", "Last score", "{{ value_json.score }}", None, {"state_class": "measurement"}),
    ("latency", "Inference latency", "{{ value_json.latency_ms }}", "ms",
     {"state_class": "measurement", "device_class": "duration"}),
    ("fps", "Frames per second", "{{ value_json.fps }}", "fps", {"state_class": "measurement"}),
    ("model_version", "Model version", "{{ value_json.model_version }}", None, {"icon": "mdi:brain"}),
)
# A source's binary_sensor: ON while it streams; connecting, stalled, down and finished are OFF.
SOURCE_TEMPLATE = "{{ 'ON' if value_json.state == 'streaming' else 'OFF' }}"


def _fps(fps: Callable[[], Any]) -> float | None:
    try:
        value = fps()
    except Exception:
        log.debug("fps unavailable", exc_info=True)
        return None
    return round(float(value), 2) if isinstance(value, int | float) else None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def node_safe(text: str) -> str:
    """A device id as a discovery node id: HA allows [a-zA-Z0-9_-], so valid ids stay as they are
    (the broker ACL matches ``edge_<username>`` literally)."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "x"


def source_object_id(name: str) -> str:
    """``source_<name>`` as a discovery object id ([a-zA-Z0-9_-]); a name that had to be changed (``cam.1``)
    gets a short hash of the original so that ``cam.1`` and ``cam_1`` stay two entities."""
    safe = node_safe(name)
    if safe != name:
        safe = f"{safe}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    return f"source_{safe}"


@dataclass(frozen=True, slots=True)
class Discovery:
    topics: DeviceTopics
    labels: tuple[str, ...] = ()
    off_delay_s: float = 10.0
    threshold: float = 0.5
    model_name: str | None = None

    @property
    def node_id(self) -> str:
        return f"edge_{node_safe(self.topics.device_id)}"

    @property
    def state_topic(self) -> str:
        return f"{self.topics.base}/state"

    def presence_topic(self, label: str) -> str:
        return f"{self.topics.base}/presence/{slug(label)}"

    def device(self) -> dict[str, Any]:
        return {
            "identifiers": [self.node_id],
            "name": f"Edge {self.topics.device_id}",
            "manufacturer": "edge-runtime",
            "model": self.model_name or "edge inference runtime",
            "sw_version": __version__,
        }

    def availability(self) -> dict[str, Any]:
        return {
            "availability": [
                {
                    "topic": self.topics.status,
                    "value_template": "{{ value_json.state }}",
                    "payload_available": "online",
                    "payload_not_available": "offline",
                }
            ],
        }

    def source_config(self, name: str) -> tuple[str, dict[str, Any]]:
        """(discovery topic, config) of source ``name``'s connectivity binary_sensor."""
        object_id = source_object_id(name)
        state_topic = self.topics.source_state(name)
        return f"{DISCOVERY_PREFIX}/binary_sensor/{self.node_id}/{object_id}/config", {
            "name": f"Source {name}",
            "unique_id": f"{self.node_id}_{object_id}",
            "object_id": f"{self.node_id}_{object_id}",
            "state_topic": state_topic,
            "value_template": SOURCE_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "connectivity",
            "json_attributes_topic": state_topic,
            "device": self.device(),
            **self.availability(),
        }

    def configs(self, sources: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config payload (with one binary_sensor per name in ``sources``)."""
        out: dict[str, dict[str, Any]] = {}
        for object_id, name, template, unit, extra in SENSORS:
            config: dict[str, Any] = {
                "name": name,
                "unique_id": f"{self.node_id}_{object_id}",
                "object_id": f"{self.node_id}_{object_id}",
                "state_topic": self.state_topic,
                "value_template": template,
                "device": self.device(),
                **self.availability(),
                **extra,
            }
            if unit:
                config["unit_of_measurement"] = unit
            out[f"{DISCOVERY_PREFIX}/sensor/{self.node_id}/{object_id}/config"] = config
        for label in self.labels:
            object_id = f"seen_{slug(label)}"
            out[f"{DISCOVERY_PREFIX}/binary_sensor/{self.node_id}/{object_id}/config"] = {
                "name": f"{label} seen",
                "unique_id": f"{self.node_id}_{object_id}",
                "object_id": f"{self.node_id}_{object_id}",
                "state_topic": self.presence_topic(label),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "occupancy",
                "device": self.device(),
                **self.availability(),
            }
        for name in sources:
            topic, config = self.source_config(name)
            out[topic] = config
        return out


def labels_seen(record: dict[str, Any]) -> dict[str, float]:
    """label -> best score in a result record (``classes`` or ``objects``)."""
    seen: dict[str, float] = {}
    for key in ("classes", "objects"):
        items = record.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("label"), str):
                raw = item.get("score")
                score = float(raw) if isinstance(raw, int | float) else 1.0
                seen[item["label"]] = max(score, seen.get(item["label"], 0.0))
    return seen


def top_label(seen: dict[str, float]) -> tuple[str | None, float | None]:
    """The best-scoring (label, score) of ``labels_seen(record)``; (None, None) when empty."""
    best: tuple[str | None, float | None] = (None, None)
    for label, score in seen.items():
        if best[1] is None or score > best[1]:
            best = (label, score)
    return best


class HomeAssistant:
    """Publishes discovery configs, the sensor state and the binary_sensor ON/OFF transitions."""

    def __init__(
        self, discovery: Discovery, publish: Any, min_interval_s: float = 0.5, sources: Iterable[str] = ()
    ) -> None:
        self.discovery = discovery
        self._publish = publish  # (topic, payload, qos, retain) -> Any
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._state: dict[str, str] = {}
        self._last_state_sent = 0.0
        self._sources: list[str] = []
        self._accept_sources(sources)

    def _accept_sources(self, names: Iterable[str]) -> list[str]:
        """Remember the names not known yet (skipping, with a warning, names no topic can carry)."""
        new: list[str] = []
        with self._lock:
            for name in names:
                if name in self._sources or name in new:
                    continue
                if not is_topic_part(name):
                    log.warning("source %r gets no Home Assistant entity: no topic level can carry it", name)
                    continue
                new.append(name)
            self._sources.extend(new)
        return new

    @property
    def sources(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._sources)

    def add_sources(self, names: Iterable[str]) -> None:
        """Announce a binary_sensor for each source not announced yet (sources that appear after start)."""
        for name in self._accept_sources(names):
            topic, config = self.discovery.source_config(name)
            self._publish(topic, dumps(config), 1, True)

    def announce(self) -> None:
        """(Re-)publish every discovery config (retained) and the current ON/OFF states."""
        for topic, config in self.discovery.configs(self.sources).items():
            self._publish(topic, dumps(config), 1, True)
        with self._lock:
            states = {label: self._state.get(label, "OFF") for label in self.discovery.labels}
        for label, state in states.items():
            self._publish(self.discovery.presence_topic(label), state, 1, True)
        log.info("Home Assistant discovery published for %s", self.discovery.node_id)

    def on_birth(self, payload: bytes) -> None:
        if payload.strip().lower() == b"online":
            self.announce()

    def observe(self, record: dict[str, Any], fps: Callable[[], Any], model_version: Any) -> None:
        """Update sensors and presence from one result record (``fps()`` is asked only when needed)."""
        now = time.monotonic()
        seen = labels_seen(record)
        turned_on: list[str] = []
        with self._lock:
            for label in self.discovery.labels:
                if seen.get(label, -1.0) >= self.discovery.threshold:
                    self._last_seen[label] = now
                    if self._state.get(label) != "ON":
                        self._state[label] = "ON"
                        turned_on.append(label)
            send_state = now - self._last_state_sent >= self.min_interval_s
            if send_state:
                self._last_state_sent = now
        for label in turned_on:
            self._publish(self.discovery.presence_topic(label), "ON", 1, True)
        if send_state:
            top, score = top_label(seen)
            timing = record.get("timing_ms")
            latency = timing.get("total") if isinstance(timing, dict) else None
            state = {
                "label": top,
                "score": None if score is None else round(score, 4),
                "latency_ms": latency,
                "fps": _fps(fps),
                "model_version": model_version,
            }
            self._publish(self.discovery.state_topic, dumps(state), 0, True)

    def tick(self) -> None:
        """Turn OFF labels not seen for ``off_delay_s``."""
        now = time.monotonic()
        turned_off: list[str] = []
        with self._lock:
            for label, state in self._state.items():
                if state == "ON" and now - self._last_seen.get(label, 0.0) >= self.discovery.off_delay_s:
                    self._state[label] = "OFF"
                    turned_off.append(label)
        for label in turned_off:
            self._publish(self.discovery.presence_topic(label), "OFF", 1, True)
