"""The device side of MQTT sync, composed: connection, durable outbox, result sink, telemetry, commands,
source states, Home Assistant discovery. ``DeviceSync.sinks`` receive every result record of the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_sync.commands import Commands
from cloud_sync.connection import BrokerSettings, Delivery, MqttConnection, client_id_for
from cloud_sync.homeassistant import BIRTH_TOPIC, Discovery, HomeAssistant
from cloud_sync.messages import build_result, dumps
from cloud_sync.outbox import DB_NAME, Outbox, OutboxPolicy, read_stats
from cloud_sync.telemetry import build_telemetry
from cloud_sync.topics import DeviceTopics, is_topic_part

if TYPE_CHECKING:
    from edge.sources.base import SourceBoard, SourceState

log = logging.getLogger(__name__)
TICK_S = 0.2
SOURCE_MIN_INTERVAL_S = 0.5  # per source: a flapping camera costs at most 2 messages a second
INFLIGHT_TIMEOUT_S = 10.0  # connected this long without a PUBACK: stop waiting for it


@dataclass(frozen=True)
class DeviceOptions:
    broker: BrokerSettings
    device_id: str
    state_dir: Path
    prefix: str = "edge"
    protocol: str | None = None  # None: the broker settings' version (--mqtt-version); a value overrides it
    telemetry_interval_s: float = 30.0
    ha_discovery: bool = False
    ha_labels: tuple[str, ...] = ()
    ha_off_delay_s: float = 10.0
    ha_threshold: float = 0.5
    ha_updates: bool = False  # updates are on (--trust): Home Assistant gets an update entity for the model
    ha_install: bool = False  # updates wait for approval (--updates approve): the entity can Install
    keepalive: int = 30
    reconnect_min: float = 1.0  # seconds before the first reconnect attempt (then doubling)
    reconnect_max: float = 30.0
    inputs: tuple[Path, ...] = ()  # files and folders given to the run: what ``snapshot`` may read
    watch: Path | None = None
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)


def waiting_status(state_dir: Path) -> dict[str, Any]:
    """The ``status`` fields of a device still waiting for its first model (besides ``state`` and ``ts``).

    ``phase`` is ``waiting`` and ``model`` null; ``seq`` and ``stream`` are those of the outbox in
    ``state_dir`` when there is one (a device whose store was emptied may still hold results), as in the
    status of a serving device, so a collector sees its latest seq either way.
    """
    body: dict[str, Any] = {"phase": "waiting", "model": None}
    if (Path(state_dir) / DB_NAME).exists():
        try:
            stats = read_stats(state_dir)
        except Exception:  # the status must go out even when the outbox cannot be read
            log.debug("cannot read the outbox in %s for the status", state_dir, exc_info=True)
        else:
            if stats.stream:
                body.update(seq=stats.last_seq, stream=stats.stream)
    return body


class MqttSink:
    """The result sink: wraps each record in the result envelope and hands it to the outbox."""

    def __init__(self, sync: DeviceSync) -> None:
        self._sync = sync

    def emit(self, record: dict[str, Any]) -> None:
        self._sync.emit(record)

    def close(self) -> None:
        """Closing the session (not the sink) flushes; see ``DeviceSync.close``."""


class SourceStates:
    """Publishes each source's state, retained (QoS 1), on ``<prefix>/<id>/sources/<name>/state``.

    Straight on the live connection, not through the outbox: only the latest state of a source matters.
    A change is sent at once unless that source was sent less than ``min_interval_s`` ago; then the latest
    state goes out when the interval is over (and at most one per source awaits its PUBACK, which keeps
    them in order). While offline nothing is queued; every source's latest state is (re)published after each
    (re)connect. ``on_new(name)`` is called for each source seen the first time.
    """

    def __init__(
        self,
        board: SourceBoard,
        connection: MqttConnection,
        topics: DeviceTopics,
        min_interval_s: float = SOURCE_MIN_INTERVAL_S,
        on_new: Callable[[str], None] | None = None,
    ) -> None:
        self.board = board
        self.connection = connection
        self.topics = topics
        self.min_interval_s = min_interval_s
        self.on_new = on_new
        self.published = 0
        self._wake = threading.Condition()
        self._known: list[str] = []  # in order of appearance; only names a topic level can carry
        self._unusable: set[str] = set()
        self._dirty: set[str] = set()
        self._last_sent: dict[str, float] = {}
        self._inflight: dict[str, Delivery] = {}
        self._connected_at = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> SourceStates:
        self.board.subscribe(self._on_state)  # also tells us every source known now, and each one added
        self.connection.add_connect_listener(self._on_connect)
        self._thread = threading.Thread(target=self._run, name="mqtt-sources", daemon=True)
        self._thread.start()
        return self

    def _on_state(self, state: SourceState) -> None:
        self._mark(state.name)

    def _mark(self, name: str) -> None:
        """Source ``name`` changed: publish its latest state when its interval allows."""
        with self._wake:
            if self._closed or name in self._unusable:
                return
            new = name not in self._known
            if new and not is_topic_part(name):
                self._unusable.add(name)
                log.warning("source %r: its state is not published, the name cannot be an MQTT topic level",
                            name)
                return
            if new:
                self._known.append(name)
            self._dirty.add(name)
            self._wake.notify()
        if new and self.on_new is not None:
            try:
                self.on_new(name)
            except Exception:
                log.exception("announcing source %r failed", name)

    def _on_connect(self) -> None:
        """After every (re)connect: the broker may have lost the retained states (no persistence)."""
        with self._wake:
            self._connected_at = time.monotonic()
            self._dirty.update(self._known)
            self._wake.notify()

    def _ready_at(self, name: str, now: float) -> float | None:
        """When ``name`` may be sent again; None while its previous state is unacknowledged.

        One state per source in flight keeps them in order: paho re-sends what was unacknowledged at a
        reconnect *after* our connect listener ran, so a newer state sent at once could be overtaken.
        """
        delivery = self._inflight.get(name)
        sent = self._last_sent.get(name, float("-inf"))
        if delivery is not None and not delivery.acknowledged:
            if now - max(sent, self._connected_at) < INFLIGHT_TIMEOUT_S:
                return None
            log.debug("state of source %r unacknowledged for %gs; sending the latest anyway",
                      name, INFLIGHT_TIMEOUT_S)
        return sent + self.min_interval_s

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._closed:
                    return
                now = time.monotonic()
                due: list[str] = []
                next_at: float | None = None
                if self.connection.connected:
                    for name in self._dirty:
                        at = self._ready_at(name, now)
                        if at is None:
                            continue  # woken by its acknowledgement
                        if at <= now:
                            due.append(name)
                        elif next_at is None or at < next_at:
                            next_at = at
                if not due:
                    # woken by a change, an acknowledgement or a connect; the poll is only a safety net
                    self._wake.wait(1.0 if next_at is None else min(1.0, max(0.0, next_at - now)))
                    continue
                for name in due:
                    self._dirty.discard(name)
                    self._last_sent[name] = now
            for name, delivery in self._send(due).items():
                with self._wake:
                    self._inflight[name] = delivery

    def _acknowledged(self, accepted: bool, reason: str) -> None:
        if not accepted:
            log.warning("the broker refused a source state (%s)", reason)
        with self._wake:
            self._wake.notify()

    def _send(self, names: list[str]) -> dict[str, Delivery]:
        """Publish the board's current state of ``names`` (retained, QoS 1)."""
        try:
            snapshot = self.board.snapshot()
        except Exception:
            log.exception("reading the source states failed")
            return {}
        sent: dict[str, Delivery] = {}
        for name in names:
            body = snapshot.get(name)
            if body is None:
                continue
            try:
                sent[name] = self.connection.publish(
                    self.topics.source_state(name), dumps(body), 1, True, on_ack=self._acknowledged
                )
            except Exception:
                log.exception("publishing the state of source %r failed", name)
                continue
            self.published += 1
        return sent

    def close(self, timeout: float = 2.0) -> None:
        """Stop, then publish every source's final state and wait (up to ``timeout`` s) for the broker."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            names = list(self._known)
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.connection.connected:
            return  # nothing would leave; the retained states stay as last sent
        deliveries = self._send(names)
        if timeout <= 0:
            return  # sent before the offline status all the same: one connection keeps the order
        deadline = time.monotonic() + timeout
        for delivery in deliveries.values():
            if not delivery.wait(max(0.0, deadline - time.monotonic())):
                log.warning("the final source states were not all acknowledged within %gs", timeout)
                break


class DeviceSync:
    """Everything MQTT on the device. ``start()`` connects (unreachable broker: keeps retrying).

    With ``sources`` (the run's ``SourceBoard``), each source's state is published retained, telemetry
    carries ``sources``, and Home Assistant discovery adds one connectivity binary_sensor per source.
    """

    def __init__(
        self,
        options: DeviceOptions,
        pipeline: Any,
        reload: Callable[[], None] | None = None,
        sources: SourceBoard | None = None,
        events: Any = None,
        frames: Any = None,
    ) -> None:
        self.options = options
        self.events = events  # the run's edge.events.EventAnnotator, if events are on
        self.frames = frames  # the run's edge.events.FrameKeeper (cmd/snapshot of a live source)
        self.event_publisher: Any = None
        self.pipeline = pipeline
        self.reload = reload
        self.sources = sources
        self.source_states: SourceStates | None = None
        self.topics = DeviceTopics(options.prefix, options.device_id)
        self.outbox = Outbox(options.state_dir, options.outbox)
        self.connection = MqttConnection(
            options.broker,
            client_id_for(options.device_id),
            protocol=options.protocol,
            status_topic=self.topics.status,
            status_extra=lambda: {
                "seq": self.outbox.last_seq, "stream": self.outbox.stream, "phase": "serving"
            },
            keepalive=options.keepalive,
            reconnect_min=options.reconnect_min,
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
                Discovery(self.topics, self._ha_labels(), options.ha_off_delay_s, options.ha_threshold,
                          getattr(model, "name", None), events=self.events is not None,
                          zones=self.events.zone_names if self.events is not None else (),
                          updates=options.ha_updates, install=options.ha_install),
                lambda topic, payload, qos, retain: self.connection.publish(topic, payload, qos, retain),
                sources=self.sources.names() if self.sources is not None else (),
            )
            ha = self.home_assistant
            self.connection.subscribe(BIRTH_TOPIC, lambda m: ha.on_birth(m.payload))
            self.connection.add_connect_listener(ha.announce)
        if self.events is not None or self.frames is not None:
            from cloud_sync.event_publisher import EventPublisher

            self.event_publisher = EventPublisher(self)
            if self.events is not None:
                self.events.add_listener(self.event_publisher)
        self.commands = Commands(
            self.connection, self.topics, self.pipeline, self.outbox, self._emit_snapshot,
            lambda: self._last_input, reload=self.reload, inputs=options.inputs, watch=options.watch,
            frames=self.frames, publish_frame=getattr(self.event_publisher, "publish_frame", None),
        )
        self.connection.add_connect_listener(self.outbox.kick)
        if self.sources is not None:
            ha_sync = self.home_assistant
            self.source_states = SourceStates(
                self.sources, self.connection, self.topics,
                on_new=None if ha_sync is None else lambda name: ha_sync.add_sources([name]),
            ).start()
        self.outbox.start(self.connection)
        try:
            self.connection.start(require=False)
        except BaseException:
            if self.source_states is not None:
                self.source_states.close(timeout=0)
            self.commands.close()
            self.outbox.close()
            raise
        self._ticker = threading.Thread(target=self._tick, name="mqtt-ticker", daemon=True)
        self._ticker.start()
        return self

    def _ha_labels(self) -> tuple[str, ...]:
        """The labels Home Assistant has entities for: ``--ha-label``, else the events' labels of interest."""
        if self.options.ha_labels or self.events is None:
            return self.options.ha_labels
        return tuple(sorted(self.events.settings.filter.labels))

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

    def emit_event(self, event: dict[str, Any]) -> None:
        """Commit one event to the outbox, in the results' ``seq`` sequence (``edge.event/1``)."""
        from cloud_sync.event_publisher import build_event

        with self._emit_lock:
            seq = self.outbox.reserve_seq()
            message = build_event(event, device=self.options.device_id, stream=self.outbox.stream, seq=seq)
            self.outbox.add(self.topics.events, dumps(message), kind="event", seq=seq)

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
        if self.sources is not None:
            body["sources"] = self.sources.snapshot()
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
        """Stop the update agent, flush the outbox (waiting up to ``drain_timeout`` s), publish each
        source's final state (the caller has set it), go offline."""
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
        if self.source_states is not None:
            try:
                self.source_states.close(timeout=min(drain_timeout, 2.0))
            except Exception:
                log.exception("publishing the final source states failed")
        self.connection.close()
