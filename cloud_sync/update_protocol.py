"""Model-update messages and topics (documented in ``docs/updates.md``).

    <prefix>/<id>/model/offer                   retained JSON Offer (an empty retained payload withdraws it)
    <prefix>/group/<name>/model/offer           retained JSON Offer for every device of a group
    <prefix>/<id>/model/request                 device -> publisher: JSON {"sha256", "chunks": [index, ...]}
    <prefix>/<id>/model/chunk/<sha16>/<index>   publisher -> device: the raw bytes of one chunk
    <prefix>/group/<name>/model/chunk/<sha16>/<index>   the same, once for every device of a group
    <prefix>/<id>/model/status                  retained JSON Status of the device's updates

Chunks travel as raw bytes (no base64), so the bytes on the wire are the package plus topic overhead. Every
chunk's sha256 is listed in the offer; the whole package's sha256 and its Ed25519 signature are checked at
the end. Parsing never trusts a payload: a malformed one raises PayloadError naming what was wrong.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cloud_sync.errors import PayloadError
from cloud_sync.messages import dumps, loads_strict
from cloud_sync.topics import is_topic_part
from edge.package import SHA256_HEX

SCHEMA = 1
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 1024, 1024 * 1024
MAX_REQUEST_CHUNKS = 256
STATES = ("idle", "held", "downloading", "verifying", "validating", "shadowing", "active", "rejected",
          "rolled_back")
FINAL_STATES = ("active", "rejected", "rolled_back")


def check_topic_part(value: str, what: str) -> str:
    """A device id, group name or prefix level must not contain MQTT wildcards or slashes."""
    if not is_topic_part(value):
        raise PayloadError(f"{what} {value!r} cannot be used in an MQTT topic; avoid '/', '+', '#', spaces")
    return value


def offer_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/model/offer"


def group_offer_topic(prefix: str, group: str) -> str:
    return f"{prefix}/group/{group}/model/offer"


def request_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/model/request"


def chunk_topic(prefix: str, device_id: str, sha256: str, index: int) -> str:
    return f"{prefix}/{device_id}/model/chunk/{sha256[:16]}/{index}"


def group_chunk_topic(prefix: str, group: str, sha256: str, index: int) -> str:
    return f"{prefix}/group/{group}/model/chunk/{sha256[:16]}/{index}"


def status_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/model/status"


def install_topic(prefix: str, device_id: str) -> str:
    """Where an offer held for approval (``edge run --updates approve``) is approved."""
    return f"{prefix}/{device_id}/model/install"


def device_from_topic(prefix: str, topic: str, suffix: str) -> str | None:
    """The device id in ``<prefix>/<id>/<suffix>``, or None when the topic does not have that shape."""
    head, tail = f"{prefix}/", f"/{suffix}"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    device = topic[len(head) : len(topic) - len(tail)]
    return device if device and "/" not in device and device != "group" else None


def parse_chunk_topic(topic: str) -> tuple[str, int] | None:
    """(sha16, index) of a chunk topic, or None."""
    parts = topic.rsplit("/", 3)
    if len(parts) != 4 or parts[1] != "chunk" or not parts[3].isdigit():
        return None
    return parts[2], int(parts[3])


def _load(payload: bytes, what: str) -> dict[str, Any]:
    try:
        data = loads_strict(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _int(data: dict[str, Any], key: str, what: str, low: int = 0) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise PayloadError(f"{what}.{key} must be an integer >= {low}, got {value!r}")
    return value


def _sha(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not SHA256_HEX.match(value):
        raise PayloadError(f"{what}.{key} must be a lowercase sha256 hex digest, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Offer:
    """What a publisher offers: a package by size, sha256 and per-chunk sha256, with its signature."""

    name: str
    version: int
    size: int
    sha256: str
    chunk_size: int
    chunk_sha256: tuple[str, ...]
    signature: str = ""
    key_id: str = ""
    published_at: float = 0.0
    schema: int = SCHEMA
    shadow: dict[str, Any] | None = None  # the shadow stage asked for (``edge.shadow.ShadowPolicy.to_json``)

    @property
    def chunks(self) -> int:
        return len(self.chunk_sha256)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunk_sha256"] = list(self.chunk_sha256)
        data["chunks"] = self.chunks
        if self.shadow is None:
            del data["shadow"]  # devices from before the shadow stage read the same offers
        return data

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_bytes(cls, payload: bytes, max_size: int) -> Offer:
        """Parse and check an offer; ``max_size`` is the largest package this device accepts."""
        data = _load(payload, "offer")
        if data.get("schema") != SCHEMA:
            raise PayloadError(f"offer schema is {data.get('schema')!r}; this device reads schema {SCHEMA}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise PayloadError(f"offer.name must be a non-empty string, got {name!r}")
        size = _int(data, "size", "offer", 1)
        if size > max_size:
            raise PayloadError(
                f"offer.size is {size} bytes, over this device's limit of {max_size}; "
                "raise --max-model-size or publish a smaller model"
            )
        chunk_size = _int(data, "chunk_size", "offer", MIN_CHUNK_SIZE)
        if chunk_size > MAX_CHUNK_SIZE:
            raise PayloadError(f"offer.chunk_size is {chunk_size}; at most {MAX_CHUNK_SIZE} is accepted")
        hashes = data.get("chunk_sha256")
        if not isinstance(hashes, list) or not all(
            isinstance(h, str) and SHA256_HEX.match(h) for h in hashes
        ):
            raise PayloadError("offer.chunk_sha256 must be a list of sha256 hex digests")
        if len(hashes) != math.ceil(size / chunk_size) or data.get("chunks", len(hashes)) != len(hashes):
            raise PayloadError(
                f"offer lists {len(hashes)} chunks; {size} bytes in {chunk_size}-byte chunks "
                f"make {math.ceil(size / chunk_size)}"
            )
        published_at = data.get("published_at", 0.0)
        if not isinstance(published_at, int | float) or isinstance(published_at, bool):
            raise PayloadError(f"offer.published_at must be a number (Unix seconds), got {published_at!r}")
        return cls(
            name=name,
            version=_int(data, "version", "offer", 1),
            size=size,
            sha256=_sha(data, "sha256", "offer"),
            chunk_size=chunk_size,
            chunk_sha256=tuple(hashes),
            signature=str(data.get("signature", "")),
            key_id=str(data.get("key_id", "")),
            published_at=float(published_at),
            shadow=_shadow(data.get("shadow"), "offer"),
        )


def _shadow(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError(f"{what}.shadow must be an object, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """A device asks for some chunks of the package ``sha256``; with ``group``, the offer came to that group
    and the chunks may be sent once on the group's chunk topic for every member."""

    sha256: str
    chunks: tuple[int, ...]
    group: str = ""

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"sha256": self.sha256, "chunks": list(self.chunks)}
        if self.group:
            data["group"] = self.group
        return dumps(data)

    @classmethod
    def from_bytes(cls, payload: bytes) -> ChunkRequest:
        data = _load(payload, "chunk request")
        chunks = data.get("chunks")
        if (
            not isinstance(chunks, list)
            or len(chunks) > MAX_REQUEST_CHUNKS
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chunks)
        ):
            raise PayloadError(f"chunk request.chunks must be a list of at most {MAX_REQUEST_CHUNKS} indexes")
        group = data.get("group", "")
        if not isinstance(group, str) or (group and not is_topic_part(group)):
            raise PayloadError(f"chunk request.group must be a group name, got {group!r}")
        return cls(_sha(data, "sha256", "chunk request"), tuple(chunks), group)


@dataclass(frozen=True, slots=True)
class Status:
    """A device's update state, retained on ``<prefix>/<id>/model/status``."""

    device: str
    state: str
    name: str = ""
    version: int = 0
    progress: float = 0.0
    reason: str = ""
    sha256: str = ""
    active: dict[str, Any] | None = None
    healthy: bool | None = None
    groups: tuple[str, ...] = ()
    ts: float = field(default_factory=time.time)
    schema: int = SCHEMA
    shadow: dict[str, Any] | None = None  # the shadow stage's policy, progress and figures (``edge.shadow``)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["groups"] = list(self.groups)
        if self.shadow is None:
            del data["shadow"]
        return data

    def to_bytes(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def from_bytes(cls, payload: bytes) -> Status:
        return cls.from_json(_load(payload, "status"))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        """A status from its decoded JSON object (``to_json()``'s shape); ``PayloadError`` when invalid."""
        state = data.get("state")
        if state not in STATES:
            raise PayloadError(f"status.state is {state!r}; expected one of {', '.join(STATES)}")
        active = data.get("active")
        if isinstance(active, dict):
            name, version = active.get("name", ""), active.get("version", 0)
            if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
                raise PayloadError(
                    f"status.active must hold a string name and an integer version, got {active!r:.120}"
                )
        healthy = data.get("healthy")
        try:
            version = int(data.get("version") or 0)
            progress = float(data.get("progress") or 0.0)
            groups = tuple(str(g) for g in data.get("groups") or ())
            ts = float(data.get("ts") or 0.0)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"status has a malformed version, progress, groups or ts: {exc}") from exc
        return cls(
            device=str(data.get("device", "")),
            state=str(state),
            name=str(data.get("name", "")),
            version=version,
            progress=progress,
            reason=str(data.get("reason", "")),
            sha256=str(data.get("sha256", "")),
            active=active if isinstance(active, dict) else None,
            healthy=healthy if isinstance(healthy, bool) else None,
            groups=groups,
            ts=ts,
            shadow=_shadow(data.get("shadow"), "status"),
        )


def shadow_brief(shadow: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a fleet view shows of a shadow stage (the figures, not the counts it resumes from)."""
    if not shadow:
        return None
    keys = ("samples", "target", "agreement", "latency_ratio", "budget_used", "failures", "passed", "reason",
            "recall", "converter_agreement")  # (a brief again gives the same brief)
    brief = {key: shadow.get(key) for key in keys if key in shadow}
    converter = shadow.get("converter")
    if isinstance(converter, dict):
        brief["converter_agreement"] = converter.get("top1_agreement")
    return brief


def shadow_summary(shadow: dict[str, Any] | None) -> str:
    """A shadow stage in one line ("" without one): the field's agreement beside the converter's."""
    brief = shadow_brief(shadow)
    if not brief:
        return ""
    converter = brief.get("converter_agreement")
    beside = f" (converter {converter})" if converter is not None else ""
    agreement, samples = brief.get("agreement"), brief.get("samples")
    return (f"shadow stage: agreement {agreement} on {samples} live inputs{beside}, "
            f"latency {brief.get('latency_ratio')}x")
