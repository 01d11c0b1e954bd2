"""Hostile model packages (issue 14): the package reader fed by Hypothesis and by hand-made attacks.

Whatever the bytes, ``read_package_bytes`` returns a verified package or raises ``PackageError`` with one
line: path traversal, absolute and Windows names, symlinks, duplicate names, unknown files, zip bombs
(declared and lying headers), a huge or malformed manifest, truncation and bit flips.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import PackageError
from edge.manifest import Manifest, TensorSpec
from edge.package import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_PACKAGE_CONTENT,
    build_package_bytes,
    read_package_bytes,
)
from tests.chaos.fuzz import REPORT, fuzz_settings, json_values

MANIFEST = Manifest(name="tiny", version=3, task="classification",
                    inputs=(TensorSpec("in", (1, 8, 8, 1), "float32"),),
                    outputs=(TensorSpec("out", (1, 3), "float32"),), labels=("a", "b", "c"))
FILES = {"model.tflite": b"TFL3" + bytes(range(256)) * 8, "labels.txt": b"a\nb\nc\n"}
GOOD = build_package_bytes(MANIFEST, FILES)


def _read(data: bytes, what: str) -> Any:
    REPORT[f"package {what}: cases"] += 1
    try:
        package = read_package_bytes(data, source="p.edgepkg")
    except PackageError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 2000
        REPORT[f"package {what}: rejected"] += 1
        return None
    assert package.manifest.name and package.model_bytes  # a package that passes is whole
    return package


def _zip(members: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, data, unix mode) members, duplicates allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


GOOD_MANIFEST = zipfile.ZipFile(io.BytesIO(GOOD)).read(MANIFEST_NAME)


names = st.one_of(
    st.sampled_from(["model.tflite", "labels.txt", MANIFEST_NAME, "signature.json", "golden/input.npy",
                     "../model.tflite", "/etc/passwd", "golden/../../x", "C:model.tflite", "a\\b",
                     "model.tflite/", "./model.tflite", "golden//input.npy", ""]),
    st.text(min_size=1, max_size=30),
)


@fuzz_settings(300)
@given(data=st.binary(max_size=4000), magic=st.booleans())
def test_random_bytes(data: bytes, magic: bool) -> None:
    _read((b"PK\x03\x04" if magic else b"") + data, "random bytes")


@fuzz_settings(300)
@given(cut=st.integers(0, len(GOOD)), flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1),
                                                                 st.integers(1, 255)), max_size=4))
def test_truncated_and_flipped(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(GOOD)
    for at, mask in flips:
        data[at] ^= mask
    package = _read(bytes(data[:cut]) if cut < len(GOOD) else bytes(data), "truncated/flipped")
    if package is not None:  # only an intact package (or a flip in bytes no reader looks at) passes
        assert package.files == FILES


@fuzz_settings(300)
@given(members=st.lists(st.tuples(names, st.binary(max_size=200),
                                  st.sampled_from([0o100644, 0o120777, 0o040755, 0o100755])),
                        min_size=1, max_size=5),
       with_manifest=st.booleans())
def test_random_members(members: list[tuple[str, bytes, int]], with_manifest: bool) -> None:
    """Any names (traversal, absolute, symlinks, folders, duplicates) next to a real manifest."""
    listed = [(MANIFEST_NAME, GOOD_MANIFEST, 0o100644)] if with_manifest else []
    package = _read(_zip(listed + members), "members")
    if package is not None:
        for name, _, mode in members:
            assert mode >> 12 == 0o10, f"{name!r} with mode {oct(mode)} was accepted"
            assert ".." not in name.split("/") and not name.startswith("/")


@fuzz_settings(300)
@given(field=st.sampled_from(["format", "format_version", "name", "version", "task", "inputs", "outputs",
                              "labels", "files", "source", "converter", "mode", "score_threshold"]),
       value=json_values, nested=st.booleans())
def test_malformed_manifest(field: str, value: Any, nested: bool) -> None:
    manifest = MANIFEST.with_files(read_package_bytes(GOOD).manifest.files).to_json()
    if nested and field in ("inputs", "outputs"):
        manifest[field] = [{**manifest[field][0], "shape": value}] if not isinstance(value, dict) \
            else [{**manifest[field][0], **value}]
    elif nested and field == "files":
        manifest["files"] = {**manifest["files"], "labels.txt": value}
    else:
        manifest[field] = value
    raw = json.dumps(manifest).encode()
    members = [(MANIFEST_NAME, raw, 0o100644)] + [(n, d, 0o100644) for n, d in sorted(FILES.items())]
    _read(_zip(members), "manifest")


def test_traversal_symlink_and_duplicates_are_named() -> None:
    base = [(MANIFEST_NAME, GOOD_MANIFEST, 0o100644), ("labels.txt", FILES["labels.txt"], 0o100644)]
    cases = {
        "escaping the package": ("../model.tflite", 0o100644),
        "escaping": ("/model.tflite", 0o100644),
        "symbolic link": ("model.tflite", 0o120777),
    }
    for words, (name, mode) in cases.items():
        with pytest.raises(PackageError, match=words):
            read_package_bytes(_zip([*base, (name, b"/etc/passwd", mode)]))
    with pytest.raises(PackageError, match="same file name twice"):
        read_package_bytes(_zip([*base, ("model.tflite", FILES["model.tflite"], 0o100644),
                                 ("model.tflite", FILES["model.tflite"], 0o100644)]))


def test_a_huge_manifest_is_refused_before_it_is_inflated() -> None:
    """A manifest of 64 MiB of spaces deflates to ~64 KiB: refused by its declared size, not parsed."""
    huge = GOOD_MANIFEST[:-2] + b" " * (64 << 20) + GOOD_MANIFEST[-2:]
    data = _zip([(MANIFEST_NAME, huge, 0o100644), *((n, d, 0o100644) for n, d in FILES.items())])
    assert len(data) < 1 << 20
    with pytest.raises(PackageError, match=f"manifest.json is {len(huge)} bytes.*{MAX_MANIFEST_BYTES}"):
        read_package_bytes(data)


def _patch_central_sizes(data: bytes, name: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size of ``name`` in the central directory (a lying header)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", out, at + 28)[0]
        if out[at + 46 : at + 46 + name_len] == name:
            struct.pack_into("<I", out, at + 24, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def test_zip_bombs_are_refused() -> None:
    """Declared past the 1 GiB limit: refused before reading; declared small but inflating more: stopped
    at the declared size + 1 byte."""
    declared = _patch_central_sizes(GOOD, b"model.tflite", 0xFFFFFF00)
    with pytest.raises(PackageError, match=f"unpack to .* bytes \\(limit {MAX_PACKAGE_CONTENT}\\)"):
        read_package_bytes(declared)
    lying = _patch_central_sizes(GOOD, b"model.tflite", 16)
    with pytest.raises(PackageError, match="larger than its zip header says|damaged or truncated"):
        read_package_bytes(lying)


@pytest.mark.parametrize("shape", [["a"], [[1]], [None]])
def test_a_manifest_with_a_bad_shape_is_a_package_error(shape: list[Any]) -> None:
    """Was: ValueError/TypeError from int() in Manifest.from_json, escaping read_package_bytes."""
    manifest = json.loads(GOOD_MANIFEST)
    manifest["inputs"][0]["shape"] = shape
    members = [(MANIFEST_NAME, json.dumps(manifest).encode(), 0o100644)]
    members += [(n, d, 0o100644) for n, d in sorted(FILES.items())]
    with pytest.raises(PackageError, match="manifest.json is malformed"):
        read_package_bytes(_zip(members))
