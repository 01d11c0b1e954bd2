"""Golden files: ``edge convert`` records one input and the model's output on it; the device checks them.

Real conversions, then the device's own validation (``edge.activation``) on the written package.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConvertOptions, ConvertResult, convert
from edge.activation import GOLDEN_INPUT, GOLDEN_OUTPUT, PipelineActivator, golden_test
from edge.errors import ModelError
from edge.package import build_package_bytes, read_package
from edge.store import ModelStore

pytestmark = pytest.mark.tf


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _validate(path: Path, tmp_path: Path) -> object:
    """What a device does with a candidate before activating it (no pipeline yet)."""
    activator = PipelineActivator(None, ModelStore(tmp_path / "state"))
    return activator.validate(path, read_package(path).manifest)


@pytest.fixture(scope="module")
def packages(digits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, ConvertResult]:
    """int8 with --eval, int8 with --calib only (held-out part), float32 with no data (random inputs)."""
    out = tmp_path_factory.mktemp("golden")
    common = {"source": digits["model"], "labels": digits["labels"]}
    return {
        "eval": convert(
            ConvertOptions(
                **common,
                output=out / "eval.edgepkg",
                mode="int8",
                calib=digits["calib"],
                eval_data=digits["eval"],
            )
        ),
        "held_out": convert(
            ConvertOptions(
                **common, output=out / "held.edgepkg", mode="int8", calib=digits["calib"], calib_samples=250
            )
        ),
        "random": convert(ConvertOptions(**common, output=out / "random.edgepkg", mode="float32")),
    }


@pytest.mark.parametrize("case", ["eval", "held_out", "random"])
def test_converted_package_holds_golden_files_the_device_accepts(packages, case, tmp_path) -> None:
    result = packages[case]
    package = read_package(result.output_path)
    assert {GOLDEN_INPUT, GOLDEN_OUTPUT} <= set(package.manifest.files)
    given, expected = _npy(package.files[GOLDEN_INPUT]), _npy(package.files[GOLDEN_OUTPUT])
    (spec,), first = package.manifest.inputs, package.manifest.outputs[0]
    # the input tensor as the model takes it, and the first output raw, in the model's own dtypes
    assert given.shape == spec.shape and given.dtype == np.dtype(spec.dtype)
    assert expected.shape == first.shape and expected.dtype == np.dtype(first.dtype)
    candidate = _validate(result.output_path, tmp_path)
    assert golden_test(candidate, package.files) is True


def test_golden_input_is_a_sample_of_the_data_the_report_used(packages, digits) -> None:
    eval_x = np.load(digits["eval"])["x"].astype(np.float64)
    calib_x = np.load(digits["calib"]).astype(np.float64)
    for case, data in (("eval", eval_x), ("held_out", calib_x)):
        package = read_package(packages[case].output_path)
        quant = package.manifest.inputs[0].quantization
        assert quant is not None
        given = _npy(package.files[GOLDEN_INPUT]).astype(np.float64)
        real = (given - quant.zero_point[0]) * quant.scale[0]  # back to model-input space
        distance = np.abs(data - real).reshape(len(data), -1).max(axis=1)
        assert distance.min() <= quant.scale[0] / 2 + 1e-6, case
    assert packages["random"].report["eval"]["data"] == "random inputs"
    given = _npy(read_package(packages["random"].output_path).files[GOLDEN_INPUT])
    assert given.dtype == np.float32 and given.min() >= 0.0 and given.max() <= 255.0


def _altered(expected: np.ndarray) -> np.ndarray:
    """Every element well outside the device's tolerance (integers: 1; floats: 1e-3 relative)."""
    if np.issubdtype(expected.dtype, np.integer):
        info = np.iinfo(expected.dtype)
        middle = (int(info.min) + int(info.max)) // 2
        wide = expected.astype(np.int64)
        return np.where(wide < middle, wide + 100, wide - 100).astype(expected.dtype)
    return expected + np.float32(1.0)


@pytest.mark.parametrize("case", ["eval", "random"])
def test_package_with_an_altered_golden_output_is_rejected(packages, case, tmp_path) -> None:
    package = read_package(packages[case].output_path)
    files = dict(package.files)
    buffer = io.BytesIO()
    np.save(buffer, _altered(_npy(package.files[GOLDEN_OUTPUT])), allow_pickle=False)
    files[GOLDEN_OUTPUT] = buffer.getvalue()
    tampered = tmp_path / "tampered.edgepkg"
    tampered.write_bytes(build_package_bytes(package.manifest, files))
    with pytest.raises(ModelError, match="golden output mismatch"):
        _validate(tampered, tmp_path)
    # the same package with the real golden output passes: the rejection is about the output alone
    intact = tmp_path / "intact.edgepkg"
    intact.write_bytes(build_package_bytes(package.manifest, dict(package.files)))
    assert golden_test(_validate(intact, tmp_path), read_package(intact).files) is True
