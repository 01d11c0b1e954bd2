"""The deployment assets in devices/ really work: the systemd unit verifies, and the shipped mosquitto config
starts a real broker (paths rewritten to certificates made here) whose ACL confines each device to its id."""

from __future__ import annotations

import configparser
import getpass
import os
import queue
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.broker import Broker, free_port
from tests.cloud_sync.certs import CertAuthority

DEVICES = Path(__file__).resolve().parents[2] / "devices"
WAIT = 15.0
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
USERS = {
    "kitchen_cam": "pw-kitchen",
    "garage_cam": "pw-garage",
    "cloud": "pw-cloud",
    "homeassistant": "pw-ha",
}


# ----------------------------------------------------------------------------------------- systemd unit


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEVICES / "edge.service")
    return parser


def test_the_unit_restarts_on_failure_with_a_watchdog_as_an_unprivileged_user() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0
    assert service["User"] not in ("root", "0") and service["StateDirectory"].split() == [
        "edge",
        "edge/inbox",
    ]
    assert service["ExecStart"].split()[1:] == ["run", "--config", "/etc/edge/device.toml"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (issue 6 allows this)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at this environment's `edge` script.
    edge = Path(sys.executable).with_name("edge")
    assert edge.exists()
    text = (DEVICES / "edge.service").read_text()
    installed = tmp_path / "edge.service"
    installed.write_text(text.replace("/opt/edge/venv/bin/edge", str(edge)))
    result = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", str(installed)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for options it ignores, so any message counts as a failure
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(installed.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(broken)], capture_output=True, text=True)
    assert "sometimes" in result.stderr  # the check above would notice a bad option


def test_edge_run_tells_systemd_it_is_ready_and_keeps_the_watchdog_fed(tmp_path: Path, assets: Any) -> None:
    """What Type=notify and WatchdogSec need, with a notify socket of our own in place of systemd's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    edge = Path(sys.executable).with_name("edge")
    proc = subprocess.Popen(
        [str(edge), "run", str(assets.digits_package), "--watch", str(inbox)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        got = {sock.recv(256).split(b"\n")[0] for _ in range(3)}
        assert {b"READY=1", b"WATCHDOG=1"} <= got
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sock.close()


# ------------------------------------------------------------------------------------------- mosquitto


class ShippedBroker(Broker):
    """Mosquitto run with devices/mosquitto/edge.conf, its paths and ports rewritten into a temp folder."""

    def __init__(self, workdir: Path, files: dict[str, Path]) -> None:
        self.files = files
        self.ca_file = files["ca.crt"]
        self.local_port = free_port()
        super().__init__(workdir, scheme="mqtts")

    def write_config(self, **_: object) -> None:
        text = (DEVICES / "mosquitto" / "edge.conf").read_text()
        for name, path in self.files.items():
            text, count = re.subn(rf"/etc/mosquitto/edge/{re.escape(name)}\b", str(path), text)
            assert count == 1, name
        text, count = re.subn(r"^listener 8883$", f"listener {self.port} 127.0.0.1", text, flags=re.M)
        assert count == 1
        text = text.replace("listener 1883 127.0.0.1", f"listener {self.local_port} 127.0.0.1")
        # what Debian's /etc/mosquitto/mosquitto.conf adds around conf.d, in the temp folder
        head = [
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
        ]
        self.config_path.write_text("\n".join(head) + "\n" + text)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    ca = CertAuthority(tmp_path / "pki")
    server = ca.issue("broker", server=True)
    passwd = tmp_path / "passwd"
    for index, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True)
    acl = tmp_path / "acl"
    shutil.copy(DEVICES / "mosquitto" / "acl", acl)
    files = {
        "passwd": passwd,
        "acl": acl,
        "ca.crt": ca.ca_file,
        "server.crt": server.cert,
        "server.key": server.key,
    }
    shipped = ShippedBroker(tmp_path / "broker", files)
    try:
        yield shipped.start()
    finally:
        shipped.kill()


class Client:
    """A real paho MQTT 5 client over TLS that records what it receives."""

    def __init__(self, broker: ShippedBroker, user: str, password: str | None = None) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected: queue.Queue[str] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, USERS[user] if password is None else password)
        self.client.tls_set(ca_certs=str(broker.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = lambda c, u, f, reason, p: self.connected.put(str(reason))
        self.client.on_message = lambda c, u, m: self.got.put((m.topic, m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.reason = self.connected.get(timeout=WAIT)

    def subscribe(self, *filters: str) -> None:
        done: queue.Queue[list[str]] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: done.put([str(code) for code in codes])
        self.client.subscribe([(f, 1) for f in filters])
        done.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def received_until(self, marker: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to and including ``marker`` (messages from one client arrive in order)."""
        seen = []
        while True:
            topic, payload = self.got.get(timeout=WAIT)
            seen.append((topic, payload))
            if payload == marker:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_shipped_config_refuses_anonymous_clients_and_wrong_passwords(broker: ShippedBroker) -> None:
    assert Client(broker, "cloud").reason == "Success"
    assert Client(broker, "kitchen_cam", password="wrong").reason in (
        "Bad user name or password",
        "Not authorized",
    )
    anonymous = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "--cafile",
            str(broker.ca_file),
            "-t",
            "edge/x/results",
            "-m",
            "x",
            "-q",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert anonymous.returncode != 0 and "not authorised" in (anonymous.stderr + anonymous.stdout).lower()


def test_the_acl_confines_each_device_to_its_own_topics(broker: ShippedBroker) -> None:
    cloud = Client(broker, "cloud")
    cloud.subscribe("edge/#")
    home_assistant = Client(broker, "homeassistant")
    home_assistant.subscribe("homeassistant/#")
    kitchen = Client(broker, "kitchen_cam")
    kitchen.publish("edge/kitchen_cam/results", b"own result")
    kitchen.publish("edge/garage_cam/results", b"forged result")
    kitchen.publish("homeassistant/sensor/edge_kitchen_cam/last_label/config", b"own discovery")
    kitchen.publish("homeassistant/sensor/edge_garage_cam/last_label/config", b"forged discovery")
    kitchen.publish("edge/group/all/model/offer", b"forged offer")
    kitchen.publish("edge/kitchen_cam/telemetry", b"marker")
    kitchen.publish("homeassistant/binary_sensor/edge_kitchen_cam/person/config", b"ha marker")
    assert [payload for _, payload in cloud.received_until(b"marker")] == [b"own result", b"marker"]
    assert [payload for _, payload in home_assistant.received_until(b"ha marker")] == [
        b"own discovery",
        b"ha marker",
    ]
    for client in (kitchen, cloud, home_assistant):
        client.close()


def test_a_device_reads_its_commands_and_group_offers_but_not_another_devices_topics(
    broker: ShippedBroker,
) -> None:
    kitchen = Client(broker, "kitchen_cam")
    kitchen.subscribe("edge/garage_cam/#", "edge/kitchen_cam/cmd/#", "edge/group/#", "homeassistant/status")
    garage = Client(broker, "garage_cam")
    garage.publish("edge/garage_cam/results", b"garage result")
    cloud = Client(broker, "cloud")
    cloud.publish("edge/garage_cam/cmd/ping", b"for garage")
    cloud.publish("edge/group/cams/model/offer", b"group offer")
    cloud.publish("edge/kitchen_cam/cmd/ping", b"marker")
    got = kitchen.received_until(b"marker")
    assert got == [("edge/group/cams/model/offer", b"group offer"), ("edge/kitchen_cam/cmd/ping", b"marker")]
    home_assistant = Client(broker, "homeassistant")
    home_assistant.publish("homeassistant/status", b"online")
    assert kitchen.received_until(b"online") == [("homeassistant/status", b"online")]
    for client in (kitchen, garage, cloud, home_assistant):
        client.close()


def test_the_broker_log_shows_the_denials(broker: ShippedBroker) -> None:
    kitchen = Client(broker, "kitchen_cam")
    kitchen.publish("edge/garage_cam/results", b"forged")
    kitchen.publish("edge/kitchen_cam/results", b"ok")
    kitchen.close()
    assert "Denied PUBLISH from test-kitchen_cam" in broker.log()


# ------------------------------------------------------------------------------------------- packaging


def test_a_wheel_built_from_the_checkout_carries_the_profiles_and_assets(tmp_path: Path) -> None:
    root = DEVICES.parent
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", ".cache", "build", "dist", "*.egg-info", "__pycache__", "demo-out", ".*_cache"
    )
    shutil.copytree(root, source, symlinks=True, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("edge_runtime-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {f"edge/_devices/{p.relative_to(DEVICES)}" for p in DEVICES.rglob("*") if p.is_file()}
    assert shipped <= names, sorted(shipped - names)
    assert {"edge/_devices/raspberry-pi-4.toml", "edge/_devices/mosquitto/acl"} <= names


# ------------------------------------------------------------------------------------------- the guide


def deploy_commands() -> list[list[str]]:
    """Every `edge ...` command in docs/deploy.md's shell blocks, continuation lines joined."""
    text = (DEVICES.parent / "docs" / "deploy.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("  #")[0], comments=True)
            if words[:3] == ["sudo", "-u", "edge"]:
                words = words[3:]
            if words and words[0] in ("edge", "/opt/edge/venv/bin/edge"):
                commands.append(words[1:])
    return commands


def test_every_edge_command_in_the_deploy_guide_parses() -> None:
    from edge.cli import build_parser

    commands = deploy_commands()
    assert {c[0] for c in commands} >= {"doctor", "config", "keygen", "convert", "push-model", "collect"}
    for argv in commands:
        build_parser().parse_args(argv)  # an unknown command or flag exits (SystemExit) and fails the test
