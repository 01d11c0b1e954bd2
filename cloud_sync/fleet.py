"""``edge fleet status``: what every device says about itself, from the retained messages on the broker.

Reads ``<prefix>/+/status`` (online/offline, with the last will) and ``<prefix>/+/model/status`` (the
update agent's retained state) for a short settle time, then lists one row per device.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from cloud_sync.connection import Message
from cloud_sync.errors import PayloadError
from cloud_sync.update_agent import Transport
from cloud_sync.update_protocol import Status, device_from_topic, shadow_brief, shadow_summary


@dataclass
class DeviceRow:
    """One device as the fleet sees it."""

    device: str
    online: bool | None = None
    model: str = ""
    version: int = 0
    update_state: str = ""
    update_version: int = 0
    progress: float = 0.0
    reason: str = ""
    healthy: bool | None = None
    shadow: dict[str, Any] | None = None  # the shadow stage's figures (dashboard.live.shadow_brief)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "online": self.online,
            "model": {"name": self.model, "version": self.version} if self.model else None,
            "update": {
                "state": self.update_state,
                "version": self.update_version,
                "progress": self.progress,
                "reason": self.reason,
                "healthy": self.healthy,
                "shadow": self.shadow,
            }
            if self.update_state
            else None,
        }


class FleetView:
    """Collects device and model statuses; ``rows()`` is a snapshot sorted by device id."""

    def __init__(self, transport: Transport, prefix: str = "edge") -> None:
        self.transport = transport
        self.prefix = prefix
        self.malformed = 0
        self._rows: dict[str, DeviceRow] = {}
        self._lock = threading.Lock()
        self.last_message = time.monotonic()

    def start(self) -> FleetView:
        self.transport.subscribe(f"{self.prefix}/+/status", self._on_device_status)
        self.transport.subscribe(f"{self.prefix}/+/model/status", self._on_model_status)
        return self

    def _row(self, device: str) -> DeviceRow:
        return self._rows.setdefault(device, DeviceRow(device))

    def _on_device_status(self, message: Message) -> None:
        device = device_from_topic(self.prefix, message.topic, "status")
        if device is None or not message.payload:
            return
        text = message.payload.decode("utf-8", errors="replace").strip()
        try:
            data = json.loads(text)
            state = data.get("state") if isinstance(data, dict) else data
        except ValueError:
            state = text
        with self._lock:
            self.last_message = time.monotonic()
            self._row(device).online = state == "online"

    def _on_model_status(self, message: Message) -> None:
        device = device_from_topic(self.prefix, message.topic, "model/status")
        if device is None or not message.payload:
            return
        try:
            status = Status.from_bytes(message.payload)
        except PayloadError:
            self.malformed += 1
            return
        with self._lock:
            self.last_message = time.monotonic()
            row = self._row(device)
            if status.active:
                row.model, row.version = (
                    str(status.active.get("name", "")),
                    int(status.active.get("version", 0)),
                )
            row.update_state, row.update_version = status.state, status.version
            row.progress, row.reason, row.healthy = status.progress, status.reason, status.healthy
            row.shadow = shadow_brief(status.shadow)

    def rows(self) -> list[DeviceRow]:
        with self._lock:
            return [DeviceRow(**vars(row)) for _, row in sorted(self._rows.items())]

    def settle(self, quiet: float = 0.5, timeout: float = 5.0) -> list[DeviceRow]:
        """Wait until no retained message arrived for ``quiet`` seconds (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self.last_message
            if idle >= quiet:
                break
            time.sleep(0.05)
        return self.rows()


def render(rows: list[DeviceRow]) -> str:
    """A readable table."""
    if not rows:
        return "no devices found (none has published a status under this prefix)"
    lines = [f"{'DEVICE':<20} {'ONLINE':<7} {'MODEL':<24} LAST UPDATE"]
    for row in rows:
        online = {True: "yes", False: "no", None: "?"}[row.online]
        model = f"{row.model} v{row.version}" if row.model else "-"
        update = "-"
        if row.update_state:
            update = row.update_state + (f" v{row.update_version}" if row.update_version else "")
            if row.update_state in ("downloading", "shadowing"):
                update += f" {row.progress:.0%}"
            if row.healthy:
                update += " (healthy)"
            if row.reason:
                update += f": {row.reason}"
            if row.shadow:
                update += f" [{shadow_summary(row.shadow)}]"
        lines.append(f"{row.device:<20} {online:<7} {model:<24} {update}")
    return "\n".join(lines)
