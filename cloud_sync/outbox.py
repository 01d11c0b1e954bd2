"""The durable outbox: every result and telemetry message is committed to SQLite before it is published.

Policy (documented in docs/mqtt.md):

- Messages are written to ``<state-dir>/outbox.sqlite`` (WAL, ``synchronous=NORMAL``: survives a killed
  process; a power cut may lose the last fraction of a second but never corrupts the file) in small
  batches by one writer thread, and handed to MQTT (QoS 1) only after their batch is committed.
- A message stops being *pending* only when the broker acknowledges it (PUBACK). On start, pending
  messages are published again in order (duplicates are possible; results carry a unique ``id``).
- Bounds: at most ``max_pending`` messages / ``max_bytes`` bytes pending and none older than ``max_age_s``;
  past a bound the oldest pending messages are dropped and counted (``dropped``, reported in telemetry).
- Acknowledged results are kept for ``retain_s`` seconds (at most ``retain_max`` rows) so a collector that
  found a gap in ``seq`` can ask for a replay (``replay(first, last)``).
- A message the broker refuses (an MQTT 5 PUBACK with an error, e.g. an ACL) is counted as ``rejected``.
- Disk full (SQLite says ``database or disk is full``): one error line says so and what to do; from then new
  results and events are refused (counted in ``refused``; their seqs reach the collector as lost ranges
  through the replay reply's ``missing``), telemetry goes out directly (not stored) with ``disk_full: true``,
  committed messages are still published and kept. The batch that failed stays queued and is retried every
  ``RETRY_S``; the first commit that succeeds ends the state (one line) and new messages are taken again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloud_sync.errors import OutboxError

log = logging.getLogger(__name__)
BACKPRESSURE_S = 1.0  # longest a producer waits for a writer that is behind
QUEUED_MAX = 50_000  # messages waiting for the writer; beyond this the oldest are dropped (counted)
RETRY_S = 1.0  # pause after a failed write before trying again
ACK_FLUSH_S = 0.05  # acknowledgements are written to disk in batches at least this often
UNSENT_MAX = 20_000  # committed-but-unsent rows also kept in memory (beyond: read back from the database)

_SEQUENCED = ("result", "event")  # kinds that carry a seq: kept after their PUBACK for replays
DB_NAME = "outbox.sqlite"
SYNCHRONOUS = ("NORMAL", "FULL")
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    seq     INTEGER,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    acked   REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(id) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox(seq) WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""


class _WriteFailed(Exception):
    """A batch could not be committed; it was put back for a retry."""


class Publisher(Protocol):
    """What the outbox needs from a connection (``MqttConnection`` fits)."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, *,
                on_ack: Any = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    max_pending: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 7 * 24 * 3600.0
    retain_s: float = 3600.0
    retain_max: int = 100_000
    window: int = 10_000  # messages handed to the MQTT client and not yet acknowledged
    batch: int = 2000  # messages per commit
    housekeeping_s: float = 2.0  # how often age and retention bounds are applied
    # SQLite's synchronous: NORMAL survives a killed process, a power cut may roll back the commits since
    # the last checkpoint; FULL fsyncs every commit (nothing committed lost). Measured: docs/reliability.md
    synchronous: str = "NORMAL"


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    pending_bytes: int
    oldest_age_s: float | None
    retained: int
    dropped: int
    rejected: int
    published: int
    acked: int
    last_seq: int
    stream: str
    refused: int = 0  # new messages refused while the disk was full
    disk_full: bool = False  # the last write failed for want of space

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _is_disk_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL (``database or disk is full``), or an I/O error the OS reported as ENOSPC."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def connect_db(path: Path, *, readonly: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open the outbox database (creating it unless ``readonly``); errors become ``OutboxError``."""
    if synchronous not in SYNCHRONOUS:
        raise OutboxError(f"synchronous {synchronous!r} is not one of {', '.join(SYNCHRONOUS)}")
    if readonly and not path.exists():
        raise OutboxError(f"no outbox at {path}; pass the --state-dir that 'edge run' used")
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=10, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.executescript(f"BEGIN;\n{SCHEMA}\nCOMMIT;")  # readers see every table or none
        return db
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        free = _free_bytes(path.parent)
        if not readonly and (free is not None and free < 1 << 20 or "full" in str(exc).lower()):
            raise OutboxError(
                f"cannot open the outbox {path}: the disk holding it is full ({free} bytes free; SQLite says "
                f"{exc}); free space there (old files, logs) or give --state-dir a bigger disk"
            ) from exc
        raise OutboxError(f"cannot open the outbox {path}: {exc}; check --state-dir is a writable folder") \
            from exc


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def read_stats(state_dir: str | Path) -> OutboxStats:
    """Stats of an outbox on disk, read-only (works while ``edge run`` is using it)."""
    db = connect_db(Path(state_dir) / DB_NAME, readonly=True)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            # 'edge run' has created the file but not yet its tables: nothing is pending yet.
            return OutboxStats(pending=0, pending_bytes=0, oldest_age_s=None, retained=0, dropped=0,
                               rejected=0, published=0, acked=0, last_seq=0, stream="")
        pending, nbytes, oldest = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), min(created) FROM outbox WHERE acked IS NULL"
        ).fetchone()
        retained = db.execute("SELECT count(*) FROM outbox WHERE acked IS NOT NULL").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read the outbox in {state_dir}: {exc}") from exc
    finally:
        db.close()
    return OutboxStats(
        pending=pending,
        pending_bytes=nbytes,
        oldest_age_s=None if oldest is None else round(max(0.0, time.time() - oldest), 3),
        retained=retained,
        dropped=int(meta.get("dropped", 0)),
        rejected=int(meta.get("rejected", 0)),
        published=0,
        acked=0,
        last_seq=int(meta.get("last_seq", 0)),
        stream=str(meta.get("stream", "")),
        refused=int(meta.get("refused", 0)),
    )


class Outbox:
    """Commit, then publish; forget only on PUBACK. One writer thread does all the SQLite work."""

    def __init__(
        self,
        state_dir: str | Path,
        policy: OutboxPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.policy = policy or OutboxPolicy()
        self.clock = clock  # wall-clock seconds: message ages and retention (a test can make a week pass)
        self._db = connect_db(self.path, synchronous=self.policy.synchronous)
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if "stream" not in meta:
            meta["stream"] = secrets.token_hex(4)
            self._db.execute("INSERT INTO meta VALUES ('stream', ?)", (meta["stream"],))
        self.stream = str(meta["stream"])
        row = self._db.execute("SELECT max(id), max(seq) FROM outbox").fetchone()
        self._next_id = (row[0] or 0) + 1
        self._last_seq = max(int(meta.get("last_seq", 0)), row[1] or 0)
        self._reserved_seq = self._last_seq
        self._dropped = int(meta.get("dropped", 0))
        self._rejected = int(meta.get("rejected", 0))
        self._pending, self._pending_bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE acked IS NULL"
        ).fetchone()
        self._retained = self._db.execute("SELECT count(*) FROM outbox WHERE acked IS NOT NULL").fetchone()[0]
        self._published = 0
        self._acked_total = 0
        self._incoming: deque[tuple[str, int | None, str, bytes, float]] = deque()
        self._acks: deque[tuple[int, bool, str]] = deque()
        self._inflight: dict[int, tuple[int, bool]] = {}  # id -> (payload length, kept for replay)
        self._cursor = 0  # highest id handed to MQTT in this process
        self._unsent: deque[tuple[int, str, bytes, str]] = deque()  # committed, not yet handed out
        self._spilled = bool(self._pending)  # unsent rows live only in the database
        self._ack_rows: list[tuple[float, int]] = []
        self._forget_rows: list[tuple[int]] = []
        self._ack_since = 0.0
        self._rejected_new = 0
        self._dropped_queued = 0
        self._write_failures = 0
        self._disk_full = False
        self._refused = int(meta.get("refused", 0))
        self._refused_new = 0
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._taken = 0  # messages off the queue but not yet counted as pending (wait_drained must see them)
        self._seq_lock = threading.Lock()
        self._stop = False
        self._publisher: Publisher | None = None
        self._thread: threading.Thread | None = None
        self._last_housekeeping = 0.0
        self._error: BaseException | None = None
        if self._pending:
            log.info("outbox %s: %d message(s) pending from before; they go first", self.path, self._pending)

    # ----------------------------------------------------------------- producer side

    def reserve_seq(self) -> int:
        """The next per-device result ``seq`` (persisted with the batch that carries it)."""
        with self._seq_lock:
            self._reserved_seq += 1
            return self._reserved_seq

    def add(self, topic: str, payload: bytes, *, kind: str = "result", seq: int | None = None) -> None:
        """Queue a message; the writer commits it (in a batch) before anything publishes it."""
        if self._error is not None:
            raise OutboxError(f"the outbox writer stopped: {self._error}")
        if self._stop:
            raise OutboxError("the outbox is closed")
        if self._disk_full:
            self._refuse(kind, topic, payload)
            return
        incoming = self._incoming
        incoming.append((kind, seq, topic, payload, self.clock()))
        if len(incoming) > 4 * self.policy.batch:
            self._wake.set()
            deadline = time.monotonic() + BACKPRESSURE_S
            while len(incoming) > 4 * self.policy.batch and time.monotonic() < deadline:
                time.sleep(0.001)  # back-pressure: the writer is behind
            while len(incoming) > QUEUED_MAX:  # the writer cannot write (disk full?): drop the oldest
                incoming.popleft()
                with self._seq_lock:
                    self._dropped_queued += 1
        elif len(incoming) == 1:
            self._wake.set()

    def _refuse(self, kind: str, topic: str, payload: bytes) -> None:
        """The disk is full: a result or event is refused (counted); telemetry goes out unstored."""
        publisher = self._publisher
        if kind not in _SEQUENCED and publisher is not None and publisher.connected:
            with contextlib.suppress(Exception):  # best effort: the next telemetry replaces this one
                publisher.publish(topic, payload, qos=0)
            return
        with self._seq_lock:
            self._refused += 1
            self._refused_new += 1

    @property
    def disk_full(self) -> bool:
        """True while the last write failed because the disk is full."""
        return self._disk_full

    # ----------------------------------------------------------------- lifecycle

    def start(self, publisher: Publisher | None) -> Outbox:
        """Start the writer thread; with a publisher it also publishes (first what was pending)."""
        self._publisher = publisher
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()
        return self

    def kick(self) -> None:
        """Wake the writer (e.g. after a reconnect)."""
        self._wake.set()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until nothing is queued, pending or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._incoming or self._taken or self._pending or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.1))
        return True

    def close(self, drain_timeout: float = 0.0) -> None:
        """Commit what is queued; optionally wait for acknowledgements; stop the writer."""
        if drain_timeout > 0 and self._publisher is not None and self._publisher.connected:
            self.wait_drained(drain_timeout)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        else:
            self._write_batch()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    # ----------------------------------------------------------------- queries

    def stats(self) -> OutboxStats:
        oldest: float | None = None
        if self._pending:
            with contextlib.suppress(sqlite3.Error), self._reader() as db:
                row = db.execute("SELECT min(created) FROM outbox WHERE acked IS NULL").fetchone()
                if row and row[0] is not None:
                    oldest = round(max(0.0, self.clock() - row[0]), 3)
        return OutboxStats(
            pending=self._pending + len(self._incoming),
            pending_bytes=self._pending_bytes,
            oldest_age_s=oldest,
            retained=self._retained,
            dropped=self._dropped,
            rejected=self._rejected,
            published=self._published,
            acked=self._acked_total,
            last_seq=self._last_seq,
            stream=self.stream,
            refused=self._refused,
            disk_full=self._disk_full,
        )

    @property
    def acked(self) -> int:
        """Messages acknowledged by the broker since this outbox was opened (cheap: no database read)."""
        return self._acked_total

    @property
    def last_seq(self) -> int:
        """The highest result ``seq`` committed so far."""
        return self._last_seq

    def replay(
        self, first: int, last: int, limit: int = 10_000
    ) -> tuple[list[tuple[int, str, bytes]], list[int]]:
        """Stored results and events with ``first <= seq <= last`` (in order) and the seqs no longer held."""
        last = min(last, first + limit - 1, self._last_seq)
        if last < first:
            return [], []
        with self._reader() as db:
            rows = db.execute(
                "SELECT seq, topic, payload FROM outbox"
                " WHERE seq BETWEEN ? AND ? AND kind IN ('result', 'event') ORDER BY seq",
                (first, last),
            ).fetchall()
        have = {row[0] for row in rows}
        missing = [seq for seq in range(first, last + 1) if seq not in have]
        return [(int(s), str(t), bytes(p)) for s, t, p in rows], missing

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(str(self.path), timeout=10)
        try:
            yield db
        finally:
            db.close()

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._cycle():
                        return
                except _WriteFailed:
                    if self._stop:
                        log.error("outbox: cannot commit on close; %d message(s) lost", len(self._incoming))
                        return
                    with contextlib.suppress(sqlite3.Error):  # what is committed still goes out
                        self._take_acks()
                        self._hand_out()
                    time.sleep(RETRY_S)  # everything stays queued; try again
        except BaseException as exc:  # surfaced to producers by add()
            self._error = exc
            log.exception("outbox writer stopped")

    def _cycle(self) -> bool:
        """One wake-up of the writer; True when it should stop."""
        timeout = ACK_FLUSH_S if self._ack_rows or self._forget_rows else self.policy.housekeeping_s
        self._wake.wait(min(0.5, timeout))
        self._wake.clear()
        stopping = self._stop
        while True:
            self._take_acks()
            self._write_batch()
            self._hand_out()
            if not self._incoming and not self._acks:
                break
        if self._ack_rows or self._forget_rows:
            due = stopping or len(self._ack_rows) >= self.policy.batch
            if due or time.monotonic() - self._ack_since >= ACK_FLUSH_S:
                self._write_batch(flush_acks=True)
        if time.monotonic() - self._last_housekeeping > self.policy.housekeeping_s:
            self._housekeeping()
        with self._idle:
            self._idle.notify_all()
        if stopping and not self._incoming and not self._acks:
            self._take_acks()
            self._write_batch(flush_acks=True)
            return True
        return False

    def _take_acks(self) -> None:
        """Apply acknowledgements in memory (frees the window at once); their rows are written later."""
        acks = self._acks
        if not acks:
            return
        now = self.clock()
        if not self._ack_rows and not self._forget_rows:
            self._ack_since = time.monotonic()
        while acks:
            ident, accepted, _ = acks.popleft()
            entry = self._inflight.pop(ident, None)
            if entry is None:  # dropped meanwhile, or a duplicate acknowledgement
                continue
            size, keep = entry
            self._pending -= 1
            self._pending_bytes -= size
            if not accepted:
                self._rejected += 1
                self._rejected_new += 1
                self._forget_rows.append((ident,))
            elif keep:
                self._retained += 1
                self._acked_total += 1
                self._ack_rows.append((now, ident))
            else:
                self._acked_total += 1
                self._forget_rows.append((ident,))

    def _write_batch(self, flush_acks: bool = False) -> None:
        """One transaction: new messages (committed before any publish), acknowledgements, bounds."""
        rows: list[tuple[int, str, int | None, str, bytes, float]] = []
        max_seq = self._last_seq
        while self._incoming and len(rows) < self.policy.batch:
            self._taken += 1  # before the pop: a waiter sees the message queued or taken, never neither
            kind, seq, topic, payload, created = self._incoming.popleft()
            rows.append((self._next_id, kind, seq, topic, payload, created))
            self._next_id += 1
            if seq is not None and seq > max_seq:
                max_seq = seq
        try:
            self._commit_batch(rows, max_seq, flush_acks)
        finally:
            self._taken = 0  # now counted in _pending, or put back on the queue

    def _commit_batch(
        self, rows: list[tuple[int, str, int | None, str, bytes, float]], max_seq: int, flush_acks: bool
    ) -> None:
        if not rows and not (flush_acks and (self._ack_rows or self._forget_rows)):
            return
        acks, forget = self._ack_rows, self._forget_rows
        self._ack_rows, self._forget_rows = [], []
        saved = (self._pending, self._pending_bytes, self._dropped)
        with self._seq_lock:
            dropped_queued, self._dropped_queued = self._dropped_queued, 0
        db = self._db
        try:
            db.execute("BEGIN")
            if acks:
                db.executemany("UPDATE outbox SET acked = ? WHERE id = ? AND acked IS NULL", acks)
            if forget:
                db.executemany("DELETE FROM outbox WHERE id = ? AND acked IS NULL", forget)
            if self._rejected_new:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('rejected', ?)", (self._rejected,))
                log.warning("outbox: the broker refused %d message(s); dropped", self._rejected_new)
                self._rejected_new = 0
            if rows:
                db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, NULL)", rows)
                if max_seq != self._last_seq:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('last_seq', ?)", (max_seq,))
                self._pending += len(rows)
                self._pending_bytes += sum(len(r[4]) for r in rows)
                self._enforce_bounds(db)
            if dropped_queued:
                self._dropped += dropped_queued
                db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self._dropped,))
                log.warning("outbox: dropped %d queued message(s): the writer was stuck", dropped_queued)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            # put everything back as it was; the writer retries after a pause
            self._incoming.extendleft((r[1], r[2], r[3], r[4], r[5]) for r in reversed(rows))
            self._next_id -= len(rows)
            self._ack_rows, self._forget_rows = acks + self._ack_rows, forget + self._forget_rows
            self._pending, self._pending_bytes, self._dropped = saved
            with self._seq_lock:
                self._dropped_queued += dropped_queued
            self._write_failures += 1
            if _is_disk_full(exc):
                if not self._disk_full:
                    self._disk_full = True
                    log.error(
                        "outbox: the disk holding %s is full; new results are refused (counted in "
                        "telemetry outbox.refused) until space is freed; committed results are kept and "
                        "still sent. Free space there (old files, logs) or give --state-dir a bigger disk; "
                        "writing resumes by itself", self.path.parent)
            elif self._write_failures == 1 or self._write_failures % 60 == 0:
                log.error("cannot write the outbox %s: %s; check free disk space (retrying)", self.path, exc)
            raise _WriteFailed from exc
        self._write_failures = 0
        if self._disk_full:
            self._disk_full = False
            with self._seq_lock:
                refused_new, self._refused_new = self._refused_new, 0
            with contextlib.suppress(sqlite3.Error):
                db.execute("INSERT OR REPLACE INTO meta VALUES ('refused', ?)", (self._refused,))
            log.warning("outbox: %s has space again; writing resumed (%d new result(s) refused while it "
                        "was full, %d in all)", self.path.parent, refused_new, self._refused)
        self._last_seq = max_seq
        if rows and not self._spilled:
            if len(self._unsent) + len(rows) > UNSENT_MAX:
                self._spill()
            else:
                self._unsent.extend((r[0], r[3], r[4], r[1]) for r in rows)

    def _spill(self) -> None:
        """Forget the in-memory copy of unsent rows; hand out from the database until caught up."""
        self._unsent.clear()
        self._spilled = True

    def _enforce_bounds(self, db: sqlite3.Connection) -> None:
        """Drop the oldest pending messages past the count / byte bounds (inside the open transaction)."""
        policy = self.policy
        if self._pending <= policy.max_pending and self._pending_bytes <= policy.max_bytes:
            return
        excess = max(self._pending - policy.max_pending, 0)
        victims = db.execute(
            "SELECT id, length(payload) FROM outbox WHERE acked IS NULL ORDER BY id LIMIT ?",
            (max(excess, 1) if self._pending_bytes <= policy.max_bytes else self._pending,),
        ).fetchall()
        chosen: list[tuple[int, int]] = []
        pending, nbytes = self._pending, self._pending_bytes
        for ident, size in victims:
            if pending <= policy.max_pending and nbytes <= policy.max_bytes:
                break
            chosen.append((ident, size))
            pending -= 1
            nbytes -= size
        self._drop(db, chosen, "over the size bound")

    def _drop(self, db: sqlite3.Connection, chosen: list[tuple[int, int]], why: str) -> None:
        if not chosen:
            return
        self._spill()
        db.executemany("DELETE FROM outbox WHERE id = ?", [(ident,) for ident, _ in chosen])
        for ident, size in chosen:
            self._inflight.pop(ident, None)
            self._pending -= 1
            self._pending_bytes -= size
        self._dropped += len(chosen)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped', ?)", (self._dropped,))
        log.warning("outbox: dropped %d oldest pending message(s) %s (%d dropped in all)",
                    len(chosen), why, self._dropped)

    def _housekeeping(self) -> None:
        """Drop pending messages past ``max_age_s``; forget acknowledged ones past the retention window."""
        self._last_housekeeping = time.monotonic()
        self._write_batch(flush_acks=True)  # the database must know every acknowledgement first
        policy, db, now = self.policy, self._db, self.clock()
        try:
            db.execute("BEGIN")
            old = db.execute(
                "SELECT id, length(payload) FROM outbox"
                " WHERE acked IS NULL AND created < ? ORDER BY id LIMIT 10000",
                (now - policy.max_age_s,),
            ).fetchall() if self._pending else []
            self._drop(db, [(int(i), int(s)) for i, s in old], f"older than {policy.max_age_s:g}s")
            forgotten = db.execute(
                "DELETE FROM outbox WHERE acked IS NOT NULL AND acked < ?", (now - policy.retain_s,)
            ).rowcount
            excess = self._retained - forgotten - policy.retain_max
            if excess > 0:
                forgotten += db.execute(
                    "DELETE FROM outbox WHERE id IN "
                    "(SELECT id FROM outbox WHERE acked IS NOT NULL ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
            db.execute("COMMIT")
            self._retained -= forgotten
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            log.warning("outbox housekeeping failed: %s", exc)

    def _hand_out(self) -> None:
        """Publish committed pending messages, in id order, up to the in-flight window."""
        publisher = self._publisher
        if publisher is None or self._stop or not publisher.connected:
            return
        room = self.policy.window - len(self._inflight)
        if room <= 0:
            return
        batch: list[tuple[int, str, bytes, str]]
        if self._spilled:
            batch = self._db.execute(
                "SELECT id, topic, payload, kind FROM outbox"
                " WHERE acked IS NULL AND id > ? ORDER BY id LIMIT ?",
                (self._cursor, room),
            ).fetchall()
            if len(batch) < room:
                self._spilled = False  # caught up: every committed row past the cursor is in this batch
        else:
            unsent = self._unsent
            batch = [unsent.popleft() for _ in range(min(room, len(unsent)))]
        acks = self._acks
        wake = self._wake
        for ident, topic, payload, kind in batch:
            self._inflight[ident] = (len(payload), kind in _SEQUENCED)
            self._cursor = ident

            def on_ack(accepted: bool, reason: str, ident: int = ident) -> None:
                acks.append((ident, accepted, reason))
                if not wake.is_set():
                    wake.set()

            publisher.publish(topic, payload, qos=1, on_ack=on_ack)
            self._published += 1
