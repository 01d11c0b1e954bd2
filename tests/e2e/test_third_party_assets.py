"""The third-party fixture gives real models and photos that a real interpreter loads and answers right on.

These check the assets themselves (pins, shapes, metadata, what a bare interpreter answers with the
preprocessing each model documents), so that tests of the runtime built on them start from known facts.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.backends import get_backend
from edge.tflite_file import read_tflite_file
from tests.third_party import MEMBERS, ThirdParty, ensure_third_party


@pytest.fixture(scope="session")
def third_party() -> ThirdParty:
    return ensure_third_party()


# name -> (input shape, input dtype, [(output name, shape, dtype), ...]) after allocate_tensors.
EXPECTED_IO: dict[str, tuple[tuple[int, ...], str, list[tuple[str, tuple[int, ...], str]]]] = {
    "imagenet_metadata": ((1, 224, 224, 3), "uint8", [("Softmax", (1, 1000), "uint8")]),
    "segmentation": ((1, 257, 257, 3), "float32", [("ResizeBilinear_3", (1, 257, 257, 21), "float32")]),
    "ssd_postprocess": (
        (1, 320, 320, 3),
        "uint8",
        [
            ("TFLite_Detection_PostProcess", (1, 40, 4), "float32"),
            ("TFLite_Detection_PostProcess:1", (1, 40), "float32"),
            ("TFLite_Detection_PostProcess:2", (1, 40), "float32"),
            ("TFLite_Detection_PostProcess:3", (1,), "float32"),
        ],
    ),
    "blazeface": (
        (1, 128, 128, 3),
        "float32",
        [("regressors", (1, 896, 16), "float32"), ("classificators", (1, 896, 1), "float32")],
    ),
    "blazeface_full_range": (
        (1, 192, 192, 3),
        "float32",
        [
            ("reshaped_regressor_face_4", (1, 2304, 16), "float32"),
            ("reshaped_classifier_face_4", (1, 2304, 1), "float32"),
        ],
    ),
}


def _interpreter(path: Path) -> Any:
    interpreter = get_backend("auto").interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def _pixels(image: np.ndarray | Path, width: int, height: int) -> np.ndarray:
    """RGB uint8 (1, height, width, 3), stretched to the model's size (no letterbox), bilinear."""
    picture = Image.open(image).convert("RGB") if isinstance(image, Path) else Image.fromarray(image)
    return np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR), np.uint8)[None]


def _zipped(path: Path, name: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        return archive.read(name).decode().splitlines()


def test_every_file_is_the_pinned_one(third_party: ThirdParty) -> None:
    for member in MEMBERS:
        path = third_party.root / member.out
        assert hashlib.sha256(path.read_bytes()).hexdigest() == member.sha256, member.out
    assert set(EXPECTED_IO) <= set(third_party.models)
    assert {"bus", "zidane", "print3d_0"} <= set(third_party.photos)


@pytest.mark.parametrize("name", sorted(EXPECTED_IO))
def test_model_loads_with_expected_io(third_party: ThirdParty, name: str) -> None:
    shape, dtype, outputs = EXPECTED_IO[name]
    interpreter = _interpreter(third_party.models[name])
    (given,) = interpreter.get_input_details()
    assert (tuple(given["shape"]), given["dtype"].__name__) == (shape, dtype)
    got = [(d["name"], tuple(d["shape"]), d["dtype"].__name__) for d in interpreter.get_output_details()]
    assert got == outputs


@pytest.mark.parametrize(
    ("name", "labels_file", "count", "first"),
    [
        ("imagenet_metadata", "labels_without_background.txt", 1000, "tench"),
        ("segmentation", "labelmap.txt", 21, "background"),
        ("ssd_postprocess", "dict.txt", 6, "background"),
    ],
)
def test_standard_metadata_with_zipped_labels(
    third_party: ThirdParty, name: str, labels_file: str, count: int, first: str
) -> None:
    path = third_party.models[name]
    assert "TFLITE_METADATA" in read_tflite_file(path).metadata
    labels = _zipped(path, labels_file)
    assert (len(labels), labels[0]) == (count, first)


def test_ssd_ends_in_the_postprocess_custom_op(third_party: ThirdParty) -> None:
    info = read_tflite_file(third_party.models["ssd_postprocess"])
    custom = {op.name for op in info.operators if op.custom}
    assert custom == {"TFLite_Detection_PostProcess"}
    # The clean labels beside the model: background first, so output class k is line k + 1.
    assert third_party.labels["ssd_postprocess"].read_text().splitlines() == [
        "background",
        "nozzle",
        "adhesion",
        "spaghetti",
        "print",
        "raft",
    ]


def test_bare_classifier_on_skimage_photos(third_party: ThirdParty) -> None:
    from skimage import data

    path = third_party.models["imagenet_metadata"]
    labels = _zipped(path, "labels_without_background.txt")
    interpreter = _interpreter(path)
    scale, zero = interpreter.get_output_details()[0]["quantization"]
    for photo, expected in ((data.chelsea(), "Egyptian cat"), (data.coffee(), "espresso")):
        (raw,) = _run(interpreter, _pixels(photo, 224, 224)).values()  # raw uint8 pixels: no normalization
        probabilities = (raw[0].astype(np.float32) - zero) * scale
        top = int(probabilities.argmax())
        assert labels[top] == expected
        assert probabilities[top] > 0.6


def test_bare_ssd_on_its_own_printer_photo(third_party: ThirdParty) -> None:
    labels = third_party.labels["ssd_postprocess"].read_text().splitlines()
    interpreter = _interpreter(third_party.models["ssd_postprocess"])
    out = _run(interpreter, _pixels(third_party.photos["print3d_0"], 320, 320))
    boxes, classes, scores, count = (out[f"TFLite_Detection_PostProcess{s}"] for s in ("", ":1", ":2", ":3"))
    assert int(count[0]) == 40
    found = {labels[int(c) + 1] for c, s in zip(classes[0], scores[0], strict=True) if s >= 0.5}
    assert {"spaghetti", "raft"} <= found
    assert np.all(boxes[0, :, 2] >= boxes[0, :, 0])  # ymin, xmin, ymax, xmax


def test_bare_segmentation_finds_the_cat(third_party: ThirdParty) -> None:
    from skimage import data

    path = third_party.models["segmentation"]
    labels = _zipped(path, "labelmap.txt")
    x = (_pixels(data.chelsea(), 257, 257).astype(np.float32) - 127.5) / 127.5
    (logits,) = _run(_interpreter(path), x).values()
    classes = logits[0].argmax(-1)
    assert (classes == labels.index("cat")).mean() > 0.5


def test_bare_blazeface_finds_the_astronauts_face(third_party: ThirdParty) -> None:
    from skimage import data

    x = ((_pixels(data.astronaut(), 128, 128) - 127.5) / 127.5).astype(np.float32)  # [-1, 1]
    out = _run(_interpreter(third_party.models["blazeface"]), x)
    scores = 1 / (1 + np.exp(-np.clip(out["classificators"][0, :, 0], -80, 80)))
    best = int(scores.argmax())
    assert scores[best] > 0.8
    # Anchors: 16x16 cells with 2 each, then 8x8 cells with 6 each; offsets are in 128-pixel units.
    cells, per, first = (16, 2, best) if best < 512 else (8, 6, best - 512)
    cell = first // per
    cx = (cell % cells + 0.5) / cells + out["regressors"][0, best, 0] / 128
    cy = (cell // cells + 0.5) / cells + out["regressors"][0, best, 1] / 128
    assert 0.35 < cx < 0.55 and 0.15 < cy < 0.35  # the face, upper middle of the 512 x 512 photo


@pytest.mark.parametrize("name", ["edgetpu_classifier", "edgetpu_ssd_face"])
def test_edgetpu_models_need_the_edge_tpu(third_party: ThirdParty, name: str) -> None:
    path = third_party.models[name]
    assert "edgetpu-custom-op" in {op.name for op in read_tflite_file(path).operators if op.custom}
    interpreter = get_backend("auto").interpreter_class()(model_path=str(path))
    with pytest.raises(RuntimeError, match="edgetpu-custom-op"):
        interpreter.allocate_tensors()
