"""The cloud side of model updates: sign a package, offer it (retained), serve its chunks, follow the rollout.

A rollout offers the package to its targets in waves: with ``canary=N`` the first N devices get it alone
and the rest only once every canary reports ``active`` and healthy; after ``abort_on`` failures the offers
not yet taken are withdrawn (an empty retained payload) and the rollout stops.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cloud_sync.connection import Message
from cloud_sync.errors import PayloadError, UpdateError
from cloud_sync.update_agent import Transport
from cloud_sync.update_protocol import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkRequest,
    Offer,
    Status,
    check_topic_part,
    chunk_topic,
    device_from_topic,
    group_chunk_topic,
    group_offer_topic,
    offer_topic,
)
from edge.package import read_package_bytes, sha256_hex
from edge.signing import load_private_key, sign_package

log = logging.getLogger(__name__)

SUCCESS, FAILED, PENDING = "success", "failed", "pending"
# A chunk asked for again this soon after it was sent is still on its way: not sent again. Shorter than the
# device's first retry (3 s), so a chunk really lost (broker restart) is sent on the next ask.
COALESCE_S = 2.5


def make_offer(package_bytes: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Offer:
    """The offer describing a signed package."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise UpdateError(
            f"chunk size {chunk_size} is out of range; use {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes"
        )
    package = read_package_bytes(package_bytes)
    key = ""
    if package.signature is not None:
        try:
            key = str(json.loads(package.signature).get("key_id", ""))
        except (ValueError, AttributeError):
            key = ""
    hashes = tuple(
        sha256_hex(package_bytes[i : i + chunk_size])
        for i in range(0, len(package_bytes), chunk_size)
    )
    return Offer(
        name=package.manifest.name,
        version=package.manifest.version,
        size=len(package_bytes),
        sha256=sha256_hex(package_bytes),
        chunk_size=chunk_size,
        chunk_sha256=hashes,
        signature=base64.b64encode(package.signature).decode("ascii") if package.signature else "",
        key_id=key,
        published_at=time.time(),
    )


def signed_package(package_bytes: bytes, key_path: str | None) -> bytes:
    """The package signed with the key at ``key_path`` (unchanged when None)."""
    if key_path is None:
        return package_bytes
    return sign_package(package_bytes, load_private_key(key_path))


@dataclass
class DeviceProgress:
    """What the publisher knows of one target device."""

    device: str
    offered: bool = False
    status: Status | None = None
    result: str = PENDING
    detail: str = ""
    chunks_served: int = 0


@dataclass
class Rollout:
    """The outcome so far of offering one package."""

    devices: dict[str, DeviceProgress] = field(default_factory=dict)
    aborted: str = ""

    def failures(self) -> int:
        return sum(1 for d in self.devices.values() if d.result == FAILED)

    def ok(self) -> bool:
        return not self.aborted and all(d.result == SUCCESS for d in self.devices.values())


class Publisher:
    """Serves one package: offers, chunk requests, device statuses. Chunks are sent from a worker thread."""

    def __init__(
        self,
        transport: Transport,
        package_bytes: bytes,
        prefix: str = "edge",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        require_healthy: bool = True,
        rate: float = 0.0,
        offer: Offer | None = None,
        shadow: dict[str, Any] | None = None,
    ) -> None:
        """``rate`` limits the chunk bytes per second sent (0: no limit); ``offer`` replaces the one made
        from the package (tests use it to act as a hostile publisher); ``shadow``: the shadow stage asked of
        every device (``edge.shadow.ShadowPolicy.to_json()``)."""
        self.transport = transport
        self.data = package_bytes
        self.prefix = prefix
        self.offer = offer or make_offer(package_bytes, chunk_size)
        if shadow is not None:
            self.offer = replace(self.offer, shadow=shadow)
        self._offer_payload = self.offer.to_bytes()  # one encoding for every device, group and reconnect
        self.rate = rate
        self.served: dict[str, dict[int, int]] = {}
        self.require_healthy = require_healthy
        self.rollout = Rollout()
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.malformed = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sends: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._groups: dict[str, set[str]] = {}
        self._queued: set[tuple[str, int]] = set()
        self._sent: dict[tuple[str, int], float] = {}
        self._offer_topics: set[str] = set()
        self._sender = threading.Thread(target=self._send_loop, name="chunk-sender", daemon=True)
        self._started = False

    def start(self) -> Publisher:
        if not self._started:
            self._started = True
            self._sender.start()
            self.transport.subscribe(f"{self.prefix}/+/model/request", self._on_request)
            self.transport.subscribe(f"{self.prefix}/+/model/status", self._on_status)
            add_listener = getattr(self.transport, "add_connect_listener", None)
            if add_listener is not None:
                add_listener(self._republish_offers)
        return self

    def _republish_offers(self) -> None:
        # A broker killed with SIGKILL may lose retained messages: offer again after every reconnect.
        for topic in sorted(self._offer_topics):
            self.transport.publish(topic, self._offer_payload, qos=1, retain=True)

    def close(self, withdraw: bool = False) -> None:
        if withdraw:
            for topic in sorted(self._offer_topics):
                self.transport.publish(topic, b"", qos=1, retain=True)
        self._sends.put(None)
        self._sender.join(timeout=10)

    # -- offers ----------------------------------------------------------------------------------------

    def offer_devices(self, devices: Iterable[str]) -> None:
        for device in devices:
            check_topic_part(device, "device id")
            with self._lock:
                self.rollout.devices.setdefault(device, DeviceProgress(device)).offered = True
            self._publish_offer(offer_topic(self.prefix, device))

    def offer_group(self, group: str) -> None:
        check_topic_part(group, "group")
        self._publish_offer(group_offer_topic(self.prefix, group))

    def _publish_offer(self, topic: str) -> None:
        self._offer_topics.add(topic)
        self.transport.publish(topic, self._offer_payload, qos=1, retain=True)

    def withdraw(self, devices: Iterable[str]) -> None:
        for device in devices:
            topic = offer_topic(self.prefix, device)
            self.transport.publish(topic, b"", qos=1, retain=True)
            self._offer_topics.discard(topic)

    def group_members(self, group: str) -> set[str]:
        """Devices that said (in their retained status) they belong to ``group``."""
        with self._lock:
            return set(self._groups.get(group, set()))

    # -- incoming --------------------------------------------------------------------------------------

    def _on_request(self, message: Message) -> None:
        topic, payload = message.topic, message.payload
        device = device_from_topic(self.prefix, topic, "model/request")
        try:
            request = ChunkRequest.from_bytes(bytes(payload))
        except PayloadError as exc:
            self.malformed += 1
            log.warning("malformed chunk request on %s: %s", topic, exc)
            return
        if device is None or request.sha256 != self.offer.sha256:
            return
        # A group's chunks go once to the group topic for every member; a chunk already waiting to be sent
        # (or sent moments ago) is not queued again when devices ask again.
        target = f"group/{request.group}" if request.group else device
        now = time.monotonic()
        with self._lock:
            wanted = [
                i
                for i in request.chunks
                if i < self.offer.chunks
                and (target, i) not in self._queued
                and now - self._sent.get((target, i), -1e9) > COALESCE_S
            ]
            self._queued.update((target, i) for i in wanted)
        for index in wanted:
            self._sends.put((target, index))

    def _on_status(self, message: Message) -> None:
        topic, payload = message.topic, message.payload
        device = device_from_topic(self.prefix, topic, "model/status")
        if device is None or not payload:
            return
        try:
            status = Status.from_bytes(bytes(payload))
        except PayloadError as exc:
            self.malformed += 1
            log.warning("malformed status on %s: %s", topic, exc)
            return
        with self._changed:
            for group in status.groups:
                self._groups.setdefault(group, set()).add(device)
            progress = self.rollout.devices.get(device)
            if progress is None or status.sha256 != self.offer.sha256:
                if progress is not None and status.state == "idle" and not status.sha256:
                    progress.status = status
                self._changed.notify_all()
                return
            progress.status = status
            progress.result, progress.detail = self._judge(status)
            self._changed.notify_all()

    def _judge(self, status: Status) -> tuple[str, str]:
        if status.state in ("rejected", "rolled_back"):
            return FAILED, f"{status.state}: {status.reason}"
        if status.state == "active" and (status.healthy or not self.require_healthy):
            return SUCCESS, f"active v{status.version}" + (" (healthy)" if status.healthy else "")
        if status.state == "active":
            return PENDING, f"active v{status.version}, health check running"
        if status.state == "held":
            return PENDING, (f"v{status.version} held for approval (Install in Home Assistant, or publish to "
                             "model/install)")
        if status.state == "shadowing" and status.shadow:
            figures = status.shadow
            return PENDING, (f"shadowing {status.progress:.0%}: {figures.get('samples')} samples, agreement "
                             f"{figures.get('agreement')}, latency {figures.get('latency_ratio')}x")
        return PENDING, f"{status.state} {status.progress:.0%}"

    def chunk(self, index: int) -> bytes:
        """The bytes of chunk ``index`` as served."""
        start = index * self.offer.chunk_size
        return self.data[start : start + self.offer.chunk_size]

    def _send_loop(self) -> None:
        while True:
            item = self._sends.get()
            if item is None:
                return
            device, index = item
            with self._lock:
                self._queued.discard(item)
            chunk = self.chunk(index)
            if device.startswith("group/"):
                topic = group_chunk_topic(
                    self.prefix, device.removeprefix("group/"), self.offer.sha256, index
                )
            else:
                topic = chunk_topic(self.prefix, device, self.offer.sha256, index)
            with self._lock:
                now = time.monotonic()
                if len(self._sent) > 100_000:
                    self._sent = {k: t for k, t in self._sent.items() if now - t <= COALESCE_S}
                self._sent[item] = now
            try:
                self.transport.publish(topic, chunk, qos=1)
            except Exception as exc:  # the broker went away: the device asks again after its timeout
                log.info("could not send chunk %d to %s: %s", index, device, exc)
                continue
            if self.rate > 0:
                time.sleep(len(chunk) / self.rate)
            with self._lock:
                self.bytes_sent += len(chunk)
                self.chunks_sent += 1
                per_device = self.served.setdefault(device, {})
                per_device[index] = per_device.get(index, 0) + 1
                progress = self.rollout.devices.get(device)
                if progress is not None:
                    progress.chunks_served += 1

    # -- following a rollout ------------------------------------------------------------------------------

    def wait(
        self,
        devices: Iterable[str],
        deadline: float,
        abort_on: int | None = None,
        on_change: Callable[[DeviceProgress], None] | None = None,
    ) -> bool:
        """Block until every device in ``devices`` finished, ``deadline`` (monotonic) passed or the failures
        reach ``abort_on``. Returns True when all of them succeeded."""
        wanted = list(devices)
        seen: dict[str, str] = {}
        with self._changed:
            while True:
                for device in wanted:
                    progress = self.rollout.devices.setdefault(device, DeviceProgress(device))
                    line = progress.detail
                    if on_change is not None and line and seen.get(device) != line:
                        seen[device] = line
                        on_change(progress)
                results = [self.rollout.devices[d].result for d in wanted]
                if abort_on is not None and self.rollout.failures() >= abort_on:
                    return False
                if PENDING not in results:
                    return all(r == SUCCESS for r in results)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(timeout=min(remaining, 0.5))

    def run_rollout(
        self,
        devices: list[str],
        canary: int = 0,
        abort_on: int | None = None,
        timeout: float = 600.0,
        on_change: Callable[[DeviceProgress], None] | None = None,
    ) -> Rollout:
        """Offer to ``devices`` (canary first), wait for each wave, stop on failures. Returns the rollout."""
        deadline = time.monotonic() + timeout
        waves = [devices[:canary], devices[canary:]] if 0 < canary < len(devices) else [devices]
        for number, wave in enumerate(waves):
            self.offer_devices(wave)
            ok = self.wait(wave, deadline, abort_on, on_change)
            limit_hit = abort_on is not None and self.rollout.failures() >= abort_on
            canary_failed = canary and number == 0 and len(waves) > 1 and not ok
            if limit_hit or canary_failed:
                rest = [d for w in waves[number + 1 :] for d in w]
                unfinished = [d for d in wave if self.rollout.devices[d].result == PENDING]
                self.withdraw(unfinished + rest)
                for device in unfinished:
                    self.rollout.devices[device].result = FAILED
                    self.rollout.devices[device].detail = "withdrawn: rollout aborted"
                why = "canary failed" if canary_failed else f"{self.rollout.failures()} failures"
                self.rollout.aborted = f"{why}; not offered to {len(rest)} device(s)"
                for device in rest:
                    self.rollout.devices.setdefault(device, DeviceProgress(device, detail="not offered"))
                return self.rollout
        return self._time_out_pending(devices)

    def _time_out_pending(self, devices: Iterable[str]) -> Rollout:
        """Mark the devices that never finished as failed (timed out); the rollout."""
        for device in devices:
            progress = self.rollout.devices[device]
            if progress.result == PENDING:
                progress.result = FAILED
                progress.detail = f"timed out ({progress.detail or 'no answer'})"
        return self.rollout

    def run_group_rollout(
        self,
        group: str,
        canary: int = 0,
        abort_on: int | None = None,
        timeout: float = 600.0,
        settle: float = 1.0,
        on_change: Callable[[DeviceProgress], None] | None = None,
    ) -> Rollout:
        """Offer to a group: canaries (known members, by device id) alone first, then the group topic.

        Members are the devices whose retained status lists ``group``; those known after ``settle`` seconds
        are followed (others still take the retained group offer)."""
        deadline = time.monotonic() + timeout
        time.sleep(settle)
        members = sorted(self.group_members(group))
        if canary:
            if len(members) <= canary:
                raise UpdateError(
                    f"group {group!r} has {len(members)} known device(s); --canary {canary} needs more"
                )
            first = members[:canary]
            self.offer_devices(first)
            ok = self.wait(first, deadline, abort_on, on_change)
            if not ok:
                unfinished = [d for d in first if self.rollout.devices[d].result == PENDING]
                self.withdraw(unfinished)
                self.rollout.aborted = (
                    f"canary failed; not offered to the {len(members) - canary} other device(s)"
                )
                for device in members[canary:]:
                    self.rollout.devices.setdefault(device, DeviceProgress(device, detail="not offered"))
                return self.rollout
        with self._lock:
            for device in members:
                self.rollout.devices.setdefault(device, DeviceProgress(device)).offered = True
        self.offer_group(group)
        ok = self.wait(members, deadline, abort_on, on_change)
        if not ok and abort_on is not None and self.rollout.failures() >= abort_on:
            self.transport.publish(group_offer_topic(self.prefix, group), b"", qos=1, retain=True)
            self._offer_topics.discard(group_offer_topic(self.prefix, group))
            self.rollout.aborted = f"{self.rollout.failures()} failures; group offer withdrawn"
        return self._time_out_pending(members)
