"""The device process SIGKILLed with results pending while the broker is down; restarted, it delivers them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cloud_sync.outbox import read_stats
from tests.cloud_sync.helpers import collector, wait_for
from tests.cloud_sync.test_collector import complete, stored

ROOT = Path(__file__).resolve().parents[2]


def spawn(url: str, state: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cloud_sync.device_proc", url, str(state), str(count)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def test_pending_results_survive_kill_9_of_the_device(mosquitto_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto_factory(start=False)  # the broker is down
    state = tmp_path / "state"
    first = spawn(broker.url, state, 300)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "emitted"
        wait_for(lambda: (state / "outbox.sqlite").exists() and read_stats(state).pending >= 300,
                 what="300 results committed")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    assert read_stats(state).last_seq == 300

    broker.start()
    db = tmp_path / "fleet.sqlite"
    coll = collector(broker.url, db)
    second = spawn(broker.url, state, 0)
    try:
        wait_for(lambda: complete(coll, db, 300), what="all 300 pending results delivered")
        count, ids, seqs = stored(db)
        assert (count, ids, seqs) == (300, 300, list(range(1, 301)))
        wait_for(lambda: read_stats(state).pending == 0, what="outbox empty")
    finally:
        os.kill(second.pid, signal.SIGKILL)
        second.wait(10)
        coll.close()
        coll.store.close()
