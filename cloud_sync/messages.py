"""Wire messages: result and telemetry envelopes, command requests and replies, and their validation.

Every incoming payload goes through ``decode_json`` (size, UTF-8, JSON object) and a ``validate_*``
function; failures are ``PayloadError`` naming the topic and what was wrong, to be counted and dropped.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from cloud_sync.errors import PayloadError

RESULT_SCHEMA = "edge.result/1"
TELEMETRY_SCHEMA = "edge.telemetry/1"
EVENT_SCHEMA = "edge.event/1"
EVENT_TYPES = ("new", "update", "end")
MAX_PAYLOAD = 256 * 1024  # bytes accepted on /cmd and at the collector
MAX_SEQ = 2**63 - 1  # the largest seq SQLite (and PostgreSQL's BIGINT) can store
_COMPACT = (",", ":")


def dumps(obj: Any) -> bytes:
    """Compact, strict JSON bytes: a NaN or infinite float (a broken model's score) becomes null, since
    ``decode_json`` refuses NaN and Infinity (they are not JSON)."""
    try:
        return json.dumps(obj, separators=_COMPACT, default=str, allow_nan=False).encode()
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        return json.dumps(_finite(obj), separators=_COMPACT, default=str).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range for a number")
    return value


def loads_strict(payload: bytes) -> Any:
    """Strict JSON from UTF-8 bytes: no NaN/Infinity, no number that overflows to infinity, no nesting deep
    enough to exhaust the stack (``ValueError`` for each; ``UnicodeDecodeError`` for bytes that are not UTF-8,
    UTF-16/32 included: stored payloads are UTF-8 text)."""
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_number)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def decode_json(payload: bytes, topic: str, max_bytes: int = MAX_PAYLOAD) -> dict[str, Any]:
    """A JSON object from an MQTT payload, or ``PayloadError`` saying what was wrong."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload on {topic} is {len(payload)} bytes, over the {max_bytes}-byte limit")
    try:
        obj = loads_strict(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"payload on {topic} is not JSON ({exc}): {payload[:60]!r}") from exc
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        raise PayloadError(f"payload on {topic} is JSON {kind}, expected an object: {payload[:60]!r}")
    return obj


def build_result(
    record: dict[str, Any], *, device: str, stream: str, seq: int, schema: str = RESULT_SCHEMA
) -> dict[str, Any]:
    """The ``/results`` (or, with ``EVENT_SCHEMA``, ``/events``) message for one record: an envelope, then
    the record's own fields."""
    message: dict[str, Any] = {
        "schema": schema,
        "id": uuid.uuid4().hex,
        "device": device,
        "stream": stream,
        "seq": seq,
        "ts": round(time.time(), 3),
    }
    for key, value in record.items():
        if key == "schema":
            message["result_schema"] = value
        elif key not in message:
            message[key] = value
    return message


def _require(
    obj: dict[str, Any], key: str, kind: type | tuple[type, ...], topic: str, what: str = "result"
) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise PayloadError(f"{what} on {topic}: field {key!r} is {value!r}, expected {names}")
    return value


def _validate_envelope(obj: dict[str, Any], topic: str, schema: str, what: str) -> None:
    if obj.get("schema") != schema:
        raise PayloadError(f"{what} on {topic}: schema is {obj.get('schema')!r}, expected {schema!r}")
    ident = _require(obj, "id", str, topic, what)
    if not 8 <= len(ident) <= 64:
        raise PayloadError(f"{what} on {topic}: id {ident[:80]!r} must be 8 to 64 characters")
    _require(obj, "device", str, topic, what)
    seq = _require(obj, "seq", int, topic, what)
    if not 1 <= seq <= MAX_SEQ:
        raise PayloadError(f"{what} on {topic}: seq is {seq}, expected an integer from 1 to {MAX_SEQ}")
    _require(obj, "ts", (int, float), topic, what)
    _require(obj, "stream", str, topic, what)
    if not isinstance(obj.get("model"), dict):
        raise PayloadError(f"{what} on {topic}: field 'model' is {obj.get('model')!r}, expected an object")


def validate_result(obj: dict[str, Any], topic: str) -> dict[str, Any]:
    """Check the envelope fields the collector relies on; returns ``obj``."""
    _validate_envelope(obj, topic, RESULT_SCHEMA, "result")
    return obj


def validate_event(obj: dict[str, Any], topic: str) -> dict[str, Any]:
    """Check an ``/events`` message: the result envelope plus ``type``, ``event_id`` and ``label``."""
    _validate_envelope(obj, topic, EVENT_SCHEMA, "event")
    if obj.get("type") not in EVENT_TYPES:
        expected = ", ".join(EVENT_TYPES)
        raise PayloadError(f"event on {topic}: type is {obj.get('type')!r}, expected one of {expected}")
    _require(obj, "event_id", str, topic, "event")
    _require(obj, "label", str, topic, "event")
    return obj


def validate_telemetry(obj: dict[str, Any], topic: str) -> dict[str, Any]:
    if obj.get("schema") != TELEMETRY_SCHEMA:
        schema = obj.get("schema")
        raise PayloadError(f"telemetry on {topic}: schema is {schema!r}, expected {TELEMETRY_SCHEMA!r}")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise PayloadError(f"telemetry on {topic}: seq is {seq!r}, expected an integer from 0 to {MAX_SEQ}")
    return obj


def reply(request: dict[str, Any] | None, ok: bool, **fields: Any) -> bytes:
    """A command reply echoing the request's ``request_id``."""
    body: dict[str, Any] = {"ok": ok, "ts": round(time.time(), 3)}
    if request and isinstance(request.get("request_id"), str | int):
        body["request_id"] = request["request_id"]
    body.update(fields)
    return dumps(body)
