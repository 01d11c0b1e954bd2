"""Events, snapshots and counts from ``edge.events`` onto MQTT (topics in ``cloud_sync.topics``).

- Events go through the durable outbox like results: the same ``seq`` sequence and ``stream``, so a
  collector's gap repair and ``replay`` cover them; schema ``edge.event/1`` (``docs/events.md``).
- Snapshots (JPEG) and counts (JSON) are state: published retained, QoS 1, straight on the connection; only
  the latest of each matters, so while offline nothing queues and the latest of each is published again
  after every (re)connect.

Labels become topic levels with ``/``, ``+``, ``#`` and whitespace replaced by ``_`` (``traffic light`` ->
``traffic_light``).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from cloud_sync.messages import EVENT_SCHEMA, build_result, dumps
from edge.events import Event, EventListener, Snapshot

log = logging.getLogger(__name__)
_NOT_IN_LEVEL = re.compile(r"[/+#\s\x00]")


def topic_level(name: str) -> str:
    """``name`` usable as one MQTT topic level."""
    return _NOT_IN_LEVEL.sub("_", name) or "_"


class EventPublisher(EventListener):
    """The device's listener on its ``EventAnnotator`` (``DeviceSync`` adds it)."""

    def __init__(self, sync: Any) -> None:
        self.sync = sync
        self.published_events = 0
        self._state: dict[str, bytes] = {}  # topic -> latest retained payload
        self._lock = threading.Lock()
        sync.connection.add_connect_listener(self._republish)

    def on_event(self, event: Event) -> None:
        self.sync.emit_event(event.to_json())
        self.published_events += 1

    def on_snapshot(self, snapshot: Snapshot) -> None:
        topic = self.sync.topics.snapshot(topic_level(snapshot.source), topic_level(snapshot.label))
        self._publish(topic, snapshot.jpeg)

    def on_counts(self, source: str, counts: dict[str, Any]) -> None:
        self._publish(self.sync.topics.counts(topic_level(source)), dumps(counts))

    def publish_frame(self, source: str, jpeg: bytes) -> str:
        """The latest frame of ``source`` (``cmd/snapshot``); the topic it went to."""
        topic = self.sync.topics.snapshot(topic_level(source))
        self._publish(topic, jpeg)
        return topic

    # Both publish under the lock (paho only queues the message): a republish after a reconnect that read a
    # payload before a newer one was published must not send the older one after it, which the broker would
    # then keep as the retained state.

    def _publish(self, topic: str, payload: bytes) -> None:
        connection = self.sync.connection
        with self._lock:
            self._state[topic] = payload
            if connection.connected:
                connection.publish(topic, payload, 1, True)

    def _republish(self) -> None:
        with self._lock:
            for topic, payload in self._state.items():
                try:
                    self.sync.connection.publish(topic, payload, 1, True)
                except Exception as exc:  # the next connect tries again
                    log.debug("republishing %s failed: %s", topic, exc)


def build_event(event: dict[str, Any], *, device: str, stream: str, seq: int) -> dict[str, Any]:
    """The ``/events`` message: the result envelope with schema ``edge.event/1``, then the event's fields."""
    return build_result(event, device=device, stream=stream, seq=seq, schema=EVENT_SCHEMA)
