"""One MQTT connection on paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``).

``MqttConnection`` adds what every part of the MQTT side needs on top of paho:

- ``mqtt://[user:pass@]host[:port]`` / ``mqtts://`` URLs with ``--ca``, ``--cert``, ``--key``, parsed by
  ``edge.broker.parse_broker_url`` (re-exported here) into ``BrokerSettings``;
- MQTT 5 by default, 3.1.1 selectable: ``BrokerSettings.version``, or ``protocol=`` to override it;
  keep-alive; automatic reconnect with exponential backoff;
- a retained ``online`` status with an ``offline`` last will (when a status topic is given);
- ``subscribe(filter, handler)`` that survives reconnects; handlers never take the network loop down;
- ``publish(...)`` returning a ``Delivery`` that tells when the broker acknowledged (PUBACK for QoS 1),
  with an optional ``on_ack`` callback;
- ``start()`` raises ``BrokerError`` for refused credentials, a rejected certificate or (when required)
  an unreachable broker, within a bounded connect timeout. Without ``require``, a broker that cannot be
  reached, or a network that cuts or stalls the first handshake, is one warning: paho keeps retrying with
  backoff in the background;
- half-open detection: a connection on which nothing arrived for 1.5 x the keep-alive (a network that
  dropped without a FIN or RST) is closed and re-established, sooner than paho's own check (2 x).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.errors import BrokerError
from edge.broker import DEFAULT_PORTS as DEFAULT_PORTS  # re-exported: the parser and settings are the core's
from edge.broker import MQTT_VERSIONS, BrokerSettings
from edge.broker import parse_broker_url as parse_broker_url
from edge.errors import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = dict(zip(MQTT_VERSIONS, (mqtt.MQTTv5, mqtt.MQTTv311), strict=True))  # "5", "3.1.1"
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason code (paho maps MQTT 3.1.1's return code 1 to it)


@dataclass(slots=True)
class Message:
    """An incoming message as handlers see it."""

    topic: str
    payload: bytes
    retain: bool = False
    properties: Properties | None = None


Handler = Callable[[Message], None]
AckCallback = Callable[[bool, str], None]  # (accepted by the broker, reason)


class Delivery:
    """The fate of one publish: ``wait()`` until the broker acknowledged it (QoS 1) or it was sent (QoS 0)."""

    __slots__ = ("mid", "_event", "_finished", "accepted", "reason", "_on_ack")
    _guard = threading.Lock()  # the Event is made only for callers that wait (most never do)

    def __init__(self, mid: int, on_ack: AckCallback | None = None) -> None:
        self.mid = mid
        self._event: threading.Event | None = None
        self._finished = False
        self.accepted = False
        self.reason = ""
        self._on_ack = on_ack

    def _done(self, accepted: bool, reason: str) -> None:
        self.accepted, self.reason = accepted, reason
        with Delivery._guard:
            self._finished = True
            event = self._event
        if event is not None:
            event.set()
        if self._on_ack is not None:
            try:
                self._on_ack(accepted, reason)
            except Exception:  # a callback bug must not stop the network loop
                log.exception("acknowledgement callback failed for mid %s", self.mid)

    @property
    def acknowledged(self) -> bool:
        return self._finished

    def wait(self, timeout: float | None = None) -> bool:
        """True once acknowledged (check ``accepted``: the broker may refuse, e.g. by ACL on MQTT 5)."""
        with Delivery._guard:
            if self._finished:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


HALF_OPEN_FACTOR = 1.5  # nothing received for this many keep-alives: the connection is dead


def _is_network_tls_error(exc: ssl.SSLError) -> bool:
    """A TLS handshake cut by the network (EOF, reset), as opposed to a TLS configuration problem."""
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return True
    return "eof" in str(exc).lower() and "alert" not in str(exc).lower()


# How one connection attempt ended, before the first CONNACK (see ``MqttConnection._attempt``)
OK, REFUSED, NETWORK, UNSURE = "ok", "refused", "network", "unsure"


def _early_close_kind(detail: str, tls: bool) -> str:
    """Why the broker (or the network) closed a connection before its CONNACK.

    A TLS alert about our certificate is the broker's verdict (``REFUSED``). A TLS session closed without
    an alert (``EOF occurred in violation of protocol``) is what mosquitto does to a client without the
    certificate it requires, and also what a network cut looks like: ``UNSURE``, settled by a second
    attempt. A reset, a plain close, a timeout: ``NETWORK``.
    """
    lowered = detail.lower()
    if "alert" in lowered or "certificate" in lowered:
        return REFUSED
    if tls and ("eof" in lowered or "ssl" in lowered) and "reset" not in lowered:
        return UNSURE
    return NETWORK


class MqttConnection:
    """A long-lived MQTT client: reconnects by itself, re-subscribes, keeps a retained status."""

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        *,
        protocol: str | None = None,
        status_topic: str | None = None,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
        clean_start: bool = True,
        session_expiry: int = 0,
        max_inflight: int = 1000,
    ) -> None:
        protocol = settings.version if protocol is None else protocol
        if protocol not in PROTOCOLS:
            raise ConfigError(f"MQTT version {protocol!r} is not supported; use 5 or 3.1.1")
        self.settings = settings
        self.client_id = client_id
        self.protocol = protocol
        self.status_topic = status_topic
        self.status_extra = status_extra
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self._v5 = protocol == "5"
        self._lock = threading.Lock()
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._pending: dict[int, Delivery] = {}
        self._early: dict[int, tuple[bool, str]] = {}
        self._connect_listeners: list[Callable[[], None]] = []
        self._connected = threading.Event()
        # the outcomes of connection attempts while start() waits for a verdict: (kind, message)
        self._attempts: list[tuple[str, str]] = []
        self._attempt_done = threading.Condition(self._lock)
        self._settled = True  # no start() waiting: failures are logged
        self._last_error = ""
        self._last_in = time.monotonic()  # when the last packet from the broker arrived
        self._watchdog: threading.Thread | None = None
        self._stop_watchdog = threading.Event()
        self.half_open_closes = 0
        self._started = False
        self._closed = False
        self.connects = 0

        kwargs: dict[str, Any] = {}
        if not self._v5:
            kwargs["clean_session"] = clean_start
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PROTOCOLS[protocol],
            reconnect_on_failure=True,
            **kwargs,
        )
        client.connect_timeout = connect_timeout
        # paho annotates the delays as int; it only adds and doubles them, so fractions of a second work
        client.reconnect_delay_set(min_delay=reconnect_min, max_delay=reconnect_max)  # type: ignore[arg-type]
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                client.tls_set(ca_certs=settings.ca, certfile=settings.cert, keyfile=settings.key)
            except (OSError, ssl.SSLError) as exc:
                raise BrokerError(
                    f"cannot load TLS files (ca={settings.ca}, cert={settings.cert}, key={settings.key}): "
                    f"{exc}; check --ca/--cert/--key point to readable PEM files"
                ) from exc
        if status_topic:
            # The will is fixed here, long before the broker sends it: no seq (it would go stale) and no ts
            # (it would be this moment, not the loss); a subscriber dates it by its arrival.
            will = json.dumps({"state": "offline"}, separators=(",", ":"))
            client.will_set(status_topic, will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self._on_log
        self._client = client

    # ----------------------------------------------------------------- lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def add_connect_listener(self, callback: Callable[[], None]) -> None:
        """Called (in the network thread) after every successful (re)connect and re-subscribe."""
        self._connect_listeners.append(callback)
        if self.connected:
            callback()

    def start(self, *, require: bool = True) -> MqttConnection:
        """Connect and start the network thread.

        Refused credentials and TLS failures (an untrusted broker certificate, our certificate rejected)
        always raise ``BrokerError``. A broker that cannot be reached, refuses the TCP connection, closes or
        resets it before its CONNACK, or does not answer within ``connect_timeout`` raises when ``require``
        is set; otherwise it is logged once and the connection keeps retrying in the background (paho's
        exponential backoff), so a device whose network flaps at boot keeps running.
        """
        if self._started:
            return self
        self._started = True
        where = self.settings.url
        try:
            self._client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.keepalive,
                clean_start=self.clean_start if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=self._connect_properties(),
            )
        except ssl.SSLCertVerificationError as exc:
            self._started = False
            raise BrokerError(
                f"TLS: the certificate of broker {where} is not trusted ({exc.verify_message}); "
                "pass the CA that signed it with --ca"
            ) from exc
        except ssl.SSLError as exc:
            if require or not _is_network_tls_error(exc):
                self._started = False
                raise BrokerError(
                    f"TLS handshake with broker {where} failed ({exc}); check --ca/--cert/--key"
                ) from exc
            return self._retry_in_background(f"the TLS handshake with broker {where} was cut ({exc})")
        except (OSError, ValueError) as exc:
            message = f"broker {where} is not reachable ({exc}); check the host, the port and that it runs"
            if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
                kind = "TLS handshake" if self.settings.tls else "connection"
                message = f"the {kind} with broker {where} was cut ({exc}); check the network and the broker"
            if require:
                self._started = False
                raise BrokerError(message) from exc
            return self._retry_in_background(message)
        with self._lock:
            self._settled = False
            self._attempts.clear()
        self._client.loop_start()
        self._start_watchdog()
        try:
            return self._await_verdict(require)
        finally:
            with self._lock:
                self._settled = True

    def _await_verdict(self, require: bool) -> MqttConnection:
        """Wait (up to ``connect_timeout``) for the broker's answer to the first CONNECT."""
        where = self.settings.url
        deadline = time.monotonic() + self.connect_timeout
        unsure = 0
        while True:
            with self._lock:
                while not self._attempts and (left := deadline - time.monotonic()) > 0:
                    self._attempt_done.wait(left)
                outcome = self._attempts.pop(0) if self._attempts else None
            if outcome is None:
                message = (
                    f"broker {where} accepted the TCP connection but did not answer MQTT CONNECT within "
                    f"{self.connect_timeout:g}s; check the port is an MQTT listener (and mqtts:// for TLS)"
                )
                if require:
                    self._abort()
                    raise BrokerError(message)
                log.warning("%s; retrying in the background, results wait in the outbox", message)
                return self
            kind, message = outcome
            if kind == OK:
                return self
            if kind == UNSURE and not require and unsure == 0:
                unsure += 1  # a cut, or a broker that wants a certificate: the next attempt tells
                log.debug("%s; trying once more before deciding", message)
                continue
            if require or kind in (REFUSED, UNSURE):
                self._abort()
                raise BrokerError(message)
            log.warning("%s; retrying in the background, results wait in the outbox", message)
            return self

    def _attempt(self, kind: str, message: str) -> bool:
        """Record how an attempt ended for a waiting start(); False when none waits (then log it)."""
        with self._lock:
            if self._settled:
                return False
            self._attempts.append((kind, message))
            self._attempt_done.notify_all()
            return True

    def _retry_in_background(self, message: str) -> MqttConnection:
        """The first connect failed for a network reason: one warning, then paho retries with backoff."""
        log.warning("%s; retrying in the background, results wait in the outbox", message)
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.keepalive,
            clean_start=self.clean_start if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
        )
        self._client.loop_start()
        self._start_watchdog()
        return self

    def _start_watchdog(self) -> None:
        if self.keepalive <= 0 or self._watchdog is not None:
            return
        self._stop_watchdog.clear()
        self._watchdog = threading.Thread(target=self._watch, name="mqtt-half-open", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """Close a connection on which nothing arrived for 1.5 keep-alives (half-open: no FIN, no RST).

        paho sends a PINGREQ once a keep-alive passes without traffic, so a live broker answers well within
        that bound; paho's own check would wait 2 keep-alives. Closing the socket makes paho's loop see the
        connection lost and reconnect with its backoff.
        """
        limit = HALF_OPEN_FACTOR * self.keepalive
        pause = min(0.25, self.keepalive / 8)
        while not self._stop_watchdog.wait(pause):
            pause = min(0.25, self.keepalive / 8)
            if not self._connected.is_set():
                continue
            silent = time.monotonic() - self._last_in
            if silent < limit:
                pause = max(0.01, min(pause, limit - silent))  # wake right at the limit
                continue
            sock = self._client.socket()
            if not isinstance(sock, socket.socket):
                continue
            log.warning(
                "nothing from broker %s for %.1fs (keep-alive %ds): the connection is half-open; "
                "reconnecting", self.settings.url, silent, self.keepalive,
            )
            self.half_open_closes += 1
            self._last_in = time.monotonic()  # one close per silence
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, also under TLS

    def _abort(self) -> None:
        self._stop_watchdog.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False

    def close(self, timeout: float = 5.0) -> None:
        """Publish a retained ``offline`` status (if any), disconnect and stop the network thread."""
        if self._closed:
            return
        self._closed = True
        if self._started and self.connected and self.status_topic:
            delivery = self.publish(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
            delivery.wait(timeout)
        self._stop_watchdog.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # ----------------------------------------------------------------- publish / subscribe

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        on_ack: AckCallback | None = None,
        properties: Properties | None = None,
    ) -> Delivery:
        """Hand a message to paho; the ``Delivery`` completes on PUBACK (QoS 1/2) or once sent (QoS 0).

        While disconnected the message waits in paho's memory and goes out after the reconnect.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise BrokerError(f"cannot queue a message for {topic}: the MQTT client queue is full")
        delivery = Delivery(info.mid, on_ack)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = delivery
        if early is not None:
            delivery._done(*early)
        return delivery

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler``; kept across reconnects."""
        with self._lock:
            self._subs[topic_filter] = (qos, handler)
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
        if self.connected:
            self._client.unsubscribe(topic_filter)

    # ----------------------------------------------------------------- paho callbacks (network thread)

    def _status_payload(self, state: str, *, extra: bool = True) -> str:
        body: dict[str, Any] = {"state": state, "ts": round(time.time(), 3)}
        if self.status_extra is not None and extra:
            try:
                body.update(self.status_extra())
            except Exception:
                log.exception("status_extra failed")
        return json.dumps(body, separators=(",", ":"))

    def _connect_properties(self) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        return props

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._last_in = time.monotonic()
        if rc.is_failure:
            message = (
                f"broker {self.settings.url} refused the connection: {rc.getName()}; "
                "check the user name and password in the URL (and the broker's ACL / client id rules)"
            )
            if rc.value == UNSUPPORTED_PROTOCOL_VERSION:  # also what a 3.1.1 broker says to MQTT 5
                other = next(version for version in MQTT_VERSIONS if version != self.protocol)
                message = (
                    f"broker {self.settings.url} does not accept MQTT {self.protocol} ({rc.getName()}); "
                    f"pass --mqtt-version {other} (mqtt.version = \"{other}\" in a config file)"
                )
            if not self._attempt(REFUSED, message):  # the broker's verdict, not a network flap
                log.error("%s", message)
            return
        self.connects += 1
        log.info("connected to %s as %s (MQTT %s)", self.settings.url, self.client_id, self.protocol)
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (qos, _) in subs:
            client.subscribe(topic_filter, qos=qos)
        if self.status_topic:
            self.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
        self._connected.set()
        self._attempt(OK, "")
        for callback in list(self._connect_listeners):
            try:
                callback()
            except Exception:
                log.exception("connect listener failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        detail = self._last_error or str(rc)
        self._last_error = ""  # an error belongs to one attempt
        if was_connected:
            if not self._closed:
                log.warning("lost the connection to %s (%s); reconnecting", self.settings.url, rc)
            return
        kind = _early_close_kind(detail, self.settings.tls)
        if self._attempt(kind, self._explain_early_disconnect(detail, kind)) or self._closed:
            return
        if kind == REFUSED:
            log.error("%s", self._explain_early_disconnect(detail, kind))
        else:
            log.debug("connecting to %s failed again (%s); retrying", self.settings.url, detail)

    def _explain_early_disconnect(self, detail: str, kind: str) -> str:
        where = self.settings.url
        if kind in (REFUSED, UNSURE):
            return (
                f"TLS: broker {where} rejected our client certificate ({detail}); "
                "pass a certificate signed by the broker's CA with --cert and --key"
            )
        return f"broker {where} closed the connection before accepting it ({detail}); check the broker log"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        self._last_in = time.monotonic()
        accepted = not rc.is_failure
        reason = rc.getName()
        with self._lock:
            delivery = self._pending.pop(mid, None)
            if delivery is None:
                self._early[mid] = (accepted, reason)
        if delivery is not None:
            delivery._done(accepted, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            subs = list(self._subs.items())
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), getattr(msg, "properties", None))
        for topic_filter, (_, handler) in subs:
            if mqtt.topic_matches_sub(_strip_share(topic_filter), msg.topic):
                try:
                    handler(message)
                except Exception:
                    log.exception("handler for %s failed on a message on %s", topic_filter, msg.topic)

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        if text.startswith("Received "):  # every packet from the broker, PINGRESP included
            self._last_in = time.monotonic()
        elif level == mqtt.MQTT_LOG_ERR:
            self._last_error = text
            log.debug("paho: %s", text)


def _strip_share(topic_filter: str) -> str:
    """``$share/group/a/b`` matches topics like ``a/b``."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


def client_id_for(device_id: str, role: str = "") -> str:
    """A stable client id derived from the device id (``edge-<id>`` or ``edge-<id>-<role>``)."""
    base = f"edge-{device_id}"
    return f"{base}-{role}" if role else base


def unique_client_id(role: str) -> str:
    """A client id for tools that may run several times at once (collector, flush)."""
    return f"edge-{role}-{socket.gethostname().split('.')[0]}-{threading.get_native_id()}-{int(time.time())}"
