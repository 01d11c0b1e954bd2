"""Thousands of cuts (tests/faultproxy.py): the device's real MQTT side (outbox, connection, update agent)
and the real collector on a real mosquitto, each behind a flaky link; no pipeline, so the cuts come fast.

- four devices behind one proxy that cuts every connection every 30-150 ms (RST or FIN at random, so many cuts
  land in a handshake): over 2,000 cuts, every result stored once, seqs gapless;
- the collector behind its own flaky link (cuts, stalls without FIN, latency, jitter): all stored once;
- a model transfer through cuts, a capped bandwidth and a restart of the agent: the package arrives whole
  and no chunk that was already verified on disk is ever asked for again.

The figures each test prints (``-s``) are the ones in docs/reliability.md.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.connection import MqttConnection, parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.publisher import Publisher
from cloud_sync.update_agent import UpdateAgent
from cloud_sync.update_protocol import MIN_CHUNK_SIZE, ChunkRequest
from edge.signing import TrustStore
from edge.store import ModelStore
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.fakes import FakePipeline, record
from tests.cloud_sync.helpers import collector, wait_for
from tests.cloud_sync.update_support import PackageActivator, make_keys
from tests.edge.update_packages import make_package
from tests.faultproxy import ProxyFactory, fault_proxy  # noqa: F401 (the fixture)

CUTS = 2000
DEVICES = 4
RATE = 40.0  # results a second per device


def fast_device(url: str, state_dir: Path, device_id: str) -> DeviceSync:
    """A device session that reconnects within tens of milliseconds (the default waits a second)."""
    options = DeviceOptions(
        broker=parse_broker_url(url), device_id=device_id, state_dir=state_dir, telemetry_interval_s=0.5,
        reconnect_min=0.02, reconnect_max=0.2, keepalive=5,
    )
    return DeviceSync(options, FakePipeline()).start()


class Emitter(threading.Thread):
    """Emits results into a device session at a steady rate until stopped; counts them."""

    def __init__(self, sync: DeviceSync, rate: float) -> None:
        super().__init__(daemon=True)
        self.sync, self.rate = sync, rate
        self.emitted = 0
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            self.sync.sinks[0].emit(record(f"frame{self.emitted}.jpg"))
            self.emitted += 1
            delay = start + self.emitted / self.rate - time.monotonic()
            if delay > 0:
                self.done.wait(delay)

    def stop(self) -> int:
        self.done.set()
        self.join(10)
        return self.emitted


def per_device(db: Path) -> dict[str, tuple[int, int, int, int]]:
    """device -> (rows, distinct seqs, lowest seq, highest seq) of the stored results."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT device_id, count(*), count(DISTINCT seq), min(seq), max(seq) FROM results"
            " GROUP BY device_id"
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def all_stored(coll: Any, db: Path, expected: dict[str, int]) -> bool:
    seen = per_device(db)
    whole = all(seen.get(device) == (n, n, 1, n) for device, n in expected.items())
    return whole and not any(coll.check_gaps().values())


def test_thousands_of_cuts_lose_and_duplicate_nothing(
    mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto, seed=1414)
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    ids = [f"cam{i}" for i in range(DEVICES)]
    syncs = [fast_device(proxy.url, tmp_path / name, name) for name in ids]
    emitters = [Emitter(sync, RATE) for sync in syncs]
    try:
        wait_for(lambda: proxy.active() == DEVICES, what="every device connected")
        started = time.monotonic()
        proxy.random_cuts(0.03, 0.15, "mixed")
        for emitter in emitters:
            emitter.start()
        wait_for(lambda: proxy.stats.cuts >= CUTS, timeout=600, what=f"{CUTS} cuts")
        proxy.stop_random()
        cut_for = time.monotonic() - started
        expected = {name: emitter.stop() for name, emitter in zip(ids, emitters, strict=True)}
        try:
            wait_for(lambda: all_stored(coll, db, expected), timeout=120, what="every result stored")
        except AssertionError:
            raise AssertionError(f"expected {expected}, stored {per_device(db)}") from None
        connects = sum(sync.connection.connects for sync in syncs)
        print(
            f"\n{proxy.stats.cuts} cuts in {proxy.stats.cut_rounds} rounds over {cut_for:.0f} s, "
            f"{connects} connects by {DEVICES} devices; {sum(expected.values())} results stored once "
            f"({coll.stats.duplicates} redeliveries dropped, {coll.stats.repaired} repaired by replay)"
        )
        assert connects > CUTS / 2  # the cuts did land on live sessions, which came back each time
    finally:
        for emitter in emitters:
            emitter.done.set()
        for sync in syncs:
            sync.close(drain_timeout=0.5)
        coll.close()


def test_collector_behind_its_own_flaky_link_stores_everything_once(
    mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto, seed=7)
    proxy.set_latency(0.02, jitter=0.015)
    db = tmp_path / "fleet.sqlite"
    coll = collector(proxy.url, db)  # a persistent session: the broker keeps its messages while it is away
    sync = fast_device(mosquitto.url, tmp_path / "state", "porch")
    emitter = Emitter(sync, 100.0)
    try:
        wait_for(lambda: coll.connection.connects >= 1, what="collector connected")
        proxy.random_cuts(0.3, 1.2, "mixed")
        emitter.start()
        for _ in range(4):  # silent stalls: the link stays open and passes nothing
            time.sleep(2.5)
            proxy.stall(1.5)
        time.sleep(2.5)
        proxy.stop_random()
        expected = {"porch": emitter.stop()}
        try:
            wait_for(lambda: all_stored(coll, db, expected), timeout=120, what="every result stored")
        except AssertionError:
            raise AssertionError(f"expected {expected}, stored {per_device(db)}") from None
        print(
            f"\ncollector link: {proxy.stats.cuts} cuts, {proxy.stats.stalls} stalls, "
            f"{coll.connection.connects} connects; {expected['porch']} results stored once "
            f"({coll.stats.duplicates} redeliveries dropped, {coll.stats.repaired} repaired by replay)"
        )
        assert proxy.stats.cuts >= 5 and coll.connection.connects >= 4  # cut, and back each time
    finally:
        emitter.done.set()
        sync.close(drain_timeout=0.5)
        coll.close()


class RecordingTransport:
    """The agent's connection; records each chunk request with the chunks verified on disk as it left."""

    def __init__(self, connection: MqttConnection, staging_root: Path) -> None:
        self.connection = connection
        self.staging_root = staging_root
        self.requests: list[tuple[tuple[int, ...], frozenset[int]]] = []

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        self.connection.subscribe(*args, **kwargs)

    def add_connect_listener(self, listener: Any) -> None:
        self.connection.add_connect_listener(listener)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        if topic.endswith("/model/request"):
            request = ChunkRequest.from_bytes(payload)
            self.requests.append((request.chunks, self.on_disk()))
        return self.connection.publish(topic, payload, qos=qos, retain=retain)

    def on_disk(self) -> frozenset[int]:
        return frozenset(int(p.stem) for p in self.staging_root.glob("*/*.chunk"))


@pytest.fixture
def agents() -> Iterator[list[tuple[UpdateAgent, MqttConnection]]]:
    made: list[tuple[UpdateAgent, MqttConnection]] = []
    yield made
    for agent, connection in made:
        agent.close()
        connection.close()


def test_model_transfer_through_cuts_never_fetches_a_verified_chunk_again(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path,  # noqa: F811
    agents: list[tuple[UpdateAgent, MqttConnection]],
) -> None:
    proxy = fault_proxy(mosquitto, seed=3)
    proxy.set_bandwidth(60_000)  # bytes/s each way: the transfer spans many cuts
    keys = make_keys(tmp_path / "keys")
    package = keys.sign(make_package(assets.model("digits_float32"), 5))
    state = tmp_path / "state"
    activator = PackageActivator()
    transports: list[RecordingTransport] = []

    def start_agent() -> UpdateAgent:
        connection = MqttConnection(
            parse_broker_url(proxy.url), "edge-kitchen", status_topic="edge/kitchen/status",
            reconnect_min=0.05, reconnect_max=0.5,
        )
        transport = RecordingTransport(connection, state / "models" / "staging")
        agent = UpdateAgent(
            transport, ModelStore(state), TrustStore.from_files([keys.pub]), activator,  # type: ignore[arg-type]
            "kitchen", retry_seconds=1.0,
        ).start()
        connection.start(require=False)
        agents.append((agent, connection))
        transports.append(transport)
        return agent

    publisher_connection = MqttConnection(parse_broker_url(mosquitto.url), "publisher", reconnect_max=1)
    publisher_connection.start()
    publisher = Publisher(publisher_connection, package, chunk_size=MIN_CHUNK_SIZE).start()
    chunks = publisher.offer.chunks
    try:
        start_agent()
        proxy.random_cuts(0.4, 1.2, "mixed")
        publisher.offer_devices(["kitchen"])
        # halfway through, the device restarts: the new agent resumes from what is staged on disk
        wait_for(lambda: len(transports[0].on_disk()) >= chunks // 2, timeout=120, what="half the chunks")
        agent, connection = agents.pop()
        agent.close()
        connection.close()
        received_before_restart = agent.chunks_received
        staged_at_restart = transports[0].on_disk()
        start_agent()
        assert publisher.wait(["kitchen"], time.monotonic() + 180), publisher.rollout.devices["kitchen"]
        proxy.stop_random()
    finally:
        publisher.close()
        publisher_connection.close()
    assert [entry.sha256 for entry in activator.activated] == [publisher.offer.sha256]
    asked_again = [
        (chunk, i) for i, (asked, verified) in enumerate(r for t in transports for r in t.requests)
        for chunk in asked if chunk in verified
    ]
    assert not asked_again, f"verified chunks asked for again (chunk, request): {asked_again[:10]}"
    first_after_restart = transports[1].requests[0][0]
    assert not set(first_after_restart) & staged_at_restart and first_after_restart
    asked = sum(len(chunks_asked) for t in transports for chunks_asked, _ in t.requests)
    received = sum(agent.chunks_received for agent, _ in agents) + received_before_restart
    print(
        f"\nmodel transfer: {chunks} chunks of {MIN_CHUNK_SIZE} B through {proxy.stats.cuts} cuts and a "
        f"restart (with {len(staged_at_restart)} staged); {asked} chunk asks ({asked - chunks} repeated "
        f"after cuts, for chunks not yet verified), {received} chunks received, none asked once verified"
    )
    assert proxy.stats.cuts >= 5
