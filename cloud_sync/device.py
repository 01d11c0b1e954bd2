"""The device side of MQTT sync, composed: connection, durable outbox, result sink, telemetry, commands,
Home Assistant discovery. ``DeviceSync.sinks`` receive every result record of the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_sync.commands import Commands
from cloud_sync.connection import BrokerSettings, MqttConnection, client_id_for
from cloud_sync.homeassistant import BIRTH_TOPIC, Discovery, HomeAssistant
from cloud_sync.messages import build_result, dumps
from cloud_sync.outbox import Outbox, OutboxPolicy
from cloud_sync.telemetry import build_telemetry
from cloud_sync.topics import DeviceTopics

log = logging.getLogger(__name__)
TICK_S = 0.2


@dataclass(frozen=True)
class DeviceOptions:
    broker: BrokerSettings
    device_id: str
    state_dir: Path
    prefix: str = "edge"
    protocol: str = "5"
    telemetry_interval_s: float = 30.0
    ha_discovery: bool = False
    ha_labels: tuple[str, ...] = ()
    ha_off_delay_s: float = 10.0
    ha_threshold: float = 0.5
    keepalive: int = 30
    reconnect_max: int = 30
    inputs: tuple[Path, ...] = ()  # files and folders given to the run: what ``snapshot`` may read
    watch: Path | None = None
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)


class MqttSink:
    """The result sink: wraps each record in the result envelope and hands it to the outbox."""

    def __init__(self, sync: DeviceSync) -> None:
        self._sync = sync

    def emit(self, record: dict[str, Any]) -> None:
        self._sync.emit(record)

    def close(self) -> None:
        """Closing the session (not the sink) flushes; see ``DeviceSync.close``."""


class DeviceSync:
    """Everything MQTT on the device. ``start()`` connects (unreachable broker: keeps retrying)."""

    def __init__(
        self, options: DeviceOptions, pipeline: Any, reload: Callable[[], None] | None = None
    ) -> None:
        self.options = options
        self.pipeline = pipeline
        self.reload = reload
        self.topics = DeviceTopics(options.prefix, options.device_id)
        self.outbox = Outbox(options.state_dir, options.outbox)
        self.connection = MqttConnection(
            options.broker,
            client_id_for(options.device_id),
            protocol=options.protocol,
            status_topic=self.topics.status,
            status_extra=lambda: {"seq": self.outbox.last_seq, "stream": self.outbox.stream},
            keepalive=options.keepalive,
            reconnect_max=options.reconnect_max,
        )
        self.sinks: list[Any] = [MqttSink(self)]
        self.started = time.monotonic()
        self.commands: Commands | None = None
        self.home_assistant: HomeAssistant | None = None
        self.updates: Any = None
        self._last_input: Any = None
        self._emit_lock = threading.Lock()  # seq order == outbox order (results also come from commands)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._next_telemetry = time.monotonic() + options.telemetry_interval_s

    def start(self) -> DeviceSync:
        options = self.options
        if options.ha_discovery:
            model = getattr(self.pipeline, "model", None)
            self.home_assistant = HomeAssistant(
                Discovery(self.topics, options.ha_labels, options.ha_off_delay_s, options.ha_threshold,
                          getattr(model, "name", None)),
                lambda topic, payload, qos, retain: self.connection.publish(topic, payload, qos, retain),
            )
            ha = self.home_assistant
            self.connection.subscribe(BIRTH_TOPIC, lambda m: ha.on_birth(m.payload))
            self.connection.add_connect_listener(ha.announce)
        self.commands = Commands(
            self.connection, self.topics, self.pipeline, self.outbox, self._emit_snapshot,
            lambda: self._last_input, reload=self.reload, inputs=options.inputs, watch=options.watch,
        )
        self.connection.add_connect_listener(self.outbox.kick)
        self.outbox.start(self.connection)
        try:
            self.connection.start(require=False)
        except BaseException:
            self.commands.close()
            self.outbox.close()
            raise
        self._ticker = threading.Thread(target=self._tick, name="mqtt-ticker", daemon=True)
        self._ticker.start()
        return self

    @property
    def bad_payloads(self) -> int:
        return self.commands.bad_payloads if self.commands else 0

    def emit(self, record: dict[str, Any]) -> None:
        """Commit one result to the outbox (it is published once committed)."""
        with self._emit_lock:
            seq = self.outbox.reserve_seq()
            message = build_result(record, device=self.options.device_id, stream=self.outbox.stream, seq=seq)
            self.outbox.add(self.topics.results, dumps(message), kind="result", seq=seq)
        if record.get("input") is not None:
            self._last_input = record.get("input")
        if self.home_assistant is not None:
            model = record.get("model")
            version = model.get("version") if isinstance(model, dict) else None
            self.home_assistant.observe(record, lambda: self.pipeline.stats().get("fps"), version)

    def _emit_snapshot(self, record: dict[str, Any]) -> None:
        """A snapshot result goes out once: the runtime's pipeline already emits to our sink when wired."""
        if not any(sink in getattr(self.pipeline, "sinks", ()) for sink in self.sinks):
            self.emit(record)

    def send_telemetry(self) -> dict[str, Any]:
        body = build_telemetry(
            device=self.options.device_id,
            started=self.started,
            pipeline=self.pipeline,
            outbox=self.outbox.stats(),
            bad_payloads=self.bad_payloads,
        )
        self.outbox.add(self.topics.telemetry, dumps(body), kind="telemetry")
        return body

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                if self.home_assistant is not None:
                    self.home_assistant.tick()
                if self.options.telemetry_interval_s > 0 and time.monotonic() >= self._next_telemetry:
                    self._next_telemetry = time.monotonic() + self.options.telemetry_interval_s
                    self.send_telemetry()
            except Exception:
                log.exception("telemetry / Home Assistant tick failed")

    def close(self, drain_timeout: float = 5.0) -> None:
        """Stop the update agent, flush the outbox (waiting up to ``drain_timeout`` s), go offline."""
        if self.updates is not None:
            try:
                self.updates.close()
            except Exception:
                log.exception("closing the update agent failed")
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self.options.telemetry_interval_s > 0:
            try:
                self.send_telemetry()  # the final telemetry carries the latest seq (a lost tail is seen)
            except Exception:
                log.debug("final telemetry failed", exc_info=True)
        if self.commands is not None:
            self.commands.close()
        self.outbox.close(drain_timeout=drain_timeout)
        stats = self.outbox.stats()
        if stats.pending:
            log.warning("%d message(s) still pending in %s; they go out on the next start "
                        "(or with 'edge outbox --flush')", stats.pending, self.outbox.path)
        self.connection.close()
