"""Real conversions of real models in every mode, from Keras and SavedModel sources."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConvertOptions, ConvertResult, convert
from edge.package import embedded_manifest, load_model_source, manifest_json_for_embedding, read_package
from edge.tflite_file import MANIFEST_METADATA_NAME, read_tflite_file
from tests.converter.conftest import rgb_calibration

pytestmark = pytest.mark.tf


@pytest.fixture(scope="session")
def digits_int8(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ConvertResult:
    out = tmp_path_factory.mktemp("digits_int8") / "digits.edgepkg"
    return convert(
        ConvertOptions(
            source=digits["model"],
            output=out,
            mode="int8",
            calib=digits["calib"],
            eval_data=digits["eval"],
            labels=digits["labels"],
        )
    )


def test_digits_int8_agrees_with_float_model_and_is_small(digits_int8: ConvertResult) -> None:
    report = digits_int8.report
    assert report["top1_agreement"] >= 0.98
    assert report["eval"] == {"data": "eval.npz", "samples": 450, "labelled": True, "skipped": 0}
    assert report["accuracy_converted"] > 0.9 and report["accuracy_source"] > 0.9
    package_size = digits_int8.output_path.stat().st_size
    assert package_size <= 0.35 * report["float32_size_bytes"]
    assert report["output_size_bytes"] == package_size
    assert report["latency_ms"]["median_ms"] > 0 and report["latency_ms"]["runtime"].startswith(
        "ai-edge-litert"
    )


def test_package_manifest_records_everything_a_device_needs(digits_int8: ConvertResult, digits: dict) -> None:
    package = read_package(digits_int8.output_path)
    m = package.manifest
    assert (m.name, m.version, m.task, m.mode) == ("digits", 1, "classification", "int8")
    assert m.labels == tuple(str(d) for d in range(10))
    (spec,) = m.inputs
    assert spec.shape == (1, 8, 8, 1) and spec.dtype == "uint8" and spec.layout == "NHWC"
    assert spec.mean == (0.0,) and spec.std == (1.0,)
    assert spec.quantization is not None and spec.quantization.scale[0] > 0
    assert m.outputs[0].dtype == "uint8" and m.outputs[0].shape == (1, 10)
    assert set(m.files) == {"model.tflite", "labels.txt", "golden/input.npy", "golden/output.npy"}
    assert package.files["labels.txt"].decode().split() == list(m.labels)
    from converter.source import hash_file

    assert m.source == {"file": "digits.keras", "kind": "keras", "sha256": hash_file(digits["model"])}
    assert m.converter["edge"] and m.converter["tensorflow"].startswith("2.")
    assert m.created_at.endswith("Z") and m.report is not None and m.report["top1_agreement"] >= 0.98
    # the model inside carries the same manifest, minus the file list
    inner = load_model_source(digits_int8.output_path).info.metadata[MANIFEST_METADATA_NAME]
    assert inner == manifest_json_for_embedding(m)


@pytest.mark.parametrize(
    ("mode", "io_type", "input_dtype", "max_ratio"),
    [
        ("float32", "uint8", "float32", 1.01),
        ("float16", "uint8", "float32", 0.6),
        ("dynamic", "uint8", "float32", 0.4),
        ("int8", "float", "float32", 0.4),
        ("int8", "int8", "int8", 0.4),
        ("edgetpu", "float", "uint8", 0.4),
    ],
)
def test_every_mode_converts_and_runs(
    digits: dict[str, Path], tmp_path: Path, mode: str, io_type: str, input_dtype: str, max_ratio: float
) -> None:
    result = convert(
        ConvertOptions(
            source=digits["model"],
            output=tmp_path / "m.tflite",
            mode=mode,
            io_type=io_type,
            calib=digits["calib"],
            calib_samples=100,
            eval_data=digits["eval"],
        )
    )
    info = read_tflite_file(tmp_path / "m.tflite")
    assert info.inputs[0].dtype == input_dtype
    assert result.manifest.mode == mode
    assert embedded_manifest(info) == result.manifest  # bare .tflite: self-describing
    assert result.report["top1_agreement"] >= 0.97
    assert result.report["size_ratio"] <= max_ratio
    if mode == "edgetpu":
        assert info.inputs[0].shape_signature == (1, 8, 8, 1)  # static batch for the Edge TPU
        assert result.report["edgetpu"]["cpu_ops"] == []
        assert "not on PATH" in result.report["edgetpu"]["compiler"]["message"]


@pytest.mark.parametrize("kind", ["keras", "h5", "savedmodel"])
def test_keras_h5_and_savedmodel_sources(rgb_model: dict[str, Path], tmp_path: Path, kind: str) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, rgb_calibration())
    result = convert(
        ConvertOptions(
            source=rgb_model[kind],
            output=tmp_path / "out.edgepkg",
            mode="int8",
            calib=calib,
            calib_samples=40,
        )
    )
    m = result.manifest
    assert m.source["kind"] == ("savedmodel" if kind == "savedmodel" else "keras")
    assert m.name == {"keras": "rgb", "h5": "rgb_legacy", "savedmodel": "rgb_sm"}[kind]
    assert m.inputs[0].shape == (1, 16, 16, 3)
    assert result.report["eval"]["samples"] == 20  # the 60 tiles beyond --calib-samples 40
    assert "held-out" in result.report["eval"]["data"]
    assert result.report["top1_agreement"] >= 0.9


def test_float_mode_uses_calib_data_for_the_report_only(digits: dict[str, Path], tmp_path: Path) -> None:
    result = convert(
        ConvertOptions(
            source=digits["model"],
            output=tmp_path / "f.edgepkg",
            mode="float16",
            calib=digits["calib"],
            calib_samples=50,
        )
    )
    assert result.report["calibration"] is None
    assert result.report["eval"]["samples"] == 150 and result.report["eval"]["data"] == "calib.npy"
    assert "served only the report" in result.report["notes"][0]


def test_savedmodel_hash_covers_paths_and_contents(rgb_model: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from converter.source import hash_tree

    copy = tmp_path / "copy"
    shutil.copytree(rgb_model["savedmodel"], copy)
    assert hash_tree(copy) == hash_tree(rgb_model["savedmodel"])
    (copy / "assets").mkdir(exist_ok=True)
    (copy / "assets" / "extra.txt").write_text("x")
    assert hash_tree(copy) != hash_tree(rgb_model["savedmodel"])


def test_dynamic_input_converts_with_input_shape(dynamic_savedmodel: Path, tmp_path: Path) -> None:
    result = convert(
        ConvertOptions(source=dynamic_savedmodel, output=tmp_path / "d.edgepkg", input_shape=(1, 20, 24, 3))
    )
    assert result.manifest.inputs[0].shape == (1, 20, 24, 3)
    assert "random inputs" in result.report["eval"]["data"]
    assert any("random inputs" in note for note in result.report["notes"])
    assert result.report["accuracy_source"] is None


def test_versions_only_grow(digits: dict[str, Path], tmp_path: Path) -> None:
    def run(**kw: object) -> ConvertResult:
        return convert(ConvertOptions(source=digits["model"], output=kw.pop("output", tmp_path), **kw))  # type: ignore[arg-type]

    first = run()
    assert first.output_path == tmp_path / "digits-v1.edgepkg" and first.manifest.version == 1
    second = run(output=tmp_path / "latest.tflite")
    assert second.manifest.version == 2
    assert run(version=7).output_path.name == "digits-v7.edgepkg"
    from converter.errors import ConverterError

    with pytest.raises(ConverterError, match=r"--version 7 is not higher than version 7 of 'digits'"):
        run(version=7)
    other = run(name="other")
    assert other.manifest.version == 1


def test_image_folder_calibration_and_class_folder_eval(
    rgb_model: dict[str, Path], sample_images: Path, tmp_path: Path
) -> None:
    import shutil

    calib = tmp_path / "calib"
    shutil.copytree(sample_images, calib)
    (calib / "notes.txt").write_text("not an image")
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    evaluation = tmp_path / "eval"
    for label in ("cat", "cup", "person"):
        (evaluation / label).mkdir(parents=True)
    for src, label in (("chelsea", "cat"), ("coffee", "cup"), ("astronaut", "person")):
        for image in sample_images.glob(f"{src}*"):
            shutil.copy(image, evaluation / label / image.name)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ncup\nperson\n")
    result = convert(
        ConvertOptions(
            source=rgb_model["keras"],
            output=tmp_path / "o.edgepkg",
            mode="int8",
            calib=calib,
            eval_data=evaluation,
            labels=labels,
            mean=(0.0,),
            std=(1.0,),
        )
    )
    report = result.report
    assert report["calibration"]["skipped"] == 2 and report["calibration"]["samples"] == 16
    assert report["eval"]["samples"] == 12 and report["eval"]["labelled"]
    assert report["accuracy_converted"] is not None  # random weights: the value itself means nothing
    assert read_package(result.output_path).manifest.labels == ("cat", "cup", "person")


def test_report_json_roundtrips(digits_int8: ConvertResult) -> None:
    assert json.loads(json.dumps(digits_int8.report)) == digits_int8.report
    with zipfile.ZipFile(digits_int8.output_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["report"]["top1_agreement"] == digits_int8.report["top1_agreement"]
