"""The topic scheme (documented with payload examples in docs/mqtt.md).

Per device, under ``<prefix>/<device_id>/``:

==============================  ============================================================================
``status``                      retained ``{"state": "online"|"offline", "seq": N}``; ``offline`` is the will
``results``                     one JSON per inference (QoS 1), schema ``edge.result/1``
``events``                      tracked objects' events new/update/end (QoS 1), schema ``edge.event/1``; they
                                share ``seq``/``stream`` with results (one sequence: gap repair covers both)
``<source>/<label>/snapshot``   retained JPEG: best frame of ``label``'s latest event on ``source``, boxed
``<source>/snapshot``           retained JPEG: the latest frame of ``source`` (on ``cmd/snapshot``)
``<source>/counts``             retained ``{"labels": {label: n}, "zones": {zone: {label: n}}}``, on change
``telemetry``                   periodic health (QoS 1), ``edge.telemetry/1``; carries the latest ``seq``
``cmd/<name>``                  a command (``ping``, ``reload``, ``set``, ``snapshot``, ``replay``)
``cmd/<name>/reply``            its reply, echoing the request's ``request_id``
``sources/<name>/state``        retained (QoS 1) state of a source: ``SourceState.to_json()`` + counters
==============================  ============================================================================

Home Assistant discovery lives under ``homeassistant/`` (see ``cloud_sync.homeassistant``).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from edge.errors import ConfigError

DEFAULT_PREFIX = "edge"
_BAD_CHARS = re.compile(r"[/+#\x00\s]")


def is_topic_part(value: str) -> bool:
    """Usable as one topic level: non-empty, no ``/``, ``+``, ``#``, NUL or whitespace."""
    return bool(value) and not _BAD_CHARS.search(value)


def check_segment(value: str, what: str, flag: str) -> str:
    """A topic segment: non-empty, no ``/``, ``+``, ``#``, NUL or whitespace."""
    if not is_topic_part(value):
        raise ConfigError(
            f"{what} {value!r} cannot be used in an MQTT topic; "
            f"pass {flag} with letters, digits, '-', '_' or '.'"
        )
    return value


def check_prefix(prefix: str) -> str:
    """A prefix may have several levels (``site/edge``) but no wildcards or empty levels."""
    if not prefix or any(not part or _BAD_CHARS.search(part) for part in prefix.split("/")):
        raise ConfigError(f"topic prefix {prefix!r} is not allowed; pass --prefix like 'edge' or 'site/edge'")
    return prefix


def default_device_id() -> str:
    """The host name, made topic-safe."""
    name = socket.gethostname().split(".")[0] or "device"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """Every topic of one device."""

    prefix: str
    device_id: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_segment(self.device_id, "device id", "--device-id")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def results(self) -> str:
        return f"{self.base}/results"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def snapshot(self, source: str, label: str | None = None) -> str:
        """The retained JPEG of ``label``'s latest event on ``source``, or (no label) its latest frame."""
        if label is None:
            return f"{self.base}/{source}/snapshot"
        return f"{self.base}/{source}/{label}/snapshot"

    def counts(self, source: str) -> str:
        return f"{self.base}/{source}/counts"

    def source_state(self, name: str) -> str:
        """The retained state of source ``name`` (``ConfigError`` when the name is no topic level)."""
        if not is_topic_part(name):
            raise ConfigError(
                f"source name {name!r} cannot be used in an MQTT topic; "
                "name the source with letters, digits, '-', '_' or '.'"
            )
        return f"{self.base}/sources/{name}/state"

    def reply(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/reply"

    @property
    def cmd_filter(self) -> str:
        """Every command to this device (replies excluded by the handler)."""
        return f"{self.base}/cmd/+"


@dataclass(frozen=True, slots=True)
class FleetTopics:
    """Wildcard filters over every device under one prefix (the collector's view)."""

    prefix: str

    @property
    def results(self) -> str:
        return f"{self.prefix}/+/results"

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/+/telemetry"

    @property
    def events(self) -> str:
        return f"{self.prefix}/+/events"

    @property
    def status(self) -> str:
        return f"{self.prefix}/+/status"

    @property
    def source_states(self) -> str:
        return f"{self.prefix}/+/sources/+/state"

    def device_of(self, topic: str) -> str | None:
        """The device id in ``<prefix>/<id>/...``, or None when the topic is not under the prefix."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :].split("/", 1)
        return rest[0] or None if len(rest) == 2 else None

    def device(self, device_id: str) -> DeviceTopics:
        return DeviceTopics(self.prefix, device_id)


def shared(filter_: str, group: str | None) -> str:
    """``$share/<group>/<filter>`` (MQTT 5 shared subscription) when a group is given."""
    if not group:
        return filter_
    check_segment(group, "share group", "--share")
    return f"$share/{group}/{filter_}"
