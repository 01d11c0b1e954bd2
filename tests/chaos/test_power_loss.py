"""Crash consistency of the outbox (issue 14): its state folder copied (db + WAL + shm) at random moments
while a producer writes, as a crash would leave it; every copy must open, pass ``integrity_check`` and hold
every message that was committed (``last_seq``: what the pipeline was told is safe) when the copy began.

The copy holds a read transaction on the live database while it copies, so no checkpoint can restart the
WAL between copying the database and the WAL (a crash freezes both at one instant; a plain file copy does
not). Both ``synchronous`` settings are checked: the WAL format keeps either consistent after a killed
process; what a power cut can take from NORMAL (commits since the last checkpoint) is measured by
``benchmarks/reliability.py``.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cloud_sync.outbox import DB_NAME, Outbox, OutboxPolicy

SNAPSHOTS = 25


def _snapshot(state: Path, into: Path) -> None:
    """Copy db, WAL and shm while a reader pins the WAL (no restart mid-copy)."""
    into.mkdir()
    reader = sqlite3.connect(f"file:{state / DB_NAME}?mode=ro", uri=True, timeout=10)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM outbox").fetchone()
        for suffix in ("", "-wal", "-shm"):
            source = state / f"{DB_NAME}{suffix}"
            if source.exists():
                shutil.copyfile(source, into / f"{DB_NAME}{suffix}")
    finally:
        reader.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_every_snapshot_opens_and_keeps_everything_committed(tmp_path: Path, synchronous: str) -> None:
    state = tmp_path / "state"
    outbox = Outbox(state, OutboxPolicy(synchronous=synchronous, batch=50))
    outbox._db.execute("PRAGMA wal_autocheckpoint=16")  # checkpoints and WAL restarts all the time
    outbox.start(None)
    rng = random.Random(14)
    stop = threading.Event()
    produced = [0]

    def produce() -> None:
        while not stop.is_set():
            for _ in range(rng.randint(1, 60)):  # bursts of results, then a pause: batches of all sizes
                seq = outbox.reserve_seq()
                outbox.add("edge/cam1/results", b'{"seq": %d, "pad": "%s"}' % (seq, b"x" * 300), seq=seq)
                produced[0] = seq
            time.sleep(rng.uniform(0, 0.01))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    checked = []
    try:
        for number in range(SNAPSHOTS):
            time.sleep(rng.uniform(0.005, 0.08))
            committed = outbox.last_seq  # acknowledged to the pipeline before the copy starts
            copy = tmp_path / f"snap{number}"
            _snapshot(state, copy)
            db = sqlite3.connect(copy / DB_NAME)  # opening recovers from the copied WAL
            try:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                seqs = {row[0] for row in db.execute("SELECT seq FROM outbox WHERE seq IS NOT NULL")}
                last = dict(db.execute("SELECT key, value FROM meta").fetchall()).get("last_seq", 0)
            finally:
                db.close()
            missing = sorted(set(range(1, committed + 1)) - seqs)
            assert not missing, f"snapshot {number}: committed up to {committed}, missing {missing[:10]}"
            assert int(last) >= committed
            checked.append(committed)
            shutil.rmtree(copy)
    finally:
        stop.set()
        producer.join(10)
        outbox.close()
    assert checked[-1] > checked[0] > 0  # the snapshots were taken while writing went on
    assert len(set(checked)) > SNAPSHOTS // 2
    print(f"\n{synchronous}: {SNAPSHOTS} snapshots while {produced[0]} results were written, each whole")
