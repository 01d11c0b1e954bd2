"""Hostile MQTT payloads (issue 14): every parser of the device and the collector, fed by Hypothesis.

Each parser either returns a well-typed message or raises ``PayloadError`` with one line saying what was
wrong; each component that receives the payloads (the collector, the command handler, the update agent)
counts the rejection and stays up. Nothing else may escape: not a RecursionError from deep JSON, an
OverflowError from ``Infinity``, a UnicodeDecodeError from UTF-16 JSON, nor good results lost to one bad row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.collector import Collector
from cloud_sync.commands import Commands
from cloud_sync.connection import Message
from cloud_sync.errors import PayloadError
from cloud_sync.messages import (
    EVENT_SCHEMA,
    RESULT_SCHEMA,
    TELEMETRY_SCHEMA,
    decode_json,
    validate_event,
    validate_result,
    validate_telemetry,
)
from cloud_sync.outbox import Outbox
from cloud_sync.store import open_store
from cloud_sync.topics import DeviceTopics
from cloud_sync.update_agent import UpdateAgent
from cloud_sync.update_protocol import STATES, ChunkRequest, Offer, Status
from edge.signing import TrustStore
from edge.store import ModelStore
from tests.chaos.fuzz import REPORT, fuzz_settings, payloads

SQLITE_INT = 2**63 - 1
RESULT = {"schema": RESULT_SCHEMA, "id": "0123456789abcdef", "device": "cam1", "stream": "s1", "seq": 1,
          "ts": 1.5, "model": {"name": "m", "version": 1}, "top": [{"label": "cat", "score": 0.9}]}
EVENT = {**RESULT, "schema": EVENT_SCHEMA, "type": "new", "event_id": "e1", "label": "cat"}
TELEMETRY = {"schema": TELEMETRY_SCHEMA, "device": "cam1", "stream": "s1", "seq": 3, "ts": 2.0,
             "fps": 9.5, "outbox": {"pending": 0}}
SHA = "a" * 64
OFFER = {"schema": 1, "name": "m", "version": 2, "size": 3000, "sha256": SHA, "chunk_size": 1024,
         "chunk_sha256": [SHA] * 3, "chunks": 3, "signature": "c2ln", "key_id": "", "published_at": 1.0}
REQUEST = {"sha256": SHA, "chunks": [0, 1, 2], "group": "lobby"}
STATUS = {"schema": 1, "device": "cam1", "state": "active", "name": "m", "version": 2, "progress": 1.0,
          "reason": "", "sha256": SHA, "active": {"name": "m", "version": 2, "sha256": SHA},
          "healthy": True, "groups": ["lobby"], "ts": 5.0}


def _rejected(parser: str, exc: PayloadError) -> None:
    """A rejection must be one line that says something."""
    text = str(exc)
    assert text and "\n" not in text and len(text) < 2000, text
    REPORT[f"{parser}: rejected"] += 1


def _check_envelope(body: dict[str, Any], raw: bytes) -> None:
    """What the collector does with an accepted result must work: store seq and ts, keep the text."""
    assert isinstance(body["seq"], int) and 1 <= body["seq"] <= SQLITE_INT
    assert math.isfinite(float(body["ts"]))
    raw.decode("utf-8")  # the collector stores the payload as text
    for key in ("id", "device", "stream"):
        assert isinstance(body[key], str)


@pytest.mark.parametrize(
    ("name", "base", "validate"),
    [("result", RESULT, validate_result), ("event", EVENT, validate_event)],
)
@fuzz_settings(400)
@given(data=st.data())
def test_result_and_event_validation(
    name: str, base: dict[str, Any], validate: Any, data: st.DataObject
) -> None:
    raw = data.draw(payloads(base))
    REPORT[f"{name}: cases"] += 1
    try:
        body = validate(decode_json(raw, "edge/cam1/results"), "edge/cam1/results")
    except PayloadError as exc:
        _rejected(name, exc)
        return
    _check_envelope(body, raw)


@fuzz_settings(400)
@given(raw=payloads(TELEMETRY))
def test_telemetry_validation(raw: bytes) -> None:
    REPORT["telemetry: cases"] += 1
    try:
        body = validate_telemetry(decode_json(raw, "edge/cam1/telemetry"), "edge/cam1/telemetry")
    except PayloadError as exc:
        _rejected("telemetry", exc)
        return
    assert isinstance(body["seq"], int) and 0 <= body["seq"] <= SQLITE_INT
    raw.decode("utf-8")


@fuzz_settings(400)
@given(raw=payloads(OFFER), limit=st.sampled_from([1, 4096, 1 << 30]))
def test_offer_parsing(raw: bytes, limit: int) -> None:
    REPORT["offer: cases"] += 1
    try:
        offer = Offer.from_bytes(raw, limit)
    except PayloadError as exc:
        _rejected("offer", exc)
        return
    assert 1 <= offer.size <= limit and offer.chunks == math.ceil(offer.size / offer.chunk_size)
    assert isinstance(offer.version, int) and offer.version >= 1
    assert math.isfinite(offer.published_at)
    assert isinstance(offer.signature, str) and isinstance(offer.key_id, str)


@fuzz_settings(400)
@given(raw=payloads(REQUEST))
def test_chunk_request_parsing(raw: bytes) -> None:
    REPORT["chunk request: cases"] += 1
    try:
        request = ChunkRequest.from_bytes(raw)
    except PayloadError as exc:
        _rejected("chunk request", exc)
        return
    assert all(isinstance(c, int) and c >= 0 for c in request.chunks)
    assert isinstance(request.group, str)


@fuzz_settings(400)
@given(raw=payloads(STATUS))
def test_status_parsing(raw: bytes) -> None:
    REPORT["status: cases"] += 1
    try:
        status = Status.from_bytes(raw)
    except PayloadError as exc:
        _rejected("status", exc)
        return
    assert status.state in STATES
    assert math.isfinite(status.progress) and math.isfinite(status.ts)
    # What the collector reads from an accepted status must be usable as it is.
    active = status.active or {}
    assert isinstance(active.get("version", 0), int) and isinstance(active.get("name", ""), str)
    json.dumps(status.to_json(), allow_nan=False)


# ----------------------------------------------------------------------------- the collector, end to end


class _Connection:
    """Stands in for the MQTT connection: the collector is fed by calling its handlers directly."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic_filter: str, handler: Any, qos: int = 1) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **_: Any) -> None:
        self.published.append((topic, payload))

    def start(self) -> _Connection:
        return self

    def close(self) -> None:
        pass


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


TOPICS = {
    "results": ("edge/cam1/results", RESULT),
    "events": ("edge/cam1/events", EVENT),
    "telemetry": ("edge/cam1/telemetry", TELEMETRY),
    "model status": ("edge/cam1/model/status", STATUS),
    "status": ("edge/cam1/status", {"state": "online", "seq": 4, "stream": "s1"}),
    "replay reply": ("edge/cam1/cmd/replay/reply", {"ok": True, "stream": "s1", "missing": [[2, 3]]}),
}


def test_collector_survives_hostile_payloads(tmp_path: Path) -> None:
    """Every topic the collector reads, fed hostile payloads between good results: no handler raises,
    nothing is logged as a failure, every good result is stored, and bad ones are counted invalid."""
    store = open_store(str(tmp_path / "results.sqlite"))
    connection = _Connection()
    collector = Collector(connection, store, check_interval_s=3600)  # type: ignore[arg-type]
    handlers = {
        "results": collector._on_result, "events": collector._on_event, "telemetry": collector._on_telemetry,
        "model status": collector._on_model_status, "status": collector._on_status,
        "replay reply": collector._on_reply,
    }
    errors = _Errors()
    logging.getLogger("cloud_sync").addHandler(errors)
    collector._writer.start()
    good = [0]

    @fuzz_settings(600)
    @given(kind=st.sampled_from(sorted(TOPICS)), data=st.data())
    def feed(kind: str, data: st.DataObject) -> None:
        topic, base = TOPICS[kind]
        raw = data.draw(payloads(base))
        REPORT[f"collector {kind}: cases"] += 1
        handlers[kind](Message(topic, raw))  # must not raise
        good[0] += 1
        ok = {**RESULT, "id": f"good-{good[0]:012d}", "seq": good[0]}
        collector._on_result(Message("edge/cam1/results", json.dumps(ok).encode()))

    try:
        feed()
        collector.check_gaps()  # a hostile seq must not make the gap check enumerate billions of seqs
    finally:
        collector._stop.set()
        collector._queue.put(None)
        collector._writer.join(timeout=60)
        logging.getLogger("cloud_sync").removeHandler(errors)
    assert not collector._writer.is_alive()
    assert [r.getMessage() for r in errors.records] == []
    stored = {row for row in store.seqs_above("cam1", "s1", 0)}
    assert set(range(1, good[0] + 1)) <= stored  # no good result lost to a bad one in its batch
    assert collector.stats.invalid > 0
    REPORT["collector: invalid counted"] += collector.stats.invalid
    store.close()


# ----------------------------------------------------------------------------- commands on a device


class _Pipeline:
    model = None

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def set_options(self, **options: Any) -> None:
        self.options.append(options)

    def infer(self, item: Any) -> dict[str, Any]:
        return {"input": str(item)}

    def reload(self) -> None:
        pass


COMMAND_BASES = {
    "ping": {"request_id": "r1"},
    "set": {"top_k": 3, "threshold": 0.5, "request_id": 7},
    "snapshot": {"input": "/etc/passwd", "size": 64},
    "replay": {"from": 1, "to": 5, "stream": "s1"},
    "reload": {},
    "nope": {"x": 1},
}


def test_commands_survive_hostile_payloads(tmp_path: Path) -> None:
    """Every command, fed hostile payloads through the worker thread: each is answered with a JSON reply,
    and every refusal is counted in ``bad_payloads`` (none ends as an unexpected exception)."""
    outbox = Outbox(tmp_path / "state")
    for seq in range(1, 4):
        outbox.add("edge/cam1/results", b'{"seq": %d}' % seq, seq=outbox.reserve_seq())
    outbox.start(None)
    connection = _Connection()
    replies = threading.Condition()

    def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False, **_: Any) -> None:
        with replies:
            connection.published.append((topic, payload))
            replies.notify_all()

    connection.publish = publish  # type: ignore[method-assign]
    errors = _Errors()
    logging.getLogger("cloud_sync").addHandler(errors)
    topics = DeviceTopics("edge", "cam1")
    commands = Commands(connection, topics, _Pipeline(), outbox, emit=lambda r: None,  # type: ignore[arg-type]
                        last_input=lambda: None, inputs=[tmp_path])

    @fuzz_settings(300)
    @given(name=st.sampled_from(sorted(COMMAND_BASES)), data=st.data())
    def feed(name: str, data: st.DataObject) -> None:
        raw = data.draw(payloads(COMMAND_BASES[name]))
        REPORT[f"command {name}: cases"] += 1
        before_bad, before_ok = commands.bad_payloads, commands.handled
        with replies:
            count = len(connection.published)
            commands.receive(Message(topics.cmd(name), raw))
            assert replies.wait_for(lambda: len(connection.published) > count, timeout=30)
            topic, answer = connection.published[-1]
        assert topic == topics.reply(name)
        body = json.loads(answer)
        assert isinstance(body["ok"], bool)
        if body["ok"]:
            assert commands.handled == before_ok + 1
        else:
            assert commands.bad_payloads == before_bad + 1, body  # counted, not an unexpected failure
            assert body["error"] and "\n" not in body["error"]
            REPORT[f"command {name}: rejected"] += 1

    try:
        feed()
    finally:
        commands.close()
        outbox.close()
        logging.getLogger("cloud_sync").removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []


# ----------------------------------------------------------------------------- the update agent


class _Transport:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic_filter: str, handler: Any, qos: int = 1) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))


class _NoActivation:
    def validate(self, path: Path, manifest: Any) -> Any:
        raise AssertionError("a fuzzed transfer must never reach validation")

    def activate(self, *args: Any) -> None:
        raise AssertionError("a fuzzed transfer must never activate")

    def restore(self, entry: Any) -> None:
        pass


def test_update_agent_survives_hostile_offers_and_chunks(tmp_path: Path) -> None:
    """Offers and chunks on the agent's own handlers: malformed offers are counted (``malformed``) and
    answered with a 'rejected' status; hostile chunks in a real transfer never raise and never activate."""
    store = ModelStore(tmp_path / "state")
    transport = _Transport()
    agent = UpdateAgent(transport, store, TrustStore.from_files([]), _NoActivation(), "cam1")
    versions = iter(range(2, 10**6))

    @fuzz_settings(250)
    @given(raw=payloads(OFFER))
    def offers(raw: bytes) -> None:
        REPORT["update agent offer: cases"] += 1
        before = agent.malformed
        agent._handle_offer("edge/cam1/model/offer", raw)
        assert agent.status.state in STATES
        if agent.malformed > before:
            assert agent.status.state == "rejected" and agent.status.reason
            REPORT["update agent offer: rejected"] += 1
        if agent._transfer is not None:  # a well-formed offer of made-up hashes: forget it
            agent._handle_offer("edge/cam1/model/offer", b"")

    @fuzz_settings(250)
    @given(chunks=st.lists(st.tuples(st.integers(-5, 12), st.binary(max_size=1500)), min_size=1, max_size=4),
           good=st.integers(0, 3))
    def chunks(chunks: list[tuple[int, bytes]], good: int) -> None:
        data = os.urandom(3000)
        parts = [data[i : i + 1024] for i in range(0, 3000, 1024)]
        hashes = [hashlib.sha256(p).hexdigest() for p in parts]
        offer = {**OFFER, "version": next(versions), "sha256": hashlib.sha256(data).hexdigest(),
                 "chunk_sha256": hashes, "published_at": time.time()}
        agent._handle_offer("edge/cam1/model/offer", json.dumps(offer).encode())
        assert agent._transfer is not None, agent.status
        sha16 = offer["sha256"][:16]
        for index in range(min(good, 2)):  # some genuine chunks first (never all three)
            agent._handle_chunk(f"edge/cam1/model/chunk/{sha16}/{index}", parts[index])
        for index, payload in chunks:
            REPORT["update agent chunk: cases"] += 1
            agent._handle_chunk(f"edge/cam1/model/chunk/{sha16}/{index}", payload)
            assert agent.status.state in STATES
        agent._handle_offer("edge/cam1/model/offer", b"")
        assert store.active() is None

    offers()
    chunks()
    assert agent.malformed > 0
