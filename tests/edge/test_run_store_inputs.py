"""``edge run IMAGE ... --state-dir S``: a first path that is not a model is an input; the model comes from
the store. Real processes, a real store holding a real package; no TensorFlow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.cli.commands.run import is_model_path
from edge.package import read_package_bytes
from edge.store import ModelStore
from tests.edge.helpers import edge_cli, interpreter_noise
from tests.edge.update_packages import make_package


@pytest.fixture
def state(assets, tmp_path: Path) -> Path:
    """A state folder whose store serves digits v4."""
    folder = tmp_path / "state"
    store = ModelStore(folder)
    data = make_package(assets.model("digits_int8"), 4)
    store.activate(store.install(data, read_package_bytes(data).manifest))
    return folder


@pytest.fixture
def digits(assets) -> list[Path]:
    return sorted(assets.digit_images.glob("*.png"))[:3]


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _one_error(stderr: str) -> str:
    errors = interpreter_noise(stderr).strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("edge run: error:"), stderr
    return errors[0]


def test_first_image_is_an_input_and_the_model_comes_from_the_store(state, digits) -> None:
    done = edge_cli("run", str(digits[0]), str(digits[1]), "--state-dir", str(state), "--json")
    assert done.returncode == 0, done.stderr
    records = _records(done.stdout)
    assert [r["input"] for r in records] == [str(digits[0]), str(digits[1])]
    assert all(r["model"] == {"name": "digits", "version": 4} and r["error"] is None for r in records)
    assert "2 input(s), 0 failed; digits v4 on " in done.stderr


def test_first_folder_is_an_input_too(state, assets) -> None:
    done = edge_cli("run", str(assets.digit_images), "--state-dir", str(state), "--json", "--limit", "5")
    assert done.returncode == 0, done.stderr
    records = _records(done.stdout)
    assert len(records) == 5 and all(r["model"]["version"] == 4 for r in records)
    assert all(Path(r["input"]).parent == assets.digit_images for r in records)


def test_a_model_without_a_model_name_is_still_the_model(state, assets, digits, tmp_path) -> None:
    """Sniffed by content: a package (zip) and a bare .tflite (TFL3), whatever their names."""
    package = tmp_path / "digits-latest"
    package.write_bytes(make_package(assets.model("digits_int8"), 9))
    bare = tmp_path / "model.bin"
    shutil.copy(assets.model("digits_int8"), bare)
    assert is_model_path(package) and is_model_path(bare) and not is_model_path(digits[0])
    done = edge_cli("run", str(package), str(digits[0]), "--state-dir", str(state), "--json")
    assert done.returncode == 0, done.stderr
    (record,) = _records(done.stdout)
    assert record["model"] == {"name": "digits", "version": 9} and record["input"] == str(digits[0])
    done = edge_cli("run", str(bare), str(digits[0]), "--state-dir", str(state), "--json")
    assert done.returncode == 0, done.stderr
    assert [r["input"] for r in _records(done.stdout)] == [str(digits[0])]


@pytest.mark.parametrize("name", ["missing.tflite", "missing.edgepkg"])
def test_a_missing_path_named_like_a_model_is_model_not_found(state, digits, tmp_path, name) -> None:
    missing = tmp_path / name
    done = edge_cli("run", str(missing), str(digits[0]), "--state-dir", str(state))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"model not found: {missing}" in _one_error(done.stderr)


def test_a_missing_input_first_fails_as_that_input(state, digits, tmp_path) -> None:
    missing = tmp_path / "gone.png"
    done = edge_cli("run", str(missing), str(digits[0]), "--state-dir", str(state), "--json")
    assert done.returncode == 1, done.stderr  # one input failed, the other ran on the store's model
    first, second = _records(done.stdout)
    assert first["input"] == str(missing) and "does not exist" in first["error"]
    assert second["error"] is None and second["model"]["version"] == 4


def test_with_an_empty_store_the_error_says_what_was_understood(digits, tmp_path) -> None:
    empty = tmp_path / "empty-state"
    done = edge_cli("run", str(digits[0]), "--state-dir", str(empty))
    assert done.returncode == 2, done.stdout + done.stderr
    error = _one_error(done.stderr)
    assert f"{digits[0]} is not a model" in error and "taken as an input" in error
    assert f"model store in {empty} is empty" in error
    missing = tmp_path / "typo"
    done = edge_cli("run", str(missing), str(digits[0]), "--state-dir", str(empty))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"model not found: {missing}; check the path" in _one_error(done.stderr)


def test_help_explains_the_first_path() -> None:
    done = edge_cli("run", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "a first path that is not a model" in text and "counts as an INPUT" in text
    assert "'edge run photo.jpg --state-dir /var/lib/edge'" in text


def test_with_config_the_first_image_is_an_input_for_its_model_path(assets, digits, tmp_path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\npath = "{assets.model("digits_int8")}"\n')
    done = edge_cli("run", "--config", str(config), str(digits[0]), "--json")
    assert done.returncode == 0, done.stderr
    (record,) = _records(done.stdout)
    assert record["input"] == str(digits[0]) and record["error"] is None
