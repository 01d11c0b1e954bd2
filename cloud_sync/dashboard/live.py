"""What the fleet says about itself right now, kept in memory from MQTT: one ``DeviceLive`` per device.

Fed either by the collector (its ``observer``: results, events, telemetry, status, update state, snapshots and
command replies it already receives) plus ``attach(..., with_collector=True)`` for the topics only the
dashboard reads (offers, source states, counts); or, beside a collector running elsewhere (``edge
dashboard``), by ``attach`` alone subscribing to everything. ``version`` grows with every change: the
server-sent events stream sends a new fleet when it moved.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from cloud_sync.connection import Message, MqttConnection
from cloud_sync.errors import PayloadError
from cloud_sync.messages import decode_json, validate_event, validate_result, validate_telemetry
from cloud_sync.topics import FleetTopics
from cloud_sync.update_protocol import shadow_brief

RECENT_EVENTS = 20
RECENT_REPLIES = 10


class DeviceLive:
    """One device's latest state; ``to_json`` is its row on the fleet page."""

    __slots__ = (
        "device", "online", "status_ts", "last_seen", "model", "update", "offer", "fps", "latency_ms",
        "outbox", "telemetry_ts", "rss_mb", "sources", "replies", "events", "counts", "snapshots",
        "last_result",
    )

    def __init__(self, device: str) -> None:
        self.device = device
        self.online: bool | None = None
        self.status_ts = 0.0
        self.last_seen = 0.0
        self.model: dict[str, Any] | None = None
        self.update: dict[str, Any] | None = None
        self.offer: dict[str, Any] | None = None
        self.fps: float | None = None
        self.latency_ms: dict[str, Any] = {}
        self.outbox: dict[str, Any] = {}
        self.telemetry_ts = 0.0
        self.rss_mb: float | None = None
        self.sources: dict[str, dict[str, Any]] = {}
        self.replies: deque[dict[str, Any]] = deque(maxlen=RECENT_REPLIES)
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.counts: dict[str, Any] = {}
        self.snapshots: dict[tuple[str, str], float] = {}
        self.last_result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "online": self.online,
            "status_ts": self.status_ts,
            "last_seen": self.last_seen or None,
            "model": self.model,
            "update": self.update,
            "offer": self.offer,
            "fps": self.fps,
            "latency_ms": {"p50": self.latency_ms.get("p50"), "p95": self.latency_ms.get("p95")},
            "outbox": {
                "pending": self.outbox.get("pending"), "oldest_age_s": self.outbox.get("oldest_age_s")
            },
            "telemetry_ts": self.telemetry_ts or None,
            "rss_mb": self.rss_mb,
            "sources": {name: body.get("state") for name, body in sorted(self.sources.items())},
        }


class LiveFleet:
    """Every device's ``DeviceLive``, thread-safe; ``observe`` is the collector's observer."""

    def __init__(self, prefix: str = "edge") -> None:
        self.fleet = FleetTopics(prefix)
        self.version = 0
        self.invalid = 0
        self._devices: dict[str, DeviceLive] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reads

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._devices[d].to_json() for d in sorted(self._devices)]

    def device(self, device: str) -> dict[str, Any] | None:
        """A device's row plus its recent events, replies, counts and snapshot index."""
        with self._lock:
            live = self._devices.get(device)
            if live is None:
                return None
            row = live.to_json()
            row["sources"] = {name: dict(body) for name, body in sorted(live.sources.items())}
            row["replies"] = list(reversed(live.replies))
            row["live_events"] = list(reversed(live.events))
            row["counts"] = dict(live.counts)
            row["last_result"] = live.last_result
            return row

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(self._devices)

    # ----------------------------------------------------------------- writes

    def _get(self, device: str) -> DeviceLive:
        live = self._devices.get(device)
        if live is None:
            live = self._devices[device] = DeviceLive(device)
        return live

    def observe(self, kind: str, device: str, body: Any) -> None:
        """One valid message of ``device``: ``kind`` is result, event, telemetry, status, model_status,
        snapshot, reply, offer, source_state or counts."""
        now = time.time()
        with self._lock:
            live = self._get(device)
            if kind != "offer":  # an offer is the publisher's, not the device's
                live.last_seen = now
            if kind == "status":
                state = body.get("state")
                live.online = state == "online"
                live.status_ts = float(body.get("ts") or now)
            elif kind == "telemetry":
                live.fps = body.get("fps")
                live.latency_ms = body.get("latency_ms") or {}
                live.outbox = body.get("outbox") or {}
                live.telemetry_ts = float(body.get("ts") or now)
                live.rss_mb = body.get("rss_mb")
                model = body.get("model")
                if isinstance(model, dict) and model.get("name"):
                    live.model = {"name": model.get("name"), "version": model.get("version")}
                if live.online is None:
                    live.online = True
            elif kind == "result":
                live.last_result = {"ts": body.get("ts"), "seq": body.get("seq")}
                model = body.get("model")
                if isinstance(model, dict) and model.get("name") and live.model is None:
                    live.model = {"name": model.get("name"), "version": model.get("version")}
            elif kind == "event":
                live.events.append(body)
            elif kind == "model_status":
                live.update = {
                    "state": body.state, "name": body.name, "version": body.version,
                    "progress": body.progress, "reason": body.reason, "healthy": body.healthy, "ts": body.ts,
                    "shadow": shadow_brief(body.shadow),
                }
                if body.active:
                    live.model = {"name": body.active.get("name"), "version": body.active.get("version")}
            elif kind == "snapshot":
                live.snapshots[(body.source, body.label)] = body.ts
            elif kind == "reply":
                live.replies.append({"received": now, **body})
            elif kind == "offer":
                live.offer = body
            elif kind == "source_state":
                name, state = body
                live.sources[name] = state
            elif kind == "counts":
                source, counts = body
                live.counts[source] = counts
            self.version += 1

    # ----------------------------------------------------------------- MQTT

    def attach(self, connection: MqttConnection, *, with_collector: bool) -> None:
        """Subscribe ``connection`` to what the dashboard reads; everything when no collector feeds it."""
        prefix = self.fleet.prefix
        connection.subscribe(f"{prefix}/+/model/offer", self._on_offer)
        connection.subscribe(f"{prefix}/+/sources/+/state", self._on_source_state)
        connection.subscribe(f"{prefix}/+/+/counts", self._on_counts)
        if with_collector:
            return
        connection.subscribe(self.fleet.status, self._on_json("status", None))
        connection.subscribe(self.fleet.telemetry, self._on_json("telemetry", validate_telemetry))
        connection.subscribe(self.fleet.results, self._on_json("result", validate_result))
        connection.subscribe(self.fleet.events, self._on_json("event", validate_event))
        connection.subscribe(f"{prefix}/+/model/status", self._on_model_status)
        connection.subscribe(f"{prefix}/+/cmd/+/reply", self._on_reply)
        connection.subscribe(f"{prefix}/+/+/+/snapshot", self._on_snapshot)
        connection.subscribe(f"{prefix}/+/+/snapshot", self._on_snapshot)

    def _on_json(self, kind: str, validate: Any) -> Any:
        def handler(message: Message) -> None:
            device = self.fleet.device_of(message.topic)
            if device is None or not message.payload:
                return
            try:
                body = decode_json(message.payload, message.topic)
                if validate is not None:
                    validate(body, message.topic)
            except PayloadError:
                if kind != "status":
                    self.invalid += 1
                    return
                body = {"state": message.payload.decode(errors="replace")[:20]}
            self.observe(kind, device, body)

        return handler

    def _on_model_status(self, message: Message) -> None:
        from cloud_sync.update_protocol import Status

        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        try:
            self.observe("model_status", device, Status.from_bytes(message.payload))
        except PayloadError:
            self.invalid += 1

    def _on_reply(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            return
        if device is not None:
            self.observe("reply", device, {"command": message.topic.rsplit("/", 2)[-2], **body})

    def _on_snapshot(self, message: Message) -> None:
        from cloud_sync.collector import Snapshot

        device = self.fleet.device_of(message.topic)
        parts = message.topic[len(self.fleet.prefix) + 1 :].split("/")
        if device is None or not message.payload or parts[1] == "cmd":
            return
        label = parts[2] if len(parts) == 4 else ""
        self.observe("snapshot", device, Snapshot(device, parts[1], label, time.time(), b""))

    def _on_offer(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None:
            return
        if not message.payload:  # withdrawn
            self.observe("offer", device, None)
            return
        try:
            body = json.loads(message.payload)
            offer = {"name": str(body["name"]), "version": int(body["version"]),
                     "published_at": float(body.get("published_at") or 0.0)}
        except (ValueError, KeyError, TypeError):
            self.invalid += 1
            return
        self.observe("offer", device, offer)

    def _on_source_state(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            self.invalid += 1
            return
        name = message.topic.rsplit("/", 2)[-2]
        self.observe("source_state", device, (name, body))

    def _on_counts(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        parts = message.topic[len(self.fleet.prefix) + 1 :].split("/")
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            self.invalid += 1
            return
        self.observe("counts", device, (parts[1], body))

