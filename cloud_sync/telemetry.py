"""Telemetry: the periodic health message on ``<prefix>/<id>/telemetry`` (schema ``edge.telemetry/1``)."""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

from cloud_sync.messages import TELEMETRY_SCHEMA
from cloud_sync.outbox import OutboxStats

log = logging.getLogger(__name__)
THERMAL = Path("/sys/class/thermal")


def rss_mb() -> float:
    """Resident memory of this process in MiB (``/proc``; else the peak from ``getrusage``)."""
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_temp_c(root: Path = THERMAL) -> float | None:
    """The first readable thermal zone in °C, or None (containers and most x86 VMs have none)."""
    try:
        zones = sorted(root.glob("thermal_zone*/temp"))
    except OSError:
        return None
    for zone in zones:
        try:
            return round(int(zone.read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def latency_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Overall p50/p95/p99 (ms): the ``total`` stage of ``pipeline.stats()`` (``RollingStats.snapshot()``)."""
    total: Any = stats.get("total")
    if not isinstance(total, dict):
        return {"p50": None, "p95": None, "p99": None}
    return {k: _round(total.get(k), 3) for k in ("p50", "p95", "p99")}


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def build_telemetry(
    *,
    device: str,
    started: float,
    pipeline: Any,
    outbox: OutboxStats,
    bad_payloads: int,
) -> dict[str, Any]:
    """One telemetry message; every part that cannot be read is ``None`` rather than an error."""
    stats: dict[str, Any] = {}
    try:
        stats = dict(pipeline.stats())
    except Exception:
        log.exception("pipeline.stats() failed")
    model = getattr(pipeline, "model", None)
    return {
        "schema": TELEMETRY_SCHEMA,
        "device": device,
        "stream": outbox.stream,
        "seq": outbox.last_seq,
        "ts": round(time.time(), 3),
        "uptime_s": round(time.monotonic() - started, 1),
        "fps": _round(stats.get("fps"), 2),
        "latency_ms": latency_summary(stats),
        "backend": getattr(model, "backend_name", None),
        "model": {"name": getattr(model, "name", None), "version": getattr(model, "version", None)},
        "rss_mb": rss_mb(),
        "cpu_temp_c": cpu_temp_c(),
        "outbox": {
            "pending": outbox.pending,
            "oldest_age_s": outbox.oldest_age_s,
            "dropped": outbox.dropped,
            "rejected": outbox.rejected,
            "retained": outbox.retained,
            "refused": outbox.refused,
            "disk_full": outbox.disk_full,
        },
        "drops": outbox.dropped,
        "bad_payloads": bad_payloads,
        "pipeline": stats,
    }
