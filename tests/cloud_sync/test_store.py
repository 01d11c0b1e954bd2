"""The collector's stores: SQLite and a real PostgreSQL (127.0.0.1:5432, database ``test``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cloud_sync.store import StoreError, _SqlStore, missing_seqs, open_store
from tests.broker import Broker
from tests.cloud_sync.fakes import record
from tests.cloud_sync.helpers import device, wait_for

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
