"""A flaky network between the device and the broker (tests/faultproxy.py): real ``edge run`` processes, a
real model on the digits images, a real mosquitto and a real collector (connected straight to the broker).

- the first MQTT handshakes cut (RST, FIN): ``edge run`` warns once, keeps running, delivers every result;
- the reconnect right after a first pushed model activates cut: the device stays up and serves;
- a device waiting for its first model is visible: retained ``online`` status, ``offline`` by its will;
- random cuts every 0.5-2 s under a stream of 300 results: 0 lost, 0 duplicated in the store;
- a half-open link (a stall without FIN) is detected within 1.5 keep-alives and the device reconnects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cloud_sync.connection import MqttConnection, parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.errors import BrokerError
from cloud_sync.outbox import read_stats
from tests.assets import Assets
from tests.broker import Broker, BrokerFactory
from tests.cloud_sync.certs import CertAuthority
from tests.cloud_sync.fakes import FakePipeline, record
from tests.cloud_sync.helpers import Watcher, collector, device, wait_for
from tests.cloud_sync.test_collector import complete, stored
from tests.cloud_sync.test_tls_acl import tls_broker  # noqa: F401 (the fixture)
from tests.cloud_sync.test_update_edge_run import EdgeRun, push
from tests.cloud_sync.update_support import make_keys
from tests.edge.update_packages import make_package
from tests.faultproxy import FaultProxy, ProxyFactory, fault_proxy  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]
RETRYING = "retrying in the background"


class WatchRun:
    """``edge run MODEL --watch DIR --mqtt URL`` as a child process; stderr kept in a file."""

    def __init__(self, model: Path, url: str, state: Path, inbox: Path, log: Path, device_id: str,
                 extra: tuple[str, ...] = ()) -> None:
        inbox.mkdir(parents=True, exist_ok=True)
        self.state, self.inbox, self.log = state, inbox, log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [*EDGE, "run", str(model), "--watch", str(inbox), "--mqtt", url, "--device-id", device_id,
                 "--state-dir", str(state), "--telemetry-interval", "0.5", "--top-k", "1", *extra],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            )

    def outbox_pending(self) -> int:
        return read_stats(self.state).pending if (self.state / "outbox.sqlite").exists() else 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def drop(images: list[Path], inbox: Path, count: int, rate: float = 0.0, prefix: str = "") -> None:
    """Copy ``count`` images (cycling through ``images``) into the watch folder, ``rate`` per second."""
    for i in range(count):
        image = images[i % len(images)]
        tmp = inbox.parent / f".{prefix}{i:04d}_{image.name}"
        shutil.copy(image, tmp)
        tmp.rename(inbox / f"{prefix}{i:04d}_{image.name}")  # whole files only
        if rate:
            time.sleep(1 / rate)


def statuses(url: str, device_id: str, client_id: str) -> Watcher:
    return Watcher(url, f"edge/{device_id}/status", client_id=client_id)


def next_status(watch: Watcher, state: str, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        body = watch.next_json("/status", timeout=max(0.1, deadline - time.monotonic()))
        if body["state"] == state:
            return body


def test_first_handshakes_cut_edge_run_warns_once_and_delivers_everything(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto)
    proxy.cut_handshakes(3, ["rst", "fin", "rst"])  # each CONNECT reaches the broker, no CONNACK comes back
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    run = WatchRun(assets.model("digits_int8"), proxy.url, tmp_path / "state", tmp_path / "inbox",
                   tmp_path / "run.log", "flaky-boot")
    try:
        images = sorted(assets.digit_images.iterdir())
        # running (its first telemetry is in the outbox): the folder is being watched now
        wait_for(lambda: not run.alive() or run.outbox_pending() >= 1, timeout=60, what="edge run started")
        assert run.alive(), run.stderr()
        drop(images, run.inbox, len(images))  # results are made while the broker is out of reach
        wait_for(lambda: not run.alive() or proxy.stats.handshake_cuts == 3, timeout=30, what="3 cuts")
        assert run.alive(), run.stderr()
        wait_for(lambda: complete(coll, db, len(images)), timeout=60, what="every result collected")
        assert stored(db) == (len(images), len(images), list(range(1, len(images) + 1)))
        assert run.alive(), run.stderr()
        assert proxy.stats.handshake_cuts == 3 and proxy.stats.connections == 4
    finally:
        code = run.stop()
        coll.close()
        coll.store.close()
    log = run.stderr()
    warnings = [line for line in log.splitlines() if RETRYING in line]
    assert len(warnings) == 1, log  # one warning, not one per attempt
    assert "closed the connection before accepting it" in warnings[0] and "WARNING" in warnings[0]
    assert "error:" not in log, log
    assert code == 0, log


def test_cut_during_the_reconnect_after_the_first_model_activates(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto)
    keys = make_keys(tmp_path / "keys")
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    inbox.mkdir()
    package = keys.sign(make_package(assets.model("digits_int8"), 1))
    watch = statuses(mosquitto.url, "kitchen", "status-watch")
    run = EdgeRun(proxy.url, state, inbox, keys.pub, tmp_path / "run.log")
    try:
        waiting = next_status(watch, "online", timeout=60)
        assert waiting["phase"] == "waiting" and waiting["model"] is None
        before = proxy.stats.connections
        proxy.cut_handshakes(2, ["rst", "fin"])  # the next connection is the one edge run opens to serve
        push(mosquitto.url, package)  # the publisher talks to the broker directly
        serving = wait_for(lambda: _status_with(watch, "serving"), timeout=60, what="online and serving")
        assert serving["state"] == "online"
        assert run.proc.poll() is None, (tmp_path / "run.log").read_text()
        assert proxy.stats.handshake_cuts == 2 and proxy.stats.connections >= before + 3
        image = sorted(assets.digit_images.glob("*.png"))[0]
        shutil.copy(image, inbox / image.name)
        result = run.result(timeout=30)
        assert result["model"] == {"name": "digits", "version": 1} and result["error"] is None
    finally:
        run.kill(signal.SIGTERM)
        watch.close()
    log = (tmp_path / "run.log").read_text()
    assert "error:" not in log, log


def _status_with(watch: Watcher, phase: str) -> dict | None:  # type: ignore[type-arg]
    for message in watch.drain():
        body = json.loads(message.payload)
        if body.get("phase") == phase:
            return body  # type: ignore[no-any-return]
    return None


def test_device_waiting_for_its_first_model_is_online_and_keeps_its_will(
    mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto)
    proxy.cut_handshakes(1)  # and its first handshake was cut
    keys = make_keys(tmp_path / "keys")
    (tmp_path / "inbox").mkdir()
    run = EdgeRun(proxy.url, tmp_path / "state", tmp_path / "inbox", keys.pub, tmp_path / "run.log")
    try:
        wait_for(lambda: proxy.stats.connections >= 2 and proxy.active() == 1, timeout=60, what="connected")
        # a fleet tool that subscribes later sees the retained status at once; until the device's new
        # session has published, that is the cut session's last will (offline): wait for the online one
        status = wait_for(lambda: _retained_online(mosquitto.url), timeout=30, what="retained online status")
        assert status["phase"] == "waiting" and status["model"] is None
        assert run.proc.poll() is None
        watch = statuses(mosquitto.url, "kitchen", "will-watch")
        next_status(watch, "online")
        run.kill(signal.SIGKILL)  # no goodbye: the broker publishes the last will
        assert next_status(watch, "offline", timeout=30)["state"] == "offline"
        watch.close()
        assert wait_for(lambda: _retained_status(mosquitto.url), what="retained")["state"] == "offline"
    finally:
        run.kill()


def _retained_online(url: str) -> dict | None:  # type: ignore[type-arg]
    status = _retained_status(url)
    return status if status is not None and status["state"] == "online" else None


def _retained_status(url: str) -> dict | None:  # type: ignore[type-arg]
    watch = statuses(url, "kitchen", f"probe-{time.monotonic_ns()}")
    try:
        message = watch.next("/status", timeout=2)
    except Exception:
        return None
    finally:
        watch.close()
    return json.loads(message.payload) if message.retain else None  # type: ignore[no-any-return]


def test_random_cuts_lose_and_duplicate_nothing(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    total = 300
    proxy = fault_proxy(mosquitto, seed=14)
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    run = WatchRun(assets.model("digits_int8"), proxy.url, tmp_path / "state", tmp_path / "inbox",
                   tmp_path / "run.log", "flaky-wifi")
    try:
        # its first telemetry reached the collector: running, and the folder is being watched now
        wait_for(lambda: coll.stats.telemetry >= 1, timeout=60, what="edge run started")
        proxy.random_cuts(0.5, 2.0, "mixed")
        drop(sorted(assets.digit_images.iterdir()), run.inbox, total, rate=25)  # about 12 s of cuts
        proxy.stop_random()
        assert run.alive(), run.stderr()
        try:
            wait_for(lambda: complete(coll, db, total), timeout=60, what=f"all {total} results collected")
        except AssertionError:
            count, ids, seqs = stored(db)
            raise AssertionError(
                f"stored {count}/{total}, missing {sorted(set(range(1, total + 1)) - set(seqs))[:20]}, "
                f"outbox {read_stats(run.state)}, proxy {proxy.stats}, active {proxy.active()}, "
                f"collector {coll.stats}\n{run.stderr()[-3000:]}"
            ) from None
        count, ids, seqs = stored(db)
        assert (count, ids) == (total, total) and seqs == list(range(1, total + 1))  # 0 lost, 0 duplicated
        assert proxy.stats.cut_rounds >= 5 and proxy.stats.cuts >= 3, proxy.stats
        print(f"\nrandom cuts: {proxy.stats.cut_rounds} rounds, {proxy.stats.cuts} connections cut, "
              f"{proxy.stats.connections} connections; stored {count}, duplicates ignored by the collector "
              f"{coll.stats.duplicates}")
    finally:
        run.stop()
        coll.close()
        coll.store.close()
    assert "error:" not in run.stderr(), run.stderr()


def test_half_open_link_is_detected_within_one_and_a_half_keepalives(
    mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    keepalive = 4  # the device session itself (edge run --keepalive: the test after the next)
    proxy = fault_proxy(mosquitto)
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    sync = device(proxy.url, tmp_path / "state", "half-open", keepalive=keepalive, telemetry_interval_s=0.5)
    connection: MqttConnection = sync.connection
    assert connection.wait_connected(10)
    emitted = 0
    stop = threading.Event()

    def emit() -> None:
        nonlocal emitted
        while not stop.is_set():
            sync.sinks[0].emit(record(f"frame{emitted}.jpg"))
            emitted += 1
            time.sleep(0.05)

    emitter = threading.Thread(target=emit, daemon=True)
    emitter.start()
    try:
        time.sleep(1.0)
        stall = 2.5 * keepalive  # longer than the detection: the link is black-holed, no FIN, no RST
        proxy.stall(stall)
        stalled_at = time.monotonic()
        wait_for(lambda: not connection.connected, timeout=3 * keepalive, what="half-open detected")
        detected = time.monotonic() - stalled_at
        assert detected <= 1.5 * keepalive + 0.5, detected
        assert connection.half_open_closes == 1
        connects = connection.connects
        wait_for(lambda: connection.connects > connects, timeout=stall + 3 * keepalive, what="reconnected")
        reconnected = time.monotonic() - stalled_at
        time.sleep(1.0)
        stop.set()
        emitter.join(5)
        wait_for(lambda: complete(coll, db, emitted), timeout=60, what="every result collected")
        count, ids, seqs = stored(db)
        assert (count, ids) == (emitted, emitted) and seqs == list(range(1, emitted + 1))
        print(f"\nhalf-open: keep-alive {keepalive}s, detected after {detected:.2f}s "
              f"({detected / keepalive:.2f}x), reconnected {reconnected:.2f}s after the stall began "
              f"(stall {stall:g}s); {emitted} results, all stored once")
    finally:
        stop.set()
        sync.close(drain_timeout=1)
        coll.close()
        coll.store.close()


def test_edge_run_keepalive_flag_detects_a_half_open_link_and_delivers_everything(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    """``edge run --keepalive 2`` behind a link that goes silent without FIN: its watchdog closes the link
    after 1.5 keep-alives of silence (never sooner), reconnects once the link passes again, and every result
    made meanwhile reaches the collector once."""
    keepalive, total = 2, 40
    proxy = fault_proxy(mosquitto)
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    run = WatchRun(assets.model("digits_int8"), proxy.url, tmp_path / "state", tmp_path / "inbox",
                   tmp_path / "run.log", "half-open-run", extra=("--keepalive", str(keepalive)))
    try:
        wait_for(lambda: coll.stats.telemetry >= 1, timeout=60, what="edge run started")
        stall = 3.0 * keepalive
        proxy.stall(stall)
        stalled_at = time.monotonic()
        drop(sorted(assets.digit_images.iterdir()), run.inbox, total, rate=10)  # during the stall
        wait_for(lambda: "half-open" in run.stderr(), timeout=4 * keepalive, what="half-open detected")
        detected = time.monotonic() - stalled_at
        wait_for(lambda: complete(coll, db, total), timeout=60, what=f"all {total} results collected")
        count, ids, seqs = stored(db)
        assert (count, ids) == (total, total) and seqs == list(range(1, total + 1))
        assert run.alive(), run.stderr()
    finally:
        run.stop()
        coll.close()
        coll.store.close()
    lines = [line for line in run.stderr().splitlines() if "half-open" in line]
    assert len(lines) == 1, run.stderr()  # one close for one silence
    assert f"(keep-alive {keepalive}s)" in lines[0]  # the flag reached the connection
    silent = float(lines[0].split(" for ")[1].split("s ")[0])
    assert silent >= 1.5 * keepalive, lines[0]  # never closed before 1.5 keep-alives of silence
    print(f"\nedge run --keepalive {keepalive}: silence measured {silent:.2f}s ({silent / keepalive:.2f}x), "
          f"noticed by the test {detected:.2f}s after the stall began; {total} results stored once")


def test_tls_handshakes_cut_are_retried_not_fatal(
    tls_broker: tuple[Broker, CertAuthority], fault_proxy: ProxyFactory, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resets and closes during the TLS handshake (the ServerHello never arrives) are network flaps."""
    broker, ca = tls_broker
    proxy = fault_proxy(broker)
    proxy.cut_handshakes(2, ["rst", "fin"])
    cert = ca.issue("tls-dev", server=False)
    options = DeviceOptions(
        broker=parse_broker_url(proxy.url, ca=str(ca.ca_file), cert=str(cert.cert), key=str(cert.key)),
        device_id="tls-dev", state_dir=tmp_path / "state", telemetry_interval_s=0, reconnect_max=2,
    )
    with caplog.at_level(logging.WARNING, logger="cloud_sync.connection"):
        sync = DeviceSync(options, FakePipeline()).start()  # does not raise
        try:
            assert sync.connection.wait_connected(15)
            assert proxy.stats.handshake_cuts == 2
            sync.emit(record("tls.jpg"))
            wait_for(lambda: sync.outbox.stats().pending == 0, timeout=15, what="the result acknowledged")
        finally:
            sync.close(drain_timeout=1)
    warnings = [r.getMessage() for r in caplog.records if RETRYING in r.getMessage()]
    assert len(warnings) == 1 and "TLS handshake" in warnings[0] and "was cut" in warnings[0], warnings


def test_tls_session_closed_after_the_handshake_gets_a_second_attempt(
    tls_broker: tuple[Broker, CertAuthority], fault_proxy: ProxyFactory, tmp_path: Path,  # noqa: F811
) -> None:
    """A FIN right after the TLS handshake, before the CONNACK: a network flap, never the certificate error
    (a TLS close without an alert, what mosquitto does to a client without the certificate it requires, is
    decided by a second attempt)."""
    broker, ca = tls_broker
    proxy = fault_proxy(broker)
    cert = ca.issue("tls-dev2", server=False)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.load_cert_chain(str(cert.cert), str(cert.key))
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=proxy.host):
        flight = proxy.stats.bytes_down  # the server's handshake flight (ServerHello ... Finished)
    proxy.cut_handshakes(1, "fin", server_bytes=flight)
    options = DeviceOptions(
        broker=parse_broker_url(proxy.url, ca=str(ca.ca_file), cert=str(cert.cert), key=str(cert.key)),
        device_id="tls-dev2", state_dir=tmp_path / "state", telemetry_interval_s=0, reconnect_max=2,
    )
    sync = DeviceSync(options, FakePipeline()).start()  # does not raise
    try:
        assert sync.connection.wait_connected(15)
        assert proxy.stats.handshake_cuts == 1
    finally:
        sync.close(drain_timeout=1)


def test_refused_credentials_stay_an_error_without_require(
    mosquitto_factory: BrokerFactory, fault_proxy: ProxyFactory, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a network flap: a CONNACK refusal raises at start even with require=False (edge run exits 2);
    after a cut first handshake it is logged as an error at the next attempts."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dev", "secret"], check=True)
    broker = mosquitto_factory(anonymous=False, global_extra=[f"password_file {passwd}"])
    proxy = fault_proxy(broker)
    wrong = parse_broker_url(f"mqtt://dev:wrong@127.0.0.1:{proxy.port}")
    with pytest.raises(BrokerError, match="refused the connection: (Bad user name or password|Not auth)"):
        MqttConnection(wrong, "wrong-pw").start(require=False)
    proxy.cut_handshakes(1)
    conn = MqttConnection(wrong, "wrong-pw-after-cut", reconnect_max=1)
    with caplog.at_level(logging.WARNING, logger="cloud_sync.connection"):
        conn.start(require=False)  # the cut is a warning
        try:
            wait_for(lambda: any(r.levelno == logging.ERROR and "refused the connection" in r.getMessage()
                                 for r in caplog.records), timeout=10, what="the refusal logged as an error")
        finally:
            conn.close()
    assert not conn.connected
