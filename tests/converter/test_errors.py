"""Bad input: a one-line error naming the problem (with the value), non-zero exit, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConvertOptions, convert
from converter.errors import CalibrationError, ConverterError, QuantizationError, SourceModelError
from edge.cli import main

pytestmark = pytest.mark.tf


def assert_nothing_written(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [], "output or temp files were left behind"


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str, code: int = 2) -> str:
    assert main(["convert", *argv]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    return err


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_missing_source(capsys: pytest.CaptureFixture[str], out: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.keras"
    fails(capsys, [str(missing), "-o", str(out / "m.edgepkg")], f"source model {missing} not found")
    assert_nothing_written(out)


def test_unreadable_source(
    capsys: pytest.CaptureFixture[str], digits: dict[str, Path], out: Path, tmp_path: Path
) -> None:
    src = tmp_path / "locked.keras"
    if os.geteuid() == 0:  # root reads any file; a file whose read fails with EIO is unreadable for root too
        src.symlink_to("/proc/self/mem")
        expected = "cannot read source model"
    else:
        src.write_bytes(digits["model"].read_bytes())
        src.chmod(0)
        expected = "permission denied"
    fails(capsys, [str(src), "-o", str(out / "m.edgepkg")], expected)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("model.keras", b"this is text, not a model", "is not a model: expected a Keras file"),
        ("weights.bin", b"\x00" * 64, "is not a model"),
        ("fake.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "could not be loaded as a Keras model"),
        ("model.tflite", b"\x00\x00\x00\x00TFL3", "already a TFLite model"),
    ],
)
def test_not_a_model(
    capsys: pytest.CaptureFixture[str], out: Path, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    fails(capsys, [str(src), "-o", str(out / "m.edgepkg")], expected)
    assert_nothing_written(out)


def test_folder_that_is_not_a_savedmodel(
    capsys: pytest.CaptureFixture[str], out: Path, tmp_path: Path
) -> None:
    fails(capsys, [str(tmp_path), "-o", str(out / "m.edgepkg")], "is a folder but not a SavedModel")
    assert_nothing_written(out)


def test_empty_calibration_folder(
    capsys: pytest.CaptureFixture[str], digits: dict, out: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [str(digits["model"]), "--mode", "int8", "--calib", str(empty), "-o", str(out / "m.edgepkg")]
    fails(capsys, argv, f"--calib folder {empty} is empty")
    assert_nothing_written(out)


def test_undecodable_images_only(
    capsys: pytest.CaptureFixture[str], digits: dict, out: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a jpeg")
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = [str(digits["model"]), "--mode", "int8", "--calib", str(bad), "-o", str(out / "m.edgepkg")]
    fails(capsys, argv, "none of the 2 files could be decoded as images")
    assert_nothing_written(out)


@pytest.mark.parametrize("shape", [(20, 8, 8, 3), (20, 64), (8, 7, 1)])
def test_calibration_array_of_wrong_shape(
    capsys: pytest.CaptureFixture[str], digits: dict, out: Path, tmp_path: Path, shape: tuple[int, ...]
) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros(shape, np.float32))
    argv = [str(digits["model"]), "--mode", "edgetpu", "--calib", str(calib), "-o", str(out / "m.edgepkg")]
    fails(capsys, argv, f"has shape {shape} but the model input is (8, 8, 1)")
    assert_nothing_written(out)


def test_full_integer_needs_calibration(capsys: pytest.CaptureFixture[str], digits: dict, out: Path) -> None:
    fails(
        capsys,
        [str(digits["model"]), "--mode", "int8", "-o", str(out / "m.edgepkg")],
        "needs calibration data",
    )
    assert_nothing_written(out)


def test_dynamic_input_shape_needs_input_shape(
    capsys: pytest.CaptureFixture[str], dynamic_savedmodel: Path, out: Path
) -> None:
    err = fails(
        capsys,
        [str(dynamic_savedmodel), "-o", str(out / "m.edgepkg")],
        "has a dynamic input shape (?, ?, ?, 3)",
    )
    assert "--input-shape" in err
    fails(
        capsys,
        [str(dynamic_savedmodel), "--input-shape", "5,5", "-o", str(out / "m.edgepkg")],
        "--input-shape 5,5 does not fit the model input (?, ?, ?, 3)",
    )
    assert_nothing_written(out)


@pytest.mark.parametrize("mode", ["int8", "edgetpu"])
def test_op_without_int8_kernel(sin_savedmodel: Path, tmp_path: Path, mode: str) -> None:
    # TF 2.21 does not raise here: it silently leaves SIN in float32. The converter must catch that.
    out = tmp_path / "out"
    out.mkdir()
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))
    with pytest.raises(QuantizationError, match=rf"cannot be quantized for --mode {mode}: SIN \(op \d+\)"):
        convert(ConvertOptions(source=sin_savedmodel, output=out / "m.edgepkg", mode=mode, calib=calib))
    assert_nothing_written(out)
    # the same model is fine where float ops are allowed
    result = convert(ConvertOptions(source=sin_savedmodel, output=out / "m.edgepkg", mode="dynamic"))
    assert result.report["top1_agreement"] == 1.0


def test_min_agreement_fails_with_exit_1_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], digits: dict, out: Path, tmp_path: Path
) -> None:
    # Calibrating on inputs 100x too small clips every real pixel: a real, badly quantized model.
    squashed = tmp_path / "squashed.npy"
    np.save(squashed, np.load(digits["calib"]) / 100.0)
    argv = [
        str(digits["model"]),
        "--mode",
        "int8",
        "--calib",
        str(squashed),
        "--eval",
        str(digits["eval"]),
        "--min-agreement",
        "0.9",
        "-o",
        str(out / "m.edgepkg"),
    ]
    assert main(["convert", *argv]) == 1
    captured = capsys.readouterr()
    assert "top-1 agreement" in captured.out  # the report is still shown
    assert "is below --min-agreement 0.9; nothing was written" in captured.err
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("options", "expected", "error"),
    [
        (
            {"labels": "nine.txt"},
            "--labels has 9 labels but the model's output has 10 classes",
            ConverterError,
        ),
        ({"version": 0}, "--version 0 is not allowed", ConverterError),
        ({"name": "bad name/x"}, "model name 'bad name/x' is not allowed", ConverterError),
        ({"mean": (1.0, 2.0)}, "--mean has 2 values but the input has 1 channels", ConverterError),
        ({"std": (0.0,)}, "--std 0.0 has a zero", ConverterError),
        ({"min_agreement": 98.0}, "--min-agreement 98.0 must be between 0 and 1", ConverterError),
        ({"eval_data": "missing.npz"}, "--eval", CalibrationError),
    ],
)
def test_option_errors(digits: dict, tmp_path: Path, options: dict, expected: str, error: type) -> None:
    (tmp_path / "nine.txt").write_text("\n".join("abcdefghi"))
    for key in ("labels", "eval_data"):
        if key in options:
            options[key] = tmp_path / options[key]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error, match=expected.replace("(", r"\(").replace(")", r"\)")):
        convert(ConvertOptions(source=digits["model"], output=out / "m.edgepkg", **options))
    assert_nothing_written(out)


def test_source_errors_are_source_model_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceModelError):
        convert(ConvertOptions(source=tmp_path / "x.keras", output=tmp_path / "o.edgepkg"))
