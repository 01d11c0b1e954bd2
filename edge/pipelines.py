"""One interpreter per source: several pipelines, each running its own sources on its own thread.

``edge run --interpreters per-source`` (or a profile's ``interpreters = "per-source"``) gives every source its
own model instance, so two cameras are inferred at the same time instead of in turn: for boards with an
accelerator per camera, or cores enough to split. To the MQTT side and the update agent the group is one
pipeline: one list of sinks, one set of statistics, and a model swap reaches every member (each gets its own
copy of the new model, loaded from the same file).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from edge.model import Model
from edge.pipeline import InferenceResult, Pipeline, SourceModelOptions
from edge.sinks import Sink
from edge.stats import RollingStats

log = logging.getLogger(__name__)

_DONE = object()


class PipelineGroup:
    """Pipelines that share sinks and statistics; ``run`` drives each over its own items on a thread."""

    def __init__(self, pipelines: Sequence[Pipeline], copy_model: Callable[[Model], Model]) -> None:
        if not pipelines:
            raise ValueError("a pipeline group needs at least one pipeline")
        self.pipelines = list(pipelines)
        self._copy_model = copy_model
        first = self.pipelines[0]
        shared_stats = RollingStats()
        for pipeline in self.pipelines:
            pipeline.sinks = first.sinks  # one list: a sink added later (MQTT, health) sees every result
            pipeline.use_stats(shared_stats)

    @property
    def model(self) -> Model:
        return self.pipelines[0].model

    @property
    def sinks(self) -> list[Sink]:
        return self.pipelines[0].sinks

    def add_sink(self, sink: Sink) -> None:
        self.pipelines[0].add_sink(sink)

    def swap_model(self, new_model: Model) -> None:
        """``new_model`` for the first pipeline, a copy loaded from the same file for each other one."""
        copies = [self._copy_model(new_model) for _ in self.pipelines[1:]]  # all loaded before any swap
        self.pipelines[0].swap_model(new_model)
        for pipeline, copy in zip(self.pipelines[1:], copies, strict=True):
            pipeline.swap_model(copy)

    def set_options(self, top_k: int | None = None, threshold: float | None = None) -> None:
        for pipeline in self.pipelines:
            pipeline.set_options(top_k=top_k, threshold=threshold)

    def set_source_options(self, source: str, options: SourceModelOptions) -> None:
        for pipeline in self.pipelines:
            pipeline.set_source_options(source, options)

    def stats(self) -> dict[str, Any]:
        return self.pipelines[0].stats()

    def infer(self, item: Any) -> InferenceResult:
        return self.pipelines[0].infer(item)

    def close(self) -> None:
        self.pipelines[0].close()  # the sinks are shared: closed once

    def run(
        self, item_streams: Sequence[Iterable[Any]], stop: threading.Event | None = None
    ) -> Iterator[InferenceResult]:
        """Each pipeline over its own items, at the same time; results as they come, until all have ended.

        To end early, set ``stop`` and stop the sources: each member finishes the input in flight and ends.
        """
        stop = stop or threading.Event()
        if len(item_streams) != len(self.pipelines):
            raise ValueError(f"{len(item_streams)} item streams for {len(self.pipelines)} pipelines")
        results: queue.Queue[Any] = queue.Queue(maxsize=2 * len(self.pipelines))

        def hand_over(got: Any) -> bool:
            while True:
                try:
                    results.put(got, timeout=0.2)
                    return True
                except queue.Full:
                    if stop.is_set():  # nobody reads any more
                        return False

        def drive(pipeline: Pipeline, items: Iterable[Any]) -> None:
            try:
                for result in pipeline.run(items):
                    if not hand_over(result):
                        return
            except BaseException as exc:  # handed to the consumer, which re-raises it
                hand_over(exc)
            finally:
                hand_over(_DONE)

        threads = [
            threading.Thread(target=drive, args=(pipeline, items), name=f"edge-pipeline-{n}", daemon=True)
            for n, (pipeline, items) in enumerate(zip(self.pipelines, item_streams, strict=True))
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            got = results.get()
            if got is _DONE:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
