"""The fleet collector behind ``edge collect``: validate, store each result once, find and repair gaps.

Subscribes to ``<prefix>/+/results`` and ``/telemetry`` (through ``$share/<group>/`` with ``share``), plus
``/status`` and ``/cmd/replay/reply``. A writer thread stores results in batches (``INSERT`` ignoring known
ids: duplicates are counted). Every ``check_interval_s`` it compares, per device stream, the ``seq`` values
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
from typing import Any

from cloud_sync.commands import ranges
from cloud_sync.connection import Message, MqttConnection
from cloud_sync.errors import PayloadError
from cloud_sync.messages import decode_json, dumps, validate_result, validate_telemetry
from cloud_sync.store import ResultStore, Row, missing_seqs
from cloud_sync.topics import FleetTopics, shared

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Lost:
    """A range a device says it no longer holds."""

    device: str
    stream: str
    first: int
    last: int


@dataclass
class CollectorStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    telemetry: int = 0
    replays_requested: int = 0
    invalid_by_topic: dict[str, int] = field(default_factory=dict)


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
        self.stats = CollectorStats()
        self.streams: dict[tuple[str, str], StreamState] = {}
        self.devices_online: dict[str, str] = {}
        self._queue: queue.Queue[tuple[Row, dict[str, Any]] | Lost | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        self._checker = threading.Thread(target=self._check_loop, name="collector-gaps", daemon=True)

    def start(self) -> Collector:
        for device, stream in self.store.streams():
            self._state(device, stream)
        self._writer.start()
        fleet = self.fleet
        self.connection.subscribe(shared(fleet.results, self.share), self._on_result)
        self.connection.subscribe(shared(fleet.telemetry, self.share), self._on_telemetry)
        self.connection.subscribe(fleet.status, self._on_status)
        self.connection.subscribe(f"{fleet.prefix}/+/cmd/replay/reply", self._on_replay_reply)
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
        with self._lock:
            self.stats.invalid += 1
            self.stats.invalid_by_topic[topic] = self.stats.invalid_by_topic.get(topic, 0) + 1
        log.warning("dropped a bad payload: %s", exc)

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
        with self._lock:
            self.stats.received += 1
        try:
            body = validate_result(decode_json(message.payload, message.topic), message.topic)
            device = self.fleet.device_of(message.topic)
            if device is None or device != body["device"]:
                raise PayloadError(f"result on {message.topic} names device {body['device']!r}; dropped")
        except PayloadError as exc:
            self._invalid(message.topic, exc)
            return
        self._see_seq(device, body["stream"], body["seq"])
        row: Row = (body["id"], device, body["stream"], body["seq"], float(body["ts"]),
                    message.payload.decode())
        self._queue.put((row, body))

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

    def _on_status(self, message: Message) -> None:
        device = self.fleet.device_of(message.topic)
        if device is None or not message.payload:
            return
        try:
            body = decode_json(message.payload, message.topic)
        except PayloadError:
            body = {"state": message.payload.decode(errors="replace")[:20]}
        self.devices_online[device] = str(body.get("state"))
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
            rows: list[Row] = []
            bodies: list[dict[str, Any]] = []
            for entry in items:
                if entry is None:
                    continue
                if isinstance(entry, Lost):
                    self.store.add_lost(entry.device, entry.stream, entry.first, entry.last)
                    continue
                row, body = entry
                rows.append(row)
                bodies.append(body)
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

    def _emit_new(self, rows: list[Row], bodies: list[dict[str, Any]], new: int) -> None:
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
            missing = missing_seqs(stored, self.store.lost(state.device, state.stream), floor, top)
            with self._lock:
                state.top = max(state.top, top)
                state.watermark = (missing[0] - 1) if missing else top
                before = set(state.missing)
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
            log.warning("gap: %s stream %s lacks seq %d..%d; asked the device to replay them",
                        state.device, state.stream, first, last)

    def report(self) -> dict[str, Any]:
        """Per device stream: stored, highest seq, missing and lost ranges; plus the counters."""
        with self._lock:
            tops = {key: state.top for key, state in self.streams.items()}
            counters = dict(vars(self.stats))
        return {"devices": store_report(self.store, tops), **counters, "online": dict(self.devices_online)}


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
