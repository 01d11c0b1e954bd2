"""Small fakes for the MQTT tests: a pipeline with the runtime's interface and an in-memory publisher."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeModel:
    name: str = "digits"
    version: int = 3
    backend_name: str = "fake"
    labels: tuple[str, ...] = ("cat", "dog", "person")


@dataclass
class FakeResult:
    record: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)


@dataclass
class FakePipeline:
    """``stats()``, ``set_options()``, ``infer()``, ``model`` like ``edge.pipeline.Pipeline``."""

    model: FakeModel = field(default_factory=FakeModel)
    top_k: int = 1
    threshold: float | None = None
    reloads: int = 0
    label: str = "cat"

    def stats(self) -> dict[str, Any]:
        """Shaped like ``edge.stats.RollingStats.snapshot()`` (only the total stage)."""
        return {"count": 10, "errors": 0, "fps": 12.5,
                "total": {"p50": 4.0, "p95": 6.0, "p99": 9.0, "mean": 4.5, "n": 10}}

    def set_options(self, top_k: int | None = None, threshold: float | None = None) -> None:
        if top_k is not None:
            self.top_k = top_k
        if threshold is not None:
            self.threshold = threshold

    def reload(self) -> None:
        self.reloads += 1
        self.model = FakeModel(version=self.model.version + 1)

    def infer(self, item: Any) -> FakeResult:
        return FakeResult(record(item, self.label))


def record(item: Any, label: str = "cat", score: float = 0.9) -> dict[str, Any]:
    """A result record shaped like the runtime's classification records (docs/results-schema.md)."""
    return {
        "schema": 1,
        "time": "2026-11-22T17:19:05.991Z",
        "input": str(item),
        "model": {"name": "digits", "version": 3},
        "task": "classification",
        "classes": [{"label": label, "index": 0, "score": score}],
        "timing_ms": {"decode": 0.0, "preprocess": 0.5, "invoke": 3.0, "postprocess": 0.1, "total": 3.6},
        "error": None,
    }


class FakePublisher:
    """Records publishes; acknowledges them only when told to."""

    def __init__(self, check: Any = None) -> None:
        self.connected = True
        self.sent: list[tuple[str, bytes, Any]] = []
        self.check = check
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, *,
                on_ack: Any = None) -> None:
        if self.check is not None:
            self.check(topic, payload)
        with self.lock:
            data = payload if isinstance(payload, bytes) else payload.encode()
            self.sent.append((topic, data, on_ack))

    def ack_all(self, accepted: bool = True) -> None:
        with self.lock:
            sent, self.sent = self.sent, []
        for _, _, on_ack in sent:
            on_ack(accepted, "Success" if accepted else "Not authorized")
