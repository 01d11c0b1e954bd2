"""``edge convert`` and ``python -m converter`` as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.cli import main
from edge.cli.commands.convert import resolve_mode
from edge.profiles import list_profiles, load_profile

pytestmark = pytest.mark.tf
ROOT = Path(__file__).resolve().parents[2]
IO_DTYPES = {"float": "float32", "int8": "int8", "uint8": "uint8"}


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--mode",
        "--io",
        "--calib",
        "--calib-samples",
        "--eval",
        "--labels",
        "--task",
        "--name",
        "--version",
        "--mean",
        "--std",
        "--input-shape",
        "--min-agreement",
        "--json",
    ):
        assert option in out
    assert "float32,float16,dynamic,int8,edgetpu" in out.replace(" ", "").replace("\n", "")


def test_cli_writes_package_and_prints_report(
    capsys: pytest.CaptureFixture[str], digits: dict[str, Path], tmp_path: Path
) -> None:
    argv = [
        "convert",
        str(digits["model"]),
        "--mode",
        "dynamic",
        "--eval",
        str(digits["eval"]),
        "--labels",
        str(digits["labels"]),
        "--name",
        "digits-cli",
        "-o",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation report" in out and "top-1 agreement" in out and "accuracy converted" in out
    assert f"wrote {tmp_path / 'digits-cli-v1.edgepkg'}  (digits-cli v1," in out
    assert main(argv) == 0
    assert (tmp_path / "digits-cli-v2.edgepkg").is_file()


def test_output_folder_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], digits: dict, tmp_path: Path
) -> None:
    assert main(["convert", str(digits["model"]), "-o", f"{tmp_path}/missing/"]) == 2
    assert "that folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_python_m_converter_json_and_progress_bar_on_a_terminal(
    digits: dict[str, Path], tmp_path: Path
) -> None:
    """A subprocess whose stderr is a terminal shows the calibration progress bar; stdout stays pure JSON."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = tmp_path / "cli.edgepkg"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "converter",
            str(digits["model"]),
            "--mode",
            "int8",
            "--io",
            "int8",
            "--calib",
            str(digits["calib"]),
            "--calib-samples",
            "50",
            "-o",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks)[-2000:]
    result = json.loads(proc.stdout)
    assert result["ok"] and result["output"] == str(out) and result["version"] == 1
    assert result["report"]["io_type"] == "int8" and result["report"]["calibration"]["samples"] == 50
    assert b"calibrating [" in b"".join(chunks) and b"50/50" in b"".join(chunks)


@pytest.mark.parametrize("name", list_profiles())
def test_profile_gives_mode_and_io_unless_given(name: str) -> None:
    profile = load_profile(name)
    assert resolve_mode(None, None, name) == (profile.convert_mode, profile.io_type)
    assert resolve_mode(None, "int8", name) == (profile.convert_mode, "int8")
    other = "float16" if profile.convert_mode != "float16" else "float32"
    assert resolve_mode(other, None, name) == (other, "uint8")  # the profile's I/O comes with its mode
    assert resolve_mode(None, None, None) == ("float32", "uint8")


@pytest.mark.parametrize(
    ("profile", "mode", "dtype"),
    [("raspberry-pi-4", "int8", "uint8"), ("generic-x86_64", "dynamic", "float32")],
)
def test_convert_with_a_profile_converts_in_its_mode(
    profile: str,
    mode: str,
    dtype: str,
    digits: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from edge.package import load_model_source

    recommended = load_profile(profile)
    assert (recommended.convert_mode, IO_DTYPES[recommended.io_type]) == (mode, dtype)
    out = tmp_path / f"{profile}.edgepkg"
    argv = [
        "convert",
        str(digits["model"]),
        "--profile",
        profile,
        "--calib",
        str(digits["calib"]),
        "--eval",
        str(digits["eval"]),
        "--labels",
        str(digits["labels"]),
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["report"]
    assert report["mode"] == mode
    assert f"profile {profile}: --mode {mode} --io {recommended.io_type}" in captured.err
    source = load_model_source(out)
    assert source.manifest is not None and source.manifest.mode == mode
    assert [t.dtype for t in source.info.inputs] == [dtype]


def test_unknown_profile_is_one_line_listing_the_valid_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert (
        main(["convert", str(tmp_path / "any.keras"), "-o", str(tmp_path), "--profile", "raspberry-pi-9"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    allowed = ", ".join(list_profiles())
    assert err == f"edge convert: error: profile 'raspberry-pi-9' does not exist; allowed: {allowed}"
    assert list(tmp_path.iterdir()) == []
