"""The shadow stage's bookkeeping: policies, the comparison per task, and a real candidate beside a real
active model in a real pipeline (the CPU budget, the verdict, resuming from saved figures)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.shadow import Shadow, ShadowPolicy, correlation, match_detections, mean_iou, parse_length
from edge.tasks.detection import DetectedObject
from tests.assets import Assets


def test_lengths_and_policies_are_checked():
    assert parse_length("200") == (200, None)
    assert parse_length("90s") == (None, 90.0) and parse_length("10m") == (None, 600.0)
    with pytest.raises(ConfigError, match="duration"):
        parse_length("ten")
    assert ShadowPolicy.from_json({"samples": 50, "min_agreement": 0.8}).samples == 50
    with pytest.raises(ConfigError, match="samples 3"):
        ShadowPolicy.from_json({"samples": 3})
    with pytest.raises(ConfigError, match="min_agreement 1.5"):
        ShadowPolicy.from_json({"min_agreement": 1.5})
    with pytest.raises(ConfigError, match="unknown field"):
        ShadowPolicy.from_json({"sample": 50})


def test_a_device_policy_is_a_floor_an_offer_cannot_lower():
    device = ShadowPolicy(samples=100, min_agreement=0.95, max_latency_ratio=1.5)
    lax = ShadowPolicy(samples=10, min_agreement=0.1, max_latency_ratio=10.0, budget=2.0, seconds=30.0)
    both = lax.stricter(device)
    assert (both.samples, both.min_agreement, both.max_latency_ratio, both.budget) == (100, 0.95, 1.5, 0.25)
    assert both.seconds is None and both == device.stricter(lax)  # the offer cannot cut the stage short
    timed = ShadowPolicy(seconds=60.0).stricter(ShadowPolicy(seconds=30.0))
    assert timed.seconds == 60.0
    ten = ShadowPolicy.for_length("10m")
    assert ten.seconds == 600.0 and ten.give_up_s == 1800


def test_a_stage_with_no_inputs_ends_on_the_clock():
    done: list[dict] = []
    shadow = Shadow(object(), ShadowPolicy(samples=50, give_up_s=1.5), done.append)
    for _ in range(60):
        if done:
            break
        threading.Event().wait(0.1)
    shadow.close()
    assert done and not done[0]["passed"] and "only 0 live input(s)" in done[0]["reason"], done


def box(label: str, x: float) -> DetectedObject:
    return DetectedObject(label, 0, 0.9, (x, 10.0, x + 20, 30.0))


def test_detections_match_by_label_and_iou():
    ours = [box("cat", 0), box("dog", 100), box("cat", 200)]
    theirs = [box("cat", 2), box("cat", 100), box("car", 300)]  # a cat where the dog was: no match
    tp, fp, fn, per_tp, per_fn = match_detections(ours, theirs)
    assert (tp, fp, fn) == (1, 2, 2)
    assert per_tp == {"cat": 1} and per_fn == {"dog": 1, "cat": 1}


def test_class_maps_and_raw_outputs():
    a = np.zeros((4, 4), np.int64)
    a[:2] = 1
    b = a.copy()
    b[0, 0] = 0
    assert mean_iou(a, a) == 1.0
    assert mean_iou(a, b) == pytest.approx((7 / 8 + 8 / 9) / 2)
    x = np.arange(10.0)
    assert correlation([("y", x)], [("y", 2 * x + 1)]) == pytest.approx(1.0)
    assert correlation([("y", x)], [("y", -x)]) == pytest.approx(-1.0)


def _digit_inputs(assets: Assets, n: int) -> list[np.ndarray]:
    x, _ = assets.eval_set()
    return [x[i].astype(np.float32) for i in range(n)]


def test_a_real_candidate_beside_a_real_model_within_its_budget(assets: Assets):
    active = load_model(assets.model("digits_int8"))
    # the float model of the same network (raw pixels in): another input type, re-prepared for each sample
    candidate = load_model(assets.model("digits_float32"), mean=0.0, std=1.0)
    pipeline = Pipeline(active, top_k=1)
    done = threading.Event()
    verdicts: list[dict] = []

    def finish(figures: dict) -> None:
        verdicts.append(figures)
        done.set()

    policy = ShadowPolicy(samples=30, budget=0.25)
    pipeline.shadow = Shadow(candidate, policy, finish, prepare=pipeline._prepare)
    images = [(x.squeeze() * 1.0).astype(np.uint8) for x in _digit_inputs(assets, 60)]
    for _ in range(200):
        for image in images:
            pipeline.infer(image)
        if done.wait(0.01):
            break
    assert done.is_set(), pipeline.shadow.figures()
    figures = verdicts[0]
    assert figures["samples"] == 30 and figures["failures"] == 0
    assert figures["agreement"] >= 0.9 and figures["passed"]
    # the budget: the candidate's invoke time stays near 0.25 of the active model's (one sample of slack)
    state = figures["state"]
    assert figures["budget_used"] <= 0.25 + max(state["candidate_times"]) / state["active_ms"]
    assert figures["skipped"] > 0

    # the same candidate fed the wrong normalization is caught: it runs, and disagrees
    wrong = load_model(assets.model("digits_float32"))  # a bare float model: [-1, 1] assumed
    verdicts.clear()
    done.clear()
    pipeline.shadow = Shadow(wrong, policy, finish, prepare=pipeline._prepare)
    for _ in range(200):
        for image in images:
            pipeline.infer(image)
        if done.wait(0.01):
            break
    assert not verdicts[0]["passed"] and verdicts[0]["agreement"] < 0.5
    assert verdicts[0]["reason"].startswith("agreement")

    # a stage taken up from its saved state goes on counting from there
    resumed = Shadow(candidate, policy._replace(samples=40), lambda f: None, prepare=pipeline._prepare,
                     resume=figures["state"])
    assert resumed.figures()["samples"] == 30 and resumed.figures()["progress"] == 0.75
    resumed.close()
