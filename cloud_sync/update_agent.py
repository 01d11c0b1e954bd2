"""The device's update agent: fetch offered packages in chunks, verify, validate, activate, roll back.

MQTT callbacks only enqueue; one worker thread does everything else, so the store and the activator are
never used from two threads at once. Transfers resume from the chunks staged on disk (after a broker
restart, a lost request is simply asked again; after a device restart, only missing chunks are fetched).

The device side that loads and swaps models is an ``Activator`` (``edge.updates.PipelineActivator`` in
``edge run``); the agent itself never runs a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

from cloud_sync.connection import Message
from cloud_sync.errors import PayloadError, UpdateError
from cloud_sync.update_protocol import (
    MIN_CHUNK_SIZE,
    ChunkRequest,
    Offer,
    Status,
    check_topic_part,
    group_offer_topic,
    install_topic,
    offer_topic,
    parse_chunk_topic,
    request_topic,
    status_topic,
)
from edge.errors import EdgeError
from edge.manifest import Manifest
from edge.package import read_package_bytes, sha256_hex
from edge.signing import TrustStore
from edge.store import ModelStore, Staging, StoreEntry

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 256 * 1024 * 1024
# After each (re)connect the broker hands over the retained offers at once; an offer the device is still
# working on (a transfer, a held offer, a shadow stage) that has not come back within this many seconds was
# withdrawn while the device was away, which it cannot otherwise learn (no empty message reached it).
OFFER_RECHECK_S = 10.0
# states that only a live offer keeps going
_OFFER_STATES = ("downloading", "verifying", "validating", "held", "shadowing")


class Transport(Protocol):
    """What the agent needs from an MQTT connection (``cloud_sync.connection.MqttConnection`` fits)."""

    def subscribe(self, topic_filter: str, handler: Callable[[Message], None], qos: int = 1) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any: ...


class Activator(Protocol):
    """The device side of an update: load and check a candidate, swap it in, restore an earlier one."""

    def validate(self, path: Path, manifest: Manifest) -> Any:
        """Load the package at ``path`` and check it; returns the loaded candidate. Raises EdgeError."""

    def activate(
        self,
        candidate: Any,
        entry: StoreEntry,
        on_unhealthy: Callable[[str], None],
        on_healthy: Callable[[], None],
    ) -> None:
        """Serve ``candidate`` from now on; call back once its health window ends."""

    def restore(self, entry: StoreEntry | None) -> None:
        """Serve the earlier version ``entry`` again (None: the model served before the update)."""


class ShadowActivator(Activator, Protocol):
    """An activator that can also run a candidate's shadow stage (``edge.activation.PipelineActivator``)."""

    def shadow(
        self,
        candidate: Any,
        policy: Any,
        on_done: Callable[[dict[str, Any]], None],
        on_progress: Callable[[dict[str, Any]], None],
        resume: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start the stage beside the active model; returns the figures so far."""

    def stop_shadow(self) -> None:
        """End the stage (its verdict came, or the agent stops)."""


@dataclass
class _Shadowing:
    """A candidate in its shadow stage: installed, validated, not active."""

    offer: Offer
    entry: StoreEntry
    candidate: Any
    policy: Any
    converter: dict[str, Any]  # the package report's agreement and accuracy, shown beside the field's


@dataclass
class _Transfer:
    offer: Offer
    staging: Staging
    source: str
    outstanding: dict[int, float]
    last_progress: float = 0.0
    last_activity: float = 0.0
    retries: int = 0
    group: str = ""  # the offer came to this group: chunks may arrive on the group's chunk topic


class UpdateAgent:
    """Follows the offers for this device and its groups; one transfer at a time, highest version wins."""

    def __init__(
        self,
        transport: Transport,
        store: ModelStore,
        trust: TrustStore,
        activator: Activator,
        device_id: str,
        prefix: str = "edge",
        groups: tuple[str, ...] = (),
        max_size: int = DEFAULT_MAX_SIZE,
        window: int = 16,
        retry_seconds: float = 3.0,
        shadow: Any = None,
        approve: bool = False,
        recheck_seconds: float = OFFER_RECHECK_S,
    ) -> None:
        self.transport = transport
        self.store = store
        self.trust = trust
        self.activator = activator
        self.device_id = check_topic_part(device_id, "device id")
        self.prefix = prefix
        self.groups = tuple(check_topic_part(g, "group") for g in groups)
        self.max_size = max_size
        self.window = window
        self.retry_seconds = retry_seconds
        self.shadow_policy = shadow  # edge.shadow.ShadowPolicy for offers that ask for none; None: no stage
        self._shadowing: _Shadowing | None = None
        self.approve = approve  # hold each offer (state "held") until it is approved on model/install
        self._held: tuple[Offer, str] | None = None
        self._approved: set[str] = set()
        self.status = Status(device=self.device_id, state="idle", groups=self.groups)
        self.bytes_received = 0
        self.chunks_received = 0
        self.malformed = 0
        self._offers: dict[str, Offer] = {}
        self._transfer: _Transfer | None = None
        self._health_sha = ""
        self._events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._recheck_at: float | None = None  # when the offers seen since the last connect are judged
        self._recheck_window = 0  # which connect's window a queued "recheck" belongs to
        self._recheck_marker: Any = None  # the Delivery of the status sent after the connect's subscriptions
        self._window_open = False  # a connect's offers are not all in yet
        self._promotion: tuple[str, dict[str, Any]] | None = None  # a passed shadow stage waiting for them
        self._offers_seen: set[str] = set()  # sha256 of the offers delivered since the last connect
        self.recheck_seconds = recheck_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="update-agent", daemon=True)

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> UpdateAgent:
        self._publish_initial_status()
        self._resume_shadow()
        self._resume_health()
        # The listener first: on a connection that is up already it queues "reconnect" at once, ahead of the
        # retained offers that the subscriptions below bring (the recheck window must open before they come).
        add_listener = getattr(self.transport, "add_connect_listener", None)
        if add_listener is not None:
            add_listener(lambda: self._events.put(("reconnect", None, None)))
        self.transport.subscribe(f"{self.prefix}/{self.device_id}/model/chunk/#", self._on_chunk)
        for group in self.groups:
            self.transport.subscribe(f"{self.prefix}/group/{group}/model/chunk/#", self._on_chunk)
        for topic in self.offer_topics():
            self.transport.subscribe(topic, self._on_offer)
        if self.approve:
            self.transport.subscribe(install_topic(self.prefix, self.device_id),
                                     lambda m: self._events.put(("install", None, bytes(m.payload))))
        self._thread.start()
        return self

    def close(self, settle: float = 0.0) -> None:
        """Stop the agent. With ``settle``, first wait up to that many seconds for an activation in
        progress to report its health, so its final status ("active", healthy) is published."""
        deadline = time.monotonic() + settle
        while self._activation_pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._events.put(("stop", None, None))
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._shadowing is not None:  # the stage resumes at the next start from its saved figures
            self._stop_shadow()

    def _activation_pending(self) -> bool:
        state = self.status.state
        return state in ("verifying", "validating") or (state == "active" and self.status.healthy is None)

    def offer_topics(self) -> list[str]:
        return [offer_topic(self.prefix, self.device_id)] + [
            group_offer_topic(self.prefix, g) for g in self.groups
        ]

    def _on_offer(self, message: Message) -> None:
        self._events.put(("offer", message.topic, bytes(message.payload)))

    def _on_chunk(self, message: Message) -> None:
        self._events.put(("chunk", message.topic, bytes(message.payload)))

    def _run(self) -> None:
        # Events queued before close() (e.g. the first model's "healthy") are still handled: stop at "stop".
        while True:
            try:
                kind, a, b = self._events.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                kind, a, b = "tick", None, None
            if kind == "stop":
                return
            try:
                if kind == "offer":
                    self._handle_offer(a, b)
                elif kind == "chunk":
                    self._handle_chunk(a, b)
                elif kind == "unhealthy":
                    self._handle_unhealthy(a, b)
                elif kind == "healthy":
                    self._handle_healthy(a)
                elif kind == "reconnect":
                    self._handle_reconnect()
                elif kind == "install":
                    self._handle_install(b)
                elif kind == "shadow_progress":
                    self._handle_shadow_progress(a, b)
                elif kind == "shadow_done":
                    self._handle_shadow_done(a, b)
                elif kind == "recheck" and a == self._recheck_window:
                    self._recheck_offers()
                self._retry_if_stalled()
                self._recheck_due()
                self._pick_next()
            except Exception:  # the agent must outlive any one bad message or update
                log.exception("update agent: unexpected error handling %s", kind)

    # -- offers --------------------------------------------------------------------------------------

    def _handle_offer(self, topic: str, payload: bytes) -> None:
        if not payload:
            withdrawn = self._offers.pop(topic, None)
            if self._transfer is not None and self._transfer.source == topic:
                withdrawn = self._transfer.offer
            if withdrawn is not None:
                self._withdraw(withdrawn)
            return
        try:
            offer = Offer.from_bytes(payload, self.max_size)
        except PayloadError as exc:
            self.malformed += 1
            log.warning("malformed offer on %s: %s", topic, exc)
            described = describe_offer(payload)
            if described.sha256 and self._outcome(described.sha256) is not None:
                return  # answered already (a re-delivered retained offer)
            # Refused only for this device's --max-model-size: remembered with that limit, so that the same
            # package is considered again once the limit is raised.
            limit = self.max_size if _only_too_big(payload) else None
            if described.sha256:
                self.store.record_outcome(
                    described.sha256, "rejected", described.name, described.version, str(exc), max_size=limit
                )
            self._publish(
                replace(
                    self._status("rejected", reason=f"refused offer: {exc}"),
                    name=described.name,
                    version=described.version,
                    sha256=described.sha256,
                )
            )
            return
        self._offers[topic] = offer
        self._offers_seen.add(offer.sha256)
        self._consider(offer, topic)

    def _outcome(self, sha256: str) -> dict[str, Any] | None:
        """How the offer of ``sha256`` ended here, ignoring a size refusal made under another size limit."""
        done = self.store.outcome(sha256)
        if done is not None and done.get("max_size") not in (None, self.max_size):
            return None
        return done

    def _pick_next(self) -> None:
        """With no transfer running, take the highest retained offer not handled yet (one set aside while a
        higher version was being fetched, which was then rejected)."""
        if self._transfer is not None or self._shadowing is not None:
            return  # one update at a time: a newer offer waits for the shadow stage's verdict
        for topic, offer in sorted(self._offers.items(), key=lambda item: -item[1].version):
            if self._outcome(offer.sha256) is None:
                self._consider(offer, topic)
                return

    def _consider(self, offer: Offer, topic: str) -> None:
        current = self._transfer
        if current is not None and current.offer.sha256 == offer.sha256:
            self._request_more(current, resend=True)  # a re-delivered offer (reconnect): ask again
            return
        shadowing = self._shadowing
        if shadowing is not None:
            if offer.version <= shadowing.offer.version:
                return  # considered once the shadow stage has decided (``_pick_next``)
            log.info("%s v%d supersedes v%d in its shadow stage", offer.name, offer.version,
                     shadowing.offer.version)
            self._drop_shadow(shadowing)
            self.store.record_outcome(shadowing.offer.sha256, "rejected", shadowing.offer.name,
                                      shadowing.offer.version, f"superseded by v{offer.version}",
                                      shadowing.offer.published_at)
        done = self._outcome(offer.sha256)
        if done is not None and done.get("state") == "failed" and done.get("offer_at") != offer.published_at:
            done = None  # it failed on a local fault (disk full): a new push tries again
        if done is not None:
            # Already handled (active, rejected or rolled back): the same retained offer is not retried,
            # and a new push of the same package is answered from what happened before.
            if float(done.get("offer_at") or 0.0) != offer.published_at:
                self._report_again(offer, done)
            return
        active = self.store.active()
        if _is_active(active, offer):
            # Activated, then killed before the outcome was written: report it instead of a downgrade.
            self._report_again(offer, {"state": "active"})
            return
        if current is not None and current.offer.version >= offer.version:
            return
        try:
            self._precheck(offer)
        except EdgeError as exc:
            self._reject(offer, str(exc))
            return
        if self.approve and offer.sha256 not in self._approved:
            if self._held is None or self._held[0].sha256 != offer.sha256:
                self._held = (offer, topic)
                where = install_topic(self.prefix, self.device_id)
                log.info("%s v%d held for approval: publish to %s", offer.name, offer.version, where)
                self._publish(replace(self._status("held", offer), reason=f"waiting for approval on {where}"))
            return
        if current is not None:
            current.staging.discard()
        staging = self.store.staging(offer.sha256, list(offer.chunk_sha256))
        group = next((g for g in self.groups if group_offer_topic(self.prefix, g) == topic), "")
        self._transfer = _Transfer(offer, staging, topic, {}, last_activity=time.monotonic(), group=group)
        log.info(
            "downloading %s v%d: %d chunks, %d already staged",
            offer.name,
            offer.version,
            offer.chunks,
            staging.resumed,
        )
        self._publish(self._status("downloading", offer, progress=staging.done() / offer.chunks))
        if staging.complete():
            self._finish(self._transfer)
        else:
            self._request_more(self._transfer)

    def _report_again(self, offer: Offer, done: dict[str, Any]) -> None:
        active = self.store.active()
        if _is_active(active, offer):
            self.store.record_outcome(
                offer.sha256, "active", offer.name, offer.version, offer_at=offer.published_at
            )
            self._publish(self._status("active", offer, progress=1.0), healthy=True)
            return
        try:
            self._precheck(offer)
            reason = (
                f"this package was {done.get('state')} here before ({done.get('reason') or 'no reason kept'})"
            )
        except EdgeError as exc:
            reason = str(exc)
        self._reject(offer, reason)

    def _precheck(self, offer: Offer) -> None:
        """Refuse early what the full check would refuse anyway, before fetching a byte."""
        if offer.shadow is not None:
            self._policy_for(offer)  # a bad shadow policy is refused before the download
        active = self.store.active()
        floor = max(
            self.store.floor(offer.name), active.version if active and active.name == offer.name else 0
        )
        if offer.version <= floor:
            raise UpdateError(
                f"version {offer.version} of {offer.name!r} is not higher than {floor} "
                "(active or activated before); publish a higher version"
            )
        if not offer.signature:
            raise UpdateError("offer is unsigned; push it with 'edge push-model --key'")
        if offer.key_id and offer.key_id not in self.trust.keys:
            raise UpdateError(
                f"offer is signed by unknown key {offer.key_id!r}; add its public key with --trust"
            )

    # -- chunks --------------------------------------------------------------------------------------------

    def _request_more(self, transfer: _Transfer, resend: bool = False) -> None:
        if resend:
            transfer.outstanding.clear()
        now = time.monotonic()
        wanted = [i for i in transfer.staging.missing() if i not in transfer.outstanding]
        wanted = wanted[: max(0, self.window - len(transfer.outstanding))]
        if not wanted:
            return
        for index in wanted:
            transfer.outstanding[index] = now
        request = ChunkRequest(transfer.offer.sha256, tuple(wanted), transfer.group)
        self.transport.publish(request_topic(self.prefix, self.device_id), request.to_bytes(), qos=1)

    def _handle_chunk(self, topic: str, payload: bytes) -> None:
        parsed = parse_chunk_topic(topic)
        transfer = self._transfer
        if parsed is None or transfer is None or parsed[0] != transfer.offer.sha256[:16]:
            return  # a late chunk of an earlier transfer
        index = parsed[1]
        offer = transfer.offer
        transfer.outstanding.pop(index, None)
        transfer.last_activity = time.monotonic()
        transfer.retries = 0
        self.bytes_received += len(payload)
        self.chunks_received += 1
        if index >= offer.chunks:
            self._reject(
                offer, f"chunk index {index} is past the {offer.chunks} chunks offered; transfer refused"
            )
            return
        if len(payload) > offer.chunk_length(index):
            self._reject(
                offer,
                f"chunk {index} is {len(payload)} bytes, more than the {offer.chunk_length(index)} "
                "the offer declares (oversized transfer); refused",
            )
            return
        if not transfer.staging.write(index, payload):
            what = "truncated" if len(payload) < offer.chunk_length(index) else "corrupted"
            self._reject(
                offer, f"chunk {index} does not match its sha256 in the offer ({what}); transfer refused"
            )
            return
        if transfer.staging.complete():
            self._finish(transfer)
            return
        now = time.monotonic()
        if now - transfer.last_progress > 0.5:
            transfer.last_progress = now
            self._publish(
                self._status("downloading", offer, progress=transfer.staging.done() / offer.chunks),
                persist=False,
            )
        self._request_more(transfer)

    def _retry_if_stalled(self) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        backoff = min(self.retry_seconds * (2 ** min(transfer.retries, 3)), 30.0)
        if time.monotonic() - transfer.last_activity > backoff:
            transfer.retries += 1
            transfer.last_activity = time.monotonic()
            log.info("no chunk for %.0f s; asking again for %d chunks", backoff, len(transfer.outstanding))
            self._request_more(transfer, resend=True)

    # -- verification, validation, activation --------------------------------------------------------------

    def _finish(self, transfer: _Transfer) -> None:
        offer = transfer.offer
        self._transfer = None
        self._publish(self._status("verifying", offer, progress=1.0))
        try:
            data = transfer.staging.assemble()
            manifest, _ = self.verify(offer, data)
        except EdgeError as exc:
            self._reject(offer, str(exc))
            return
        self._publish(self._status("validating", offer, progress=1.0))
        try:
            entry = self.store.install(data, manifest)
        except OSError as exc:  # disk full, permissions: the old model keeps serving
            self._reject(offer, _write_failure(self.store.root, exc), outcome="failed")
            return
        try:
            candidate = self.activator.validate(self.store.path_of(entry), manifest)
        except EdgeError as exc:
            self.store.discard(entry)
            self._reject(offer, f"validation failed: {exc}")
            return
        try:
            policy = self._policy_for(offer)
        except EdgeError as exc:
            self.store.discard(entry)
            self._reject(offer, str(exc))
            return
        if policy is not None:
            transfer.staging.discard()
            self._start_shadow(offer, entry, candidate, policy, converter=_converter_figures(manifest))
            return
        self._activate(offer, entry, candidate, transfer.staging)

    def _activate(
        self, offer: Offer, entry: StoreEntry, candidate: Any, staging: Staging | None,
        shadow: dict[str, Any] | None = None,
    ) -> None:
        try:
            self.store.activate(entry)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.store.discard(entry)
            self._reject(offer, _write_failure(self.store.root, exc), outcome="failed")
            return
        self.store.record_outcome(
            offer.sha256, "active", offer.name, offer.version, offer_at=offer.published_at
        )
        if staging is not None:
            staging.discard()
        self._health_sha = offer.sha256
        self._publish(replace(self._status("active", offer, progress=1.0), shadow=shadow), healthy=None)
        sha = offer.sha256
        self.activator.activate(
            candidate,
            entry,
            on_unhealthy=lambda reason: self._events.put(("unhealthy", sha, reason)),
            on_healthy=lambda: self._events.put(("healthy", sha, None)),
        )

    def _withdraw(self, offer: Offer, keep_chunks: bool = False) -> None:
        """An offer withdrawn while downloading, held for approval or in its shadow stage: it goes no
        further. ``keep_chunks``: a transfer's verified chunks stay staged (the withdrawal was inferred, the
        same package may be offered again)."""
        transfer, shadowing, held = self._transfer, self._shadowing, self._held
        if transfer is not None and transfer.offer.sha256 == offer.sha256:
            log.info("%s v%d withdrawn; stopping the transfer", offer.name, offer.version)
            if not keep_chunks:
                transfer.staging.discard()
            self._transfer = None
        elif shadowing is not None and shadowing.offer.sha256 == offer.sha256:
            log.info("%s v%d withdrawn during its shadow stage; stopped", offer.name, offer.version)
            self._drop_shadow(shadowing)
        elif held is not None and held[0].sha256 == offer.sha256:
            log.info("%s v%d withdrawn while held for approval", offer.name, offer.version)
            self._held = None
        else:
            return
        self._publish(replace(self._status("idle", offer), reason="offer withdrawn"))

    # -- approval --------------------------------------------------------------------------------------

    def _handle_install(self, payload: bytes) -> None:
        """Approve the held offer (any payload; a JSON ``{"sha256": ...}`` must name it)."""
        held = self._held
        if held is None:
            log.info("an approval came with no offer held; ignored")
            return
        offer, topic = held
        try:
            wanted = json.loads(payload).get("sha256") if payload.strip().startswith(b"{") else None
        except (ValueError, AttributeError):
            wanted = None
        if wanted and wanted != offer.sha256:
            log.warning("an approval names package %s, the offer held is %s; ignored", str(wanted)[:16],
                        offer.sha256[:16])
            return
        log.info("%s v%d approved", offer.name, offer.version)
        self._approved.add(offer.sha256)
        self._held = None
        self._consider(offer, topic)

    # -- the shadow stage -------------------------------------------------------------------------------

    def _policy_for(self, offer: Offer) -> Any:
        """The shadow policy for ``offer``: its own, else this device's; None: straight to activation."""
        if offer.shadow is None and self.shadow_policy is None:
            return None
        if not getattr(self.activator, "can_shadow", False):
            log.info("%s v%d: a shadow stage needs a serving model to compare with (none yet); it activates "
                     "after validation", offer.name, offer.version)
            return None
        from edge.shadow import ShadowPolicy

        if offer.shadow is None:
            return self.shadow_policy
        try:
            asked = ShadowPolicy.from_json(offer.shadow)
        except (EdgeError, TypeError) as exc:
            raise UpdateError(f"the offer's shadow policy is invalid ({exc}); push it again with valid "
                              "--shadow, --min-agreement and --max-latency-ratio") from exc
        # the offer's policy is not signed: the device's own is a floor it cannot lower
        return asked if self.shadow_policy is None else asked.stricter(self.shadow_policy)

    def _start_shadow(self, offer: Offer, entry: StoreEntry, candidate: Any, policy: Any,
                      resume: dict[str, Any] | None = None, converter: dict[str, Any] | None = None) -> None:
        sha = offer.sha256
        self._shadowing = _Shadowing(offer, entry, candidate, policy, converter or {})
        log.info("shadowing %s v%d on live inputs: %d samples%s, agreement >= %g, latency <= %gx, budget %g",
                 offer.name, offer.version, policy.samples,
                 f" or {policy.seconds:g} s" if policy.seconds else "",
                 policy.min_agreement, policy.max_latency_ratio, policy.budget)
        figures = cast(ShadowActivator, self.activator).shadow(
            candidate,
            policy,
            on_done=lambda f: self._events.put(("shadow_done", sha, f)),
            on_progress=lambda f: self._events.put(("shadow_progress", sha, f)),
            resume=resume,
        )
        self._publish_shadow(figures)

    def _publish_shadow(self, figures: dict[str, Any]) -> None:
        shadowing = self._shadowing
        assert shadowing is not None
        shadow = {**figures, "converter": shadowing.converter, "entry": shadowing.entry.to_json(),
                  "offer_at": shadowing.offer.published_at}
        status = self._status("shadowing", shadowing.offer, progress=figures["progress"])
        self._publish(replace(status, shadow=shadow))

    def _handle_shadow_progress(self, sha: str, figures: dict[str, Any]) -> None:
        if self._shadowing is not None and self._shadowing.offer.sha256 == sha:
            self._publish_shadow(figures)

    def _handle_shadow_done(self, sha: str, figures: dict[str, Any]) -> None:
        shadowing = self._shadowing
        if shadowing is None or shadowing.offer.sha256 != sha:
            return
        if figures.get("passed") and self._window_open:
            # a stage that passed right after a (re)connect, before that connect's offers are all in (a
            # restart resumes one near its end): promoted once they show the offer was not withdrawn
            stop = getattr(self.activator, "stop_shadow", None)
            if stop is not None:
                stop()
            self._promotion = (sha, figures)
            log.info("%s v%d passed its shadow stage; promoted once the offers are in",
                     shadowing.offer.name, shadowing.offer.version)
            return
        self._stop_shadow()
        offer, entry = shadowing.offer, shadowing.entry
        shown = {k: v for k, v in figures.items() if k != "state"}
        shown["converter"] = shadowing.converter  # the converter's own figure beside the field's
        if figures.get("passed"):
            log.info("%s v%d passed its shadow stage: agreement %s over %d samples, latency %sx",
                     offer.name, offer.version, figures.get("agreement"), figures.get("samples"),
                     figures.get("latency_ratio"))
            self._activate(offer, entry, shadowing.candidate, None, shadow=shown)
            return
        with contextlib.suppress(OSError):
            self.store.discard(entry)
        self._reject(offer, f"shadow stage failed: {figures.get('reason') or 'not enough samples'}",
                     shadow=shown)

    def _drop_shadow(self, shadowing: _Shadowing) -> None:
        """End a stage that will not promote and remove its installed candidate."""
        self._stop_shadow()
        with contextlib.suppress(OSError):
            self.store.discard(shadowing.entry)

    def _stop_shadow(self) -> None:
        self._shadowing = None
        stop = getattr(self.activator, "stop_shadow", None)
        if stop is not None:
            stop()

    def _resume_health(self) -> None:
        """A device restarted inside the health window of its active model watches it again (a fresh window:
        what the killed process had counted is gone), so a bad model still rolls back."""
        status = self.status
        active = self.store.active()
        resume = getattr(self.activator, "resume_health", None)
        if status.state != "active" or status.healthy is not None or active is None or resume is None:
            return
        if active.sha256 != status.sha256:
            return
        sha = active.sha256
        self._health_sha = sha
        log.info("resuming the health window of %s v%d", active.name, active.version)
        resume(on_unhealthy=lambda reason: self._events.put(("unhealthy", sha, reason)),
               on_healthy=lambda: self._events.put(("healthy", sha, None)))

    def _resume_shadow(self) -> None:
        """A device restarted mid-shadow takes the stage up where it was (its figures were saved)."""
        saved = self.store.load_status()
        if not saved or saved.get("state") != "shadowing" or not isinstance(saved.get("shadow"), dict):
            return
        shadow = saved["shadow"]
        try:
            entry = StoreEntry.from_json(shadow["entry"])
            path = self.store.path_of(entry)
            data = path.read_bytes()
            if sha256_hex(data) != entry.sha256:
                raise UpdateError(f"{path} changed since the shadow stage began")
            package = read_package_bytes(data, source=str(path))
            self.trust.verify(package.manifest_bytes, package.signature)
            from edge.shadow import ShadowPolicy

            policy = ShadowPolicy.from_json(shadow["policy"])
            candidate = self.activator.validate(path, package.manifest)
        except (EdgeError, OSError, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot resume the shadow stage of %s v%s: %s", saved.get("name"),
                        saved.get("version"), exc)
            self._publish(replace(self.status, state="idle", reason=f"shadow stage not resumed: {exc}"))
            return
        offer = Offer(entry.name, entry.version, entry.size, entry.sha256, MIN_CHUNK_SIZE, (),
                      published_at=float(shadow.get("offer_at") or 0.0), shadow=policy.to_json())
        log.info("resuming the shadow stage of %s v%d at %s samples", entry.name, entry.version,
                 shadow.get("samples"))
        self._start_shadow(offer, entry, candidate, policy, resume=shadow.get("state"),
                           converter=_converter_figures(package.manifest))

    def verify(self, offer: Offer, data: bytes) -> tuple[Manifest, str]:
        """Size, sha256, package structure and digests, signature, anti-rollback -> (manifest, key id)."""
        if len(data) != offer.size:
            raise UpdateError(f"transfer is {len(data)} bytes, the offer said {offer.size}; refused")
        digest = sha256_hex(data)
        if digest != offer.sha256:
            raise UpdateError(
                f"package sha256 is {digest[:16]}…, the offer said {offer.sha256[:16]}…; refused"
            )
        package = read_package_bytes(data, source=f"{offer.name} v{offer.version}")
        kid = self.trust.verify(package.manifest_bytes, package.signature)
        manifest = package.manifest
        if (manifest.name, manifest.version) != (offer.name, offer.version):
            raise UpdateError(
                f"package holds {manifest.name!r} v{manifest.version}, the offer said "
                f"{offer.name!r} v{offer.version}; refused"
            )
        self.store.check_version(manifest)
        return manifest, kid

    def _open_recheck(self) -> None:
        self._window_open = True
        self._offers_seen.clear()
        self._recheck_window += 1
        self._recheck_at = time.monotonic() + self.recheck_seconds

    def _recheck_due(self) -> None:
        """At the window's end, queue the judgement behind every message already queued (an offer
        delivered in time but still waiting behind chunks counts). Only once the broker acknowledged the
        status sent after the connect's subscriptions: it sends the retained offers before that
        acknowledgement, so a link that stalled or dropped before they came judges nothing (the next connect
        opens a new window)."""
        if self._recheck_at is None or time.monotonic() < self._recheck_at:
            return
        marker = self._recheck_marker
        if not getattr(self.transport, "connected", True) or not getattr(marker, "acknowledged", True):
            return  # asked again at the next tick, until a reconnect opens a new window
        self._recheck_at = None
        self._events.put(("recheck", self._recheck_window, None))

    def _recheck_offers(self) -> None:
        """Once the offers of the last connect are in: whatever this device is still doing for an offer
        that did not come back was withdrawn while it was away (the empty retained message that says so
        reached it only if it was connected). It is stopped as if the withdrawal had arrived."""
        if not getattr(self.transport, "connected", True):
            return
        self._window_open = False
        seen = self._offers_seen
        for topic, offer in list(self._offers.items()):
            if offer.sha256 not in seen:
                self._offers.pop(topic)
        transfer, held, shadowing = self._transfer, self._held, self._shadowing
        working = [transfer.offer if transfer else None, held[0] if held else None,
                   shadowing.offer if shadowing else None]
        for pending in working:
            if pending is not None and pending.sha256 not in seen:
                # a transfer's chunks stay: a publisher that comes back late (a broker that lost its
                # retained messages) offers the same package again, and the transfer resumes from them
                self._withdraw(pending, keep_chunks=True)
        if transfer is None and held is None and shadowing is None and self.status.state in _OFFER_STATES:
            # a state saved before a restart (e.g. "held") whose offer did not come back
            base = self._base_status()
            self._publish(replace(base, reason="offer withdrawn"), healthy=base.healthy)
        promotion, self._promotion = self._promotion, None
        if promotion is not None:  # still offered (else the stage was withdrawn above and this is a no-op)
            self._handle_shadow_done(*promotion)

    def _handle_reconnect(self) -> None:
        self._open_recheck()
        # The broker may have lost our retained status (SIGKILL) and our requests in flight.
        self._recheck_marker = self.transport.publish(
            status_topic(self.prefix, self.device_id), self.status.to_bytes(), qos=1, retain=True
        )
        if self._transfer is not None:
            self._request_more(self._transfer, resend=True)

    def _handle_healthy(self, sha: str) -> None:
        if sha == self._health_sha and self.status.state == "active":
            self._publish(replace(self.status, ts=time.time()), healthy=True)

    def _handle_unhealthy(self, sha: str, reason: str) -> None:
        if sha != self._health_sha:
            return
        active = self.store.active()
        if active is None or active.sha256 != sha:
            return
        target = self.store.rollback()
        self.activator.restore(target)
        offer_at = next((o.published_at for o in self._offers.values() if o.sha256 == sha), 0.0)
        self.store.record_outcome(sha, "rolled_back", active.name, active.version, reason, offer_at)
        self._publish(
            Status(
                device=self.device_id,
                state="rolled_back",
                name=active.name,
                version=active.version,
                progress=1.0,
                reason=reason,
                sha256=sha,
                active=_entry_json(target),
                healthy=False,
                groups=self.groups,
            )
        )

    # -- status --------------------------------------------------------------------------------------------

    def _reject(
        self, offer: Offer, reason: str, outcome: str = "rejected", shadow: dict[str, Any] | None = None
    ) -> None:
        """Refuse ``offer``; ``outcome`` "failed" (a local fault, e.g. disk full) lets a new push retry it."""
        log.warning("update %s v%d rejected: %s", offer.name, offer.version, reason)
        if self._transfer is not None and self._transfer.offer.sha256 == offer.sha256:
            self._transfer.staging.discard()
            self._transfer = None
        else:
            self.store.staging_discard(offer.sha256)
        try:
            self.store.record_outcome(
                offer.sha256, outcome, offer.name, offer.version, reason, offer.published_at
            )
        except OSError as exc:  # the disk that refused the package may refuse this too: still report
            log.warning("cannot record the rejection of %s: %s", offer.sha256[:16], exc)
        self._publish(replace(self._status("rejected", offer, reason=reason), shadow=shadow))

    def _status(
        self, state: str, offer: Offer | None = None, progress: float = 0.0, reason: str = ""
    ) -> Status:
        return Status(
            device=self.device_id,
            state=state,
            name=offer.name if offer else "",
            version=offer.version if offer else 0,
            progress=round(progress, 4),
            reason=reason,
            sha256=offer.sha256 if offer else "",
            active=_entry_json(self.store.active()),
            groups=self.groups,
        )

    def _publish(self, status: Status, persist: bool = True, healthy: bool | None = None) -> None:
        if status.state in ("active",):
            status = replace(status, healthy=healthy)
        self.status = status
        if persist and status.state != "downloading":
            self.store.save_status(status.to_json())
        self.transport.publish(
            status_topic(self.prefix, self.device_id), status.to_bytes(), qos=1, retain=True
        )

    def _publish_initial_status(self) -> None:
        saved = self.store.load_status()
        active = _entry_json(self.store.active())
        if saved is not None:
            try:
                status = Status.from_json(saved)
                self._publish(
                    replace(status, device=self.device_id, active=active, groups=self.groups, ts=time.time()),
                    persist=False,
                    healthy=status.healthy,
                )
                return
            except PayloadError:
                pass
        base = self._base_status()
        self._publish(base, persist=False, healthy=base.healthy)

    def _base_status(self) -> Status:
        """The status of a device doing nothing for an offer: its active model (healthy), else idle."""
        active = _entry_json(self.store.active())
        return Status(
            device=self.device_id,
            state="active" if active else "idle",
            name=active["name"] if active else "",
            version=active["version"] if active else 0,
            progress=1.0 if active else 0.0,
            active=active,
            healthy=True if active else None,
            groups=self.groups,
        )


def _converter_figures(manifest: Manifest) -> dict[str, Any]:
    """What ``edge convert`` measured of the package (top-1 agreement with its source, accuracy)."""
    report = manifest.report if isinstance(manifest.report, dict) else {}
    keys = ("top1_agreement", "accuracy_converted", "accuracy_source", "mode")
    return {key: report[key] for key in keys if key in report}


def _is_active(active: StoreEntry | None, offer: Offer) -> bool:
    """The offer is for exactly the package that is active (same bytes, same name and version)."""
    return active is not None and (active.sha256, active.name, active.version) == (
        offer.sha256,
        offer.name,
        offer.version,
    )


def _only_too_big(payload: bytes) -> bool:
    """True when an offer refused by ``Offer.from_bytes`` would be accepted without the size limit."""
    try:
        Offer.from_bytes(payload, sys.maxsize)
    except PayloadError:
        return False
    return True


def _write_failure(root: Path, exc: OSError) -> str:
    """One line for a package the store could not write (disk full, permissions)."""
    where = exc.filename or root
    return (
        f"cannot write the package under {where}: {exc.strerror or exc}; "
        "free some space or check --state-dir, then push again"
    )


def describe_offer(payload: bytes) -> Status:
    """Best effort name, version and sha256 of an offer that failed to parse (for the rejection status)."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return Status(device="", state="rejected")
    sha = data.get("sha256")
    version = data.get("version")
    return Status(
        device="",
        state="rejected",
        name=str(data.get("name", ""))[:100],
        version=version if isinstance(version, int) and not isinstance(version, bool) else 0,
        sha256=sha
        if isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        else "",
    )


def _entry_json(entry: StoreEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"name": entry.name, "version": entry.version, "sha256": entry.sha256}
