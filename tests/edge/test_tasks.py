"""Task decoders: classification, SSD- and YOLO-style detection (real models, hand-computed boxes), raw."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from edge.errors import ConfigError, ModelError
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.preprocess import geometry_for
from edge.tasks import TaskContext, get_decoder
from edge.tasks.classification import decode as classify
from edge.tasks.detection import decode as detect
from edge.tasks.detection import identify_ssd, nms
from edge.tasks.raw import decode as raw_decode
from tests.assets import QUADRANT_BOXES


def context(**kwargs):
    base = {"output_names": (), "label": lambda i: f"L{i}", "input_size": (64, 64)}
    base.update(kwargs)
    return TaskContext(**base)


# ---------------------------------------------------------------------------------------- classification


def test_top_k_threshold_and_labels():
    scores = np.array([[0.05, 0.6, 0.1, 0.25]], np.float32)
    result = classify([scores], context(top_k=3, threshold=0.2))
    assert [(c.label, c.index) for c in result.classes] == [("L1", 1), ("L3", 3)]
    assert result.classes[0].score == pytest.approx(0.6)
    assert result.to_json()["classes"][1] == {"label": "L3", "index": 3, "score": 0.25}


def test_logits_get_a_softmax():
    result = classify([np.array([[2.0, -1.0, 0.0]])], context(top_k=3))
    expected = np.exp([2.0, -1.0, 0.0]) / np.exp([2.0, -1.0, 0.0]).sum()
    assert [c.index for c in result.classes] == [0, 2, 1]
    assert [c.score for c in result.classes] == pytest.approx(sorted(expected, reverse=True))


def test_classification_refuses_a_detection_shaped_output():
    with pytest.raises(ModelError, match=r"\[1, 10, 4\].*--task raw"):
        classify([np.zeros((1, 10, 4))], context())


def test_unknown_task():
    with pytest.raises(ConfigError, match="task 'pose'"):
        get_decoder("pose")


def test_digits_classified_from_png_files(assets):
    pipeline = Pipeline(load_model(assets.model("digits_int8")), top_k=1)
    files = sorted(assets.digit_images.iterdir())
    correct = sum(
        r.result.classes[0].label == f.stem.split("_")[1]
        for f, r in zip(files, pipeline.run(files), strict=True)
    )
    assert correct / len(files) >= 0.9


# ------------------------------------------------------------------------------------------ SSD-style


def ssd_outputs():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.9, 0.9]]], np.float32)
    classes = np.array([[2.0, 0.0, 1.0]], np.float32)
    scores = np.array([[0.9, 0.3, 0.6]], np.float32)
    count = np.array([2.0], np.float32)
    return boxes, classes, scores, count


def test_ssd_outputs_recognised_in_any_order():
    for order in itertools.permutations(range(4)):
        outputs = [ssd_outputs()[i] for i in order]
        boxes, classes, scores, count = identify_ssd(outputs)
        assert (order[boxes], order[classes], order[scores], order[count]) == (0, 1, 2, 3), order


def test_ssd_decoding_against_hand_computed_boxes():
    # 128x64 image letterboxed into 64x64: scale 0.5, 16 px bars above and below.
    geometry = geometry_for(128, 64, 64, 64, "letterbox")
    assert (geometry.scale_x, geometry.scale_y, geometry.offset_x, geometry.offset_y) == (0.5, 0.5, 0.0, 16.0)
    outputs = list(ssd_outputs())[::-1]  # count, scores, classes, boxes
    result = detect(outputs, context(threshold=0.2, geometry=geometry))
    # count = 2 limits to the first two rows; the second (score 0.3) passes 0.2
    assert [(o.index, o.label) for o in result.objects] == [(2, "L2"), (0, "L0")]
    first = result.objects[0]
    # ymin .1 xmin .2 ymax .5 xmax .6 -> model px x 12.8..38.4, y 6.4..32
    # -> original x 25.6..76.8, y 0 (clipped)..32
    assert first.box == pytest.approx((25.6, 0.0, 76.8, 32.0))
    assert result.objects[1].box == pytest.approx(
        (0.0, 0.0, 128.0, 64.0)
    )  # the whole frame, bars clipped off


def test_ssd_model_end_to_end_with_letterbox(assets):
    # Red top-left (original x 0..64, y 0..32) and 80% green bottom-right (x 64..128, y 32..64) of 128x64.
    image = np.zeros((64, 128, 3), np.uint8)
    image[:32, :64, 0] = 255
    image[32:, 64:, 1] = 204
    pipeline = Pipeline(load_model(assets.model("ssd"), std=255.0), resize="letterbox")
    result = pipeline.infer(image)
    assert result.error is None and result.task == "detection"
    objects = result.result.objects
    assert [o.index for o in objects] == [0, 1]  # red (class 0) 0.5, then green (class 1) 0.4
    assert objects[0].score == pytest.approx(0.5, abs=0.02)
    assert objects[1].score == pytest.approx(0.4, abs=0.02)
    # TL quadrant box (0.05..0.45 of 64) = model px 3.2..28.8; letterbox offset 16, scale 0.5
    assert objects[0].box == pytest.approx((6.4, 0.0, 57.6, 25.6), abs=0.01)
    ymin, xmin, ymax, xmax = QUADRANT_BOXES[3]
    expected = (xmin * 64 / 0.5, (ymin * 64 - 16) / 0.5, xmax * 64 / 0.5, min(64.0, (ymax * 64 - 16) / 0.5))
    assert objects[1].box == pytest.approx(expected, abs=0.01)
    assert result.to_json()["objects"][0]["box"] == [6.4, 0.0, 57.6, 25.6]


def test_ssd_threshold_drops_low_scores(assets):
    image = np.zeros((64, 128, 3), np.uint8)
    image[:32, :64, 0] = 255
    image[32:, 64:, 1] = 204
    pipeline = Pipeline(load_model(assets.model("ssd"), std=255.0), threshold=0.45, resize="letterbox")
    assert [o.index for o in pipeline.infer(image).result.objects] == [0]


# ----------------------------------------------------------------------------------------- YOLO-style


def test_yolo_model_end_to_end_with_nms(assets):
    # 128x128 -> 64x64 (scale 0.5). Red in cell (row 2, col 1), green in cell (row 0, col 3).
    image = np.zeros((128, 128, 3), np.uint8)
    image[64:96, 32:64, 0] = 255
    image[0:32, 96:128, 1] = 255
    pipeline = Pipeline(load_model(assets.model("yolo"), std=255.0, task="detection"))
    objects = pipeline.infer(image).result.objects
    # each cell also predicts a 20x20 box scored 0.9x: NMS (IoU 0.64) must drop both
    assert len(objects) == 2
    by_class = {o.index: o for o in objects}
    assert by_class[0].box == pytest.approx((32.0, 64.0, 64.0, 96.0), abs=0.01)
    assert by_class[1].box == pytest.approx((96.0, 0.0, 128.0, 32.0), abs=0.01)
    assert by_class[0].score == pytest.approx(1.0, abs=0.05)  # bilinear resizing softens the edges


def test_yolo_letterbox_mapping(assets):
    # 128x64 letterboxed: scale 0.5, offset_y 16. Red original x 0..32, y 0..32 -> model cell (row 1, col 0).
    image = np.zeros((64, 128, 3), np.uint8)
    image[0:32, 0:32, 0] = 255
    pipeline = Pipeline(load_model(assets.model("yolo"), std=255.0, task="detection"), resize="letterbox")
    objects = pipeline.infer(Image.fromarray(image)).result.objects
    assert len(objects) == 1
    assert objects[0].box == pytest.approx((0.0, 0.0, 32.0, 32.0), abs=0.01)


def test_yolov5_layout_with_objectness():
    rows = np.zeros((1, 3, 5 + 2), np.float32)  # (1, N, 5 + C), normalized boxes
    rows[0, 0] = [0.5, 0.5, 0.25, 0.25, 0.9, 0.1, 0.8]  # objectness 0.9 * class-1 0.8 = 0.72
    rows[0, 1] = [0.5, 0.5, 0.26, 0.26, 0.8, 0.1, 0.8]  # overlaps the first: suppressed
    rows[0, 2] = [0.5, 0.5, 0.25, 0.25, 0.2, 0.1, 0.9]  # 0.18 below the default 0.25
    result = detect([rows], context(num_labels=2, input_size=(64, 32)))
    assert len(result.objects) == 1
    only = result.objects[0]
    assert only.index == 1 and only.score == pytest.approx(0.72)
    assert only.box == pytest.approx((24.0, 12.0, 40.0, 20.0))  # cx 32, cy 16, w 16, h 8 in model pixels


def test_nms_is_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float64)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), 0.45)
    assert kept == [0, 2]


def test_detection_with_unrecognisable_outputs():
    with pytest.raises(ModelError, match="SSD-style.*YOLO-style"):
        detect([np.zeros((1, 10)), np.zeros((1, 5))], context())


# ------------------------------------------------------------------------------------------------- raw


def test_raw_outputs_by_name(assets):
    pipeline = Pipeline(load_model(assets.model("ssd"), std=255.0, task="raw"))
    record = pipeline.infer(np.full((64, 64, 3), 255, np.uint8)).to_json()
    outputs = record["outputs"]
    assert record["task"] == "raw" and len(outputs) == 4
    shapes = sorted(np.asarray(v).shape for v in outputs.values())
    assert shapes == [(1,), (1, 4), (1, 4), (1, 4, 4)]


def test_raw_deduplicates_names():
    result = raw_decode([np.zeros(1), np.ones(1), np.ones(2)], context(output_names=("a", "a")))
    assert list(result.to_json()["outputs"]) == ["a", "a_1", "output_2"]
