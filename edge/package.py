"""The model package: one zip file with the model, its manifest and labels.

Layout (documented in ``docs/package-format.md``)::

    manifest.json            the Manifest, with the sha256 and size of every other file except signature.json
    model.tflite             the model; its metadata table holds the same manifest (without "files")
    labels.txt               one label per line (when the model has labels)
    model_edgetpu.tflite     Edge TPU compiled variant (when edgetpu_compiler ran)
    edgetpu_compiler.log     the compiler's output (when it ran)
    golden/input.npy         optional golden input and the expected output, for on-device validation
    golden/output.npy
    signature.json           optional Ed25519 signature over manifest.json's exact bytes

Reading verifies every digest and refuses names that escape the package, unknown files and oversize
content. Nothing from a package is executed or unpickled.
"""

from __future__ import annotations

import io
import json
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from edge.errors import ModelError, PackageError
from edge.fsutil import atomic_writer
from edge.tflite_file import MANIFEST_METADATA_NAME, TFLiteFileInfo, read_tflite

if TYPE_CHECKING:  # imported where used: a bare .tflite run needs neither (start-up time)
    import zipfile

    from edge.manifest import Manifest

PACKAGE_SUFFIX = ".edgepkg"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
MODEL_NAME = "model.tflite"
EDGETPU_MODEL_NAME = "model_edgetpu.tflite"
LABELS_NAME = "labels.txt"
ALLOWED_NAMES = re.compile(r"^(model\.tflite|model_edgetpu\.tflite|labels\.txt|edgetpu_compiler\.log|"
                           r"golden/(input|output)\.npy|report\.json)$")
MAX_PACKAGE_CONTENT = 1 << 30  # 1 GiB uncompressed: larger is refused as a decompression bomb
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few KiB; a larger one is refused before it is inflated
ZIP_MAGIC = b"PK\x03\x04"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")  # a sha256 as manifests, offers and the store write it


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data`` (package files, whole packages, transfer chunks)."""
    import hashlib  # here: a bare .tflite never needs it, and it costs ~3 ms at start-up

    return hashlib.sha256(data).hexdigest()


class ModelPackage(NamedTuple):
    """A verified package held in memory."""

    manifest: Manifest
    manifest_bytes: bytes
    files: dict[str, bytes]
    signature: bytes | None = None

    @property
    def model_bytes(self) -> bytes:
        return self.files[MODEL_NAME]

    @property
    def edgetpu_model_bytes(self) -> bytes | None:
        return self.files.get(EDGETPU_MODEL_NAME)


class LoadedModelSource(NamedTuple):
    """A model read from a package or a bare ``.tflite``: the bytes to run and what describes them."""

    path: Path
    model_bytes: bytes
    info: TFLiteFileInfo
    manifest: Manifest | None
    package: ModelPackage | None = None


def build_package_bytes(manifest: Manifest, files: dict[str, bytes], signature: bytes | None = None) -> bytes:
    """Zip ``files`` with a manifest listing their digests. Returns the package bytes."""
    from edge.manifest import FileEntry

    for name in files:
        if not ALLOWED_NAMES.match(name):
            raise PackageError(f"file name {name!r} is not allowed in a package")
    if MODEL_NAME not in files:
        raise PackageError(f"a package needs {MODEL_NAME}")
    entries = {name: FileEntry(sha256=sha256_hex(data), size=len(data)) for name, data in files.items()}
    return _zip_package(manifest.with_files(entries).to_bytes(), files, signature)


def write_package(path: str | Path, manifest: Manifest, files: dict[str, bytes]) -> Manifest:
    """Write a package atomically (temp file, fsync, rename). Returns the manifest with file digests."""
    data = build_package_bytes(manifest, files)
    with atomic_writer(path) as handle:
        handle.write(data)
    return read_package_bytes(data, source=str(path)).manifest


def add_signature(package_bytes: bytes, signature: bytes) -> bytes:
    """Return the package with ``signature.json`` set (replacing any earlier one); manifest unchanged."""
    return with_signature(read_package_bytes(package_bytes), signature)


def with_signature(package: ModelPackage, signature: bytes) -> bytes:
    """The bytes of an already read and verified ``package`` with ``signature.json`` set."""
    return _zip_package(package.manifest_bytes, package.files, signature)


def _zip_package(manifest_bytes: bytes, files: dict[str, bytes], signature: bytes | None) -> bytes:
    """The zip: manifest first, the files in name order, then the signature (when there is one)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_zip_info(MANIFEST_NAME), manifest_bytes)
        for name in sorted(files):
            archive.writestr(_zip_info(name), files[name])
        if signature is not None:
            archive.writestr(_zip_info(SIGNATURE_NAME), signature)
    return buffer.getvalue()


def read_package(path: str | Path) -> ModelPackage:
    """Read and verify a package file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise PackageError(f"model package not found: {path}; check the path") from exc
    except OSError as exc:
        raise PackageError(
            f"cannot read model package {path}: {exc.strerror}; check the path and its permissions"
        ) from exc
    return read_package_bytes(data, source=str(path))


def read_package_bytes(data: bytes, source: str = "package") -> ModelPackage:
    """Parse and verify package bytes: safe names, known files, sizes and sha256 of every file."""
    import zipfile


    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError(
            f"{source} is not a model package (not a zip file: {exc}); pass a .edgepkg made by "
            "'edge convert' (download it again if it was cut short)"
        ) from exc
    with archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise PackageError(f"{source} holds the same file name twice; the package is tampered with")
        total = 0
        for info in infos:
            _check_member_name(info.filename, source)
            if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                kind = "a symbolic link" if stat.S_ISLNK(info.external_attr >> 16) else "a folder"
                raise PackageError(f"{source} holds {info.filename!r} as {kind}, not a file; refusing it")
            total += info.file_size
        if total > MAX_PACKAGE_CONTENT:
            raise PackageError(
                f"{source} would unpack to {total} bytes (limit {MAX_PACKAGE_CONTENT}); refusing it"
            )
        manifest_size = next((i.file_size for i in infos if i.filename == MANIFEST_NAME), 0)
        if manifest_size > MAX_MANIFEST_BYTES:
            raise PackageError(
                f"{source}: {MANIFEST_NAME} is {manifest_size} bytes (limit {MAX_MANIFEST_BYTES}); "
                "refusing it: it was not made by 'edge convert'"
            )
        if MANIFEST_NAME not in names:
            raise PackageError(f"{source} has no {MANIFEST_NAME}; it was not made by 'edge convert'")
        try:
            contents = {info.filename: _read_member(archive, info) for info in infos}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PackageError(f"{source} is damaged or truncated ({exc}); download it again") from exc
    manifest_bytes = contents.pop(MANIFEST_NAME)
    signature = contents.pop(SIGNATURE_NAME, None)
    manifest = _parse_manifest(manifest_bytes, f"{source}:{MANIFEST_NAME}")
    _verify_files(manifest, contents, source)
    return ModelPackage(manifest=manifest, manifest_bytes=manifest_bytes, files=contents, signature=signature)


def load_model_source(path: str | Path) -> LoadedModelSource:
    """Read a package or a bare ``.tflite`` (with or without an embedded manifest). No TensorFlow."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder; pass a .tflite file or a {PACKAGE_SUFFIX} package")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model not found: {path}; check the path") from exc
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from exc
    if data[:4] == ZIP_MAGIC:
        package = read_package_bytes(data, source=str(path))
        info = read_tflite(package.model_bytes, source=f"{path}:{MODEL_NAME}")
        return LoadedModelSource(path, package.model_bytes, info, package.manifest, package)
    info = read_tflite(data, source=str(path))
    return LoadedModelSource(path, data, info, embedded_manifest(info, source=str(path)))


def embedded_manifest(info: TFLiteFileInfo, source: str = "model") -> Manifest | None:
    """The manifest ``edge convert`` embedded in a ``.tflite``, or None for third-party models."""
    raw = info.metadata.get(MANIFEST_METADATA_NAME)
    if raw is None:
        return None
    return _parse_manifest(raw, f"{source}:metadata[{MANIFEST_METADATA_NAME}]")


def _parse_manifest(data: bytes, source: str) -> Manifest:
    """``Manifest.from_bytes`` with the errors of a hostile manifest (a list where a number belongs,
    nesting that exhausts the stack) translated to one PackageError."""
    from edge.manifest import Manifest

    try:
        return Manifest.from_bytes(data, source=source)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        raise PackageError(
            f"{source} is malformed ({what}); the package is damaged or was not made by 'edge convert'"
        ) from exc


def existing_versions(folder: str | Path, name: str) -> list[int]:
    """Versions of model ``name`` in ``folder`` (packages and bare .tflite files); unreadable ones skipped."""
    folder = Path(folder)
    versions: list[int] = []
    if not folder.is_dir():
        return versions
    for candidate in folder.iterdir():
        if candidate.suffix not in (PACKAGE_SUFFIX, ".tflite", ".zip") or not candidate.is_file():
            continue
        try:
            manifest = load_model_source(candidate).manifest
        except ModelError:
            continue
        if manifest is not None and manifest.name == name:
            versions.append(manifest.version)
    return sorted(versions)


def _zip_info(name: str) -> zipfile.ZipInfo:
    import zipfile

    # A fixed timestamp keeps package bytes reproducible for identical content.
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _check_member_name(name: str, source: str) -> None:
    if name in (MANIFEST_NAME, SIGNATURE_NAME):
        return
    if name.startswith(("/", "\\")) or ".." in name.split("/") or "\\" in name or ":" in name:
        raise PackageError(f"{source} holds a path escaping the package: {name!r}; refusing it")
    if not ALLOWED_NAMES.match(name):
        raise PackageError(f"{source} holds an unexpected file {name!r}; refusing it")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # Read at most the declared size + 1 so a lying header cannot make us inflate without bound.
    with archive.open(info) as handle:
        data = handle.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise PackageError(
            f"{info.filename} is larger than its zip header says; the package is tampered with"
        )
    return data


def _verify_files(manifest: Manifest, contents: dict[str, bytes], source: str) -> None:
    listed = set(manifest.files)
    present = set(contents)
    if MODEL_NAME not in present:
        raise PackageError(f"{source} has no {MODEL_NAME}")
    if present - listed:
        raise PackageError(f"{source} holds files the manifest does not list: {sorted(present - listed)}")
    if listed - present:
        raise PackageError(f"{source} is missing files its manifest lists: {sorted(listed - present)}")
    for name, entry in manifest.files.items():
        data = contents[name]
        if len(data) != entry.size or sha256_hex(data) != entry.sha256:
            raise PackageError(
                f"{source}: {name} does not match its sha256 in the manifest; "
                "the package is damaged or tampered with"
            )


def manifest_json_for_embedding(manifest: Manifest) -> bytes:
    """What the .tflite metadata table holds: the manifest without the file list (it cannot hash itself)."""
    return json.dumps(manifest.to_json(include_files=False), sort_keys=True).encode("utf-8")
