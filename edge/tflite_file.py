"""Read a ``.tflite`` file's structure without TensorFlow or an interpreter.

A TFLite model is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs). This module reads only
what the runtime and ``edge inspect`` need: tensors of the main subgraph, its inputs and outputs,
the operator list and the metadata table (where ``edge convert`` embeds its manifest).
It never allocates tensors or runs anything, so it is safe on untrusted files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from edge._schema_tables import BUILTIN_OPERATORS, TENSOR_TYPES
from edge.errors import ModelError

FILE_IDENTIFIER = b"TFL3"
MANIFEST_METADATA_NAME = "edge_manifest"

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


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """One operator of the main subgraph."""

    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom: bool = False


@dataclass(frozen=True, slots=True)
class TFLiteFileInfo:
    """What a ``.tflite`` file holds, read from its FlatBuffer."""

    size: int
    schema_version: int
    description: str
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    subgraph_count: int
    metadata: dict[str, bytes] = field(default_factory=dict)

    def op_counts(self) -> dict[str, int]:
        """Operator name -> how many times it appears in the main subgraph."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


class _Reader:
    """Minimal FlatBuffer table reader over a bytes object (little-endian, as FlatBuffers are)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u16(self, pos: int) -> int:
        return int(struct.unpack_from("<H", self.data, pos)[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack_from("<i", self.data, pos)[0])

    def u32(self, pos: int) -> int:
        return int(struct.unpack_from("<I", self.data, pos)[0])

    def field(self, table: int, slot: int) -> int:
        """Absolute position of a field in a table, or 0 when absent."""
        vtable = table - self.i32(table)
        vtable_size = self.u16(vtable)
        entry = 4 + 2 * slot
        if entry >= vtable_size:
            return 0
        offset = self.u16(vtable + entry)
        return table + offset if offset else 0

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def table(self, table: int, slot: int) -> int:
        pos = self.field(table, slot)
        return self.indirect(pos) if pos else 0

    def scalar(self, table: int, slot: int, kind: str, default: int = 0) -> int:
        pos = self.field(table, slot)
        if not pos:
            return default
        return int(struct.unpack_from("<" + kind, self.data, pos)[0])

    def string(self, table: int, slot: int) -> str:
        pos = self.field(table, slot)
        if not pos:
            return ""
        start = self.indirect(pos)
        length = self.u32(start)
        return self.data[start + 4 : start + 4 + length].decode("utf-8", errors="replace")

    def vector(self, table: int, slot: int) -> tuple[int, int]:
        """(position of first element, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, slot)
        if not pos:
            return 0, 0
        start = self.indirect(pos)
        return start + 4, self.u32(start)

    def tables(self, table: int, slot: int) -> list[int]:
        start, length = self.vector(table, slot)
        return [self.indirect(start + 4 * i) for i in range(length)]

    def numbers(self, table: int, slot: int, kind: str) -> tuple:
        start, length = self.vector(table, slot)
        if not length:
            return ()
        return struct.unpack_from(f"<{length}{kind}", self.data, start)

    def bytes_vector(self, table: int, slot: int) -> bytes:
        start, length = self.vector(table, slot)
        return self.data[start : start + length]


def read_tflite(data: bytes, source: str = "model") -> TFLiteFileInfo:
    """Parse a TFLite FlatBuffer. Raises ``ModelError`` when ``data`` is not a TFLite model."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError(
            f"{source} is not a TFLite model (no 'TFL3' identifier); "
            "pass a .tflite file or a model package made by 'edge convert'"
        )
    try:
        return _parse(_Reader(data))
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelError(f"{source} is a damaged TFLite file ({exc}); re-export or re-download it") from exc


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


def _parse(r: _Reader) -> TFLiteFileInfo:
    model = r.indirect(0)
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
    metadata = {}
    for entry in r.tables(model, _MODEL_METADATA):
        name = r.string(entry, _METADATA_NAME)
        index = r.scalar(entry, _METADATA_BUFFER, "I")
        metadata[name] = _buffer_bytes(r, buffers[index])
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


def _opcode_name(r: _Reader, table: int) -> tuple[str, int, bool]:
    code = max(
        r.scalar(table, _OPCODE_DEPRECATED_BUILTIN, "b"),
        r.scalar(table, _OPCODE_BUILTIN, "i"),
    )
    version = r.scalar(table, _OPCODE_VERSION, "i", default=1)
    if code == _CUSTOM_OP:
        return r.string(table, _OPCODE_CUSTOM) or "CUSTOM", version, True
    return BUILTIN_OPERATORS.get(code, f"BUILTIN_{code}"), version, False


def _tensor(r: _Reader, index: int, table: int) -> TensorInfo:
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


def _buffer_bytes(r: _Reader, table: int) -> bytes:
    data = r.bytes_vector(table, _BUFFER_DATA)
    if data:
        return bytes(data)
    # Large models keep buffer contents after the FlatBuffer, addressed by offset and size.
    offset = r.scalar(table, _BUFFER_OFFSET, "Q")
    size = r.scalar(table, _BUFFER_SIZE, "Q")
    if offset > 1 and size:
        return bytes(r.data[offset : offset + size])
    return b""
