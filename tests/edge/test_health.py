"""The health window's rules, fed directly (the NaN rollback runs end to end in test_update_hotswap)."""

from __future__ import annotations

import threading

from edge.health import HealthMonitor, HealthPolicy


def monitor(policy: HealthPolicy, baseline: float | None = 1.0) -> tuple[HealthMonitor, list[str]]:
    verdicts: list[str] = []
    done = threading.Event()

    def healthy() -> None:
        verdicts.append("healthy")
        done.set()

    def unhealthy(reason: str) -> None:
        verdicts.append(reason)
        done.set()

    return HealthMonitor(policy, baseline, healthy, unhealthy).start(), verdicts


def test_window_of_good_inferences_is_healthy_once() -> None:
    m, verdicts = monitor(HealthPolicy(inferences=5, seconds=60))
    for _ in range(8):
        m.observe_invoke(1.1, False)
        m.observe_result(False)
    assert verdicts == ["healthy"]


def test_latency_far_above_the_previous_model_rolls_back() -> None:
    m, verdicts = monitor(HealthPolicy(inferences=50, seconds=60, latency_factor=3.0, latency_slack_ms=0.5))
    for _ in range(6):
        m.observe_invoke(10.0, False)
    assert len(verdicts) == 1 and "latency p50 10.0 ms is over 3x the previous model's 1.0 ms" in verdicts[0]


def test_errors_and_nan_roll_back_with_their_reason() -> None:
    m, verdicts = monitor(HealthPolicy(inferences=50, seconds=60))
    for _ in range(3):
        m.observe_result(True)
    assert verdicts == ["3 of the first 3 inferences failed"]
    m, verdicts = monitor(HealthPolicy(inferences=50, seconds=60))
    m.observe_invoke(1.0, True)
    assert verdicts == ["the model produced NaN outputs"]


def test_time_window_ends_healthy_without_inferences() -> None:
    m, verdicts = monitor(HealthPolicy(inferences=50, seconds=0.05), baseline=None)
    m._timer.join(timeout=5)
    assert verdicts == ["healthy"]
