"""Rolling per-stage latency statistics (p50/p95/p99 over the last ``window`` inferences), thread-safe."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

STAGES = ("decode", "preprocess", "invoke", "postprocess", "total")


class RollingStats:
    """Keeps the last ``window`` timings of each stage, the count, the error count and the frame rate."""

    def __init__(self, window: int = 1000) -> None:
        self._lock = threading.Lock()
        # one row of per-stage timings per successful inference: one append per frame, columns at snapshot
        self._rows: deque[Sequence[float]] = deque(maxlen=window)
        self._finished: deque[float] = deque(maxlen=window)
        self.count = 0
        self.errors = 0
        self._started = time.monotonic()

    def record(self, timing_ms: Sequence[float], failed: bool = False) -> None:
        """One inference: its per-stage milliseconds in ``STAGES`` order (not kept when it failed)."""
        if len(timing_ms) != len(STAGES):
            raise ValueError(f"record takes {len(STAGES)} timings ({STAGES}), got {len(timing_ms)}")
        now = time.monotonic()
        with self._lock:
            self.count += 1
            self._finished.append(now)
            if failed:
                self.errors += 1
                return
            self._rows.append(timing_ms)

    def snapshot(self) -> dict[str, Any]:
        """``{"count", "errors", "fps", "<stage>": {"p50", "p95", "p99", "mean", "n"}}``, milliseconds."""
        with self._lock:
            rows = list(self._rows)
            finished = list(self._finished)
            count, errors = self.count, self.errors
        fps = _fps(finished, time.monotonic())
        result: dict[str, Any] = {"count": count, "errors": errors, "fps": fps}
        for column, stage in enumerate(STAGES):
            result[stage] = percentiles([row[column] for row in rows])
        return result


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0, "n": 0}
    ordered = sorted(values)
    return {
        "p50": _quantile(ordered, 0.50),
        "p95": _quantile(ordered, 0.95),
        "p99": _quantile(ordered, 0.99),
        "mean": math.fsum(ordered) / len(ordered),
        "n": len(values),
    }


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as numpy.percentile's default (numpy would also
    import numpy.ma, 9 ms, on its first call: a run on one image pays that at exit)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _fps(finished: list[float], now: float) -> float:
    """Inferences per second over the window up to ``now``: it falls to 0 when inputs stop (a dead camera)."""
    if len(finished) < 2 or finished[-1] <= finished[0]:
        return 0.0
    idle = max(0.0, now - finished[-1])
    span = finished[-1] - finished[0]
    gap = span / (len(finished) - 1)  # the usual time between two inferences
    return (len(finished) - 1) / (span + (idle if idle > 2 * gap else 0.0))
