"""Where ``edge collect`` keeps results: SQLite (default) or PostgreSQL (a ``postgresql://`` URL).

Tables: ``results`` (``id`` primary key, ``device_id``, ``stream``, ``seq``, ``ts``, ``payload``, ``kind``)
holds each distinct result once, and each event (``kind = 'event'``): a device's results and events share one
``seq`` sequence per stream, so one table keeps gap repair one query (``kind`` was added later: an older store
gains it with the default ``'result'`` when opened). ``lost`` holds ``seq`` ranges a device said it no longer
has (so they are reported, not requested again). For the dashboard: ``telemetry`` (one row per telemetry
message: fps, latency, outbox; the collector drops rows older than a week), ``snapshots`` (the latest JPEG
per device, source and label: bounded by its key) and ``updates`` (each change of a device's update state:
the model history). Several collectors may share one PostgreSQL store.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cloud_sync.errors import SyncError

log = logging.getLogger(__name__)

Row = tuple[str, str, str, int, float, str]  # id, device_id, stream, seq, ts, payload
KindRow = tuple[str, str, str, int, float, str, str]  # a Row and its kind ('result' or 'event')
TelemetryRow = tuple[str, float, float | None, float | None, float | None, int | None, float | None]
# device_id, ts, fps, latency p50 ms, p95 ms, outbox pending, outbox oldest age s
KINDS = ("result", "event")
_RESULT_COLUMNS = "id, device_id, stream, seq, ts, payload, kind"

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
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL, ts REAL NOT NULL, fps REAL, p50_ms REAL, p95_ms REAL, pending INTEGER,
    oldest_age_s REAL
);
CREATE INDEX IF NOT EXISTS telemetry_device_ts ON telemetry(device_id, ts);
CREATE TABLE IF NOT EXISTS snapshots (
    device_id TEXT NOT NULL, source TEXT NOT NULL, label TEXT NOT NULL, ts REAL NOT NULL, jpeg BLOB NOT NULL,
    PRIMARY KEY (device_id, source, label)
);
CREATE TABLE IF NOT EXISTS updates (
    device_id TEXT NOT NULL, ts REAL NOT NULL, state TEXT NOT NULL, name TEXT NOT NULL,
    version INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_device_ts ON updates(device_id, ts);
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
ALTER TABLE results ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'result';
CREATE INDEX IF NOT EXISTS results_device_ts ON results(device_id, ts);
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, fps DOUBLE PRECISION, p50_ms DOUBLE PRECISION,
    p95_ms DOUBLE PRECISION, pending BIGINT, oldest_age_s DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS telemetry_device_ts ON telemetry(device_id, ts);
CREATE TABLE IF NOT EXISTS snapshots (
    device_id TEXT NOT NULL, source TEXT NOT NULL, label TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    jpeg BYTEA NOT NULL, PRIMARY KEY (device_id, source, label)
);
CREATE TABLE IF NOT EXISTS updates (
    device_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, name TEXT NOT NULL,
    version BIGINT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_device_ts ON updates(device_id, ts);
"""
# SQLite has no ADD COLUMN IF NOT EXISTS: _migrate_sqlite checks the columns first.
SQLITE_MIGRATION = "ALTER TABLE results ADD COLUMN kind TEXT NOT NULL DEFAULT 'result'"
SQLITE_INDEXES = "CREATE INDEX IF NOT EXISTS results_device_ts ON results(device_id, ts);"
SNAPSHOT_LABELS = 64  # per device and source: a device naming labels without end cannot fill the table


class StoreError(SyncError):
    """The collector's store cannot be opened or written."""


class ResultStore(Protocol):
    def insert(self, rows: Sequence[Row | KindRow]) -> int: ...

    def add_lost(self, device_id: str, stream: str, first: int, last: int) -> None: ...

    def streams(self) -> list[tuple[str, str]]: ...

    def seqs_above(self, device_id: str, stream: str, floor: int) -> list[int]: ...

    def lost(self, device_id: str, stream: str) -> list[tuple[int, int]]: ...

    def summary(self, device_id: str, stream: str) -> tuple[int, int]: ...

    def add_telemetry(self, rows: Sequence[TelemetryRow]) -> None: ...

    def put_snapshot(self, device_id: str, source: str, label: str, ts: float, jpeg: bytes) -> None: ...

    def add_update(
        self, device_id: str, ts: float, state: str, name: str, version: int, reason: str
    ) -> None: ...

    def prune_telemetry(self, before: float) -> int: ...

    def last_updates(self) -> list[tuple[str, str, int, str]]: ...

    def close(self) -> None: ...


class DeviceCounts(NamedTuple):
    """``device_counts()``: per device ``{"results", "events", "last_ts", "lost"}``; where it counted to."""

    devices: dict[str, dict[str, Any]]
    marker: int


class _SqlStore:
    """Shared SQL for both back ends (``?`` vs ``%s`` placeholders); one lock, one transaction per call."""

    ph = "?"
    incremental = False  # device_counts can count only the rows added since its last answer
    insert_sql = ""
    lost_sql = ""
    snapshot_sql = ""

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

    def insert(self, rows: Sequence[Row | KindRow]) -> int:
        """Insert new results (a ``Row``) and events (a ``KindRow`` ending in ``'event'``); returns how many
        were new (the rest were duplicates)."""
        if not rows:
            return 0
        full = [row if len(row) == 7 else (*row, "result") for row in rows]
        return int(self._exec("store results", self.insert_sql, full, many=True))

    def add_telemetry(self, rows: Sequence[TelemetryRow]) -> None:
        if rows:
            sql = "INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?)"
            self._exec("store telemetry", sql, rows, many=True)

    def put_snapshot(self, device_id: str, source: str, label: str, ts: float, jpeg: bytes) -> None:
        """Keep ``jpeg`` as the latest snapshot of (device, source, label); ``label`` '' is the latest frame.

        A new label beyond ``SNAPSHOT_LABELS`` per device and source replaces the oldest one."""
        self._exec("store a snapshot", self.snapshot_sql, (device_id, source, label, ts, jpeg))
        self._exec(
            "trim snapshots",
            "DELETE FROM snapshots WHERE device_id = ? AND source = ? AND label NOT IN (SELECT label FROM"
            " snapshots WHERE device_id = ? AND source = ? ORDER BY ts DESC LIMIT ?)",
            (device_id, source, device_id, source, SNAPSHOT_LABELS),
        )

    def add_update(self, device_id: str, ts: float, state: str, name: str, version: int, reason: str) -> None:
        self._exec("record an update state", "INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?)",
                   (device_id, ts, state, name, version, reason))

    # ----------------------------------------------------------------- reads for the dashboard

    def query(self, what: str, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """Rows of one read (``?`` placeholders)."""
        return list(self._exec(what, sql, params, fetch=True))

    def device_counts(self, previous: DeviceCounts | None = None) -> DeviceCounts:
        """Per device: results and events stored, the newest one's ``ts``, and lost ``seq`` values.

        With ``previous`` (an earlier answer) a store that can tell new rows apart counts only those (SQLite:
        rows above the last ``rowid``; the results table is never deleted from): a second at a million rows
        becomes milliseconds. PostgreSQL counts everything again."""
        totals: dict[str, dict[str, Any]] = {}
        marker = 0
        if previous is not None and self.incremental:
            marker = previous.marker
            totals = {device: dict(row) for device, row in previous.devices.items()}
        top = marker
        if self.incremental:
            top = int(self.query("read the last row", "SELECT coalesce(max(rowid), 0) FROM results")[0][0])
            sql = ("SELECT device_id, kind, count(*), max(ts) FROM results WHERE rowid > ? AND rowid <= ?"
                   " GROUP BY device_id, kind")
            rows = self.query("count per device", sql, (marker, top)) if top > marker else []
        else:
            rows = self.query(
                "count per device",
                "SELECT device_id, kind, count(*), max(ts) FROM results GROUP BY device_id, kind",
            )
        for device, kind, count, last in rows:
            row = totals.setdefault(str(device), {"results": 0, "events": 0, "last_ts": 0.0, "lost": 0})
            row["results" if kind == "result" else "events"] += int(count)
            row["last_ts"] = max(row["last_ts"], float(last or 0.0))
        for row in totals.values():
            row["lost"] = 0
        for device, lost in self.query(
            "count lost", "SELECT device_id, sum(last - first + 1) FROM lost GROUP BY device_id"
        ):
            row = totals.setdefault(str(device), {"results": 0, "events": 0, "last_ts": 0.0, "lost": 0})
            row["lost"] = int(lost)
        return DeviceCounts(totals, top)

    def counts_of(self, device_id: str) -> dict[str, Any]:
        """One device's ``device_counts()`` row, counted now (through the ``device_id, ts`` index)."""
        row: dict[str, Any] = {"results": 0, "events": 0, "last_ts": 0.0, "lost": 0}
        for kind, count, last in self.query(
            "count a device's results",
            "SELECT kind, count(*), max(ts) FROM results WHERE device_id = ? GROUP BY kind", (device_id,)
        ):
            row["results" if kind == "result" else "events"] = int(count)
            row["last_ts"] = max(row["last_ts"], float(last or 0.0))
        lost = self.query(
            "count lost", "SELECT sum(last - first + 1) FROM lost WHERE device_id = ?", (device_id,)
        )
        row["lost"] = int(lost[0][0] or 0)
        return row

    def recent(self, device_id: str, kind: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` results (or events) of a device, newest first, as decoded payloads."""
        rows = self.query(
            "read recent results",
            "SELECT payload FROM results WHERE device_id = ? AND kind = ? ORDER BY ts DESC, seq DESC LIMIT ?",
            (device_id, kind, limit),
        )
        return [_payload(p) for (p,) in rows]

    def telemetry_series(self, device_id: str, since: float, limit: int = 500) -> list[tuple[Any, ...]]:
        """``(ts, fps, p50_ms, p95_ms, pending)`` of a device since ``since``, oldest first (the newest
        ``limit``)."""
        rows = self.query(
            "read telemetry",
            "SELECT ts, fps, p50_ms, p95_ms, pending FROM telemetry WHERE device_id = ? AND ts >= ?"
            " ORDER BY ts DESC LIMIT ?",
            (device_id, since, limit),
        )
        return [tuple(r) for r in reversed(rows)]

    def prune_telemetry(self, before: float) -> int:
        """Drop telemetry rows older than ``before`` (Unix time); how many went."""
        return int(self._exec("prune telemetry", "DELETE FROM telemetry WHERE ts < ?", (before,)))

    def last_updates(self) -> list[tuple[str, str, int, str]]:
        """``(device, state, version, name)`` of each device's latest update state."""
        rows = self.query(
            "read the last update states",
            "SELECT u.device_id, u.state, u.version, u.name FROM updates u JOIN (SELECT device_id,"
            " max(ts) AS ts FROM updates GROUP BY device_id) m ON u.device_id = m.device_id AND u.ts = m.ts",
        )
        return [(str(d), str(s), int(v), str(n)) for d, s, v, n in rows]

    def model_history(self, device_id: str, limit: int = 20) -> list[tuple[Any, ...]]:
        """``(ts, state, name, version, reason)`` of a device's update states, newest first."""
        rows = self.query(
            "read the model history",
            "SELECT ts, state, name, version, reason FROM updates WHERE device_id = ?"
            " ORDER BY ts DESC LIMIT ?",
            (device_id, limit),
        )
        return [tuple(r) for r in rows]

    def snapshot_index(self, device_id: str) -> list[tuple[str, str, float]]:
        """``(source, label, ts)`` of a device's stored snapshots, newest first."""
        rows = self.query(
            "list snapshots",
            "SELECT source, label, ts FROM snapshots WHERE device_id = ? ORDER BY ts DESC", (device_id,)
        )
        return [(str(s), str(lb), float(t)) for s, lb, t in rows]

    def snapshot(self, device_id: str, source: str, label: str) -> bytes | None:
        rows = self.query(
            "read a snapshot",
            "SELECT jpeg FROM snapshots WHERE device_id = ? AND source = ? AND label = ?",
            (device_id, source, label),
        )
        return bytes(rows[0][0]) if rows else None

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


def _payload(value: Any) -> dict[str, Any]:
    """A stored payload as a dict: SQLite keeps text, PostgreSQL's JSONB arrives decoded."""
    if isinstance(value, dict):
        return value
    import json

    try:
        body = json.loads(value)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class SqliteStore(_SqlStore):
    incremental = True
    insert_sql = f"INSERT OR IGNORE INTO results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    lost_sql = "INSERT OR REPLACE INTO lost VALUES (?, ?, ?, ?)"
    snapshot_sql = "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)"

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                conn = self._open(path)
                break
            except sqlite3.OperationalError as exc:
                # Two collectors opening one new store at once: switching it to WAL (or creating the
                # schema) can answer "locked" at once, without waiting for the busy timeout: try again.
                if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS - 1:
                    raise StoreError(f"cannot open the results database {path}: {exc}; check --db") from exc
                time.sleep(0.1 * (attempt + 1))
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open the results database {path}: {exc}; check --db") from exc
        super().__init__(conn, str(path))

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SQLITE_SCHEMA)
            # check and add in one write transaction: two collectors opening an old store at once would
            # both see the column missing, and the second ALTER fail with "duplicate column name"
            conn.execute("BEGIN IMMEDIATE")
            try:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
                if "kind" not in columns:
                    conn.execute(SQLITE_MIGRATION)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.executescript(SQLITE_INDEXES)
        except BaseException:
            conn.close()
            raise
        return conn


class PostgresStore(_SqlStore):
    ph = "%s"
    insert_sql = (
        f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?::jsonb, ?)"
        " ON CONFLICT (id) DO NOTHING"
    )
    snapshot_sql = (
        "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, source, label) "
        "DO UPDATE SET ts = EXCLUDED.ts, jpeg = EXCLUDED.jpeg"
    )
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


OPEN_ATTEMPTS = 10  # a store opened by two collectors at once
MAX_SCAN = 1_000_000  # seqs looked at in one go: a (valid) huge seq must not build a range of billions


def missing_seqs(stored: Iterable[int], lost: Iterable[tuple[int, int]], floor: int, top: int) -> list[int]:
    """Seqs in ``floor+1..top`` neither stored nor known lost (at most ``MAX_SCAN`` past ``floor``)."""
    top = min(top, floor + MAX_SCAN)
    have = set(stored)
    for first, last in lost:
        have.update(range(max(first, floor + 1), min(last, top) + 1))
    return [s for s in range(floor + 1, top + 1) if s not in have]
