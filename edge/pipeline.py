"""The inference pipeline: decode -> preprocess -> invoke -> postprocess, with one interpreter reused.

``Pipeline.run`` decodes the next inputs on ``decode_workers`` threads while the current one is invoked
(Pillow and the interpreter both release the GIL; threads beat worker processes here, see
``docs/performance.md``), results in input order, at most ``decode_workers + 1`` inputs in flight. Inputs
that cost less than handing them between threads (tiny models) run serially on a lean loop. A bad input
gives a result with ``error`` set and the run goes on. ``swap_model`` replaces the model between two
inferences; every result names the model version that produced it. Results go to every sink as
``result.to_json()`` (schema: ``docs/results-schema.md``).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from edge.errors import ConfigError, EdgeError, InputError
from edge.model import Model, to_input_tensor
from edge.preprocess import (
    DEFAULT_MAX_PIXELS,
    Geometry,
    Prepared,
    check_mode,
    covering_size,
    fit,
    geometry_for,
    load_upright,
)
from edge.sinks import Sink
from edge.sources.base import InputItem, is_frame
from edge.stats import RollingStats
from edge.tasks import TaskResult

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROBE_FRAMES = 3
OVERLAP_MIN_MS = 0.5
_DONE = object()


@dataclass(frozen=True, slots=True)
class Timing:
    """Milliseconds spent in each stage of one inference."""

    decode: float = 0.0
    preprocess: float = 0.0
    invoke: float = 0.0
    postprocess: float = 0.0
    total: float = 0.0
    capture_to_result: float | None = None  # frames of a source: from capture to the result handed over

    def to_json(self) -> dict[str, float]:
        timing = {
            "decode": round(self.decode, 3),
            "preprocess": round(self.preprocess, 3),
            "invoke": round(self.invoke, 3),
            "postprocess": round(self.postprocess, 3),
            "total": round(self.total, 3),
        }
        if self.capture_to_result is not None:
            timing["capture_to_result"] = round(self.capture_to_result, 3)
        return timing


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """The outcome of one input: the task's result, or ``error``; always the model that handled it."""

    input: str
    model_name: str
    model_version: int
    task: str
    result: TaskResult | None
    timing: Timing
    error: str | None = None
    image_size: tuple[int, int] | None = None  # original (width, height) when the input was an image
    time: str = ""
    source: str | None = None  # the name of the source it came from (edge run), else None
    frame: int | None = None  # its index within that source
    captured_at: float | None = None  # wall-clock Unix time of capture
    media_time: float | None = None  # seconds on the source's own timeline (a video file's), if it has one

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "time": self.time,
            "input": self.input,
            "model": {"name": self.model_name, "version": self.model_version},
            "task": self.task,
        }
        if self.source is not None:
            record["source"] = self.source
            record["frame"] = self.frame
            record["captured_at"] = None if self.captured_at is None else round(self.captured_at, 3)
            if self.media_time is not None:
                record["media_time"] = round(self.media_time, 3)
        if self.result is not None:
            record.update(self.result.to_json())
        if self.image_size is not None:
            record["image"] = {"width": self.image_size[0], "height": self.image_size[1]}
        record["timing_ms"] = self.timing.to_json()
        record["error"] = self.error
        return record


Annotator = Callable[[InferenceResult, dict[str, Any]], None]


class SourceModelOptions(NamedTuple):
    """Options one source sets for itself over the pipeline's (None: the pipeline's)."""

    top_k: int | None = None
    threshold: float | None = None
    resize: str | None = None


class _Prepared:
    """One input on its way to the interpreter (filled in by ``_prepare``; a plain class: a dataclass
    costs ~1 ms of start-up to define, this is made once per input)."""

    __slots__ = (
        "name", "item", "model", "tensor", "geometry", "image_size", "decode_ms", "preprocess_ms", "error",
        "source", "frame", "captured_at", "captured_mono", "media_time",
    )

    def __init__(self, name: str, item: Any, model: Model) -> None:
        self.name, self.item, self.model = name, item, model
        self.tensor: np.ndarray | None = None
        self.geometry: Geometry | None = None
        self.image_size: tuple[int, int] | None = None
        self.decode_ms = self.preprocess_ms = 0.0
        self.error: str | None = None
        self.source: str | None = None
        self.frame: int | None = None
        self.captured_at: float | None = None
        self.captured_mono: float | None = None
        self.media_time: float | None = None


def input_name(item: Any) -> str:
    if isinstance(item, InputItem):
        return item.name
    if isinstance(item, str | Path):
        return str(item)
    if isinstance(item, bytes | bytearray | memoryview):
        return f"<{len(item)} bytes>"
    if isinstance(item, Image.Image):
        return f"<image {item.width}x{item.height}>"
    if isinstance(item, np.ndarray):
        return f"<array {list(item.shape)}>"
    return f"<{type(item).__name__}>"


_clock: tuple[int, str] = (-1, "")


def _now() -> str:
    """UTC now as ``2026-01-31T12:00:00.123Z``; the date part is formatted once a second (per-frame cost)."""
    global _clock
    now = time.time()
    second = int(now)
    if _clock[0] != second:
        _clock = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_clock[1]}.{int((now - second) * 1000):03d}Z"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a cgroup), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_decode_workers(cores: int | None = None) -> int:
    """One decoder per usable core: the interpreter thread and the decoders share the cores, and the
    interpreter waits in native code most of the time (a Coral waits on USB: decode is the bottleneck)."""
    return max(1, usable_cores() if cores is None else cores)


class Pipeline:
    """Runs a model on inputs; thread-safe ``swap_model`` and ``set_options``; rolling stats."""

    def __init__(
        self,
        model: Model,
        top_k: int = 5,
        threshold: float = 0.0,
        resize: str | None = None,
        sinks: Sequence[Sink] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        stats_window: int = 1000,
        decode_workers: int | None = None,
        overlap: bool | None = None,
        annotators: Sequence[Annotator] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._model = model
        self.resize = check_mode(resize) if resize is not None else None
        self.sinks: list[Sink] = list(sinks)
        # called with each result and its record before the sinks see it (e.g. the mask writer adds "mask")
        self.annotators: list[Annotator] = list(annotators)
        # a candidate model being shadow-tested on live inputs (``edge.shadow.Shadow``): shown each good input
        self.shadow: Any = None
        self.max_pixels = max_pixels
        # decoders running ahead of the interpreter (None: one per usable core); 0 keeps run() serial
        if decode_workers is not None and (not isinstance(decode_workers, int) or decode_workers < 0):
            raise ConfigError(f"decode_workers must be a whole number >= 0, got {decode_workers!r}")
        self.decode_workers = default_decode_workers() if decode_workers is None else decode_workers
        self.overlap = overlap  # None: decide from the first frames; True/False: always/never
        self.workers_used = 0
        self._stats = RollingStats(stats_window)
        self.top_k, self.threshold = 5, 0.0
        self._per_source: dict[str, SourceModelOptions] = {}
        self.set_options(top_k=top_k, threshold=threshold)

    # -------------------------------------------------------------------------------- configuration

    @property
    def model(self) -> Model:
        with self._lock:
            return self._model

    def swap_model(self, new_model: Model) -> None:
        """Use ``new_model`` from the next inference on; the one running finishes with the old model."""
        if not isinstance(new_model, Model):
            raise ConfigError(f"swap_model needs a loaded Model, got {type(new_model).__name__}")
        with self._lock:
            old, self._model = self._model, new_model
        log.info("model swapped: %s v%s -> %s v%s", old.name, old.version, new_model.name, new_model.version)

    def set_options(self, top_k: int | None = None, threshold: float | None = None) -> None:
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ConfigError(f"top_k must be a whole number of at least 1, got {top_k!r}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold!r}")
        with self._lock:
            if top_k is not None:
                self.top_k = top_k
            if threshold is not None:
                self.threshold = float(threshold)

    def set_source_options(self, source: str, options: SourceModelOptions) -> None:
        """Options for the inputs of one source (``[[source]]`` tables), over the pipeline's own."""
        if options.resize is not None:
            check_mode(options.resize)
        if options.top_k is not None and options.top_k < 1:
            raise ConfigError(f"source {source}: top_k must be at least 1, got {options.top_k}")
        if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
            raise ConfigError(f"source {source}: threshold must be between 0 and 1, got {options.threshold}")
        with self._lock:
            self._per_source[source] = options

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def stats(self) -> dict[str, Any]:
        """Per-stage p50/p95/p99/mean (ms) over the recent window, plus count, errors and fps."""
        return self._stats.snapshot()

    def use_stats(self, stats: RollingStats) -> None:
        """Record into ``stats`` from now on (pipelines of one group share theirs)."""
        self._stats = stats

    def close(self) -> None:
        """Close every sink (flushing what they buffer)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # a broken sink must not stop the others from closing
                log.warning("closing sink %r failed: %s", sink, exc)

    # ------------------------------------------------------------------------------------- running

    def infer(self, item: Any) -> InferenceResult:
        """One input (path, bytes, PIL image, numpy array or InputItem) to one result; never raises for it."""
        return self._finish(self._prepare(item, self.model))

    def run(self, items: Iterable[Any]) -> Iterator[InferenceResult]:
        """Results in input order; decoding runs ahead on worker threads while the current input is invoked.

        The first ``PROBE_FRAMES`` inputs run serially; when decoding or invoking takes under
        ``OVERLAP_MIN_MS`` (a tiny model on tiny images) handing frames between threads costs more than it
        saves, so the run stays serial. Otherwise it takes as many decoders as keep the interpreter busy,
        ``ceil(prepare / invoke)``, at most ``decode_workers``: a decoder more than that only takes CPU
        from the interpreter. ``workers_used`` says what the last run chose (0: serial).
        """
        iterator = iter(items)
        if self.overlap is not None:
            self.workers_used = self.decode_workers if self.overlap else 0
            if self.workers_used > 0:
                yield from self._overlapped(iterator, self.workers_used)
            else:
                yield from self._serial(iterator)
            return
        prepare_ms: list[float] = []
        invoke_ms: list[float] = []
        for _ in range(PROBE_FRAMES):
            try:
                item = next(iterator)
            except StopIteration:
                return
            result = self.infer(item)
            if result.ok:
                prepare_ms.append(result.timing.decode + result.timing.preprocess)
                invoke_ms.append(result.timing.invoke)
            yield result
        prepare, invoke = (_median(prepare_ms), _median(invoke_ms)) if prepare_ms else (0.0, 0.0)
        self.workers_used = workers_for(prepare, invoke, self.decode_workers)
        if self.workers_used == 0:
            yield from self._serial(iterator)
        else:
            yield from self._overlapped(iterator, self.workers_used)

    def _serial(self, iterator: Iterator[Any]) -> Iterator[InferenceResult]:
        """The fast path: one thread, no hand-off; the model is read once per input (swaps still apply)."""
        prepare, finish, lock = self._prepare, self._finish, self._lock
        for item in iterator:
            with lock:
                model = self._model
            yield finish(prepare(item, model))

    def _overlapped(self, iterator: Iterator[Any], workers: int) -> Iterator[InferenceResult]:
        from concurrent.futures import ThreadPoolExecutor  # here: serial runs never need it

        pool = ThreadPoolExecutor(workers, thread_name_prefix="edge-decode")
        ready: queue.Queue[Any] = queue.Queue()  # futures, in input order
        # inputs in flight (decoding, decoded, being invoked): bounds memory whatever the source's pace
        slots = threading.Semaphore(workers + 1)
        stop = threading.Event()

        def feed() -> None:
            try:
                for item in iterator:
                    while not slots.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    ready.put(pool.submit(self._prepare, item, self.model))
            except BaseException as exc:  # re-raised in the consumer
                ready.put(exc)
                return
            ready.put(_DONE)

        feeder = threading.Thread(target=feed, name="edge-feed", daemon=True)
        feeder.start()
        try:
            while True:
                got = ready.get()
                if got is _DONE:
                    return
                if isinstance(got, BaseException):
                    raise got
                prepared = got.result()
                slots.release()
                yield self._finish(prepared)
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _resize_mode(self, model: Model, source: str | None = None) -> str:
        own = self._per_source.get(source) if source is not None else None
        if own is not None and own.resize is not None:
            return own.resize
        if self.resize is not None:
            return self.resize
        return model.preferred_resize

    def _prepare(self, item: Any, model: Model) -> _Prepared:
        """Decode and preprocess (the part that runs ahead on the worker thread)."""
        name = input_name(item)
        prepared = _Prepared(name, item, model)
        payload = item
        if isinstance(item, InputItem):
            prepared.source, prepared.frame = item.source, item.frame
            prepared.captured_at, prepared.captured_mono = item.captured_at, item.captured_mono
            prepared.media_time = item.media_time
            if item.error is not None:
                prepared.error = item.error
                return prepared
            payload = item.payload
        spec = model.input
        start = time.perf_counter()
        try:
            if isinstance(payload, np.ndarray) and _is_tensor_shaped(payload, spec.tensor.shape):
                decoded = time.perf_counter()
                prepared.tensor = to_input_tensor(payload, spec)
            else:
                if isinstance(payload, np.ndarray) and not _is_image_shaped(payload):
                    raise InputError(
                        f"array of shape {tuple(payload.shape)} fits neither the model input "
                        f"{list(spec.tensor.shape)} nor an image (H, W[, C]); check the array's rank"
                    )
                if not spec.is_image:
                    raise InputError(
                        f"model input {list(spec.tensor.shape)} is not an image; pass a numpy array of that "
                        "shape through the Python API"
                    )
                mode = self._resize_mode(model, prepared.source)
                if is_frame(payload):  # decoded by its source: scaled straight to what we need
                    upright = payload.size
                    scaled = covering_size(upright[0], upright[1], spec.width, spec.height, mode)
                    pixels = payload.to_array(*scaled)
                    decoded = time.perf_counter()
                    if scaled == (spec.width, spec.height) and spec.channels == 3:  # the model's size already
                        geometry = geometry_for(upright[0], upright[1], spec.width, spec.height, mode)
                        ready = Prepared(pixels, geometry)
                    else:
                        image = Image.fromarray(pixels)
                        ready = fit(image, upright, spec.width, spec.height, spec.channels, mode, name=name)
                else:
                    image, upright = load_upright(payload, (spec.width, spec.height), mode, self.max_pixels)
                    decoded = time.perf_counter()
                    ready = fit(image, upright, spec.width, spec.height, spec.channels, mode, name=name)
                prepared.tensor = to_input_tensor(ready.pixels, spec)
                prepared.geometry, prepared.image_size = ready.geometry, upright
        except EdgeError as exc:
            prepared.error = str(exc)
            return prepared
        except Exception as exc:  # an input must never take the run down
            log.debug("unexpected failure preparing %s", name, exc_info=True)
            prepared.error = f"{name}: cannot use this input ({type(exc).__name__}: {exc})"
            return prepared
        done = time.perf_counter()
        prepared.decode_ms = (decoded - start) * 1000
        prepared.preprocess_ms = (done - decoded) * 1000
        return prepared

    def _finish(self, prepared: _Prepared) -> InferenceResult:
        """Invoke and postprocess with the current model (re-preparing if the swap changed the input)."""
        with self._lock:
            model, top_k, threshold = self._model, self.top_k, self.threshold
            own = self._per_source.get(prepared.source) if prepared.source is not None else None
        if own is not None:
            top_k = own.top_k if own.top_k is not None else top_k
            threshold = own.threshold if own.threshold is not None else threshold
        if model is not prepared.model and prepared.error is None and model.input != prepared.model.input:
            prepared = self._prepare(prepared.item, model)
        result = None
        error = prepared.error
        decode_ms, preprocess_ms = prepared.decode_ms, prepared.preprocess_ms
        invoke_ms = post_ms = total_ms = 0.0
        if error is None and prepared.tensor is not None:
            try:
                start = time.perf_counter()
                raw = model.invoke(prepared.tensor)
                invoked = time.perf_counter()
                result = model.decode(model.dequantized(raw), top_k, threshold, prepared.geometry)
                finished = time.perf_counter()
                invoke_ms, post_ms = (invoked - start) * 1000, (finished - invoked) * 1000
                total_ms = decode_ms + preprocess_ms + invoke_ms + post_ms
            except EdgeError as exc:
                error = str(exc)
            except Exception as exc:
                log.debug("unexpected failure running %s", prepared.name, exc_info=True)
                error = f"{prepared.name}: inference failed ({type(exc).__name__}: {exc})"
        if error is not None and not error.startswith(prepared.name):
            error = f"{prepared.name}: {error}" if prepared.name not in error else error
        capture_ms = None
        if prepared.captured_mono is not None:
            capture_ms = (time.perf_counter() - prepared.captured_mono) * 1000
        timing = Timing(decode_ms, preprocess_ms, invoke_ms, post_ms, total_ms, capture_ms)
        outcome = InferenceResult(
            input=prepared.name,
            model_name=model.name,
            model_version=model.version,
            task=model.task,
            result=None if error else result,
            timing=timing,
            error=error,
            image_size=prepared.image_size,
            time=_now(),
            source=prepared.source,
            frame=prepared.frame,
            captured_at=prepared.captured_at,
            media_time=prepared.media_time,
        )
        self._stats.record((decode_ms, preprocess_ms, invoke_ms, post_ms, total_ms), error is not None)
        shadow = self.shadow
        if shadow is not None and result is not None:
            shadow.offer(prepared, model, result, invoke_ms, top_k, threshold)
        self._emit(outcome)
        return outcome

    def _emit(self, outcome: InferenceResult) -> None:
        if not self.sinks and not self.annotators:
            return
        record = outcome.to_json()
        for annotate in self.annotators:
            try:
                annotate(outcome, record)
            except Exception as exc:  # an extra (a mask file) failing must not lose the result
                log.warning("%s: %s", outcome.input, exc)
        for sink in list(self.sinks):
            try:
                sink.emit(record)
            except Exception as exc:  # one broken sink must not lose results for the others
                log.warning("sink %r failed: %s", sink, exc)


def workers_for(prepare_ms: float, invoke_ms: float, most: int) -> int:
    """Decode threads for inputs that take ``prepare_ms`` to decode and ``invoke_ms`` to invoke: 0 (serial)
    when either is under ``OVERLAP_MIN_MS``, else enough to keep the interpreter busy, at most ``most``."""
    if most < 1 or min(prepare_ms, invoke_ms) < OVERLAP_MIN_MS:
        return 0
    return max(1, min(most, math.ceil(prepare_ms / invoke_ms)))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _is_tensor_shaped(array: np.ndarray, shape: tuple[int, ...]) -> bool:
    return tuple(array.shape) == shape or (1,) + tuple(array.shape) == shape


def _is_image_shaped(array: np.ndarray) -> bool:
    return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
