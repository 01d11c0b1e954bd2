"""Embed the manifest in a ``.tflite`` file's metadata table (TF's schema object API), and check it.

TF's object API unpacks the whole FlatBuffer and packs it again: every field of the schema survives (other
metadata entries such as the standard ``TFLITE_METADATA`` and ``min_runtime_version`` included), but
anything *after* the FlatBuffer does not. The TFLite Support metadata writers append a zip of the
associated files (labels, score calibration) there, so ``embed_metadata`` reads that zip first and appends
it again, member by member, as the writers do (``zipfile`` in append mode: offsets from the file's start).
``embed_manifest`` then checks that every other metadata entry and every zipped file reads back unchanged.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from converter.errors import ConverterError
from edge.package import embedded_manifest
from edge.tflite_file import FILE_IDENTIFIER, MANIFEST_METADATA_NAME, read_tflite


def embed_metadata(model: bytes, name: str, payload: bytes) -> bytes:
    """Return ``model`` with metadata ``name`` set to ``payload`` (an existing entry is replaced).

    Other entries are kept as they are, and a zip of associated files appended to the model is appended
    to the result again."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    packed = appended_files(model)
    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if any((getattr(b, "offset", 0) or 0) > 1 for b in tree.buffers or []):
        raise ConverterError(
            "the model keeps its weights outside the FlatBuffer (buffer offsets, a model over 2 GB); "
            "edge convert cannot embed its manifest in it: write a package without it or use a smaller model"
        )
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    tree.buffers = list(tree.buffers or [])
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(tree.buffers) - 1
    kept = [m for m in (tree.metadata or []) if _name(m.name) != name]
    tree.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(model) + len(payload) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=FILE_IDENTIFIER)
    out = bytes(builder.Output())
    return append_files(out, packed) if packed else out


def appended_files(model: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """The members of the zip appended to ``model`` (the standard metadata's associated files), or []."""
    stream = io.BytesIO(model)
    if not zipfile.is_zipfile(stream):
        return []
    try:
        with zipfile.ZipFile(stream) as archive:
            return [(info, archive.read(info)) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ConverterError(
            f"the zip of associated files (labels) appended to the model is damaged ({exc}); embedding the "
            "manifest would drop it: re-download the model"
        ) from exc


def append_files(model: bytes, members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    """``model`` with a zip of ``members`` appended, the way the TFLite Support metadata writers do it."""
    stream = io.BytesIO(model)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a") as archive:
        for info, data in members:
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.compress_type = info.compress_type
            copy.external_attr = info.external_attr
            copy.comment = info.comment
            archive.writestr(copy, data)
    return stream.getvalue()


def embed_manifest(model: bytes, manifest_json: bytes) -> bytes:
    """Embed the manifest JSON and verify that the TF-free reader reads the same bytes back, and that every
    other metadata entry and every appended associated file is still there, unchanged."""
    before = read_tflite(model, source="model").metadata
    out = embed_metadata(model, MANIFEST_METADATA_NAME, manifest_json)
    info = read_tflite(out, source="converted model")
    if info.metadata.get(MANIFEST_METADATA_NAME) != manifest_json or embedded_manifest(info) is None:
        raise ConverterError("the embedded manifest did not read back; this is a bug in edge convert")
    lost = sorted(k for k, v in before.items() if k != MANIFEST_METADATA_NAME and info.metadata.get(k) != v)
    files_before = [(i.filename, data) for i, data in appended_files(model)]
    if lost or [(i.filename, data) for i, data in appended_files(out)] != files_before:
        what = f"metadata {', '.join(lost)}" if lost else "the zip of associated files"
        raise ConverterError(f"embedding the manifest changed {what}; this is a bug in edge convert")
    return out


def _name(value: str | bytes | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")
