"""The model package format, read without TensorFlow.

Models come from a real ``edge convert`` run in a Python that has TensorFlow ($EDGE_TF_PYTHON, else this
one), once per session; this process never imports TensorFlow.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.errors import ModelError, PackageError
from edge.package import (
    MAX_PACKAGE_CONTENT,
    add_signature,
    existing_versions,
    load_model_source,
    manifest_json_for_embedding,
    read_package,
    read_package_bytes,
)
from edge.tflite_file import MANIFEST_METADATA_NAME

ROOT = Path(__file__).resolve().parents[2]

BUILD_SCRIPT = r"""
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edge.cli import main

out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Conv2D(4, 3, activation="relu"),
    keras.layers.Flatten(),
    keras.layers.Dense(3, activation="softmax"),
])
model.save(out / "tiny.keras")
(out / "third_party.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
np.save(out / "calib.npy", np.random.default_rng(0).uniform(0, 255, (40, 8, 8, 1)).astype("float32"))
(out / "labels.txt").write_text("cat\ndog\nbird\n")
common = [str(out / "tiny.keras"), "--labels", str(out / "labels.txt")]
assert main(["convert", *common, "--mode", "int8", "--calib", str(out / "calib.npy"),
             "-o", str(out / "tiny.edgepkg")]) == 0
assert main(["convert", *common, "-o", str(out / "tiny.tflite")]) == 0
"""


def build_converted_models(base: Path) -> dict[str, Path]:
    """tiny.edgepkg (int8, v1), tiny.tflite (float32, v2, manifest inside), third_party.tflite (plain TF)."""
    folder = base / "edge-convert-models"
    done = folder / ".done"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        python = os.environ.get("EDGE_TF_PYTHON", sys.executable)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [python, "-c", BUILD_SCRIPT, str(folder)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"building models with {python} failed:\n{proc.stderr[-3000:]}"
        done.touch()
    return {name: folder / name for name in ("tiny.edgepkg", "tiny.tflite", "third_party.tflite")}


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_converted_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def package_bytes(converted: dict[str, Path]) -> bytes:
    return converted["tiny.edgepkg"].read_bytes()


def rezip(data: bytes, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> bytes:
    """The package with some members replaced or added (a tampered copy)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
        for name, content in (add or {}).items():
            dst.writestr(name, content)
    return buffer.getvalue()


def test_package_reads_and_verifies(package_bytes: bytes) -> None:
    package = read_package_bytes(package_bytes)
    m = package.manifest
    assert (m.name, m.version, m.mode, m.labels) == ("tiny", 1, "int8", ("cat", "dog", "bird"))
    assert set(package.files) == {"model.tflite", "labels.txt", "golden/input.npy", "golden/output.npy"}
    assert m.inputs[0].dtype == "uint8" and m.inputs[0].quantization is not None
    assert m.report is not None and 0.0 <= m.report["top1_agreement"] <= 1.0
    assert m.source["kind"] == "keras" and len(m.source["sha256"]) == 64


def test_package_model_embeds_the_manifest_without_files(converted: dict[str, Path]) -> None:
    source = load_model_source(converted["tiny.edgepkg"])
    assert source.package is not None and source.manifest is not None
    assert source.info.metadata[MANIFEST_METADATA_NAME] == manifest_json_for_embedding(source.manifest)


def test_bare_tflite_is_self_describing(converted: dict[str, Path]) -> None:
    source = load_model_source(converted["tiny.tflite"])
    assert source.package is None and source.manifest is not None
    assert (source.manifest.name, source.manifest.version, source.manifest.mode) == ("tiny", 2, "float32")
    assert source.manifest.files == {}


def test_third_party_tflite_has_no_manifest(converted: dict[str, Path]) -> None:
    source = load_model_source(converted["third_party.tflite"])
    assert source.manifest is None and source.info.inputs[0].dtype == "float32"


def test_existing_versions_reads_packages_and_bare_models(converted: dict[str, Path]) -> None:
    assert existing_versions(converted["tiny.edgepkg"].parent, "tiny") == [1, 2]
    assert existing_versions(converted["tiny.edgepkg"].parent, "other") == []


def test_tampered_file(package_bytes: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(package_bytes)) as archive:
        model = bytearray(archive.read("model.tflite"))
    model[-1] ^= 0xFF
    with pytest.raises(PackageError, match="model.tflite does not match its sha256 in the manifest"):
        read_package_bytes(rezip(package_bytes, replace={"model.tflite": bytes(model)}))


def test_path_escaping_the_package(package_bytes: bytes) -> None:
    with pytest.raises(PackageError, match=r"path escaping the package: '\.\./x'"):
        read_package_bytes(rezip(package_bytes, add={"../x": b"evil"}))
    with pytest.raises(PackageError, match=r"path escaping the package: '/etc/passwd'"):
        read_package_bytes(rezip(package_bytes, add={"/etc/passwd": b"evil"}))


def test_unknown_file(package_bytes: bytes) -> None:
    with pytest.raises(PackageError, match=r"unexpected file 'run_me.sh'"):
        read_package_bytes(rezip(package_bytes, add={"run_me.sh": b"rm -rf /"}))


def test_zip_bomb_declared_size_is_refused_before_inflating(package_bytes: bytes) -> None:
    data = bytearray(package_bytes)
    entry = data.index(b"PK\x01\x02")  # first central-directory entry: declare 2 GiB uncompressed
    struct.pack_into("<I", data, entry + 24, 2**31)
    with pytest.raises(
        PackageError, match=rf"would unpack to \d+ bytes \(limit {MAX_PACKAGE_CONTENT}\)"
    ) as err:
        read_package_bytes(bytes(data))
    assert int(str(err.value).split("unpack to ")[1].split()[0]) > 2**31


def test_member_larger_than_declared(package_bytes: bytes) -> None:
    data = bytearray(package_bytes)
    entry = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, 10)  # lie: 10 bytes
    with pytest.raises(PackageError, match="damaged|tampered"):
        read_package_bytes(bytes(data))


def test_truncated_zip(package_bytes: bytes) -> None:
    with pytest.raises(PackageError, match="is not a model package"):
        read_package_bytes(package_bytes[: len(package_bytes) // 2], source="cut.edgepkg")


def test_bad_manifest_json(package_bytes: bytes) -> None:
    with pytest.raises(PackageError, match="manifest.json is not valid JSON"):
        read_package_bytes(rezip(package_bytes, replace={"manifest.json": b"{not json"}))
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(package_bytes)).read("manifest.json"))
    manifest["version"] = -3
    with pytest.raises(PackageError, match="manifest version is -3; expected a positive integer"):
        read_package_bytes(rezip(package_bytes, replace={"manifest.json": json.dumps(manifest).encode()}))


def test_missing_and_unlisted_files(package_bytes: bytes) -> None:
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(package_bytes)).read("manifest.json"))
    del manifest["files"]["labels.txt"]
    with pytest.raises(PackageError, match=r"holds files the manifest does not list: \['labels.txt'\]"):
        read_package_bytes(rezip(package_bytes, replace={"manifest.json": json.dumps(manifest).encode()}))


def test_signature_joins_without_changing_the_manifest(package_bytes: bytes) -> None:
    signed = add_signature(package_bytes, b'{"sig": "x"}')
    package = read_package_bytes(signed)
    assert package.signature == b'{"sig": "x"}'
    assert package.manifest_bytes == read_package_bytes(package_bytes).manifest_bytes


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=f"model package not found: {tmp_path / 'x.edgepkg'}"):
        read_package(tmp_path / "x.edgepkg")
    (tmp_path / "text.tflite").write_text("hello")
    with pytest.raises(ModelError, match="is not a TFLite model"):
        load_model_source(tmp_path / "text.tflite")
