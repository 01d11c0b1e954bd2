"""Home Assistant MQTT discovery: one device, five sensors, one binary_sensor per watched label and one
connectivity binary_sensor per input source.

Configs go to ``homeassistant/<component>/edge_<id>/<object>/config`` (retained) and are re-published
when ``homeassistant/status`` says ``online``. Sensor values come from ``<prefix>/<id>/state`` (JSON,
retained, at most ``min_interval_s`` apart); each label binary_sensor reads ``<prefix>/<id>/presence/<label>``
(``ON``/``OFF``, retained): ON when the label is seen with a score at or above the threshold, OFF once it
has not been seen for ``off_delay_s``. Each source binary_sensor reads the retained JSON on
``<prefix>/<id>/sources/<name>/state`` (published by ``cloud_sync.device``): ON while ``streaming``, and
shows the whole JSON (state, reason, target, counters) as attributes.

Every config carries ``origin`` (this software: name, version, support URL when the package declares one)
and both ``object_id`` and ``default_entity_id``: Home Assistant before 2025.10 reads ``object_id`` and drops
the unknown ``default_entity_id`` (its discovery schemas remove extra keys); 2025.10 to 2026.3 use
``default_entity_id`` and stay silent about ``object_id`` when both are given; 2026.4 ignores ``object_id``.
Both name the same entity id (``default_entity_id`` is ``<component>.<object_id>`` slugified as Home
Assistant slugifies ``object_id``), so an entity keeps its id across Home Assistant upgrades.

The state topic carries what the latest *successful* results said: a failed input (``error`` set) changes
neither the label, the score nor the latency (Home Assistant sees the same values again and records no new
state), and values not known yet (nothing inferred since the device started) are ``null``, shown as
unknown, never as the text ``None`` or a latency of 0.

More entities (docs/homeassistant.md lists each with its topic and what Home Assistant shows):

- two buttons, ``reload`` and ``snapshot``, publishing ``{}`` on ``<prefix>/<id>/cmd/reload`` and
  ``cmd/snapshot`` (``cloud_sync.commands``);
- with ``updates``: an ``update`` entity reading ``<prefix>/<id>/model/status`` (``update_protocol.Status``):
  installed version = the active model's, latest = the offered one, in progress with a percentage while
  downloading, verifying, validating or shadowing. With ``install`` (``edge run --updates approve``) an offer
  is held until Install publishes ``install`` on ``<prefix>/<id>/model/install``; otherwise the device
  activates an offer by itself and the entity only shows;
- with ``events`` (the event engine), per source: an ``image`` of the latest frame (``<source>/snapshot``) and
  of each watched label's latest event (``<source>/<label>/snapshot``), an ``event`` entity firing ``new``,
  ``update`` and ``end`` for that source's messages on ``<prefix>/<id>/events`` (one topic for every source:
  the template drops other sources' events), and per watched label (and per zone of the source) a count
  sensor and an occupancy binary_sensor from the retained ``<source>/counts``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cloud_sync.messages import EVENT_TYPES, dumps
from cloud_sync.topics import DeviceTopics, is_topic_part
from cloud_sync.update_protocol import install_topic, status_topic
from edge import __version__

log = logging.getLogger(__name__)

DISCOVERY_PREFIX = "homeassistant"
BIRTH_TOPIC = f"{DISCOVERY_PREFIX}/status"
ORIGIN_NAME = "edge-runtime"


def text_template(key: str) -> str:
    """A text sensor's value template: null renders ``unknown`` (older Home Assistant releases show a text
    sensor's ``None`` literally; a numeric sensor turns ``None`` into unknown by itself)."""
    return f"{{{{ value_json.{key} if value_json.{key} != None else 'unknown' }}}}"


SENSORS = (
    # object id, name, value template, unit, extra
    ("last_label", "Last label", text_template("label"), None, {"icon": "mdi:tag"}),
    ("last_score", "Last score", "{{ value_json.score }}", None, {"state_class": "measurement"}),
    ("latency", "Inference latency", "{{ value_json.latency_ms }}", "ms",
     {"state_class": "measurement", "device_class": "duration"}),
    ("fps", "Frames per second", "{{ value_json.fps }}", "fps", {"state_class": "measurement"}),
    ("model_version", "Model version", text_template("model_version"), None, {"icon": "mdi:brain"}),
)
# A source's binary_sensor: ON while it streams; connecting, stalled, down and finished are OFF.
SOURCE_TEMPLATE = "{{ 'ON' if value_json.state == 'streaming' else 'OFF' }}"
BUTTONS = (
    # command, name, icon
    ("reload", "Reload model", "mdi:reload"),
    ("snapshot", "Snapshot", "mdi:camera"),
)
# The update entity's JSON state from a model/status message (update_protocol.Status). While a transfer
# runs, latest is the offered version; once it is active, both are the active one; a rejected or rolled
# back offer is not offered any more (latest = installed) and its reason is the release summary.
UPDATE_TEMPLATE = (
    "{% set s = value_json %}{% set a = s.get('active') or {} %}"
    "{% set busy = s.get('state') in ['downloading', 'verifying', 'validating', 'shadowing'] %}"
    "{% set failed = s.get('state') in ['rejected', 'rolled_back'] %}"
    "{% set installed = (a.get('version') | string) if a.get('version') else none %}"
    # a shadow stage's figures (the field's agreement beside the converter's) join the reason in the summary
    "{% set sh = s.get('shadow') or {} %}{% set conv = (sh.get('converter') or {}).get('top1_agreement') %}"
    "{% set figures = ('shadow stage: agreement ' ~ sh.get('agreement') ~ ' on ' ~ sh.get('samples')"
    " ~ ' live inputs' ~ ((' (converter ' ~ conv ~ ')') if conv is not none else '')"
    " ~ ', latency ' ~ sh.get('latency_ratio') ~ 'x') if sh else '' %}"
    "{% set why = ((s.get('state') | replace('_', ' ')) ~ ': ' ~ s.get('reason'))"
    " if s.get('reason') else '' %}"
    "{% set summary = [why, figures] | reject('equalto', '') | join('; ') %}"
    # Home Assistant 2025's MQTT update schema refuses null strings: keys without a value are left out
    "{{ dict([('installed_version', installed),"
    " ('latest_version', (s.get('version') | string) if s.get('version') and not failed else installed),"
    " ('title', (s.get('name') if s.get('name') and not failed else a.get('name')) or none),"
    " ('release_summary', summary[:255] if summary else none)] | rejectattr('1', 'none') | list,"
    " in_progress=busy,"
    " update_percentage=((s.get('progress', 0) * 100) | round(1)) if busy else none) | to_json }}"
)
# The attributes an event entity keeps of an edge.event/1 message (the envelope's seq, stream... not).
EVENT_FIELDS = ("event_id", "label", "track_id", "zones", "entered_zones", "start", "end", "score", "box",
                "snapshot")


_NOT_IN_LEVEL = re.compile(r"[/+#\s\x00]")


def topic_level(name: str) -> str:
    """``name`` as the event engine makes it one topic level (``cloud_sync.event_publisher.topic_level``,
    not imported: that module pulls in ``edge.events``): ``traffic light`` -> ``traffic_light``."""
    return _NOT_IN_LEVEL.sub("_", name) or "_"


def jinja_string(text: str) -> str:
    """``text`` as a Jinja string literal (single quotes, backslash escapes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def event_template(source: str) -> str:
    """An event entity's value template: ``{"event_type": type, ...}`` for ``source``'s events, empty (Home
    Assistant ignores the message) for other sources' and for anything not an event."""
    fields = ", ".join(f"'{key}': value_json.get('{key}')" for key in EVENT_FIELDS)
    return (
        f"{{% if value_json is defined and value_json.get('source') == {jinja_string(source)}"
        " and value_json.get('type') in"
        f" {list(EVENT_TYPES)} %}}{{{{ {{'event_type': value_json.type, {fields}}} | to_json }}}}"
        "{% endif %}"
    )


def count_template(label: str, zone: str | None = None) -> str:
    """A count sensor's template: ``labels[label]`` (or ``zones[zone][label]``) of a counts message, 0 when
    the label is absent (nobody there)."""
    if zone is None:
        where = "(value_json.get('labels') or {})"
    else:
        where = f"((value_json.get('zones') or {{}}).get({jinja_string(zone)}) or {{}})"
    return f"{{{{ {where}.get({jinja_string(label)}, 0) | int }}}}"


def occupancy_template(label: str, zone: str | None = None) -> str:
    """ON when the count of ``label`` (in ``zone``) is above 0."""
    return "{{ 'ON' if (" + count_template(label, zone)[3:-3] + ") > 0 else 'OFF' }}"


def _fps(fps: Callable[[], Any]) -> float | None:
    try:
        value = fps()
    except Exception:
        log.debug("fps unavailable", exc_info=True)
        return None
    return round(float(value), 2) if isinstance(value, int | float) else None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def entity_slug(text: str) -> str:
    """``text`` as Home Assistant slugifies an ``object_id`` into an entity id (lower case, every run of other
    characters than a-z and 0-9 one ``_``, none at the ends), for the ASCII ids we make."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


@cache
def support_url() -> str | None:
    """The package's first http(s) project URL (``origin.support_url``); None when it declares none."""
    try:
        meta = importlib.metadata.metadata(ORIGIN_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None
    candidates = [entry.partition(",")[2].strip() for entry in meta.get_all("Project-URL") or []]
    candidates.append(str(meta["Home-page"] or "") if "Home-page" in meta else "")
    return next((url for url in candidates if url.startswith(("https://", "http://"))), None)


def origin() -> dict[str, Any]:
    """The ``origin`` block of every config: which software published it (Home Assistant logs it and shows
    it in the MQTT device info). ``support_url`` only when known: an invalid one makes HA drop the config."""
    block: dict[str, Any] = {"name": ORIGIN_NAME, "sw_version": __version__}
    url = support_url()
    if url:
        block["support_url"] = url
    return block


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
    """What the device announces. ``labels``: the watched labels (a ``seen`` binary_sensor each and, with
    ``events``, per source a count, an occupancy and a snapshot image each); ``sources``: sources known at
    start (more come through ``HomeAssistant.add_sources``); ``zones``: zone names of every source, a mapping
    source -> its zone names, or a function of the source name giving them; ``events``: the event engine
    runs (per source an image, an event entity, counts); ``updates``: the update agent runs (an update
    entity); ``buttons``: reload and snapshot buttons."""

    topics: DeviceTopics
    labels: tuple[str, ...] = ()
    off_delay_s: float = 10.0
    threshold: float = 0.5
    model_name: str | None = None
    sources: Sequence[str] = ()
    zones: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]] | Sequence[str] = ()
    events: bool = False
    updates: bool = False
    install: bool = False  # updates are held for approval (--updates approve): the update entity can Install
    buttons: bool = True

    def zones_of(self, source: str) -> tuple[str, ...]:
        if isinstance(self.zones, Mapping):
            return tuple(self.zones.get(source, ()))
        if callable(self.zones):  # e.g. EventAnnotator.zone_names: sources that appear later too
            return tuple(self.zones(source))
        return tuple(self.zones)

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

    def identity(self, component: str, object_id: str) -> dict[str, Any]:
        """``unique_id``, ``object_id`` (HA < 2025.10) and ``default_entity_id`` (HA ≥ 2025.10) of an entity.

        The entity id is ``<component>.<slug of edge_<id>_<object>>``, e.g. ``sensor.edge_cam_1_latency``:
        what older releases made of ``object_id``, so both keys name the same entity.
        """
        full = f"{self.node_id}_{object_id}"
        return {
            "unique_id": full,
            "object_id": full,
            "default_entity_id": f"{component}.{entity_slug(full)}",
        }

    def common(self) -> dict[str, Any]:
        """``device``, ``origin`` and ``availability``: the same in every config."""
        return {"device": self.device(), "origin": origin(), **self.availability()}

    def config(self, component: str, object_id: str, name: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        """(discovery topic, config) of one entity: its name, identity, ``fields``, then the common blocks."""
        return f"{DISCOVERY_PREFIX}/{component}/{self.node_id}/{object_id}/config", {
            "name": name,
            **self.identity(component, object_id),
            **fields,
            **self.common(),
        }

    def source_config(self, name: str) -> tuple[str, dict[str, Any]]:
        """(discovery topic, config) of source ``name``'s connectivity binary_sensor."""
        state_topic = self.topics.source_state(name)
        return self.config(
            "binary_sensor", source_object_id(name), f"Source {name}",
            state_topic=state_topic, value_template=SOURCE_TEMPLATE, payload_on="ON", payload_off="OFF",
            device_class="connectivity", json_attributes_topic=state_topic,
        )

    def source_configs(self, name: str) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config of every entity of source ``name``: its connectivity and, with
        ``events``, its images, event entity, counts and occupancies."""
        topic, config = self.source_config(name)
        out = {topic: config}
        if not self.events:
            return out
        base = source_object_id(name)
        entries = [
            self.config("image", f"{base}_snapshot", f"{name} snapshot",
                        image_topic=self.topics.snapshot(topic_level(name)), content_type="image/jpeg"),
            self.config("event", f"{base}_event", f"{name} event", state_topic=self.topics.events,
                        event_types=list(EVENT_TYPES), value_template=event_template(name)),
        ]
        counts = self.topics.counts(topic_level(name))
        for label in self.labels:
            label_id = f"{base}_{slug(label)}"
            entries.append(self.config(
                "image", f"{label_id}_snapshot", f"{name} {label} snapshot",
                image_topic=self.topics.snapshot(topic_level(name), topic_level(label)),
                content_type="image/jpeg"))
            places: list[tuple[str, str, str | None]] = [(label_id, f"{name} {label}", None)]
            places += [(f"{base}_{slug(zone)}_{slug(label)}", f"{name} {zone} {label}", zone)
                       for zone in self.zones_of(name)]
            for object_id, title, zone in places:
                entries.append(self.config(
                    "sensor", f"{object_id}_count", f"{title} count", state_topic=counts,
                    value_template=count_template(label, zone), state_class="measurement",
                    icon="mdi:counter"))
                entries.append(self.config(
                    "binary_sensor", f"{object_id}_occupancy", f"{title} occupancy", state_topic=counts,
                    value_template=occupancy_template(label, zone), payload_on="ON", payload_off="OFF",
                    device_class="occupancy"))
        out.update(entries)
        return out

    def device_configs(self) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config of the buttons and the update entity (device-wide, not per source)."""
        out: dict[str, dict[str, Any]] = {}
        if self.buttons:
            for command, name, icon in BUTTONS:
                topic, config = self.config("button", command, name, command_topic=self.topics.cmd(command),
                                            payload_press="{}", icon=icon)
                out[topic] = config
        if self.updates:
            topic, config = self.config(
                "update", "model_update", "Model", state_topic=status_topic(self.topics.prefix,
                                                                           self.topics.device_id),
                value_template=UPDATE_TEMPLATE, json_attributes_topic=status_topic(
                    self.topics.prefix, self.topics.device_id),
                **({"command_topic": install_topic(self.topics.prefix, self.topics.device_id),
                    "payload_install": "install"} if self.install else {}))
            out[topic] = config
        return out

    def configs(self, sources: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Discovery topic -> config payload (with every entity of each name in ``sources``)."""
        out: dict[str, dict[str, Any]] = {}
        for object_id, name, template, unit, extra in SENSORS:
            fields: dict[str, Any] = {"state_topic": self.state_topic, "value_template": template, **extra}
            if unit:
                fields["unit_of_measurement"] = unit
            topic, config = self.config("sensor", object_id, name, **fields)
            out[topic] = config
        for label in self.labels:
            topic, config = self.config(
                "binary_sensor", f"seen_{slug(label)}", f"{label} seen",
                state_topic=self.presence_topic(label), payload_on="ON", payload_off="OFF",
                device_class="occupancy")
            out[topic] = config
        for name in sources:
            out.update(self.source_configs(name))
        out.update(self.device_configs())
        return out


def _found(record: dict[str, Any]) -> list[tuple[str, float | None]]:
    """(label, score) of everything a result record found, in its order: ``classes`` and ``objects`` with
    their score (1.0 when absent), ``segments`` other than the background with None (a segment has a share
    of the picture, not a confidence; the decoder's threshold on the share already chose it)."""
    found: list[tuple[str, float | None]] = []
    for key in ("classes", "objects", "segments"):
        items = record.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("label"), str):
                continue
            if key == "segments":
                if item.get("background") is not True:
                    found.append((item["label"], None))
                continue
            raw = item.get("score")
            found.append((item["label"], float(raw) if isinstance(raw, int | float) else 1.0))
    return found


def labels_seen(record: dict[str, Any]) -> dict[str, float]:
    """label -> best score in a result record (``classes``, ``objects``, or ``segments`` without the
    background, which count as seen: score 1.0); empty for a failed input."""
    if record.get("error"):
        return {}
    seen: dict[str, float] = {}
    for label, score in _found(record):
        value = 1.0 if score is None else score
        seen[label] = max(value, seen.get(label, 0.0))
    return seen


def top_label(record: dict[str, Any]) -> tuple[str | None, float | None]:
    """The (label, score) a result record is best summed up by: its best-scoring class or object, or its
    largest segment other than the background (score None); (None, None) when it found nothing or failed."""
    if record.get("error"):
        return None, None
    best: tuple[str | None, float | None] = (None, None)
    for label, score in _found(record):
        if score is None:  # segments come largest first
            return (label, None) if best[0] is None else best
        if best[1] is None or score > best[1]:
            best = (label, score)
    return best


def latency_of(record: dict[str, Any]) -> float | None:
    """``timing_ms.total`` of a successful result; None for a failed input (its timing is no inference)."""
    if record.get("error"):
        return None
    timing = record.get("timing_ms")
    total = timing.get("total") if isinstance(timing, dict) else None
    return float(total) if isinstance(total, int | float) and not isinstance(total, bool) else None


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
        self._state_pending = False  # a newer state than the one sent waits for min_interval_s
        # what the state topic says: the latest successful results' values, None while not known yet
        self._label: str | None = None
        self._score: float | None = None
        self._latency: float | None = None
        self._model_version: Any = None
        self._sources: list[str] = []
        self._fps_source: Callable[[], Any] | None = None
        self._accept_sources((*discovery.sources, *sources))

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
        """Announce the entities of each source not announced yet (sources that appear after start)."""
        for name in self._accept_sources(names):
            for topic, config in self.discovery.source_configs(name).items():
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
        """Update sensors and presence from one result record (``fps()`` is asked only when needed).

        A failed input (``error`` set) leaves label, score and latency as they were: only fps may change.
        """
        now = time.monotonic()
        seen = labels_seen(record)
        top, score = top_label(record)
        latency = latency_of(record)
        turned_on: list[str] = []
        with self._lock:
            for label in self.discovery.labels:
                if seen.get(label, -1.0) >= self.discovery.threshold:
                    self._last_seen[label] = now
                    if self._state.get(label) != "ON":
                        self._state[label] = "ON"
                        turned_on.append(label)
            if top is not None:  # "last label": a result that found nothing keeps the last one found
                self._label, self._score = top, None if score is None else round(score, 4)
            if latency is not None:
                self._latency = latency
            if model_version is not None:
                self._model_version = model_version
            self._state_pending = True
        for label in turned_on:
            self._publish(self.discovery.presence_topic(label), "ON", 1, True)
        self._send_state(now, fps)

    def _send_state(self, now: float, fps: Callable[[], Any] | None) -> None:
        """Publish the state when one is pending and ``min_interval_s`` has passed since the last."""
        with self._lock:
            if not self._state_pending or now - self._last_state_sent < self.min_interval_s:
                return
            self._last_state_sent = now
            self._state_pending = False
            state = {
                "label": self._label,
                "score": self._score,
                "latency_ms": self._latency,
                "model_version": self._model_version,
            }
        if fps is not None:
            self._fps_source = fps
        state["fps"] = None if self._fps_source is None else _fps(self._fps_source)
        ordered = {key: state[key] for key in ("label", "score", "latency_ms", "fps", "model_version")}
        self._publish(self.discovery.state_topic, dumps(ordered), 0, True)

    def tick(self) -> None:
        """Turn OFF labels not seen for ``off_delay_s``; send a state that waited for ``min_interval_s``."""
        now = time.monotonic()
        self._send_state(now, None)
        turned_off: list[str] = []
        with self._lock:
            for label, state in self._state.items():
                if state == "ON" and now - self._last_seen.get(label, 0.0) >= self.discovery.off_delay_s:
                    self._state[label] = "OFF"
                    turned_off.append(label)
        for label in turned_off:
            self._publish(self.discovery.presence_topic(label), "OFF", 1, True)
