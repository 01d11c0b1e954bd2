"""The collector's stores: SQLite and a real PostgreSQL (127.0.0.1:5432, database ``test``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cloud_sync.store import StoreError, _SqlStore, missing_seqs, open_store
from tests.broker import Broker
from tests.cloud_sync.fakes import record
from tests.cloud_sync.helpers import device, wait_for

ROOT = Path(__file__).resolve().parents[2]

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards."""
    schema = f"edge_collect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def exercise(store: _SqlStore) -> None:
    rows = [(f"id{i}", "d1", "s1", i, float(i), f'{{"seq": {i}}}') for i in (1, 2, 4)]
    assert store.insert(rows) == 3
    assert store.insert(rows[:2] + [("id5", "d1", "s1", 5, 5.0, '{"seq": 5}')]) == 1  # two duplicates
    assert store.streams() == [("d1", "s1")]
    assert store.seqs_above("d1", "s1", 1) == [2, 4, 5]
    assert store.summary("d1", "s1") == (4, 5)
    store.add_lost("d1", "s1", 3, 3)
    assert store.lost("d1", "s1") == [(3, 3)]
    assert missing_seqs(store.seqs_above("d1", "s1", 0), store.lost("d1", "s1"), 0, 7) == [6, 7]
    assert store.count() == 4


def test_sqlite_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "r.sqlite"))
    exercise(store)
    store.close()


def test_postgres_store(pg_url: str) -> None:
    store = open_store(pg_url)
    assert store.name == "PostgreSQL"
    exercise(store)
    store.close()


def test_collector_into_postgres(mosquitto: Broker, tmp_path: Path, pg_url: str) -> None:
    from cloud_sync.collector import Collector
    from cloud_sync.connection import MqttConnection, parse_broker_url

    conn = MqttConnection(parse_broker_url(mosquitto.url), "pg-collector", reconnect_max=1)
    coll = Collector(conn, open_store(pg_url), check_interval_s=0.3, replay_retry_s=0.5).start()
    sync = device(mosquitto.url, tmp_path / "state")
    for i in range(50):
        sync.sinks[0].emit(record(i))
    wait_for(lambda: coll.store.count() == 50 and not any(coll.check_gaps().values()), what="50 stored")
    with psycopg.connect(pg_url) as pg:
        payload = pg.execute("SELECT payload FROM results WHERE seq = 7").fetchone()[0]
    assert payload["seq"] == 7 and payload["device"] == "dev1"  # stored as JSONB
    sync.close()
    coll.close()
    coll.store.close()


def test_bad_store_targets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="127.0.0.1:1/x"):
        open_store("postgresql://nobody@127.0.0.1:1/x")
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="check --db"):
        open_store(str(blocker / "r.sqlite"))


OLD_SCHEMA = """
CREATE TABLE results (
    id TEXT PRIMARY KEY, device_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX results_device_seq ON results(device_id, stream, seq);
CREATE TABLE lost (
    device_id TEXT NOT NULL, stream TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (device_id, stream, first)
);
INSERT INTO results VALUES ('old1', 'd1', 's1', 1, 1.0, '{"seq": 1}');
"""


def dashboard_reads(store: _SqlStore) -> None:
    """Results and events in one table, and the dashboard's reads over them."""
    assert store.insert([("ev2", "d1", "s1", 2, 2.0, '{"seq": 2, "label": "person"}', "event"),
                         ("r3", "d1", "s1", 3, 3.0, '{"seq": 3}')]) == 2
    assert store.seqs_above("d1", "s1", 0) == [1, 2, 3]  # one sequence for both kinds
    assert [r["seq"] for r in store.recent("d1", "result")] == [3, 1]
    assert store.recent("d1", "event") == [{"seq": 2, "label": "person"}]
    counts = store.device_counts().devices
    assert counts["d1"]["results"] == 2 and counts["d1"]["events"] == 1 and counts["d1"]["last_ts"] == 3.0
    store.add_lost("d1", "s1", 7, 9)
    assert store.device_counts().devices["d1"]["lost"] == 3
    assert store.counts_of("d1") == store.device_counts().devices["d1"]
    assert store.counts_of("nobody") == {"results": 0, "events": 0, "last_ts": 0.0, "lost": 0}
    store.add_telemetry([("d1", 10.0, 5.0, 20.0, 30.0, 2, 1.5), ("d1", 11.0, None, None, None, None, None)])
    assert store.telemetry_series("d1", 10.5) == [(11.0, None, None, None, None)]
    store.add_update("d1", 5.0, "active", "ssd", 2, "")
    assert store.model_history("d1") == [(5.0, "active", "ssd", 2, "")]
    store.add_update("d1", 6.0, "downloading", "ssd", 3, "")
    store.add_update("d2", 1.0, "rejected", "ssd", 9, "bad signature")
    assert sorted(store.last_updates()) == [("d1", "downloading", 3, "ssd"), ("d2", "rejected", 9, "ssd")]
    assert store.prune_telemetry(10.5) == 1
    assert store.telemetry_series("d1", 0) == [(11.0, None, None, None, None)]


def test_an_old_sqlite_store_gains_the_kind_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    store = open_store(str(path))
    assert store.query("read", "SELECT id, kind FROM results") == [("old1", "result")]
    dashboard_reads(store)
    store.close()
    again = open_store(str(path))  # opening it again migrates nothing twice
    assert again.count() == 3
    again.close()


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from cloud_sync.store import open_store
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0005)
open_store(sys.argv[1]).close()
"""


@pytest.mark.parametrize("old", [False, True], ids=["new", "old"])
def test_collectors_opening_one_store_at_once_all_open_it(tmp_path: Path, old: bool) -> None:
    # `edge collect` processes on one --db, started together: each checks for the kind column and adds it
    # when missing; the second ALTER failed with "duplicate column name" when both saw it missing.
    import sqlite3
    import subprocess
    import sys

    for attempt in range(3):  # the window is narrow: a few rounds of 6 processes released at once
        path, go = tmp_path / f"fleet{attempt}.sqlite", tmp_path / f"go{attempt}"
        if old:
            with sqlite3.connect(path) as conn:
                conn.executescript(OLD_SCHEMA)
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(path), str(go)], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        time.sleep(1.0)  # every process imported and is waiting
        go.touch()
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        with sqlite3.connect(path) as conn:
            assert "kind" in {row[1] for row in conn.execute("PRAGMA table_info(results)")}


def test_an_old_postgres_store_gains_the_kind_column(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.replace("payload TEXT", "payload JSONB"))
    store = open_store(pg_url)
    assert store.query("read", "SELECT id, kind FROM results") == [("old1", "result")]
    dashboard_reads(store)
    store.close()


def test_snapshots_are_bounded_per_device_and_source(tmp_path: Path) -> None:
    from cloud_sync.store import SNAPSHOT_LABELS

    store = open_store(str(tmp_path / "s.sqlite"))
    for i in range(SNAPSHOT_LABELS + 5):
        store.put_snapshot("d1", "front", f"label{i}", float(i), b"\xff\xd8" + bytes([i]))
    store.put_snapshot("d1", "front", "label70", 100.0, b"\xff\xd8new")  # replaces, does not add
    index = store.snapshot_index("d1")
    assert len(index) == SNAPSHOT_LABELS
    assert index[0] == ("front", "label70", 100.0) and ("front", "label0", 0.0) not in index
    assert store.snapshot("d1", "front", "label70") == b"\xff\xd8new"
    assert store.snapshot("d1", "front", "label0") is None
    store.close()


def test_sqlite_counts_only_the_rows_added_since_its_last_answer(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "c.sqlite"))
    store.insert([(f"r{i}", "d1", "s1", i, float(i), "{}") for i in range(1, 6)])
    first = store.device_counts()
    assert first.devices["d1"]["results"] == 5 and first.marker == 5
    store.insert([("e6", "d1", "s1", 6, 6.0, "{}", "event"), ("x1", "d2", "s1", 1, 9.0, "{}"),
                  ("r1", "d1", "s1", 1, 1.0, "{}")])  # the last one a duplicate: not a new row
    store.add_lost("d1", "s1", 7, 8)
    second = store.device_counts(first)
    assert second.devices == {"d1": {"results": 5, "events": 1, "last_ts": 6.0, "lost": 2},
                              "d2": {"results": 1, "events": 0, "last_ts": 9.0, "lost": 0}}
    assert store.device_counts().devices == second.devices  # the same as counting everything again
    assert first.devices["d1"]["results"] == 5  # the earlier answer is left as it was
    store.close()
