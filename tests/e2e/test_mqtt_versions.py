"""Every MQTT command on MQTT 3.1.1 as on 5, end to end on a real mosquitto.

mosquitto 2.0 cannot be told to refuse MQTT 5, so the 3.1.1-only broker here is mosquitto behind
``Only311``: a loopback gate that reads each client's CONNECT and, for any protocol level but 4 (3.1.1),
answers as a 3.1.1-only broker does (MQTT 3.1.1 section 3.1.2.2: CONNACK return code 0x01, "unacceptable
protocol version", then close); a 3.1.1 CONNECT goes through to mosquitto unchanged. mosquitto's own log
(``connection_messages``: ``New client connected ... as ID (p2, ...)``, p2 = 3.1.1, p5 = 5) shows which
version each client really spoke.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.connection import MqttConnection, parse_broker_url
from cloud_sync.update_agent import UpdateAgent
from edge.cli import main
from edge.signing import TrustStore
from edge.store import ModelStore
from tests.broker import Broker
from tests.cloud_sync.update_support import PackageActivator, make_keys
from tests.edge.update_packages import make_package

CONNACK_UNACCEPTABLE_PROTOCOL = bytes([0x20, 0x02, 0x00, 0x01])


def _read_packet(sock: socket.socket) -> bytes:
    """One whole MQTT control packet (fixed header, remaining length, body) from ``sock``."""
    data = bytearray(_read(sock, 1))
    length, shift = 0, 0
    while True:
        byte = _read(sock, 1)[0]
        data.append(byte)
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    data += _read(sock, length)
    return bytes(data)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _protocol_level(connect: bytes) -> int:
    """The protocol level of a CONNECT packet: 4 for MQTT 3.1.1, 5 for MQTT 5 (3 for 3.1)."""
    body = connect[1:]
    while body[0] & 0x80:  # skip the remaining-length bytes
        body = body[1:]
    body = body[1:]
    name_length = int.from_bytes(body[:2], "big")
    return body[2 + name_length]


class Only311:
    """A 3.1.1-only broker: MQTT 5 CONNECTs refused as a 3.1.1 broker refuses them, the rest forwarded."""

    def __init__(self, upstream: Broker) -> None:
        self.upstream = (upstream.host, upstream.port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.refused: list[int] = []  # protocol levels refused
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        try:
            connect = _read_packet(client)
            level = _protocol_level(connect)
            if connect[0] >> 4 != 1 or level != 4:
                with self._lock:
                    self.refused.append(level)
                client.sendall(CONNACK_UNACCEPTABLE_PROTOCOL)
                client.close()
                return
            upstream = socket.create_connection(self.upstream)
            self._track(upstream)
            upstream.sendall(connect)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def close(self) -> None:
        self._closed = True
        self.server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def only311(mosquitto: Broker) -> Iterator[Only311]:
    gate = Only311(mosquitto)
    yield gate
    gate.close()


def protocols_in_log(broker: Broker, client_prefix: str) -> list[str]:
    """The protocol (``p2``: 3.1.1, ``p5``: 5) of every client whose id starts with ``client_prefix``."""
    pattern = re.compile(rf"New client connected from \S+ as ({re.escape(client_prefix)}\S*) \((p\d+),")
    return [match.group(2) for match in pattern.finditer(broker.log())]


@contextlib.contextmanager
def device_311(url: str, state_dir: Path, device_id: str, trusted: Path) -> Iterator[Any]:
    """A device's update agent on MQTT 3.1.1 (its connection made from 3.1.1 ``BrokerSettings``)."""
    connection = MqttConnection(
        parse_broker_url(url, version="3.1.1"),
        f"edge-{device_id}",
        status_topic=f"edge/{device_id}/status",
        reconnect_max=2,
    ).start()
    store = ModelStore(state_dir)
    agent = UpdateAgent(
        connection, store, TrustStore.from_files([trusted]), PackageActivator(), device_id
    ).start()
    try:
        yield store
    finally:
        agent.close()
        connection.close()


def test_connection_speaks_the_version_of_its_settings(mosquitto: Broker) -> None:
    for version, client in (("3.1.1", "v311-client"), ("5", "v5-client")):
        MqttConnection(parse_broker_url(mosquitto.url, version=version), client).start(require=True).close()
    assert protocols_in_log(mosquitto, "v311-client") == ["p2"]
    assert protocols_in_log(mosquitto, "v5-client") == ["p5"]


def test_push_model_and_fleet_status_on_a_311_only_broker(
    mosquitto: Broker, only311: Only311, assets: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = make_keys(tmp_path / "keys")
    package = tmp_path / "digits-v2.edgepkg"
    package.write_bytes(make_package(assets.model("digits_int8"), 2))
    with device_311(only311.url, tmp_path / "cam1", "cam1", keys.pub) as store:
        push = ["push-model", str(package), "--key", str(keys.key), "--mqtt", only311.url, "--device", "cam1",
                "--wait", "60", "--json"]
        # MQTT 5 (the default) is refused by this broker: one line, exit 2, nothing offered.
        assert main(push) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"edge push-model: error: broker mqtt://127.0.0.1:{only311.port} does not accept MQTT 5 "
            "(Unsupported protocol version); pass --mqtt-version 3.1.1 "
            '(mqtt.version = "3.1.1" in a config file)'
        )
        assert 5 in only311.refused and store.active() is None

        assert main([*push, "--mqtt-version", "3.1.1"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["ok"] is True and result["devices"]["cam1"]["result"] == "success", result
        assert result["bytes_sent"] > 0
        assert store.active() is not None and store.active().version == 2  # type: ignore[union-attr]

        assert main(["fleet", "status", "--mqtt", only311.url, "--timeout", "3"]) == 2
        assert "does not accept MQTT 5" in capsys.readouterr().err
        status = ["fleet", "status", "--mqtt", only311.url, "--mqtt-version", "3.1.1", "--json"]
        assert main(status) == 0
        rows = {row["device"]: row for row in json.loads(capsys.readouterr().out)["devices"]}
        assert rows["cam1"]["online"] is True
        assert rows["cam1"]["model"] == {"name": "digits", "version": 2}
        assert rows["cam1"]["update"]["state"] == "active"
    # What reached mosquitto spoke 3.1.1 only: the device, the publisher and the fleet view.
    assert set(protocols_in_log(mosquitto, "edge-cam1")) == {"p2"}
    assert protocols_in_log(mosquitto, "edge-push-") == ["p2"]
    assert protocols_in_log(mosquitto, "edge-fleet-") == ["p2"]


def test_collect_and_outbox_flush_pass_the_version(
    mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fleet.sqlite"
    assert main(["collect", "--mqtt", mosquitto.url, "--mqtt-version", "3.1.1", "--db", str(db),
                 "--duration", "1"]) == 0
    assert main(["collect", "--mqtt", mosquitto.url, "--db", str(db), "--duration", "1"]) == 0
    assert protocols_in_log(mosquitto, "edge-collect") == ["p2", "p5"], mosquitto.log()
    capsys.readouterr()


def test_simulate_a_fleet_and_a_rollout_on_a_311_only_broker(
    mosquitto: Broker, only311: Only311, assets: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The full flow on 3.1.1: devices' results through their outboxes to the collector, and a rollout."""
    argv = ["simulate", "--devices", "2", "--duration", "3", "--model", str(assets.digits_package),
            "--mqtt", only311.url, "--mqtt-version", "3.1.1", "--workdir", str(tmp_path / "sim"), "--json"]
    assert main(argv) == 0, capsys.readouterr()
    report = json.loads(capsys.readouterr().out)
    assert report["emitted"] > 0 and report["stored"] == report["emitted"] and report["lost"] == 0
    assert report["rollout_ok"] == 2 and report["rollout_failed"] == {}
    assert only311.refused == []  # nothing in the simulation tried MQTT 5
    clients = protocols_in_log(mosquitto, "edge-")  # devices, collector, publisher
    assert len(clients) >= 4 and set(clients) == {"p2"}
