"""The outbox's SQLite ``synchronous`` setting: FULL against NORMAL (the default, the baseline), one run.

- throughput: 20,000 results (~420 B) written as fast as they come (the writer batches them), and 400
  results committed one at a time (a slow source: each commit alone), msgs/s, rounds alternating;
- fsyncs per commit (``strace -c`` on a child writing 500 single commits; "n/a" without strace): what a
  power cut can take is what was committed since the last fsync of the WAL;
- a killed process (SIGKILL at a random moment while writing, 5 times): committed messages lost.

``python -m benchmarks reliability`` writes its section of docs/performance.md; docs/reliability.md
explains the figures.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloud_sync.outbox import DB_NAME, Outbox, OutboxPolicy

ROOT = Path(__file__).resolve().parent.parent
BURST, SINGLE, ROUNDS, KILLS = 20_000, 400, 5, 5
PAYLOAD = b'{"schema":"edge.result/1","seq":%d,"pad":"' + b"x" * 380 + b'"}'
MODES = ("NORMAL", "FULL")

CHILD = r"""
import sys, time
from cloud_sync.outbox import Outbox, OutboxPolicy
state, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
box = Outbox(state, OutboxPolicy(synchronous=mode)).start(None)
for i in range(count):
    seq = box.reserve_seq()
    box.add("edge/b/results", b'{"seq": %d}' % seq, seq=seq)
    while box.last_seq < seq:
        time.sleep(0.0002)
    if count > 100_000:  # the kill test: say what is committed
        sys.stdout.write(f"{seq}\n"); sys.stdout.flush()
box.close()
"""


def burst(state: Path, mode: str) -> float:
    box = Outbox(state, OutboxPolicy(synchronous=mode)).start(None)
    start = time.perf_counter()
    for i in range(BURST):
        box.add("edge/b/results", PAYLOAD % i, seq=box.reserve_seq())
    box.close()  # returns once everything is committed
    return BURST / (time.perf_counter() - start)


def single(state: Path, mode: str) -> float:
    box = Outbox(state, OutboxPolicy(synchronous=mode)).start(None)
    start = time.perf_counter()
    for i in range(SINGLE):
        seq = box.reserve_seq()
        box.add("edge/b/results", PAYLOAD % i, seq=seq)
        while box.last_seq < seq:
            time.sleep(0.0001)
    elapsed = time.perf_counter() - start
    box.close()
    return SINGLE / elapsed


def fsyncs(state: Path, mode: str, count: int = 500) -> float | None:
    """fsync + fdatasync calls per committed message, from strace's summary; None without strace."""
    if shutil.which("strace") is None:
        return None
    done = subprocess.run(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", sys.executable, "-c", CHILD, str(state), mode,
         str(count)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    rows = [line.split() for line in done.stderr.splitlines() if re.search(r"\bf(data)?sync$", line)]
    return sum(int(row[3]) for row in rows if len(row) >= 5) / count


def killed(state: Path, mode: str, rng: random.Random) -> tuple[int, int]:
    """(committed as the child reported, of those missing after SIGKILL and reopening)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(state), mode, "1000000"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(0.5, 1.5))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    reported = [int(line) for line in out.split("\n")[:-1] if line.strip().isdigit()]  # whole lines only
    committed = max(reported, default=0)
    db = sqlite3.connect(state / DB_NAME)
    try:
        seqs = {row[0] for row in db.execute("SELECT seq FROM outbox")}
    finally:
        db.close()
    return committed, len(set(range(1, committed + 1)) - seqs)


def run() -> str:
    rng = random.Random(14)
    results: dict[str, dict[str, list[float]]] = {m: {"burst": [], "single": []} for m in MODES}
    sync_calls: dict[str, float | None] = {}
    kills: dict[str, list[tuple[int, int]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(ROUNDS):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                results[mode]["burst"].append(burst(folder / f"b{mode}{r}", mode))
                results[mode]["single"].append(single(folder / f"s{mode}{r}", mode))
        for mode in MODES:
            sync_calls[mode] = fsyncs(folder / f"f{mode}", mode)
            for k in range(KILLS):
                kills[mode].append(killed(folder / f"k{mode}{k}", mode, rng))
        page = sqlite3.connect(":memory:").execute("PRAGMA page_size").fetchone()[0]
    med = {m: {k: statistics.median(v) for k, v in results[m].items()} for m in MODES}
    lines = [
        f"Outbox commits on this machine's disk ({os.uname().sysname}), {ROUNDS} alternating rounds, "
        "medians; NORMAL (the default) is the baseline:",
        "",
        "| synchronous | burst msgs/s | vs NORMAL | one-at-a-time commits/s | vs NORMAL | fsyncs per commit |"
        " lost after SIGKILL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        calls = sync_calls[mode]
        lost = sum(lost for _, lost in kills[mode])
        total = sum(committed for committed, _ in kills[mode])
        lines.append(
            f"| {mode} | {med[mode]['burst']:,.0f} | {med[mode]['burst'] / med['NORMAL']['burst']:.2f} "
            f"| {med[mode]['single']:,.0f} | {med[mode]['single'] / med['NORMAL']['single']:.2f} "
            f"| {'n/a' if calls is None else f'{calls:.2f}'} | {lost} of {total:,} |"
        )
    wal = 1000 * page  # SQLite's default wal_autocheckpoint: 1000 pages
    size = len(PAYLOAD % 1)
    lines += [
        "",
        f"A power cut: with NORMAL, the WAL is synced only at checkpoints (every ~1000 pages = "
        f"{wal / 1e6:.1f} MB of WAL, about {wal // (size + 60):,} results of {size} B), so up to that many "
        "of the newest commits can roll back (the file stays consistent); with FULL each commit is synced "
        "before the pipeline is told, so none can. A killed process loses nothing either way "
        f"({KILLS} SIGKILLs per mode at random moments). Burst rounds: "
        + "; ".join(f"{m} {', '.join(f'{v:,.0f}' for v in results[m]['burst'])}" for m in MODES)
        + ". One-at-a-time rounds: "
        + "; ".join(f"{m} {', '.join(f'{v:,.0f}' for v in results[m]['single'])}" for m in MODES) + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
