"""MqttConnection against a real mosquitto: status and will, publish acks, re-subscribe, clear errors."""

from __future__ import annotations

import json
import queue
import subprocess
import time

import pytest

from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from cloud_sync.errors import BrokerError
from edge.errors import ConfigError
from tests.broker import Broker, free_port

WAIT = 15.0


def connect(url: str, client_id: str, **kwargs: object) -> MqttConnection:
    kwargs.setdefault("reconnect_max", 1)
    conn = MqttConnection(parse_broker_url(url), client_id, **kwargs)  # type: ignore[arg-type]
    return conn.start()


def test_parse_broker_url() -> None:
    s = parse_broker_url("mqtt://bob:p%40ss@127.0.0.1:1999")
    assert (s.host, s.port, s.username, s.password, s.tls) == ("127.0.0.1", 1999, "bob", "p@ss", False)
    assert "p@ss" not in s.url
    t = parse_broker_url("mqtts://broker.local", ca="/ca.pem")
    assert (t.port, t.tls, t.ca) == (8883, True, "/ca.pem")
    with pytest.raises(ConfigError, match="'http://x'"):
        parse_broker_url("http://x")
    with pytest.raises(ConfigError, match="mqtts://"):
        parse_broker_url("mqtt://x", ca="/ca.pem")


def _receive(got: queue.Queue[Message], payload: bytes, timeout: float) -> bool:
    """True when a message with ``payload`` arrives within ``timeout`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            if got.get(timeout=remaining).payload == payload:
                return True
        except queue.Empty:
            return False
    return False


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_status_publish_ack_and_resubscribe(mosquitto: Broker, protocol: str) -> None:
    got: queue.Queue[Message] = queue.Queue()
    watcher = connect(mosquitto.url, "watcher", protocol=protocol)
    watcher.subscribe("edge/dev1/#", got.put)
    device = connect(mosquitto.url, "edge-dev1", protocol=protocol, status_topic="edge/dev1/status")
    status = got.get(timeout=WAIT)
    assert status.topic == "edge/dev1/status" and json.loads(status.payload)["state"] == "online"

    delivery = device.publish("edge/dev1/results", b'{"n":1}', qos=1)
    assert delivery.wait(WAIT) and delivery.accepted
    assert got.get(timeout=WAIT).payload == b'{"n":1}'

    # the broker dies and comes back: the watcher re-subscribes, the device re-announces online
    mosquitto.kill()
    mosquitto.start()
    assert watcher.wait_connected(WAIT) and device.wait_connected(WAIT)
    # The watcher's re-SUBSCRIBE and the device's PUBLISH travel on different sockets, so the broker may see
    # the publish first: publish until the re-subscribed watcher gets one (it must, within WAIT).
    deadline = time.monotonic() + WAIT
    while not _receive(got, b'{"n":2}', timeout=1.0):
        assert time.monotonic() < deadline, "the watcher never re-subscribed after the broker restart"
        device.publish("edge/dev1/results", b'{"n":2}').wait(WAIT)

    # the last will: SIGKILL-like loss of the device is reported as retained offline
    device._client._sock_close()  # drop the socket without DISCONNECT, so the will fires
    device._client.loop_stop()
    while True:
        msg = got.get(timeout=WAIT)
        if msg.topic.endswith("/status") and json.loads(msg.payload)["state"] == "offline":
            break
    watcher.close()


def test_clean_close_publishes_offline_retained(mosquitto: Broker) -> None:
    device = connect(mosquitto.url, "edge-dev2", status_topic="edge/dev2/status")
    device.close()
    out = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-t",
            "edge/dev2/status",
            "-C",
            "1",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert json.loads(out.stdout)["state"] == "offline"


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is not reachable"):
        connect(f"mqtt://127.0.0.1:{port}", "x")


def test_unreachable_broker_not_required_connects_later(mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto_factory(start=False)
    conn = MqttConnection(parse_broker_url(broker.url), "late", reconnect_min=1, reconnect_max=1)
    conn.start(require=False)
    assert not conn.connected
    broker.start()
    assert conn.wait_connected(WAIT)
    conn.close()


def test_refused_credentials_are_a_clear_error(mosquitto_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dev", "secret"], check=True)
    broker = mosquitto_factory(anonymous=False, global_extra=[f"password_file {passwd}"])
    ok = connect(f"mqtt://dev:secret@127.0.0.1:{broker.port}", "good")
    assert ok.connected
    ok.close()
    with pytest.raises(BrokerError, match="refused the connection: (Bad user name or password|Not auth)"):
        connect(f"mqtt://dev:wrong@127.0.0.1:{broker.port}", "bad")
    with pytest.raises(BrokerError, match="refused"):
        connect(f"mqtt://dev:wrong@127.0.0.1:{broker.port}", "bad311", protocol="3.1.1")


def test_handler_errors_do_not_stop_the_loop(mosquitto: Broker) -> None:
    got: queue.Queue[bytes] = queue.Queue()

    def bad(message: Message) -> None:
        raise ValueError("boom")

    conn = connect(mosquitto.url, "h")
    conn.subscribe("t/bad", bad)
    conn.subscribe("t/good", lambda m: got.put(m.payload))
    conn.publish("t/bad", b"x").wait(WAIT)
    conn.publish("t/good", b"y").wait(WAIT)
    assert got.get(timeout=WAIT) == b"y"
    conn.close()
