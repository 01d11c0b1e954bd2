"""The Python API for applications that embed the runtime: ``edge.load_model`` -> ``Predictor``.

A ``Predictor`` is a thin layer over the parts ``edge run`` wires: the model loader
(``edge.model.load_model``, packages and bare ``.tflite`` files alike), the inference pipeline
(``edge.pipeline.Pipeline``: decoding, preprocessing, invoke and the task decoders) and, for ``stream``, the
sources (``edge.sources.feeds``) with their multiplexer. So ``predict`` and ``stream`` return the very
``InferenceResult`` objects ``edge run`` prints, with their ``timing`` and ``to_json()``.

Errors are those of ``edge.errors``: options that are not allowed raise ``ConfigError`` at once, a model
that cannot be loaded ``ModelError``/``BackendError``; ``predict`` raises ``InputError`` for an input it
cannot use, while ``stream`` yields a failed result (``result.error`` set) for it and goes on, as
``edge run`` does.

Reference and examples: ``docs/python-api.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError, InputError, ModelError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from edge.model import Model
    from edge.pipeline import InferenceResult, Pipeline
    from edge.sources.base import SourceBoard
    from edge.sources.feeds import SourcesSettings
    from edge.sources.live import SourceMux

    ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray

__all__ = ["Predictor", "Stream", "load_model"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def load_model(
    path: PathLike,
    *,
    labels: Sequence[str] | PathLike | None = None,
    task: str | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    top_k: int = 5,
    threshold: float = 0.0,
    resize: str | None = None,
    backend: str = "auto",
    accelerator: str | None = None,
    device: str | None = None,
    require_accelerator: bool = False,
    threads: int | None = None,
    warmup: bool = True,
    label_offset: int | None = None,
    mask_dir: PathLike | None = None,
) -> Predictor:
    """Load a model package (``.edgepkg``) or a bare ``.tflite`` file, ready to ``predict`` and ``stream``.

    The options are those of ``edge run``: ``labels`` (a labels file, or the labels themselves), ``task``
    (``classification``, ``detection``, ``segmentation``, ``raw``; default: the manifest's, else guessed
    from the outputs), ``label_offset`` (class id k is label line k + offset; default: by convention),
    ``mean``/``std`` (one value or one per channel: the model gets ``(pixel - mean) / std``), ``top_k``,
    ``threshold`` (0..1), ``resize`` (``stretch``, ``letterbox``, ``crop``; default letterbox for a YOLO-style
    detector, stretch otherwise), ``backend`` (``auto``, ``litert``, ``tflite-runtime``, ``tensorflow``),
    ``accelerator`` (``--delegate``: ``edgetpu``, ``cpu`` or a delegate library path), ``device``
    (``usb``, ``usb:N``, ``pci``, ``pci:N``), ``require_accelerator`` (fail instead of falling back to the
    CPU), ``threads`` (interpreter threads; default: the interpreter's) and ``mask_dir`` (segmentation:
    each result's colour mask PNG is written there, named after the input; unlike ``edge run``'s
    record, ``result.to_json()`` does not name it). Without
    ``warmup=False`` one
    invoke on zeros runs now, so the first ``predict`` does not pay for lazy initialization.
    """
    from edge.model import load_model as load_low_level

    _check_options(top_k, threshold, resize)
    model = load_low_level(
        os.fspath(path),
        backend=backend,
        threads=threads,
        task=task,
        mean=mean,
        std=std,
        delegate=accelerator,
        device=device,
        require_accelerator=require_accelerator,
        labels=os.fspath(labels) if isinstance(labels, os.PathLike) else labels,
        warmup=warmup,
        label_offset_override=label_offset,
    )
    return Predictor(model, top_k=top_k, threshold=threshold, resize=resize, mask_dir=mask_dir)


def _check_options(top_k: int, threshold: float, resize: str | None) -> None:
    """The pipeline's own checks, done before the (slow) model load; they raise ``ConfigError``."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a whole number of at least 1, got {top_k!r}")
    if not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold!r}")
    if resize is not None:
        from edge.preprocess import check_mode

        check_mode(resize)


class Predictor:
    """A loaded model with its pipeline options: ``predict`` one image, ``stream`` files, videos and cameras.

    Thread-safe: ``predict`` may be called from several threads (the interpreter runs one input at a time)
    while streams run. ``close()`` (or leaving a ``with`` block) ends every open stream and releases the
    interpreter; the predictor cannot be used after that.
    """

    def __init__(
        self,
        model: Model,
        *,
        top_k: int = 5,
        threshold: float = 0.0,
        resize: str | None = None,
        mask_dir: PathLike | None = None,
    ) -> None:
        from edge.pipeline import Pipeline

        _check_options(top_k, threshold, resize)
        self.top_k, self.threshold, self.resize = top_k, float(threshold), resize
        self.annotators: list[Any] = []
        if mask_dir is not None:
            from edge.tasks.segmentation import MaskWriter

            self.annotators.append(MaskWriter(os.fspath(mask_dir)))
        self._model: Model | None = model
        # serial: one input at a time, nothing to decode ahead
        self._pipeline: Pipeline | None = Pipeline(
            model, top_k=top_k, threshold=threshold, resize=resize, decode_workers=0, overlap=False,
            annotators=self.annotators,
        )
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- the model

    @property
    def model(self) -> Model:
        """The low-level ``edge.model.Model`` (interpreter, tensors, labels); ``ModelError`` once closed."""
        if self._model is None:
            raise ModelError("this model was closed; load it again with edge.load_model(path)")
        return self._model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    @property
    def input_size(self) -> tuple[int, int]:
        """The model input's (width, height); (0, 0) when it is not an image."""
        spec = self.model.input
        return spec.width, spec.height

    @property
    def closed(self) -> bool:
        return self._model is None

    def describe(self) -> dict[str, Any]:
        """Name, version, task, path, backend, threads, accelerator, label count, input and output tensors."""
        return self.model.describe()

    def stats(self) -> dict[str, Any]:
        """``predict``'s latency per stage (p50/p95/p99/mean ms, recent window), count, errors, fps."""
        return self._serial().stats()

    # ------------------------------------------------------------------------------------------- running

    def predict(self, image: ImageInput) -> InferenceResult:
        """One image to its result: a path, bytes of an image file, a PIL image or a numpy array.

        Arrays are images (H, W) or (H, W, C) with C 1, 3 or 4, uint8 (or float 0..255), in RGB order; an
        array of exactly the model input's shape (with or without the batch axis) is fed as it is.
        Returns an ``InferenceResult`` (``.result``, ``.timing``, ``.to_json()``: the record
        ``edge run --json`` prints); raises ``InputError`` when the input cannot be used, with the same
        message ``edge run`` gives it.
        """
        _check_single(image)
        result = self._serial().infer(image)
        if result.error is not None:
            raise InputError(result.error)
        return result

    def stream(
        self,
        inputs: PathLike | Iterable[PathLike] = (),
        *,
        names: Sequence[str] = (),
        fps: float | None = None,
        motion: float | None = None,
        realtime: bool = False,
        limit: int | None = None,
        watch: PathLike | None = None,
        url: str | None = None,
        interval: float = 5.0,
        rtsp_transport: str = "tcp",
        stall_timeout: float = 10.0,
    ) -> Stream:
        """Results for the inputs ``edge run`` takes, as they come: an iterator and a context manager.

        ``inputs``: image files and folders (one result per file, in order), video files (every frame, in
        order), stream URLs (``rtsp://``, ``http(s)://`` MJPEG or HLS, ...), ``/dev/videoN`` and
        ``picamera:N``; ``watch`` a folder (each new file), ``url`` a snapshot URL polled every ``interval``
        seconds. Several sources are taken in fair round-robin; each result names its ``source`` and
        ``frame``. ``names`` name the stream/camera/video inputs in order (default from the host, device or
        file name); ``fps`` caps inferences per second per source, ``motion`` (percent of the picture) skips
        frames that did not change, ``realtime`` paces video files like a camera, ``limit`` stops after
        that many results. A live source runs until ``close()``: it is reopened with backoff when it fails.
        An input that cannot be used is a result with ``error`` set, and the stream goes on.
        """
        settings = _sources_settings(
            inputs, names, fps, motion, realtime, watch, url, interval, rtsp_transport, stall_timeout
        )
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"limit must be a whole number of at least 1, got {limit!r}")
        stream = Stream(self, settings, limit)
        with self._lock:
            self._streams.add(stream)
        return stream

    def _serial(self) -> Pipeline:
        if self._pipeline is None:
            raise ModelError("this model was closed; load it again with edge.load_model(path)")
        return self._pipeline

    # ------------------------------------------------------------------------------------------ closing

    def close(self) -> None:
        """End every open stream and release the interpreter. Calling it again does nothing."""
        with self._lock:
            streams = list(self._streams)
            self._streams.clear()
        for stream in streams:
            stream.close()
        self._pipeline = None
        self._model = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._model is None:
            return "Predictor(closed)"
        return f"Predictor({self._model.name!r} v{self._model.version}, task={self._model.task})"


def _check_single(image: Any) -> None:
    """``predict`` takes one image: a video, stream, camera or folder goes to ``stream``."""
    if not isinstance(image, str | os.PathLike):
        return
    from edge.sources.base import kind_of, mask_url

    target = os.fspath(image)
    if not isinstance(target, str):
        return  # bytes paths: the pipeline says what is wrong
    kind = kind_of(target)
    if kind != "files":
        raise InputError(
            f"{mask_url(target)} is a {kind}, not an image; use model.stream([{mask_url(target)!r}]) for it"
        )
    if Path(target).is_dir():
        raise InputError(f"{target} is a folder; use model.stream([{target!r}]) for its images")


def _sources_settings(
    inputs: PathLike | Iterable[PathLike],
    names: Sequence[str],
    fps: float | None,
    motion: float | None,
    realtime: bool,
    watch: PathLike | None,
    url: str | None,
    interval: float,
    rtsp_transport: str,
    stall_timeout: float,
) -> SourcesSettings:
    """What ``edge run`` makes of its INPUTs and flags (``sources_settings``), from keyword values."""
    from edge.sources.feeds import SourceSpec, SourcesSettings, is_source, name_sources
    from edge.sources.live import FeedOptions
    from edge.sources.stream import StreamOptions, check_options

    given = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    targets = [os.fspath(each) for each in given]
    if any(not isinstance(each, str) for each in targets):
        raise ConfigError(f"stream inputs are paths, URLs or devices (str or Path), got {given!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a number more than 0, got {fps}")
    if motion is not None:
        from edge.motion import check_threshold

        check_threshold(motion)
    if url is not None:
        from edge.sources.snapshot import check_url

        check_url(url)
        if not (math.isfinite(interval) and interval > 0):
            raise ConfigError(f"interval must be more than 0 seconds, got {interval}")
    if watch is not None and not Path(watch).is_dir():
        raise ConfigError(f"watch {os.fspath(watch)!r}: not a folder; create it or check the path")
    options = check_options(StreamOptions(rtsp_transport=rtsp_transport, realtime=bool(realtime),
                                          stall_timeout=stall_timeout, interval=interval))
    feed = FeedOptions(fps=fps, motion=motion)
    live = [str(t) for t in targets if is_source(str(t))]
    named = zip(live, name_sources(live, [names] if isinstance(names, str) else list(names)), strict=True)
    settings = SourcesSettings(
        files=tuple(str(t) for t in targets if not is_source(str(t))),
        watch=None if watch is None else Path(watch),
        url=url,
        interval=interval,
        sources=tuple(SourceSpec(target, name, options, feed) for target, name in named),
    )
    if settings.empty:
        raise ConfigError("no input given; pass image files or folders, video files, stream URLs, "
                          "/dev/videoN, picamera:N, watch=DIR or url=URL")
    return settings


class Stream:
    """Results of ``Predictor.stream``, in order: iterate it once; ``close()`` or ``with`` stops its sources.

    The sources start at the first ``next()``. ``states()`` tells where each source stands (``connecting``,
    ``streaming``, ``stalled``, ``down``, ``finished``) with its counters; ``stats()`` the latency per stage.
    ``close()`` may be called from another thread: the iteration then ends after the result in flight.
    """

    def __init__(self, predictor: Predictor, settings: SourcesSettings, limit: int | None) -> None:
        from edge.pipeline import Pipeline
        from edge.sources.base import SourceBoard
        from edge.sources.feeds import build_feeds
        from edge.sources.live import SourceMux

        model = predictor.model
        self._stop = threading.Event()
        self.board: SourceBoard = SourceBoard()
        hint = (model.input.width, model.input.height) if model.input.is_image else None
        self._mux: SourceMux = SourceMux(build_feeds(settings, hint), self.board, self._stop)
        # as edge run: a live frame is taken when the interpreter is free; decoding ahead would queue old ones
        self._pipeline: Pipeline = Pipeline(
            model, top_k=predictor.top_k, threshold=predictor.threshold, resize=predictor.resize,
            overlap=False if self._mux.live else None, annotators=predictor.annotators,
        )
        self._limit = limit
        self._results: Iterator[InferenceResult] | None = None
        self._closed = False
        self._closing = threading.Lock()
        self._mux_closed = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> InferenceResult:
        if self._closed:
            self.close()  # closed from another thread: return once its sources have stopped
            raise StopIteration
        if self._results is None:  # as edge run's --limit: take no more inputs than that
            items = itertools.islice(self._mux, self._limit) if self._limit else iter(self._mux)
            self._results = self._pipeline.run(items)
        try:
            return next(self._results)
        except StopIteration:
            self.close()
            raise

    def states(self) -> dict[str, dict[str, Any]]:
        """Each source's state and counters (captured, skipped, motion_skipped, inferred, reconnects...)."""
        return self.board.snapshot()

    def stats(self) -> dict[str, Any]:
        """This stream's latency per stage (p50/p95/p99/mean ms), count, errors and fps."""
        return self._pipeline.stats()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the sources and wait (up to 5 s) for their threads; a second call waits for the first."""
        self._closed = True  # the iteration ends at its next step
        with self._closing:
            if self._mux_closed:
                return
            self._mux.close()
            self._mux_closed = True
        close = getattr(self._results, "close", None)  # the pipeline's generator
        if close is not None:
            # its decode workers end with it; being iterated in another thread it ends there by itself
            with contextlib.suppress(ValueError):
                close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:  # dropped without close(): at least let the source threads end
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
