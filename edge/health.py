"""The health window after an activation: the first K inferences or T seconds of a new model.

The model is rolled back when, inside the window, an output holds NaN, the interpreter fails, most results
are errors, or its median invoke latency is far above the previous model's. ``HealthMonitor`` is pure
bookkeeping (fed by ``observe_invoke``/``observe_result``); ``edge.activation`` wires it to a pipeline.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a new model counts as healthy, and what makes it roll back."""

    inferences: int = 20  # the window closes after this many inferences...
    seconds: float = 30.0  # ...or after this long, whichever comes first
    max_error_rate: float = 0.5  # share of failed results (at least min_errors of them)
    min_errors: int = 3
    latency_factor: float = 3.0  # median invoke latency above factor x the previous model's p50
    latency_min_samples: int = 5
    latency_slack_ms: float = 2.0  # ignore differences below this (timer noise on tiny models)


class HealthMonitor:
    """Decides once: ``on_healthy()`` when the window passes, ``on_unhealthy(reason)`` at a problem."""

    def __init__(
        self,
        policy: HealthPolicy,
        baseline_ms: float | None,
        on_healthy: Callable[[], None],
        on_unhealthy: Callable[[str], None],
    ) -> None:
        self.policy = policy
        self.baseline_ms = baseline_ms if baseline_ms and baseline_ms > 0 else None
        self._on_healthy = on_healthy
        self._on_unhealthy = on_unhealthy
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self.results = 0
        self.errors = 0
        self.decided = ""
        self._started = time.monotonic()
        self._timer = threading.Timer(policy.seconds, self._time_up)
        self._timer.daemon = True

    def start(self) -> HealthMonitor:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()

    def observe_invoke(self, latency_ms: float, has_nan: bool, failure: str | None = None) -> None:
        """One interpreter call of the new model."""
        if failure is not None:
            self._decide(f"the interpreter failed: {failure}")
            return
        if has_nan:
            self._decide("the model produced NaN outputs")
            return
        with self._lock:
            self._latencies.append(latency_ms)
            samples = list(self._latencies)
        if self.baseline_ms is not None and len(samples) >= self.policy.latency_min_samples:
            median = statistics.median(samples)
            limit = self.baseline_ms * self.policy.latency_factor + self.policy.latency_slack_ms
            if median > limit:
                self._decide(
                    f"invoke latency p50 {median:.1f} ms is over {self.policy.latency_factor:g}x "
                    f"the previous model's {self.baseline_ms:.1f} ms"
                )

    def observe_result(self, failed: bool) -> None:
        """One finished inference (result record) of the new model."""
        with self._lock:
            self.results += 1
            self.errors += failed
            results, errors = self.results, self.errors
        if errors >= self.policy.min_errors and errors / results > self.policy.max_error_rate:
            self._decide(f"{errors} of the first {results} inferences failed")
        elif results >= self.policy.inferences:
            self._decide("")

    def _time_up(self) -> None:
        self._decide("")

    def _decide(self, reason: str) -> None:
        with self._lock:
            if self.decided:
                return
            self.decided = reason or "healthy"
        self._timer.cancel()
        if reason:
            self._on_unhealthy(reason)
        else:
            self._on_healthy()
