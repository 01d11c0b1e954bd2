"""Edge TPU: op checks on real converted models, and the compiler runner with a stand-in compiler.

``edgetpu_compiler`` cannot be installed on this machine, so a small script plays it: it writes
``<out>/model_edgetpu.tflite`` (a copy of the input) and a log, as the real one does.
"""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from converter.convert import ConvertOptions, convert
from converter.edgetpu import compile_for_edgetpu
from edge.package import read_package
from tests.converter.conftest import rgb_calibration

pytestmark = pytest.mark.tf

FAKE_COMPILER = """#!/bin/sh
# usage: edgetpu_compiler -s -o OUT MODEL
out="$3"; model="$4"
echo "Edge TPU Compiler version 16.0.384591198 (stand-in)"
cp "$model" "$out/model_edgetpu.tflite"
echo "Model compiled successfully in 1 ms."
"""

FAILING_COMPILER = """#!/bin/sh
echo "ERROR: Didn't find op for builtin opcode 'LEAKY_RELU'" >&2
exit 1
"""


def install(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder.mkdir()
    path = folder / "edgetpu_compiler"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")


def test_compiler_missing_is_reported_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = compile_for_edgetpu(b"model")
    assert not result.ran and result.model is None
    assert "edgetpu_compiler is not on PATH" in result.message


def test_compiler_runs_and_output_joins_package(
    digits: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(tmp_path / "bin", FAKE_COMPILER, monkeypatch)
    result = convert(
        ConvertOptions(
            source=digits["model"],
            output=tmp_path / "tpu.edgepkg",
            mode="edgetpu",
            calib=digits["calib"],
            calib_samples=50,
        )
    )
    assert result.report["edgetpu"]["compiler"] == {
        "ran": True,
        "ok": True,
        "message": "edgetpu_compiler compiled the model",
    }
    package = read_package(result.output_path)
    assert package.edgetpu_model_bytes is not None and package.edgetpu_model_bytes[4:8] == b"TFL3"
    assert b"Model compiled successfully" in package.files["edgetpu_compiler.log"]
    assert package.manifest.edgetpu is not None and package.manifest.edgetpu["compiler"]["ok"]


def test_compiler_failure_is_reported_with_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(tmp_path / "bin", FAILING_COMPILER, monkeypatch)
    result = compile_for_edgetpu(b"model")
    assert result.ran and not result.ok and result.model is None
    assert "failed (exit 1): ERROR: Didn't find op for builtin opcode 'LEAKY_RELU'" in result.message
    assert "LEAKY_RELU" in result.log


def test_cpu_fallback_ops_are_listed(rgb_model: dict[str, Path], tmp_path: Path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, rgb_calibration(30))
    result = convert(
        ConvertOptions(
            source=rgb_model["keras"], output=tmp_path / "rgb.edgepkg", mode="edgetpu", calib=calib
        )
    )
    tpu = result.report["edgetpu"]
    ops = [(op["op"], op["reason"]) for op in tpu["cpu_ops"]]
    assert ops[0] == ("LEAKY_RELU", "operation not supported by the Edge TPU")
    assert all("follows an op that runs on the CPU" in reason for _, reason in ops[1:])
    assert tpu["ops_on_tpu"] == tpu["ops_total"] - len(ops) and tpu["ops_on_tpu"] >= 3
