"""The fleet collector behind ``edge collect``: validate, store each result once, find and repair gaps.

Subscribes to ``<prefix>/+/results``, ``/events`` and ``/telemetry`` (through ``$share/<group>/`` with
``share``), plus ``/status``, ``/model/status``, the snapshot topics and ``/cmd/+/reply``. Results and events
share one ``seq`` sequence per device stream: both go into the results table (``kind``), so one gap check
covers them. A writer thread stores them in batches (``INSERT`` ignoring known ids: duplicates are counted),
with each telemetry message (fps, latency, outbox: the dashboard's charts), the latest snapshot JPEG per
(device, source, label) and each change of a device's update state (its model history). An ``observer``
(the dashboard's live state) sees every valid message as ``(kind, device, body)``.

Every ``check_interval_s`` it compares, per device stream, the ``seq`` values
in the store with the highest ``seq`` seen (in results, telemetry or status): a gap that is still open at
the next check is requested again with ``<prefix>/<id>/cmd/replay`` ``{"from", "to", "stream"}``; ranges
the device no longer holds (its reply's ``missing``) are recorded as lost and reported, not re-requested.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cloud_sync.commands import ranges
from cloud_sync.connection import Message, MqttConnection
from cloud_sync.errors import PayloadError
from cloud_sync.messages import decode_json, dumps, validate_event, validate_result, validate_telemetry
from cloud_sync.store import KindRow, ResultStore, TelemetryRow, missing_seqs
from cloud_sync.topics import FleetTopics, shared

log = logging.getLogger(__name__)
GAP_SCAN = 100_000  # seqs past the watermark one gap check looks at


@dataclass
class StreamState:
    """What the collector knows of one device stream (a device's outbox lifetime)."""

    device: str
    stream: str
    watermark: int = 0  # every seq <= watermark is stored or known lost
    top: int = 0  # highest seq seen anywhere
    missing: list[int] = field(default_factory=list)
    requested_at: float = 0.0
    backoff_s: float = 0.0
    asked: set[int] = field(default_factory=set)  # seqs a replay was requested for, not stored yet


@dataclass(frozen=True)
class Lost:
    """A range a device says it no longer holds."""

    device: str
    stream: str
    first: int
    last: int


class Snapshot(NamedTuple):
    """A retained JPEG: the best frame of ``label``'s latest event on ``source`` ('' label: latest frame)."""

    device: str
    source: str
    label: str
    ts: float
    jpeg: bytes


class UpdateState(NamedTuple):
    device: str
    ts: float
    state: str
    name: str
    version: int
    reason: str


class TelemetryEntry(NamedTuple):
    row: TelemetryRow


Observer = Callable[[str, str, Any], None]
PRUNE_EVERY_S = 600.0
MAX_SNAPSHOT = 4 * 1024 * 1024  # bytes; a boxed 1080p JPEG is ~300 KB
_JPEG_MAGIC = b"\xff\xd8"


@dataclass
class CollectorStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    telemetry: int = 0
    events: int = 0
    snapshots: int = 0
    replays_requested: int = 0
    repaired: int = 0
    invalid_by_topic: dict[str, int] = field(default_factory=dict)
    invalid_by_device: dict[str, int] = field(default_factory=dict)
    repaired_by_device: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(
        self,
        connection: MqttConnection,
        store: ResultStore,
        *,
        prefix: str = "edge",
        share: str | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        check_interval_s: float = 2.0,
        replay_retry_s: float = 5.0,
        repair: bool = True,
        batch: int = 1000,
        observer: Observer | None = None,
        telemetry_retention_s: float = 7 * 86400.0,
    ) -> None:
        self.connection = connection
        self.store = store
        self.fleet = FleetTopics(prefix)
        self.share = share
        self.on_result = on_result
        self.check_interval_s = check_interval_s
        self.replay_retry_s = replay_retry_s
        self.repair = repair
        self.batch = batch
        self.observer = observer
        self.telemetry_retention_s = telemetry_retention_s
        self._pruned = 0.0
        self.stats = CollectorStats()
        self.streams: dict[tuple[str, str], StreamState] = {}
        self.devices_online: dict[str, str] = {}
        self._queue: queue.Queue[
            tuple[KindRow, dict[str, Any]] | Lost | Snapshot | UpdateState | TelemetryEntry | None
        ] = queue.Queue()
        self._update_seen: dict[str, tuple[str, int, str]] = {}
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        self._checker = threading.Thread(target=self._check_loop, name="collector-gaps", daemon=True)

    def start(self) -> Collector:
        for device, stream in self.store.streams():
            self._state(device, stream)
        for device, state, version, name in self.store.last_updates():
            self._update_seen[device] = (state, version, name)  # the retained status again is no new row
        self._writer.start()
        fleet = self.fleet
        self.connection.subscribe(shared(fleet.results, self.share), self._on_result)
        self.connection.subscribe(shared(fleet.events, self.share), self._on_event)
        self.connection.subscribe(shared(fleet.telemetry, self.share), self._on_telemetry)
        self.connection.subscribe(fleet.status, self._on_status)
        self.connection.subscribe(f"{fleet.prefix}/+/model/status", self._on_model_status)
        self.connection.subscribe(f"{fleet.prefix}/+/+/+/snapshot", self._on_snapshot)
        self.connection.subscribe(f"{fleet.prefix}/+/+/snapshot", self._on_snapshot)
        self.connection.subscribe(f"{fleet.prefix}/+/cmd/+/reply", self._on_reply)
        self.connection.start()
        self._checker.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.connection.close()
        self._queue.put(None)
        for thread, timeout in ((self._writer, 30), (self._checker, 10)):
            if thread.ident is not None:
                thread.join(timeout=timeout)

    # ----------------------------------------------------------------- incoming (network thread)

    def _invalid(self, topic: str, exc: PayloadError) -> None:
        device = self.fleet.device_of(topic) or ""
        with self._lock:
            self.stats.invalid += 1
            self.stats.invalid_by_topic[topic] = self.stats.invalid_by_topic.get(topic, 0) + 1
            self.stats.invalid_by_device[device] = self.stats.invalid_by_device.get(device, 0) + 1
        log.warning("dropped a bad payload: %s", exc)

    def _observe(self, kind: str, device: str, body: Any) -> None:
        if self.observer is not None:
            try:
                self.observer(kind, device, body)
            except Exception:
                log.exception("the collector's observer failed on a %s of %s", kind, device)

    def _state(self, device: str, stream: str) -> StreamState:
        key = (device, stream)
        with self._lock:
            state = self.streams.get(key)
            if state is None:
                state = self.streams[key] = StreamState(device, stream)
            return state

    def _see_seq(self, device: str, stream: str, seq: int) -> None:
        state = self._state(device, stream)
        with self._lock:
            state.top = max(state.top, seq)

    def _on_result(self, message: Message) -> None:
        self._on_sequenced(message, "result")

    def _on_event(self, message: Message) -> None:
        self._on_sequenced(message, "event")

    def _on_sequenced(self, message: Message, kind: str) -> None:
        """A result or an event: one ``seq`` sequence, one table (``kind`` tells them apart)."""
        with self._lock:
            self.stats.received += 1
        validate = validate_result if kind == "result" else validate_event
        try:
            body = validate(decode_json(message.payload, message.topic), message.topic)
            device = self.fleet.device_of(message.topic)
            if device is None or device != body["device"]:
                raise PayloadError(f"{kind} on {message.topic} names device {body['device']!r}; dropped")
        except PayloadError as exc:
            self._invalid(message.topic, exc)
            return
        if kind == "event":
            with self._lock:
                self.stats.events += 1
        self._see_seq(device, body["stream"], body["seq"])
        row: KindRow = (body["id"], device, body["stream"], body["seq"], float(body["ts"]),
                        message.payload.decode(), kind)
        self._queue.put((row, body))
        self._observe(kind, device, body)

    def _on_snapshot(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        parts = message.topic[len(self.fleet.prefix) + 1 :].split("/")
        if device is None or not message.payload or parts[1] == "cmd":  # cmd/snapshot: the request
            return
        source, label = parts[1], parts[2] if len(parts) == 4 else ""
        if len(message.payload) > MAX_SNAPSHOT or not message.payload.startswith(_JPEG_MAGIC):
            what = f"{len(message.payload)} bytes" if len(message.payload) > MAX_SNAPSHOT else "not a JPEG"
            self._invalid(message.topic, PayloadError(f"snapshot on {message.topic} is {what}; dropped"))
            return
        with self._lock:
            self.stats.snapshots += 1
        snap = Snapshot(device, source, label, time.time(), message.payload)
        self._queue.put(snap)
        self._observe("snapshot", device, snap)

    def _on_model_status(self, message: Message) -> None:
        from cloud_sync.update_protocol import FINAL_STATES, Status, shadow_summary

        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        try:
            status = Status.from_bytes(message.payload)
        except PayloadError as exc:
            self._invalid(message.topic, exc)
            return
        self._observe("model_status", device, status)
        name = str((status.active or {}).get("name", "")) if status.state == "active" else status.name
        version = int((status.active or {}).get("version", 0)) if status.state == "active" else status.version
        key = (status.state, version, name)
        with self._lock:
            changed = self._update_seen.get(device) != key
            self._update_seen[device] = key
        if changed:  # a state change, not a progress report: one row of the model history
            reason = status.reason
            if status.shadow and status.state in FINAL_STATES:  # the field figures stay in the history
                reason = "; ".join(part for part in (reason, shadow_summary(status.shadow)) if part)
            ts = status.ts or time.time()
            self._queue.put(UpdateState(device, ts, status.state, name, version, reason))

    def _on_reply(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None:
            return
        if message.topic.endswith("/cmd/replay/reply"):
            self._on_replay_reply(message)
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            return  # a command reply is for whoever asked: not ours to count
        self._observe("reply", device, {"command": message.topic.rsplit("/", 2)[-2], **body})

    def _on_telemetry(self, message: Message) -> None:
        try:
            body = validate_telemetry(decode_json(message.payload, message.topic), message.topic)
            device = self.fleet.device_of(message.topic)
            stream = body.get("stream")
            if device is None or not isinstance(stream, str):
                raise PayloadError(f"telemetry on {message.topic}: 'stream' is {stream!r}, expected a string")
        except PayloadError as exc:
            self._invalid(message.topic, exc)
            return
        with self._lock:
            self.stats.telemetry += 1
        if body["seq"]:
            self._see_seq(device, stream, body["seq"])
        self._queue.put(TelemetryEntry(telemetry_row(device, body)))
        self._observe("telemetry", device, body)

    def _on_status(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            body = {"state": message.payload.decode(errors="replace")[:20]}
        self.devices_online[device] = str(body.get("state"))
        self._observe("status", device, body)
        seq, stream = body.get("seq"), body.get("stream")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 and isinstance(stream, str):
            self._see_seq(device, stream, seq)

    def _on_replay_reply(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        try:
            body = decode_json(message.payload, message.topic)
            stream, missing = body.get("stream"), body.get("missing", [])
            if device is None or not isinstance(stream, str) or not isinstance(missing, list):
                raise PayloadError(f"replay reply on {message.topic} lacks 'stream' or 'missing'")
            spans = [(int(a), int(b)) for a, b in missing]
        except (PayloadError, TypeError, ValueError) as exc:
            if not isinstance(exc, PayloadError):
                exc = PayloadError(f"replay reply on {message.topic}: {exc}")
            self._invalid(message.topic, exc)
            return
        for first, last in spans:
            log.warning("device %s no longer holds results %d..%d of stream %s; recorded as lost",
                        device, first, last, stream)
            self.store_lost(device, stream, first, last)

    def store_lost(self, device: str, stream: str, first: int, last: int) -> None:
        self._queue.put(Lost(device, stream, first, last))

    # ----------------------------------------------------------------- writer thread

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            items = [item]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if None in items:
                stopping = True
            rows: list[KindRow] = []
            bodies: list[dict[str, Any]] = []
            telemetry: list[TelemetryRow] = []
            for entry in items:
                if entry is None:
                    continue
                if isinstance(entry, TelemetryEntry):
                    telemetry.append(entry.row)
                elif isinstance(entry, Lost | Snapshot | UpdateState):
                    self._write_other(entry)
                else:
                    row, body = entry
                    rows.append(row)
                    bodies.append(body)
            if telemetry:
                try:
                    self.store.add_telemetry(telemetry)
                    if time.monotonic() - self._pruned > PRUNE_EVERY_S:  # the charts' rows, kept bounded
                        self._pruned = time.monotonic()
                        self.store.prune_telemetry(time.time() - self.telemetry_retention_s)
                except Exception:
                    log.exception("storing %d telemetry message(s) failed", len(telemetry))
            if not rows:
                continue
            try:
                new = self.store.insert(rows)
            except Exception:
                log.exception("storing %d result(s) failed; they will be asked for again as gaps", len(rows))
                continue
            with self._lock:
                self.stats.stored += new
                self.stats.duplicates += len(rows) - new
            if self.on_result is not None and new:
                self._emit_new(rows, bodies, new)

    def _write_other(self, entry: Lost | Snapshot | UpdateState) -> None:
        try:
            if isinstance(entry, Lost):
                self.store.add_lost(entry.device, entry.stream, entry.first, entry.last)
            elif isinstance(entry, Snapshot):
                self.store.put_snapshot(entry.device, entry.source, entry.label, entry.ts, entry.jpeg)
            else:
                self.store.add_update(*entry)
        except Exception:
            log.exception("storing a %s of %s failed", type(entry).__name__, entry.device)

    def _emit_new(self, rows: list[KindRow], bodies: list[dict[str, Any]], new: int) -> None:
        """Hand results on (``--print``); with duplicates in the batch, only the first of each id."""
        seen: set[str] = set()
        for row, body in zip(rows, bodies, strict=True):
            if row[0] in seen:
                continue
            seen.add(row[0])
            if self.on_result is not None:
                self.on_result(body)

    # ----------------------------------------------------------------- gaps

    def _check_loop(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.check_gaps()
            except Exception:
                log.exception("gap check failed")

    def check_gaps(self) -> dict[tuple[str, str], list[int]]:
        """Recompute what is missing per stream; request replays for gaps open since the last check."""
        with self._check_lock:  # one check at a time: two would both count the same repaired seq
            return self._check_gaps()

    def _check_gaps(self) -> dict[tuple[str, str], list[int]]:
        with self._lock:
            states = list(self.streams.values())
        out: dict[tuple[str, str], list[int]] = {}
        now = time.monotonic()
        for state in states:
            with self._lock:
                top, floor = state.top, state.watermark
            stored = self.store.seqs_above(state.device, state.stream, floor)
            if stored:
                top = max(top, stored[-1])
            scanned = min(top, floor + GAP_SCAN)  # a window at a time: a huge seq must not build a huge range
            missing = missing_seqs(stored, self.store.lost(state.device, state.stream), floor, scanned)
            with self._lock:
                state.top = max(state.top, top)
                state.watermark = (missing[0] - 1) if missing else scanned
                before = set(state.missing)
                filled = state.asked.intersection(stored)  # asked for, and stored since: repaired
                state.asked = {s for s in state.asked - filled if s > state.watermark}  # (below: lost)
                repaired = len(filled)
                if repaired:  # a late delivery that came before any replay was asked is not a repair
                    self.stats.repaired += repaired
                    by_device = self.stats.repaired_by_device
                    by_device[state.device] = by_device.get(state.device, 0) + repaired
                persisted = [s for s in missing if s in before]
                state.missing = missing
            out[(state.device, state.stream)] = missing
            if persisted and self.repair and now - state.requested_at >= state.backoff_s:
                self._request_replay(state, persisted)
                state.requested_at = now
                state.backoff_s = min(max(self.replay_retry_s, state.backoff_s * 2), 60.0)
            elif not missing:
                state.backoff_s = 0.0
        return out

    def _request_replay(self, state: StreamState, seqs: list[int]) -> None:
        topic = self.fleet.device(state.device).cmd("replay")
        for first, last in ranges(seqs)[:50]:
            request = {"from": first, "to": last, "stream": state.stream, "request_id": uuid.uuid4().hex[:12]}
            self.connection.publish(topic, dumps(request), qos=1)
            with self._lock:
                self.stats.replays_requested += 1
                if last - first < 100_000:  # (bounded: the gap check scans a window at a time)
                    state.asked.update(range(first, last + 1))
            log.warning("gap: %s stream %s lacks seq %d..%d; asked the device to replay them",
                        state.device, state.stream, first, last)

    def report(self) -> dict[str, Any]:
        """Per device stream: stored, highest seq, missing and lost ranges; plus the counters."""
        with self._lock:
            tops = {key: state.top for key, state in self.streams.items()}
            counters = dict(vars(self.stats))
        return {"devices": store_report(self.store, tops), **counters, "online": dict(self.devices_online)}


def telemetry_row(device: str, body: dict[str, Any]) -> TelemetryRow:
    """The stored columns of one telemetry message (``None`` where the device did not say)."""
    latency = body.get("latency_ms") if isinstance(body.get("latency_ms"), dict) else {}
    outbox = body.get("outbox") if isinstance(body.get("outbox"), dict) else {}
    ts = body.get("ts")
    return (
        device,
        float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else time.time(),
        _number(body.get("fps")),
        _number(latency.get("p50")),  # type: ignore[union-attr]
        _number(latency.get("p95")),  # type: ignore[union-attr]
        _int(outbox.get("pending")),  # type: ignore[union-attr]
        _number(outbox.get("oldest_age_s")),  # type: ignore[union-attr]
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def store_report(store: ResultStore, tops: dict[tuple[str, str], int] | None = None) -> dict[str, Any]:
    """Per device and stream: results stored, highest seq, missing and lost ranges (from the store)."""
    tops = dict(tops or {})
    for key in store.streams():
        tops.setdefault(key, 0)
    devices: dict[str, Any] = {}
    for (device, stream), seen_top in sorted(tops.items()):
        count, top = store.summary(device, stream)
        top = max(top, seen_top)
        lost = store.lost(device, stream)
        missing = missing_seqs(store.seqs_above(device, stream, 0), lost, 0, top)
        devices.setdefault(device, {})[stream] = {
            "stored": count,
            "last_seq": top,
            "missing": ranges(missing),
            "lost": [list(span) for span in lost],
        }
    return devices


def has_gaps(devices: dict[str, Any]) -> bool:
    return any(s["missing"] for streams in devices.values() for s in streams.values())


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
