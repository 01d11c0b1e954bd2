"""Read a ``.tflite`` file's structure without TensorFlow or an interpreter.

A TFLite model is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs). This module reads only
what the runtime and ``edge inspect`` need: tensors of the main subgraph, its inputs and outputs,
the operator list and the metadata table (where ``edge convert`` embeds its manifest).
It never allocates tensors or runs anything, so it is safe on untrusted files (every read is
bounds-checked by ``edge.flatbuffer.FlatBufferReader``). ``read_metadata_entries`` reads only the metadata
table, for callers that need just that (the standard TFLite metadata: ``edge.tflite_metadata``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edge._schema_tables import BUILTIN_OPERATORS, TENSOR_TYPES
from edge.errors import ModelError
from edge.flatbuffer import FlatBufferReader

FILE_IDENTIFIER = b"TFL3"
MANIFEST_METADATA_NAME = "edge_manifest"
STANDARD_METADATA_NAME = "TFLITE_METADATA"  # the TFLite Support writers' (edge.tflite_metadata reads it)

# Field slots (index in the table's vtable) from the TFLite schema.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 1, 2, 3, 4
_MODEL_METADATA = 6
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 1, 2, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT, _TENSOR_SHAPE_SIG = 0, 1, 2, 3, 4, 7
_QUANT_SCALE, _QUANT_ZERO_POINT, _QUANT_DIMENSION = 2, 3, 6
_OPERATOR_OPCODE, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 0, 1, 2
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_CUSTOM_OP = 32  # BuiltinOperator.CUSTOM


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor: its dtype, shape and (per-tensor or per-channel) quantization."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def is_quantized(self) -> bool:
        return bool(self.scale) and any(s != 0.0 for s in self.scale)

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "shape_signature": list(self.shape_signature),
            "quantization": {
                "scale": list(self.scale),
                "zero_point": list(self.zero_point),
                "axis": self.quantized_dimension,
            }
            if self.scale
            else None,
        }


class OperatorInfo(NamedTuple):
    """One operator of the main subgraph (a NamedTuple: made once per operator, cheap to define)."""

    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom: bool = False


class TFLiteFileInfo(NamedTuple):
    """What a ``.tflite`` file holds, read from its FlatBuffer."""

    size: int
    schema_version: int
    description: str
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    subgraph_count: int
    metadata: dict[str, bytes] = {}  # noqa: RUF012  (never mutated: read from the file)

    def op_counts(self) -> dict[str, int]:
        """Operator name -> how many times it appears in the main subgraph."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


# The reader used to live here as ``_Reader``; the name stays for code that imported it.
_Reader = FlatBufferReader


def read_tflite(data: bytes, source: str = "model") -> TFLiteFileInfo:
    """Parse a TFLite FlatBuffer. Raises ``ModelError`` when ``data`` is not a TFLite model."""
    _check_identifier(data, source)
    try:
        return _parse(FlatBufferReader(data))
    except (struct.error, IndexError, ValueError) as exc:
        raise _damaged(source, exc) from exc


def read_metadata_entries(data: bytes, source: str = "model") -> dict[str, bytes]:
    """The model's metadata table, name -> buffer contents, without parsing its tensors or operators.

    Raises ``ModelError`` when ``data`` is not a TFLite model or its metadata table is damaged."""
    _check_identifier(data, source)
    try:
        r = FlatBufferReader(data)
        model = r.root()
        return dict(_metadata_entries(r, model, r.tables(model, _MODEL_BUFFERS)))
    except (struct.error, IndexError, ValueError) as exc:
        raise _damaged(source, exc) from exc


def _check_identifier(data: bytes, source: str) -> None:
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError(
            f"{source} is not a TFLite model (no 'TFL3' identifier); "
            "pass a .tflite file or a model package made by 'edge convert'"
        )


def _damaged(source: str, exc: Exception) -> ModelError:
    return ModelError(f"{source} is a damaged TFLite file ({exc}); re-export or re-download it")


def read_tflite_file(path: str | Path) -> TFLiteFileInfo:
    """Read and parse a ``.tflite`` file from disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}; check the path") from exc
    except IsADirectoryError as exc:
        raise ModelError(f"{path} is a folder, not a model file; pass a .tflite file or package") from exc
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from exc
    return read_tflite(data, source=str(path))


def _parse(r: FlatBufferReader) -> TFLiteFileInfo:
    model = r.root()
    version = r.scalar(model, 0, "I")
    buffers = r.tables(model, _MODEL_BUFFERS)
    opcodes = [_opcode_name(r, t) for t in r.tables(model, _MODEL_OPERATOR_CODES)]
    subgraphs = r.tables(model, _MODEL_SUBGRAPHS)
    if not subgraphs:
        raise ValueError("the model has no subgraph")
    main = subgraphs[0]
    tensors = tuple(_tensor(r, i, t) for i, t in enumerate(r.tables(main, _SUBGRAPH_TENSORS)))
    inputs = tuple(tensors[i] for i in r.numbers(main, _SUBGRAPH_INPUTS, "i"))
    outputs = tuple(tensors[i] for i in r.numbers(main, _SUBGRAPH_OUTPUTS, "i"))
    operators = []
    for op in r.tables(main, _SUBGRAPH_OPERATORS):
        name, op_version, custom = opcodes[r.scalar(op, _OPERATOR_OPCODE, "I")]
        operators.append(
            OperatorInfo(
                name=name,
                version=op_version,
                inputs=tuple(r.numbers(op, _OPERATOR_INPUTS, "i")),
                outputs=tuple(r.numbers(op, _OPERATOR_OUTPUTS, "i")),
                custom=custom,
            )
        )
    metadata = dict(_metadata_entries(r, model, buffers))
    return TFLiteFileInfo(
        size=len(r.data),
        schema_version=version,
        description=r.string(model, _MODEL_DESCRIPTION),
        tensors=tensors,
        inputs=inputs,
        outputs=outputs,
        operators=tuple(operators),
        subgraph_count=len(subgraphs),
        metadata=metadata,
    )


def _metadata_entries(r: FlatBufferReader, model: int, buffers: list[int]) -> Iterator[tuple[str, bytes]]:
    for entry in r.tables(model, _MODEL_METADATA):
        name = r.string(entry, _METADATA_NAME)
        index = r.scalar(entry, _METADATA_BUFFER, "I")
        if index >= len(buffers):
            raise ValueError(f"metadata {name!r} names buffer {index} of {len(buffers)}")
        yield name, _buffer_bytes(r, buffers[index])


def _opcode_name(r: FlatBufferReader, table: int) -> tuple[str, int, bool]:
    code = max(
        r.scalar(table, _OPCODE_DEPRECATED_BUILTIN, "b"),
        r.scalar(table, _OPCODE_BUILTIN, "i"),
    )
    version = r.scalar(table, _OPCODE_VERSION, "i", default=1)
    if code == _CUSTOM_OP:
        return r.string(table, _OPCODE_CUSTOM) or "CUSTOM", version, True
    return BUILTIN_OPERATORS.get(code, f"BUILTIN_{code}"), version, False


def _tensor(r: FlatBufferReader, index: int, table: int) -> TensorInfo:
    shape = tuple(r.numbers(table, _TENSOR_SHAPE, "i"))
    signature = tuple(r.numbers(table, _TENSOR_SHAPE_SIG, "i")) or shape
    type_code = r.scalar(table, _TENSOR_TYPE, "b")
    quant = r.table(table, _TENSOR_QUANT)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    dimension = 0
    if quant:
        scale = tuple(float(s) for s in r.numbers(quant, _QUANT_SCALE, "f"))
        zero_point = tuple(int(z) for z in r.numbers(quant, _QUANT_ZERO_POINT, "q"))
        dimension = r.scalar(quant, _QUANT_DIMENSION, "i")
    return TensorInfo(
        index=index,
        name=r.string(table, _TENSOR_NAME),
        dtype=TENSOR_TYPES.get(type_code, f"type_{type_code}"),
        shape=shape,
        shape_signature=signature,
        scale=scale,
        zero_point=zero_point,
        quantized_dimension=dimension,
    )


def _buffer_bytes(r: FlatBufferReader, table: int) -> bytes:
    data = r.bytes_vector(table, _BUFFER_DATA)
    if data:
        return bytes(data)
    # Large models keep buffer contents after the FlatBuffer, addressed by offset and size.
    offset = r.scalar(table, _BUFFER_OFFSET, "Q")
    size = r.scalar(table, _BUFFER_SIZE, "Q")
    if offset > 1 and size:
        if offset + size > r.size:
            raise ValueError(f"a buffer at offset {offset} (+{size} bytes) is outside the {r.size}-byte file")
        return bytes(r.data[offset : offset + size])
    return b""
