"""``edge convert`` keeps what a model says about itself: a third-party ``.tflite``'s standard TFLite metadata
(labels, normalization, name, version, author, license; the metadata and its zipped files stay in the model
bytes) and the labels a Keras model holds in an inverted ``StringLookup``. Flags win over both."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.package import load_model_source, read_package
from edge.tflite_file import read_tflite
from edge.tflite_metadata import read_standard_metadata
from tests.third_party import ThirdParty, third_party  # noqa: F401

pytestmark = pytest.mark.tf
ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def convert(*args: str) -> dict[str, Any]:
    result = json.loads(edge("convert", *args, "--json").stdout)
    assert result["ok"] is True
    return result


def zipped(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def bare_top1(model: Path, photo: Path) -> int:
    """The model in a bare interpreter on raw uint8 pixels (stretched, bilinear), as PyCoral and the Task
    library feed a uint8 input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    _, height, width, _ = given["shape"]
    pixels = Image.open(photo).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    interpreter.set_tensor(given["index"], np.asarray(pixels, np.uint8)[None])
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return int(interpreter.get_tensor(out["index"])[0].argmax())


def test_tflite_with_standard_metadata_is_packaged_with_it(
    third_party: ThirdParty,  # noqa: F811
    chelsea: Path,
    tmp_path: Path,
) -> None:
    original_path = third_party.models["imagenet_metadata"]
    original = original_path.read_bytes()
    declared = read_standard_metadata(original)
    assert declared is not None

    result = convert(str(original_path), "-o", f"{tmp_path}/")
    package_path = Path(result["output"])
    assert result["report"]["labels"] == {
        "count": 1000,
        "from": "the standard TFLite metadata (labels_without_background.txt of probability)",
    }
    package = read_package(package_path)
    manifest = package.manifest
    # labels, name, version and the rest of what the metadata says
    assert len(manifest.labels) == 1000 and manifest.labels[285] == "Egyptian cat"
    assert manifest.labels == declared.labels_for_output(0)
    assert package.files["labels.txt"].decode().splitlines() == list(manifest.labels)
    assert (manifest.name, manifest.version, manifest.task) == (
        "EfficientNet-lite-image-classifier-quantized",
        1,
        "classification",
    )
    assert manifest.about["name"] == declared.name and manifest.about["version"] == "v1"
    assert manifest.about["author"] == "TensorFlow" and manifest.about["license"].startswith("Apache")
    assert manifest.about["description"] == declared.description
    # mean/std: the metadata's 127/128 is kept as declared; a uint8 input takes raw pixels (the Task library
    # normalizes float inputs only), which the manifest says as mean = zero point, std = 1 / scale
    assert manifest.about["normalization"] == {"mean": [127.0], "std": [128.0]}
    (spec,) = manifest.inputs
    assert spec.quantization is not None
    assert spec.mean == (131.0,) and spec.std == pytest.approx((1 / spec.quantization.scale[0],))
    assert "raw pixels" in manifest.converter["normalization_from"]
    assert manifest.mode == "int8" and manifest.source["kind"] == "tflite"

    # the model bytes still carry TFLITE_METADATA and its zip of labels, unchanged; plus our manifest
    model = package.model_bytes
    kept = read_standard_metadata(model, "packaged model")
    assert kept == declared
    assert read_tflite(model).metadata["TFLITE_METADATA"] == read_tflite(original).metadata["TFLITE_METADATA"]
    assert zipped(model) == zipped(original)
    assert load_model_source(package_path).manifest == manifest

    # edge inspect shows the labels, their count and where they came from
    shown = edge("inspect", str(package_path)).stdout
    assert "labels     1000: tench, goldfish" in shown
    assert "labels_from=the standard TFLite metadata (labels_without_background.txt" in shown
    inspected = json.loads(edge("inspect", str(package_path), "--json").stdout)
    assert len(inspected["manifest"]["labels"]) == 1000
    assert "TFLITE_METADATA" in inspected["metadata_keys"]

    # the same top-1 as the original model in a bare interpreter
    run = edge("run", str(package_path), str(chelsea), "--json")
    answer = json.loads(run.stdout.splitlines()[0])
    top = answer["classes"][0]
    assert top["index"] == bare_top1(original_path, chelsea) == 285
    assert top["label"] == "Egyptian cat" and top["score"] > 0.6


def test_bare_tflite_output_keeps_the_metadata(third_party: ThirdParty, tmp_path: Path) -> None:  # noqa: F811
    original_path = third_party.models["imagenet_metadata"]
    out = tmp_path / "efficientnet.tflite"
    convert(str(original_path), "-o", str(out), "--name", "effnet")
    model = out.read_bytes()
    assert read_standard_metadata(model) == read_standard_metadata(original_path.read_bytes())
    source = load_model_source(out)
    assert source.manifest is not None and source.manifest.name == "effnet"
    assert len(source.manifest.labels) == 1000
    # converting what we wrote again keeps both: our earlier manifest's values and the standard metadata
    again = convert(str(out), "-o", str(tmp_path / "again.edgepkg"))
    package = read_package(Path(again["output"]))
    assert package.manifest.name == "effnet" and package.manifest.version == 2
    assert read_standard_metadata(package.model_bytes) == read_standard_metadata(model)


def test_flags_win_over_the_metadata(third_party: ThirdParty, tmp_path: Path) -> None:  # noqa: F811
    original_path = third_party.models["ssd_postprocess"]
    original = original_path.read_bytes()
    clean = third_party.labels["ssd_postprocess"]
    result = convert(
        str(original_path),
        "--labels",
        str(clean),
        "--name",
        "printer",
        "--version",
        "3",
        "--mean",
        "127.5",
        "--std",
        "127.5",
        "-o",
        f"{tmp_path}/",
    )
    assert Path(result["output"]).name == "printer-v3.edgepkg"
    package = read_package(Path(result["output"]))
    manifest = package.manifest
    assert manifest.task == "detection"  # from its TFLite_Detection_PostProcess op
    assert list(manifest.labels) == clean.read_text().splitlines()
    assert manifest.converter["labels_from"] == f"--labels {clean.name}"
    assert (manifest.inputs[0].mean, manifest.inputs[0].std) == ((127.5,), (127.5,))
    assert manifest.converter["normalization_from"] == "--mean/--std"
    assert manifest.about["name"] == "Image Object Detection Model"
    # every metadata entry (TFLITE_METADATA, min_runtime_version) and the zipped dict.txt stay
    before, after = read_tflite(original).metadata, read_tflite(package.model_bytes).metadata
    assert {k: v for k, v in after.items() if k != "edge_manifest"} == before
    assert zipped(package.model_bytes) == zipped(original)


def test_options_that_need_a_conversion_are_refused(
    third_party: ThirdParty,  # noqa: F811
    tmp_path: Path,
) -> None:
    proc = edge(
        "convert", str(third_party.models["imagenet_metadata"]), "--mode", "int8", "-o", f"{tmp_path}/",
        check=False,
    )
    assert proc.returncode == 2
    assert "--mode int8 does not apply to a .tflite source" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_keras_labels_from_an_inverted_string_lookup(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(3)
    names = ["cat", "dog", "bird"]
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(x)
    label = keras.layers.StringLookup(vocabulary=names, invert=True, num_oov_indices=0, name="label")(
        keras.ops.argmax(scores, axis=-1)
    )
    source = tmp_path / "pets.keras"
    keras.Model(inputs, label).save(source)

    result = convert(str(source), "-o", str(tmp_path / "pets.edgepkg"))
    assert result["report"]["labels"] == {
        "count": 3,
        "from": "the Keras model's StringLookup 'label' vocabulary",
    }
    assert result["report"]["top1_agreement"] == 1.0
    package = read_package(Path(result["output"]))
    assert package.manifest.labels == tuple(names)
    (output,) = package.manifest.outputs
    assert (output.shape, output.dtype) == ((1, 3), "float32")  # the scores: the lookup stays off the model
    assert package.manifest.converter["labels_from"] == "the Keras model's StringLookup 'label' vocabulary"

    # --labels wins
    mine = tmp_path / "mine.txt"
    mine.write_text("a\nb\nc\n")
    again = convert(str(source), "--labels", str(mine), "-o", str(tmp_path / "pets2.edgepkg"))
    assert read_package(Path(again["output"])).manifest.labels == ("a", "b", "c")
