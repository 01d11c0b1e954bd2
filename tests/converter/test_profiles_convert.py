"""Every device profile's recommended conversion (mode and I/O type) really converts a small Keras model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.package import load_model_source
from edge.profiles import list_profiles, load_profile

pytestmark = pytest.mark.tf

IO_DTYPES = {"float": "float32", "int8": "int8", "uint8": "uint8"}


@pytest.fixture(scope="module")
def digits_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small CNN trained on scikit-learn's digits, with calibration and held-out evaluation data."""
    from converter.digits import save_digits_assets

    return save_digits_assets(tmp_path_factory.mktemp("profile-digits"), epochs=6)


@pytest.fixture(scope="module")
def converted(digits_assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One conversion per distinct (mode, io_type) the profiles recommend, shared by the profiles."""
    from converter.convert import ConvertOptions, convert

    out = tmp_path_factory.mktemp("profile-packages")
    results = {}
    for mode, io_type in sorted({(p.convert_mode, p.io_type) for p in map(load_profile, list_profiles())}):
        options = ConvertOptions(
            source=digits_assets["model"],
            output=out / f"digits-{mode}-{io_type}.edgepkg",
            mode=mode,
            io_type=io_type,
            calib=digits_assets["calib"],
            eval_data=digits_assets["eval"],
            labels=digits_assets["labels"],
            name=f"digits-{mode}-{io_type}",
            version=1,
        )
        results[(mode, io_type)] = convert(options)
    return results


@pytest.mark.parametrize("name", list_profiles())
def test_the_profiles_recommended_mode_converts_and_keeps_its_answers(name: str, converted: dict) -> None:
    profile = load_profile(name)
    result = converted[(profile.convert_mode, profile.io_type)]
    assert result.output_path.is_file()
    source = load_model_source(result.output_path)
    assert source.manifest is not None and source.manifest.mode == profile.convert_mode
    assert [t.dtype for t in source.info.inputs] == [IO_DTYPES[profile.io_type]]
    report = result.report
    assert report["eval"]["labelled"] and report["eval"]["samples"] >= 100
    assert report["top1_agreement"] >= 0.95, report
    if profile.convert_mode != "float32":
        assert report["size_ratio"] < 1.0
    if profile.delegate == "edgetpu":
        edgetpu = source.manifest.edgetpu
        assert edgetpu is not None and edgetpu["cpu_ops"] == [], edgetpu  # every op can run on the TPU


def test_the_profiles_cover_cpu_integer_float_io_and_edge_tpu_conversions(converted: dict) -> None:
    assert set(converted) == {("int8", "uint8"), ("edgetpu", "uint8"), ("dynamic", "float")}
    assert all(np.isfinite(r.report["mean_abs_error"]) for r in converted.values())


def test_edge_convert_options_take_the_profiles_recommendation_unless_given() -> None:
    import argparse

    from edge.cli.commands import convert as convert_command
    from edge.config import apply_profile

    parser = argparse.ArgumentParser()
    convert_command.add_arguments(parser)
    args = apply_profile(parser.parse_args(["m.keras", "-o", "out/"]), parser, "coral-usb")
    assert (args.mode, args.io_type) == ("edgetpu", "uint8")
    args = apply_profile(
        parser.parse_args(["m.keras", "-o", "out/", "--io", "int8"]), parser, "raspberry-pi-4"
    )
    assert (args.mode, args.io_type) == ("int8", "int8")
