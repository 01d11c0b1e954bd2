"""Validating a candidate model on the device and swapping it into the running pipeline.

Validation loads the package with the device's backend, checks its tensors fit the device's task (same task;
image input where the device feeds images, else the same input shape; outputs the task's decoder accepts),
runs a smoke inference on a zero input (outputs must be finite) and, when the package has
``golden/input.npy`` + ``golden/output.npy``, checks the first output against the expected one. ``.npy``
files are read with ``allow_pickle=False``: nothing from a package is executed or unpickled.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import EdgeError, ModelError
from edge.health import HealthMonitor, HealthPolicy
from edge.manifest import Manifest
from edge.store import ModelStore, StoreEntry

log = logging.getLogger(__name__)

GOLDEN_INPUT, GOLDEN_OUTPUT = "golden/input.npy", "golden/output.npy"


def load_candidate(path: Path, backend: str = "auto", threads: int | None = None) -> Any:
    """Load a package into a Model without running it; every failure becomes a one-line ModelError."""
    from edge.model import load_model

    try:
        return load_model(path, backend=backend, threads=threads, warmup=False)
    except EdgeError as exc:
        raise ModelError(f"the model does not load: {exc}") from exc
    except Exception as exc:  # interpreters raise whatever they like on hostile files
        raise ModelError(f"the model does not load ({type(exc).__name__}: {exc})") from exc


def check_fits(candidate: Any, current: Any | None) -> None:
    """The candidate's tensors must fit what the device does with the current model."""
    if current is None:
        return
    if candidate.task != current.task:
        raise ModelError(f"the model's task is {candidate.task!r}; this device runs {current.task!r}")
    if current.input.is_image and not candidate.input.is_image:
        raise ModelError(
            f"the model's input {list(candidate.input.tensor.shape)} is not an image; "
            "this device feeds images"
        )
    if not current.input.is_image and candidate.input.tensor.shape != current.input.tensor.shape:
        raise ModelError(
            f"the model's input {list(candidate.input.tensor.shape)} differs from the device's "
            f"{list(current.input.tensor.shape)}"
        )


def smoke_test(candidate: Any) -> None:
    """One inference on a zero input through the task's decoder; outputs must be finite."""
    spec = candidate.input.tensor
    try:
        raw = candidate.invoke(np.zeros(spec.shape, dtype=spec.dtype))
        outputs = candidate.dequantized(raw)
        candidate.decode(outputs)
    except EdgeError as exc:
        raise ModelError(f"incompatible tensors: the smoke inference failed: {exc}") from exc
    except Exception as exc:
        raise ModelError(f"the smoke inference failed ({type(exc).__name__}: {exc})") from exc
    for index, output in enumerate(outputs):
        if not np.all(np.isfinite(output)):
            raise ModelError(f"the smoke inference gave non-finite values in output {index}")


def golden_test(candidate: Any, files: dict[str, bytes]) -> bool:
    """Compare the first output on the package's golden input with the expected one. False when absent."""
    if GOLDEN_INPUT not in files or GOLDEN_OUTPUT not in files:
        return False
    try:
        given = np.load(io.BytesIO(files[GOLDEN_INPUT]), allow_pickle=False)
        expected = np.load(io.BytesIO(files[GOLDEN_OUTPUT]), allow_pickle=False)
    except ValueError as exc:
        raise ModelError(f"golden files are not plain .npy arrays ({exc})") from exc
    spec = candidate.input.tensor
    if given.size != int(np.prod(spec.shape)):
        raise ModelError(f"golden input has shape {list(given.shape)}; the model takes {list(spec.shape)}")
    output = candidate.invoke(given.reshape(spec.shape).astype(spec.dtype, copy=False))[0]
    if output.size != expected.size:
        raise ModelError(
            f"golden output has shape {list(expected.shape)}; the model gives {list(output.shape)}"
        )
    got, want = output.reshape(-1).astype(np.float64), expected.reshape(-1).astype(np.float64)
    if np.issubdtype(output.dtype, np.integer):
        ok = bool(np.all(np.abs(got - want) <= 1))
    else:
        ok = bool(np.allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(want).max(initial=0)))))
    if not ok:
        worst = float(np.abs(got - want).max())
        raise ModelError(
            f"golden output mismatch (largest difference {worst:.4g}); the model is not the one tested"
        )
    return True


class PipelineActivator:
    """The device side of updates for ``edge run``: validate, hot-swap, watch the health window, restore.

    With ``pipeline=None`` (a device that only keeps the store) validation still loads and tests the model.
    """

    def __init__(
        self,
        pipeline: Any | None,
        store: ModelStore,
        backend: str = "auto",
        threads: int | None = None,
        policy: HealthPolicy | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.backend = backend
        self.threads = threads
        self.policy = policy or HealthPolicy()
        self.monitor: HealthMonitor | None = None
        self._previous: Any | None = None
        self._sink: _HealthSink | None = None
        self._shadow: Any = None
        self._watched: Any = None  # the model whose invoke the health monitor watches

    @property
    def can_shadow(self) -> bool:
        """A shadow stage needs live inputs: a pipeline."""
        return self.pipeline is not None

    def shadow(
        self,
        candidate: Any,
        policy: Any,
        on_done: Callable[[dict[str, Any]], None],
        on_progress: Callable[[dict[str, Any]], None],
        resume: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``candidate`` beside the serving model on the pipeline's inputs (``edge.shadow``)."""
        from edge.shadow import Shadow

        self.stop_shadow()
        members = self._members()
        prepare = getattr(members[0], "_prepare", None) if members else None
        shadow = Shadow(candidate, policy, on_done, on_progress, prepare=prepare, resume=resume)
        for pipeline in members:
            pipeline.shadow = shadow
        self._shadow = shadow
        return shadow.figures()

    def stop_shadow(self) -> None:
        shadow, self._shadow = self._shadow, None
        for pipeline in self._members():
            pipeline.shadow = None
        if shadow is not None:
            shadow.close()

    def _members(self) -> list[Any]:
        """The pipelines that see inputs (each member of a ``PipelineGroup``)."""
        if self.pipeline is None:
            return []
        return list(getattr(self.pipeline, "pipelines", None) or [self.pipeline])

    def validate(self, path: Path, manifest: Manifest) -> Any:
        candidate = load_candidate(path, self.backend, self.threads)
        check_fits(candidate, self.pipeline.model if self.pipeline is not None else None)
        smoke_test(candidate)
        package = candidate.source.package  # already read and verified by load_candidate
        if GOLDEN_INPUT in manifest.files and package is not None:
            golden_test(candidate, package.files)
        return candidate

    def activate(
        self,
        candidate: Any,
        entry: StoreEntry,
        on_unhealthy: Callable[[str], None],
        on_healthy: Callable[[], None],
    ) -> None:
        if self.pipeline is None:
            on_healthy()
            return
        self._stop_watching()
        baseline = self.pipeline.stats().get("invoke", {}).get("p50") or None
        self._previous = self.pipeline.model
        monitor = HealthMonitor(self.policy, baseline, on_healthy, on_unhealthy)
        _watch_invoke(candidate, monitor)
        self._watched = candidate
        self._sink = _HealthSink(candidate.version, candidate.name, monitor)
        self.pipeline.add_sink(self._sink)
        self.monitor = monitor.start()
        self.pipeline.swap_model(candidate)

    def resume_health(self, on_unhealthy: Callable[[str], None], on_healthy: Callable[[], None]) -> None:
        """Watch the model serving now as if just activated (a restart inside its health window); no latency
        baseline: the previous model is not loaded."""
        if self.pipeline is None:
            on_healthy()
            return
        self._stop_watching()
        model = self.pipeline.model
        monitor = HealthMonitor(self.policy, None, on_healthy, on_unhealthy)
        _watch_invoke(model, monitor)
        self._watched = model
        self._sink = _HealthSink(model.version, model.name, monitor)
        self.pipeline.add_sink(self._sink)
        self.monitor = monitor.start()

    def restore(self, entry: StoreEntry | None) -> None:
        if self.pipeline is None:
            return
        self._stop_watching()
        previous = self._previous
        if entry is not None and (
            previous is None or (previous.name, previous.version) != (entry.name, entry.version)
        ):
            from edge.model import load_model

            previous = load_model(self.store.path_of(entry), backend=self.backend, threads=self.threads)
        if previous is not None:
            self.pipeline.swap_model(previous)

    def _stop_watching(self) -> None:
        if self.monitor is not None:
            self.monitor.cancel()
        if self._watched is not None:  # undecided: take the detour away here (see _watch_invoke)
            self._watched.__dict__.pop("invoke", None)
            self._watched = None
        if self._sink is not None and self.pipeline is not None and self._sink in self.pipeline.sinks:
            self.pipeline.sinks.remove(self._sink)
        self._sink = None


def _watch_invoke(model: Any, monitor: HealthMonitor) -> None:
    """Route the model's interpreter calls through the monitor until it has decided, then take the detour
    away again (the instance attribute and its closure would keep the model in a reference cycle: an old
    model, its interpreter and its threads, freed only by a full garbage collection)."""
    plain = model.invoke

    def invoke(tensor: np.ndarray) -> list[np.ndarray]:
        if monitor.decided:
            model.__dict__.pop("invoke", None)
            return plain(tensor)
        start = time.perf_counter()
        try:
            outputs = plain(tensor)
        except EdgeError as exc:
            monitor.observe_invoke(0.0, False, str(exc))
            raise
        latency = (time.perf_counter() - start) * 1000
        has_nan = any(np.issubdtype(o.dtype, np.floating) and bool(np.isnan(o).any()) for o in outputs)
        monitor.observe_invoke(latency, has_nan)
        return outputs

    setattr(model, "invoke", invoke)  # noqa: B010  (instance attribute shadows the method)


class _HealthSink:
    """Counts the new model's results for the health window."""

    def __init__(self, version: int, name: str, monitor: HealthMonitor) -> None:
        self.version, self.name, self.monitor = version, name, monitor

    def emit(self, record: dict[str, Any]) -> None:
        model = record.get("model") or {}
        if (
            model.get("version") == self.version
            and model.get("name") == self.name
            and not self.monitor.decided
        ):
            self.monitor.observe_result(bool(record.get("error")))

    def close(self) -> None:
        self.monitor.cancel()
