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


def envelope(kind: str, seq: int, device: str = "cam7", stream: str = "s1", **fields: object) -> dict:
    """A well-formed result or event as a device publishes it (docs/mqtt.md)."""
    body: dict = {
        "schema": f"edge.{kind}/1", "id": f"{kind}{seq:06d}{device}", "device": device, "stream": stream,
        "seq": seq, "ts": 1_700_000_000.0 + seq, "model": {"name": "ssd", "version": 4},
    }
    if kind == "event":
        body.update(type="new", event_id=f"front-3-{seq}", source="front", label="person", track_id=3,
                    zones=["drive"], entered_zones=["drive"], start=1_700_000_000.0, end=None, score=0.91,
                    box=[0.1, 0.2, 0.4, 0.9], snapshot=True)
    body.update(fields)
    return body


def test_events_and_results_are_one_seq_stream(mosquitto: Broker, tmp_path: Path) -> None:
    """A missing event is a gap in the results' sequence: asked for again, counted repaired once stored."""
    db = tmp_path / "events.sqlite"
    coll = collector(mosquitto.url, db)
    pub = Watcher(mosquitto.url, "edge/cam7/cmd/replay", client_id="cam7")
    for kind, seq in (("result", 1), ("event", 2), ("result", 4), ("event", 5)):  # event 3 is missing
        topic = "edge/cam7/" + ("events" if kind == "event" else "results")
        pub.conn.publish(topic, json.dumps(envelope(kind, seq)).encode()).wait(5)
    wait_for(lambda: coll.check_gaps().get(("cam7", "s1")) == [3], what="seq 3 reported missing")
    request = pub.next_json("cmd/replay")  # the collector asks the device for it
    assert (request["from"], request["to"], request["stream"]) == (3, 3, "s1")
    pub.conn.publish("edge/cam7/events", json.dumps(envelope("event", 3, type="end")).encode()).wait(5)
    wait_for(lambda: coll.check_gaps().get(("cam7", "s1")) == [] and coll.stats.repaired == 1,
             what="the replayed event fills the gap")
    assert coll.stats.repaired_by_device == {"cam7": 1} and coll.stats.events == 3
    with closing(sqlite3.connect(db)) as conn:
        kinds = conn.execute("SELECT seq, kind FROM results ORDER BY seq").fetchall()
    assert kinds == [(1, "result"), (2, "event"), (3, "event"), (4, "result"), (5, "event")]
    events = coll.store.recent("cam7", "event", 10)
    assert [e["seq"] for e in events] == [5, 3, 2]  # newest first, results left out
    assert events[1]["type"] == "end" and events[0]["label"] == "person"
    bad = envelope("event", 6, type="begin")
    pub.conn.publish("edge/cam7/events", json.dumps(bad).encode()).wait(5)
    wait_for(lambda: coll.stats.invalid == 1, what="a bad event counted")
    assert coll.stats.invalid_by_device == {"cam7": 1}
    pub.close()
    coll.close()
    coll.store.close()


def test_snapshots_telemetry_and_update_states_are_stored(mosquitto: Broker, tmp_path: Path) -> None:
    import io

    from PIL import Image
    from skimage import data

    from cloud_sync.update_protocol import Status

    db = tmp_path / "snap.sqlite"
    coll = collector(mosquitto.url, db)
    pub = Watcher(mosquitto.url, client_id="cam7")
    jpeg = io.BytesIO()
    Image.fromarray(data.astronaut()).save(jpeg, "JPEG")
    pub.conn.publish("edge/cam7/front/person/snapshot", jpeg.getvalue(), retain=True).wait(5)
    pub.conn.publish("edge/cam7/front/snapshot", jpeg.getvalue(), retain=True).wait(5)
    pub.conn.publish("edge/cam7/front/car/snapshot", b"not a jpeg", retain=True).wait(5)
    pub.conn.publish("edge/cam7/cmd/snapshot", b"{}").wait(5)  # the request to the device: not a snapshot
    now = round(time.time(), 3)
    telemetry = {"schema": "edge.telemetry/1", "device": "cam7", "stream": "s1", "seq": 0, "ts": now,
                 "fps": 7.5, "latency_ms": {"p50": 21.0, "p95": 40.0}, "outbox": {"pending": 3}}
    pub.conn.publish("edge/cam7/telemetry", json.dumps(telemetry).encode()).wait(5)
    for state, version, progress in (("downloading", 2, 0.0), ("downloading", 2, 0.5), ("active", 2, 1.0)):
        status = Status("cam7", state, "ssd", version, progress,
                        active={"name": "ssd", "version": 2} if state == "active" else None)
        pub.conn.publish("edge/cam7/model/status", status.to_bytes(), retain=True).wait(5)
    wait_for(lambda: coll.store.snapshot_index("cam7") and coll.store.model_history("cam7")
             and len(coll.store.model_history("cam7")) == 2 and coll.store.telemetry_series("cam7", 0),
             what="snapshot, telemetry and update states stored")
    assert {(s, lb) for s, lb, _ in coll.store.snapshot_index("cam7")} == {("front", "person"), ("front", "")}
    assert coll.store.snapshot("cam7", "front", "person") == jpeg.getvalue()
    assert coll.store.telemetry_series("cam7", 0) == [(now, 7.5, 21.0, 40.0, 3)]
    # the half-way progress report is not history: one row per state change
    history = [row[1:4] for row in coll.store.model_history("cam7")]
    assert history == [("active", "ssd", 2), ("downloading", "ssd", 2)]
    assert coll.stats.invalid == 1 and coll.stats.snapshots == 2
    coll.close()
    coll.store.close()
    again = collector(mosquitto.url, db, "collector-again")  # the retained status arrives again: no new row
    wait_for(lambda: again.stats.snapshots == 2, what="the retained messages again")
    time.sleep(0.5)
    assert [row[1:4] for row in again.store.model_history("cam7")] == history
    pub.close()
    again.close()
    again.store.close()
