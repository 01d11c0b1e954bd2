"""Hot swaps free the model they replace at once: no reference cycle keeps an old interpreter (and its
threads) alive until a full garbage collection (the soak benchmark saw a thread and ~1.3 MB per swap)."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

from edge.activation import PipelineActivator
from edge.health import HealthPolicy
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.store import ModelStore
from tests.assets import Assets


def test_a_swapped_out_model_is_freed_without_a_garbage_collection(assets: Assets, tmp_path: Path) -> None:
    image = sorted(assets.digit_images.iterdir())[0]
    pipeline = Pipeline(load_model(assets.model("digits_int8")))
    policy = HealthPolicy(inferences=3, seconds=60)
    activator = PipelineActivator(pipeline, ModelStore(tmp_path), policy=policy)
    refs = []
    gc.collect()
    gc.disable()  # only reference counting frees now: a cycle would keep the model
    try:
        for _ in range(3):
            candidate = load_model(assets.model("digits_int8"))
            decided = threading.Event()
            activator.activate(candidate, None, lambda reason, done=decided: done.set(),  # type: ignore[arg-type]
                               decided.set)
            refs.append(weakref.ref(candidate))
            del candidate
            for _ in range(5):
                assert pipeline.infer(image).error is None
            assert decided.wait(10)
        # the first candidate was replaced by the second (kept for a rollback), then the second by the third
        assert refs[0]() is None
        assert refs[1]() is not None and refs[2]() is pipeline.model
        # a window cut short by the next update takes its detour away too
        fresh = load_model(assets.model("digits_int8"))
        activator.activate(fresh, None, lambda reason: None, lambda: None)  # type: ignore[arg-type]
        watched = weakref.ref(fresh)
        del fresh
        for _ in range(2):
            nxt = load_model(assets.model("digits_int8"))
            activator.activate(nxt, None, lambda r: None, lambda: None)  # type: ignore[arg-type]
            del nxt
        assert watched() is None
    finally:
        gc.enable()
