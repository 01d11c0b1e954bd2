"""Device outbox to collector store across broker crashes: every result exactly once, gaps repaired."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from cloud_sync.outbox import OutboxPolicy
from tests.broker import Broker
from tests.cloud_sync.fakes import record
from tests.cloud_sync.helpers import Watcher, collector, device, wait_for


def stored(db: Path) -> tuple[int, int, list[int]]:
    with closing(sqlite3.connect(db)) as conn:
        count = conn.execute("SELECT count(*) FROM results").fetchone()[0]
        ids = conn.execute("SELECT count(DISTINCT id) FROM results").fetchone()[0]
        seqs = [r[0] for r in conn.execute("SELECT seq FROM results ORDER BY seq")]
    return count, ids, seqs


def complete(coll, db: Path, n: int) -> bool:  # type: ignore[no-untyped-def]
    count, _, _ = stored(db)
    return count == n and not any(coll.check_gaps().values())


def test_2000_results_with_the_broker_killed_twice(mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    coll = collector(mosquitto.url, db)
    sync = device(mosquitto.url, tmp_path / "state")
    emitted = 0

    def emit_all() -> None:
        nonlocal emitted
        for i in range(2000):
            sync.sinks[0].emit(record(f"frame{i}.jpg"))
            emitted += 1
            if i % 5 == 0:
                time.sleep(0.01)

    producer = threading.Thread(target=emit_all)
    producer.start()
    for kill in (1, 2):
        wait_for(lambda kill=kill: stored(db)[0] >= 300 * kill, what="results flowing")
        at = emitted
        mosquitto.kill()
        time.sleep(0.3)
        mosquitto.start()
        wait_for(lambda kill=kill: sync.connection.connects > kill and coll.connection.connects > kill,
                 what="both reconnected")
        assert at < 2000, "the broker must die while results are being produced"
    producer.join(timeout=60)
    wait_for(lambda: complete(coll, db, 2000), timeout=90, what="2000 results collected without gaps")
    count, ids, seqs = stored(db)
    assert (count, ids) == (2000, 2000)
    assert seqs == list(range(1, 2001))
    report = coll.report()
    assert report["devices"]["dev1"][sync.outbox.stream]["missing"] == []
    assert report["invalid"] == 0
    print("collector counters:", {k: v for k, v in report.items() if k != "devices"})
    sync.close()
    coll.close()
    coll.store.close()


def test_a_late_collector_gets_the_history_by_replay(mosquitto: Broker, tmp_path: Path) -> None:
    sync = device(mosquitto.url, tmp_path / "state")
    for i in range(30):
        sync.sinks[0].emit(record(i))
    wait_for(lambda: sync.outbox.stats().retained >= 30, what="results acknowledged")
    db = tmp_path / "late.sqlite"
    coll = collector(mosquitto.url, db)  # never saw seq 1..30; telemetry tells it they exist
    wait_for(lambda: complete(coll, db, 30), what="history replayed")
    assert coll.stats.replays_requested >= 1
    sync.sinks[0].emit(record("new"))
    wait_for(lambda: complete(coll, db, 31), what="live result after the replay")
    sync.close()
    coll.close()
    coll.store.close()


def test_results_the_device_no_longer_holds_are_reported_lost(mosquitto: Broker, tmp_path: Path) -> None:
    policy = OutboxPolicy(retain_max=5, housekeeping_s=0.05)
    sync = device(mosquitto.url, tmp_path / "state", outbox=policy)
    for i in range(20):
        sync.sinks[0].emit(record(i))
    wait_for(lambda: sync.outbox.stats().acked >= 20 and sync.outbox.stats().retained <= 5)
    db = tmp_path / "c.sqlite"
    coll = collector(mosquitto.url, db)
    wait_for(lambda: stored(db)[0] == 5, what="the 5 retained results replayed")
    stream = sync.outbox.stream
    wait_for(lambda: coll.report()["devices"]["dev1"][stream]["lost"], what="lost range recorded")
    report = coll.report()["devices"]["dev1"][stream]
    assert report["lost"] == [[1, 15]] and report["missing"] == [] and report["stored"] == 5
    requests = coll.stats.replays_requested
    time.sleep(1.0)  # lost ranges are not requested again
    assert coll.stats.replays_requested == requests
    sync.close()
    coll.close()
    coll.store.close()


def test_bad_payloads_at_the_collector_are_counted_and_dropped(mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    coll = collector(mosquitto.url, db, repair=False)
    good = {"schema": "edge.result/1", "id": "a" * 32, "device": "dev9", "stream": "s1", "seq": 1,
            "ts": 1.0, "model": {"name": "m", "version": 1}}
    bad = [
        ("edge/dev9/results", b"\xff\xfe not json"),
        ("edge/dev9/results", b"[]"),
        ("edge/dev9/results", b"x" * 300_000),
        ("edge/dev9/results", json.dumps({**good, "schema": "other/9"}).encode()),
        ("edge/dev9/results", json.dumps({**good, "seq": "one"}).encode()),
        ("edge/dev9/results", json.dumps({**good, "id": ""}).encode()),
        ("edge/dev9/results", json.dumps({**good, "device": "dev8"}).encode()),  # claims another device
        ("edge/dev9/telemetry", b'{"schema": "edge.telemetry/1", "seq": -4}'),
        ("edge/dev9/cmd/replay/reply", b'{"ok": true, "missing": "all"}'),
    ]
    pub = Watcher(mosquitto.url, client_id="pub")
    for topic, payload in bad:
        pub.conn.publish(topic, payload).wait(5)
    pub.conn.publish("edge/dev9/results", json.dumps(good).encode()).wait(5)
    pub.conn.publish("edge/dev9/results", json.dumps(good).encode()).wait(5)  # a duplicate
    wait_for(lambda: coll.stats.stored == 1 and coll.stats.duplicates == 1, what="good result stored")
    wait_for(lambda: coll.stats.invalid == len(bad), what="bad payloads counted")
    assert set(coll.stats.invalid_by_topic) == {t for t, _ in bad}
    assert stored(db)[0] == 1
    pub.close()
    coll.close()
    coll.store.close()


def test_shared_subscription_splits_the_load(mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    first = collector(mosquitto.url, db, "c1", share="fleet")
    second = collector(mosquitto.url, db, "c2", share="fleet")
    sync = device(mosquitto.url, tmp_path / "state")
    for i in range(200):
        sync.sinks[0].emit(record(i))
    wait_for(lambda: complete(first, db, 200), what="200 results in the shared store")
    assert first.stats.received > 0 and second.stats.received > 0
    assert first.stats.stored + second.stats.stored == 200
    sync.close()
    first.close()
    first.store.close()
    second.close()
    second.store.close()
