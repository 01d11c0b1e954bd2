"""nudenet 3.4.2's real YOLOv8n, converted to TFLite at set-up (tests/third_party_yolo.py), answers as ONNX.

A bare LiteRT interpreter runs the ``.tflite`` on scikit-image's astronaut and on ``zidane`` / ``bus`` (from
the ``third_party`` fixture), each letterboxed to 320 x 320, RGB, x / 255, and must agree with onnxruntime's
stored output of the original ONNX file: boxes (cx, cy, w, h in input pixels) and the 18 class scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.third_party import ThirdParty, third_party  # noqa: F401
from tests.third_party_yolo import (
    ANCHORS,
    BOX_TOLERANCE_PX,
    NUM_CLASSES,
    ONNX_SHA256,
    PHOTOS,
    SCORE_TOLERANCE,
    SIZE,
    TOP_K,
    ThirdPartyYolo,
    letterbox,
    letterbox_geometry,
    third_party_yolo,  # noqa: F401
)

# The astronaut's (Eileen Collins') face centre, as a fraction of the photo (BlazeFace finds it there too).
ASTRONAUT_FACE = (0.44, 0.25)


def _photo(name: str, tp: ThirdParty) -> np.ndarray:
    if name == "astronaut":
        from skimage import data

        return np.asarray(data.astronaut())
    with Image.open(tp.photos[name]) as image:
        return np.asarray(image.convert("RGB"))


def _run(model: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x[None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0].copy()


@pytest.fixture(scope="module")
def outputs(
    third_party_yolo: ThirdPartyYolo,  # noqa: F811
    third_party: ThirdParty,  # noqa: F811
) -> dict[str, np.ndarray]:
    """The .tflite's (22, 2100) output on each reference photo."""
    return {name: _run(third_party_yolo.model, letterbox(_photo(name, third_party))) for name in PHOTOS}


def test_fixture_api(third_party_yolo: ThirdPartyYolo) -> None:  # noqa: F811
    yolo = third_party_yolo
    assert yolo.model.suffix == ".tflite" and yolo.model.stat().st_size > 10_000_000
    assert len(yolo.labels) == NUM_CLASSES
    assert yolo.labels[1] == "FACE_FEMALE" and yolo.labels[12] == "FACE_MALE"
    import hashlib

    assert hashlib.sha256(yolo.onnx.read_bytes()).hexdigest() == ONNX_SHA256
    reference = yolo.reference_data()
    assert set(reference["photos"]) == set(PHOTOS)
    for name, entry in reference["photos"].items():
        assert len(entry["anchors"]) == TOP_K and all(len(v) == 4 + NUM_CLASSES for v in entry["values"])
        assert yolo.agreement[name]["box_px"] <= BOX_TOLERANCE_PX
        assert yolo.agreement[name]["score"] <= SCORE_TOLERANCE


def test_io_signature(third_party_yolo: ThirdPartyYolo) -> None:  # noqa: F811
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(third_party_yolo.model))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert tuple(inp["shape"]) == (1, SIZE, SIZE, 3) and inp["dtype"] == np.float32
    assert tuple(out["shape"]) == (1, 4 + NUM_CLASSES, ANCHORS) and out["dtype"] == np.float32
    assert inp["quantization"] == (0.0, 0)


@pytest.mark.parametrize("name", PHOTOS)
def test_agrees_with_onnxruntime(
    name: str,
    outputs: dict[str, np.ndarray],
    third_party_yolo: ThirdPartyYolo,  # noqa: F811
) -> None:
    got = outputs[name]
    want = np.load(third_party_yolo.reference_outputs)[name][0]
    assert got.shape == want.shape == (4 + NUM_CLASSES, ANCHORS)
    assert np.abs(got[:4] - want[:4]).max() <= BOX_TOLERANCE_PX
    assert np.abs(got[4:] - want[4:]).max() <= SCORE_TOLERANCE
    # the small JSON reference says the same for its top anchors
    entry = third_party_yolo.reference_data()["photos"][name]
    np.testing.assert_allclose(got[:, entry["anchors"]].T, np.array(entry["values"]), atol=BOX_TOLERANCE_PX)
    # and the detections are not degenerate: real boxes inside the input, scores in 0..1
    best = got[4:].max(0)
    top = got[:, best.argmax()]
    assert 0 < top[0] < SIZE and 0 < top[1] < SIZE and 0 < top[2] < SIZE and 0 < top[3] < SIZE
    assert got[4:].min() >= 0 and got[4:].max() <= 1


def test_astronaut_face(outputs: dict[str, np.ndarray], third_party_yolo: ThirdPartyYolo) -> None:  # noqa: F811
    got = outputs["astronaut"]
    scores = got[4:]
    order = np.argsort(-scores.max(0))[:5]
    labels = [third_party_yolo.labels[int(scores[:, i].argmax())] for i in order]
    assert labels[0] == "FACE_FEMALE" and scores[:, order[0]].max() > 0.7, labels
    assert all(label.startswith("FACE_") for label in labels), labels
    geometry = letterbox_geometry(512, 512)
    cx, cy, w, h = got[:4, order[0]]
    x = (cx - geometry["offset_x"]) / geometry["scale"] / 512
    y = (cy - geometry["offset_y"]) / geometry["scale"] / 512
    assert abs(x - ASTRONAUT_FACE[0]) < 0.04 and abs(y - ASTRONAUT_FACE[1]) < 0.04, (x, y)
    assert 0.08 < w / SIZE < 0.3 and 0.08 < h / SIZE < 0.3, (w, h)


def test_zidane_best_is_a_male_face(outputs: dict[str, np.ndarray], third_party_yolo: ThirdPartyYolo) -> None:  # noqa: F811
    got = outputs["zidane"]
    scores = got[4:]
    best = int(scores.max(0).argmax())
    assert third_party_yolo.labels[int(scores[:, best].argmax())] == "FACE_MALE"
    geometry = letterbox_geometry(1280, 720)
    cy = (got[1, best] - geometry["offset_y"]) / geometry["scale"]
    assert cy < 720 / 2  # a face, in the upper half of the frame
