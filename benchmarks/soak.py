"""A long run of a real ``edge run``: a 30 fps watch-folder source, the broker restarted every 2 minutes and
a signed model pushed every 10 (at least once: at half time in a short run), sampled every 5 s: RSS, open
files, threads, outbox file size (db + WAL), latency p50 (the device's telemetry) and results stored.

Goal: flat after warm-up (the first quarter): RSS, open files, threads and latency in the last quarter
within 5 % (open files and threads: within 2) of the second quarter; every result stored once. The
outbox file is expected to grow until acknowledged results pass their retention (1 h, 100,000 rows).

    python -m benchmarks.soak                   # 3 minutes
    python -m benchmarks.soak --minutes 30      # the full soak; --out DIR keeps soak.csv
    python -m benchmarks.soak --minutes 30 --plot docs/soak.png   # and draws the curves (matplotlib)

``python -m benchmarks soak`` runs the short default and writes its section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from tests.assets import ensure_assets
from tests.broker import Broker
from tests.cloud_sync.helpers import collector
from tests.cloud_sync.test_collector import complete, stored
from tests.cloud_sync.update_support import make_keys, publishing
from tests.edge.update_packages import make_package

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "soak"
FIELDS = ("t_s", "rss_mb", "open_files", "threads", "outbox_bytes", "latency_p50_ms", "stored")


def _proc(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open files, threads) of a process, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    rss = int(status["VmRSS"].split()[0]) / 1024
    return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def _outbox_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob("outbox.sqlite*") if p.is_file())


def _push(url: str, package: bytes) -> None:
    with publishing(url, package) as publisher:
        publisher.offer_devices([DEVICE])
        if not publisher.wait([DEVICE], time.monotonic() + 120):
            raise RuntimeError(f"push not finished: {publisher.rollout.devices[DEVICE]}")


def soak(minutes: float, fps: float, restart_s: float, push_s: float, out: Path) -> dict[str, Any]:
    assets = ensure_assets()
    images = sorted(assets.digit_images.iterdir())
    duration = minutes * 60
    push_s = min(push_s, duration / 2)
    broker = Broker(out / "broker").start()
    keys = make_keys(out / "keys")
    models = [assets.model("digits_int8"), assets.model("digits_float32")]
    state, inbox, db = out / "state", out / "inbox", out / "fleet.sqlite"
    inbox.mkdir()
    coll = collector(broker.url, db, client_id="soak-collector", check_interval_s=2.0, replay_retry_s=2.0)
    latency: list[float | None] = [None]

    def on_telemetry(message: Message) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            latency[0] = json.loads(message.payload)["latency_ms"]["p50"]

    watcher = MqttConnection(parse_broker_url(broker.url), "soak-watcher", reconnect_max=1).start()
    watcher.subscribe(f"edge/{DEVICE}/telemetry", on_telemetry)
    log = (out / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--mqtt", broker.url, "--device-id", DEVICE, "--state-dir",
         str(state), "--trust", str(keys.pub), "--watch", str(inbox), "--telemetry-interval", "5",
         "--health-seconds", "2", "--top-k", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    version = 1
    _push(broker.url, keys.sign(make_package(models[0], version)))
    time.sleep(1.0)
    stop = threading.Event()
    dropped = [0]

    def feed() -> None:  # a camera writing frames into the watch folder; old frames cleaned up
        period, next_at, kept = 1 / fps, time.monotonic(), []
        while not stop.is_set():
            image = images[dropped[0] % len(images)]
            tmp = out / f".{dropped[0]:07d}.png"
            shutil.copy(image, tmp)
            target = inbox / f"{dropped[0]:07d}_{image.name}"
            tmp.rename(target)
            kept.append((time.monotonic(), target))
            dropped[0] += 1
            while kept and kept[0][0] < time.monotonic() - 30:
                kept.pop(0)[1].unlink(missing_ok=True)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    feeder = threading.Thread(target=feed, daemon=True)
    samples: list[dict[str, Any]] = []
    restarts = pushes = 0
    marks: list[tuple[float, str]] = []  # (t_s, "restart" | "push"): drawn on the plot
    start = time.monotonic()
    feeder.start()
    try:
        next_restart, next_push, next_sample = start + restart_s, start + push_s, start
        while (now := time.monotonic()) < start + duration:
            if proc.poll() is not None:
                raise RuntimeError(f"edge run exited {proc.returncode}; see {out / 'run.log'}")
            if now >= next_sample:
                rss, files, threads = _proc(proc.pid)
                samples.append({"t_s": round(now - start, 1), "rss_mb": rss, "open_files": files,
                                "threads": threads, "outbox_bytes": _outbox_bytes(state),
                                "latency_p50_ms": latency[0], "stored": coll.stats.stored})
                next_sample += 5
            if now >= next_restart:
                broker.restart()
                restarts += 1
                marks.append((round(now - start, 1), "restart"))
                next_restart += restart_s
            if now >= next_push:
                version += 1
                _push(broker.url, keys.sign(make_package(models[version % 2], version)))
                pushes += 1
                marks.append((round(now - start, 1), "push"))
                next_push += push_s
            time.sleep(0.2)
        stop.set()
        feeder.join(10)
        deadline = time.monotonic() + 120
        while not complete(coll, db, dropped[0]) and time.monotonic() < deadline:
            time.sleep(1)
        count, ids, seqs = stored(db)
    finally:
        stop.set()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        proc.kill()
        log.close()
        watcher.close()
        coll.close()
        coll.store.close()
        broker.stop()
    with (out / "soak.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(samples)
    return {"minutes": minutes, "fps": fps, "frames": dropped[0], "stored": count, "unique": ids,
            "gapless": seqs == list(range(1, len(seqs) + 1)), "restarts": restarts, "pushes": pushes,
            "samples": samples, "marks": marks}


def _quarters(samples: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [s[key] for s in samples if s[key] is not None]
    n = len(values)
    second, last = values[n // 4 : n // 2], values[3 * n // 4 :]
    return statistics.median(second or values), statistics.median(last or values)


def report(result: dict[str, Any]) -> str:
    samples = result["samples"]
    lines = [
        f"A real `edge run` for {result['minutes']:g} min: a {result['fps']:g} fps watch folder, the broker "
        f"restarted {result['restarts']} times, {result['pushes']} model push(es) after the first; "
        f"{result['frames']:,} frames, {result['stored']:,} results stored ({result['unique']:,} unique, "
        f"seqs {'gapless' if result['gapless'] else 'WITH GAPS'}). Medians of the 5 s samples, second "
        "quarter (after warm-up) against the last:",
        "",
        "| measure | 2nd quarter | last quarter | change | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label, slack in (("rss_mb", "RSS (MiB)", 0.0), ("open_files", "open files", 2.0),
                              ("threads", "threads", 2.0), ("latency_p50_ms", "latency p50 (ms)", 0.0),
                              ("outbox_bytes", "outbox file (bytes)", None)):
        second, last = _quarters(samples, key)
        change = (last - second) / second if second else 0.0
        if slack is None:
            goal = "grows until retention (1 h / 100k rows)"
        else:
            goal = "met" if last <= second * 1.05 + slack else "NOT met"
        lines.append(f"| {label} | {second:,.1f} | {last:,.1f} | {change:+.1%} | {goal} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """RSS, threads, open files and latency over time, broker restarts and model pushes marked (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    panels = (("rss_mb", "RSS (MiB)"), ("threads", "threads"), ("open_files", "open files"),
              ("latency_p50_ms", "latency p50 (ms)"))
    figure, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(8, 8))
    for axis, (key, label) in zip(axes, panels, strict=True):
        values = [s[key] if s[key] is not None else float("nan") for s in samples]
        axis.plot(minutes, values, lw=1.2)
        axis.set_ylabel(label)
        top = max((v for v in values if v == v), default=1.0)  # v == v: not NaN
        axis.set_ylim(0, top * 1.15 or 1.0)  # from zero: a flat line looks flat, a 2 % drift is not blown up
        axis.grid(alpha=0.3)
        for t_s, what in result["marks"]:
            axis.axvline(t_s / 60, color="tab:red" if what == "push" else "tab:gray",
                         lw=1.0, ls="-" if what == "push" else "--")
    axes[0].set_title(f"edge run soak: {result['fps']:g} fps, broker restarts (dashed), model pushes (red); "
                      f"{result['stored']:,}/{result['frames']:,} stored", fontsize=9)
    axes[-1].set_xlabel("minutes")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return report(soak(3, 30, 120, 600, Path(tmp)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the run (default 3; 30 for the "
                        "full soak)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second into the watch folder")
    parser.add_argument("--restart-every", type=float, default=120.0, metavar="S", help="broker restarts")
    parser.add_argument("--push-every", type=float, default=600.0, metavar="S", help="model pushes")
    parser.add_argument("--out", type=Path, help="keep the run's folder (soak.csv, run.log) here")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="draw the curves into this PNG")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = soak(args.minutes, args.fps, args.restart_every, args.push_every, out)
        print(report(result))
        if args.plot:
            plot(result, args.plot)
            print(f"plot: {args.plot}")
        if args.out:
            print(f"samples: {out / 'soak.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
