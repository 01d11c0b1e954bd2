"""TLS with certificates generated here, and a mosquitto ACL that confines a device to its own topics."""

from __future__ import annotations

import queue
import subprocess
from pathlib import Path

import pytest

from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from cloud_sync.errors import BrokerError
from tests.broker import Broker
from tests.cloud_sync.certs import CertAuthority

WAIT = 15.0


@pytest.fixture
def tls_broker(mosquitto_factory, tmp_path: Path) -> tuple[Broker, CertAuthority]:  # type: ignore[no-untyped-def]
    ca = CertAuthority(tmp_path / "pki")
    server = ca.issue("broker", server=True)
    broker = mosquitto_factory(
        scheme="mqtts",
        extra=[
            f"cafile {ca.ca_file}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
            "require_certificate true",
            "use_identity_as_username true",
        ],
    )
    return broker, ca


def tls_connect(broker: Broker, **files: object) -> MqttConnection:
    settings = parse_broker_url(broker.url, **files)  # type: ignore[arg-type]
    return MqttConnection(settings, "tls-client", connect_timeout=5, reconnect_max=1).start()


def test_tls_with_client_certificate(tls_broker: tuple[Broker, CertAuthority]) -> None:
    broker, ca = tls_broker
    client = ca.issue("dev1", server=False)
    conn = tls_connect(broker, ca=str(ca.ca_file), cert=str(client.cert), key=str(client.key))
    got: queue.Queue[Message] = queue.Queue()
    conn.subscribe("edge/dev1/results", got.put)
    assert conn.publish("edge/dev1/results", b"hello").wait(WAIT)
    assert got.get(timeout=WAIT).payload == b"hello"
    conn.close()


def test_tls_without_client_certificate_is_refused(tls_broker: tuple[Broker, CertAuthority]) -> None:
    broker, ca = tls_broker
    with pytest.raises(BrokerError, match="rejected our client certificate"):
        tls_connect(broker, ca=str(ca.ca_file))


def test_tls_client_certificate_from_another_ca_is_refused(
    tls_broker: tuple[Broker, CertAuthority], tmp_path: Path
) -> None:
    broker, ca = tls_broker
    rogue = CertAuthority(tmp_path / "rogue", name="Rogue CA").issue("dev1", server=False)
    with pytest.raises(BrokerError, match="TLS"):
        tls_connect(broker, ca=str(ca.ca_file), cert=str(rogue.cert), key=str(rogue.key))


def test_tls_untrusted_server_is_refused(tls_broker: tuple[Broker, CertAuthority], tmp_path: Path) -> None:
    broker, _ = tls_broker
    other = CertAuthority(tmp_path / "other", name="Other CA")
    with pytest.raises(BrokerError, match="not trusted.*--ca"):
        tls_connect(broker, ca=str(other.ca_file))


def test_acl_lets_a_device_publish_only_under_its_own_id(mosquitto_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    for user in ("dev1", "dev2", "cloud"):
        flag = ["-c"] if user == "dev1" else []
        subprocess.run(["mosquitto_passwd", "-b", *flag, str(passwd), user, f"{user}-pw"], check=True)
    acl.write_text(
        "user cloud\ntopic readwrite edge/#\n\npattern write edge/%u/#\npattern read edge/%u/cmd/#\n"
    )
    broker = mosquitto_factory(anonymous=False, global_extra=[f"password_file {passwd}", f"acl_file {acl}"])
    url = f"mqtt://{{u}}:{{u}}-pw@127.0.0.1:{broker.port}"
    cloud = MqttConnection(parse_broker_url(url.format(u="cloud")), "cloud").start()
    got: queue.Queue[Message] = queue.Queue()
    cloud.subscribe("edge/+/results", got.put)
    assert cloud.publish("edge/cloud/results", b"probe").wait(WAIT)  # the subscription is in place
    assert got.get(timeout=WAIT).payload == b"probe"
    dev1 = MqttConnection(
        parse_broker_url(url.format(u="dev1")), "edge-dev1", status_topic="edge/dev1/status"
    )
    dev1.start()

    own = dev1.publish("edge/dev1/results", b"mine")
    assert own.wait(WAIT) and own.accepted
    assert got.get(timeout=WAIT).topic == "edge/dev1/results"

    forged = dev1.publish("edge/dev2/results", b"forged")
    assert forged.wait(WAIT)
    assert not forged.accepted and forged.reason == "Not authorized"  # MQTT 5 PUBACK reason code
    marker = dev1.publish("edge/dev1/results", b"after")
    marker.wait(WAIT)
    assert got.get(timeout=WAIT).payload == b"after"  # the forged one never reached the subscriber
    dev1.close()
    cloud.close()


def test_device_session_without_a_valid_certificate_fails_at_start(
    tls_broker: tuple[Broker, CertAuthority], tmp_path: Path
) -> None:
    from cloud_sync.device import DeviceOptions, DeviceSync
    from tests.cloud_sync.fakes import FakePipeline

    broker, ca = tls_broker
    options = DeviceOptions(broker=parse_broker_url(broker.url, ca=str(ca.ca_file)), device_id="dev1",
                            state_dir=tmp_path / "state", telemetry_interval_s=0)
    with pytest.raises(BrokerError, match="rejected our client certificate.*--cert and --key"):
        DeviceSync(options, FakePipeline()).start()
    good = ca.issue("dev1", server=False)
    options = DeviceOptions(
        broker=parse_broker_url(broker.url, ca=str(ca.ca_file), cert=str(good.cert), key=str(good.key)),
        device_id="dev1", state_dir=tmp_path / "state", telemetry_interval_s=0, protocol="3.1.1",
    )
    sync = DeviceSync(options, FakePipeline()).start()
    assert sync.connection.connected
    sync.close()
