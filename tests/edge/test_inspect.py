"""``edge inspect``: packages, self-describing and third-party .tflite files, all without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from tests.edge.test_package import build_converted_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_converted_models(tmp_path_factory.getbasetemp())


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["inspect", *args]) == 0
    return capsys.readouterr().out


def test_inspect_package(capsys: pytest.CaptureFixture[str], models: dict[str, Path]) -> None:
    out = inspect(capsys, str(models["tiny.edgepkg"]))
    assert "(package," in out
    assert "tiny v1  task=classification  mode=int8" in out
    assert "labels     3: cat, dog, bird" in out
    assert "input      serving_default_inputs:0  uint8[-1, 8, 8, 1]  scale=" in out
    assert "CONV_2D×1" in out and "FULLY_CONNECTED×1" in out
    assert "labels.txt" in out and "model.tflite" in out
    assert "report     top-1 agreement" in out and "of float32" in out


def test_inspect_bare_tflite_with_embedded_manifest(capsys: pytest.CaptureFixture[str], models: dict) -> None:
    out = inspect(capsys, str(models["tiny.tflite"]))
    assert "(tflite," in out and "tiny v2" in out and "mode=float32" in out


def test_inspect_third_party_tflite(capsys: pytest.CaptureFixture[str], models: dict[str, Path]) -> None:
    out = inspect(capsys, str(models["third_party.tflite"]))
    assert "no manifest (third-party model)" in out
    assert "float32[-1, 8, 8, 1]" in out


def test_inspect_json(capsys: pytest.CaptureFixture[str], models: dict[str, Path]) -> None:
    report = json.loads(inspect(capsys, str(models["tiny.edgepkg"]), "--json"))
    assert report["kind"] == "package" and report["size_bytes"] == models["tiny.edgepkg"].stat().st_size
    assert report["manifest"]["name"] == "tiny" and report["manifest"]["labels"] == ["cat", "dog", "bird"]
    assert report["inputs"][0]["dtype"] == "uint8" and report["inputs"][0]["quantization"]["scale"]
    assert report["operators"]["CONV_2D"] == 1
    assert report["files"]["labels.txt"] == len("cat\ndog\nbird\n")
    third = json.loads(inspect(capsys, str(models["third_party.tflite"]), "--json"))
    assert third["manifest"] is None and third["kind"] == "tflite"


def test_inspect_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.tflite").write_text("hello")
    assert main(["inspect", str(tmp_path / "notes.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a TFLite model" in err
    assert main(["inspect", str(tmp_path / "missing.edgepkg")]) == 2
    assert "not found" in capsys.readouterr().err


def test_inspect_never_imports_tensorflow(models: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from edge.cli import main\n"
        f"assert main(['inspect', {str(models['tiny.edgepkg'])!r}, '--json']) == 0\n"
        f"assert main(['inspect', {str(models['third_party.tflite'])!r}]) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'converter'))\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
