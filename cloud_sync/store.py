"""Where ``edge collect`` keeps results: SQLite (default) or PostgreSQL (a ``postgresql://`` URL).

Tables: ``results`` (``id`` primary key, ``device_id``, ``stream``, ``seq``, ``ts``, ``payload``) holds each
distinct result once; ``lost`` holds ``seq`` ranges a device said it no longer has (so they are reported,
not requested again). Several collectors may share one PostgreSQL store.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cloud_sync.errors import SyncError

log = logging.getLogger(__name__)

Row = tuple[str, str, str, int, float, str]  # id, device_id, stream, seq, ts, payload

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY, device_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    ts REAL NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_device_seq ON results(device_id, stream, seq);
CREATE TABLE IF NOT EXISTS lost (
    device_id TEXT NOT NULL, stream TEXT NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (device_id, stream, first)
);
"""
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY, device_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL, payload JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_device_seq ON results(device_id, stream, seq);
CREATE TABLE IF NOT EXISTS lost (
    device_id TEXT NOT NULL, stream TEXT NOT NULL, first BIGINT NOT NULL, last BIGINT NOT NULL,
    PRIMARY KEY (device_id, stream, first)
);
"""


class StoreError(SyncError):
    """The collector's store cannot be opened or written."""


class ResultStore(Protocol):
    def insert(self, rows: Sequence[Row]) -> int: ...

    def add_lost(self, device_id: str, stream: str, first: int, last: int) -> None: ...

    def streams(self) -> list[tuple[str, str]]: ...

    def seqs_above(self, device_id: str, stream: str, floor: int) -> list[int]: ...

    def lost(self, device_id: str, stream: str) -> list[tuple[int, int]]: ...

    def summary(self, device_id: str, stream: str) -> tuple[int, int]: ...

    def close(self) -> None: ...


class _SqlStore:
    """Shared SQL for both back ends (``?`` vs ``%s`` placeholders); one lock, one transaction per call."""

    ph = "?"
    insert_sql = ""
    lost_sql = ""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn = conn
        self.name = name
        self._lock = threading.Lock()

    def _exec(self, what: str, sql: str, params: Any = (), *, many: bool = False, fetch: bool = False) -> Any:
        """Run one statement in its own transaction; rows when ``fetch``, else the row count."""
        with self._lock:
            try:
                cur = self.conn.cursor()
                if many:
                    cur.executemany(sql.replace("?", self.ph), params)
                else:
                    cur.execute(sql.replace("?", self.ph), params)
                out = cur.fetchall() if fetch else cur.rowcount
                self.conn.commit()
                return out
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                raise StoreError(f"cannot {what} in {self.name}: {exc}") from exc

    def insert(self, rows: Sequence[Row]) -> int:
        """Insert new results; returns how many were new (the rest were duplicates)."""
        return int(self._exec("store results", self.insert_sql, rows, many=True)) if rows else 0

    def add_lost(self, device_id: str, stream: str, first: int, last: int) -> None:
        self._exec("record lost results", self.lost_sql, (device_id, stream, first, last))

    def streams(self) -> list[tuple[str, str]]:
        rows = self._exec("list devices", "SELECT DISTINCT device_id, stream FROM results", fetch=True)
        return sorted((str(d), str(s)) for d, s in rows)

    def seqs_above(self, device_id: str, stream: str, floor: int) -> list[int]:
        rows = self._exec(
            "read seqs",
            "SELECT DISTINCT seq FROM results WHERE device_id = ? AND stream = ? AND seq > ? ORDER BY seq",
            (device_id, stream, floor),
            fetch=True,
        )
        return [int(r[0]) for r in rows]

    def lost(self, device_id: str, stream: str) -> list[tuple[int, int]]:
        rows = self._exec(
            "read lost ranges",
            "SELECT first, last FROM lost WHERE device_id = ? AND stream = ? ORDER BY first",
            (device_id, stream),
            fetch=True,
        )
        return [(int(a), int(b)) for a, b in rows]

    def summary(self, device_id: str, stream: str) -> tuple[int, int]:
        """(distinct results stored, highest seq) of one device stream."""
        rows = self._exec(
            "summarize",
            "SELECT count(DISTINCT seq), coalesce(max(seq), 0) FROM results"
            " WHERE device_id = ? AND stream = ?",
            (device_id, stream),
            fetch=True,
        )
        return int(rows[0][0]), int(rows[0][1])

    def count(self) -> int:
        return int(self._exec("count results", "SELECT count(*) FROM results", fetch=True)[0][0])

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self.conn.close()


class SqliteStore(_SqlStore):
    insert_sql = "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?)"
    lost_sql = "INSERT OR REPLACE INTO lost VALUES (?, ?, ?, ?)"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SQLITE_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"cannot open the results database {path}: {exc}; check --db") from exc
        super().__init__(conn, str(path))


class PostgresStore(_SqlStore):
    ph = "%s"
    insert_sql = "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?::jsonb) ON CONFLICT (id) DO NOTHING"
    lost_sql = (
        "INSERT INTO lost VALUES (?, ?, ?, ?) "
        "ON CONFLICT (device_id, stream, first) DO UPDATE SET last = EXCLUDED.last"
    )

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(
                "a postgresql:// --db needs psycopg; install it with: pip install 'edge-runtime[postgres]'"
            ) from exc
        conn = None
        try:
            conn = psycopg.connect(url, connect_timeout=10)
            conn.execute(POSTGRES_SCHEMA)
            conn.commit()
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            safe = url.split("@")[-1]
            raise StoreError(f"cannot open the PostgreSQL store {safe}: {exc}; check the --db URL") from exc
        super().__init__(conn, "PostgreSQL")


def open_store(target: str) -> _SqlStore:
    """A ``postgresql://`` URL selects PostgreSQL; anything else is a SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target)
    return SqliteStore(target)


def missing_seqs(stored: Iterable[int], lost: Iterable[tuple[int, int]], floor: int, top: int) -> list[int]:
    """Seqs in ``floor+1..top`` neither stored nor known lost."""
    have = set(stored)
    for first, last in lost:
        have.update(range(max(first, floor + 1), min(last, top) + 1))
    return [s for s in range(floor + 1, top + 1) if s not in have]
