"""Embed the manifest in a ``.tflite`` file's metadata table (TF's schema object API), and check it."""

from __future__ import annotations

import numpy as np

from converter.errors import ConverterError
from edge.package import embedded_manifest
from edge.tflite_file import FILE_IDENTIFIER, MANIFEST_METADATA_NAME, read_tflite


def embed_metadata(model: bytes, name: str, payload: bytes) -> bytes:
    """Return ``model`` with metadata ``name`` set to ``payload`` (an existing entry is replaced)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
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
    return bytes(builder.Output())


def embed_manifest(model: bytes, manifest_json: bytes) -> bytes:
    """Embed the manifest JSON and verify that the TF-free reader reads the same bytes back."""
    out = embed_metadata(model, MANIFEST_METADATA_NAME, manifest_json)
    info = read_tflite(out, source="converted model")
    if info.metadata.get(MANIFEST_METADATA_NAME) != manifest_json or embedded_manifest(info) is None:
        raise ConverterError("the embedded manifest did not read back; this is a bug in edge convert")
    return out


def _name(value: str | bytes | None) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")
