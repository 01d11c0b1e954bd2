"""A minimal, bounds-checked FlatBuffer table reader (no ``flatbuffers`` package needed on the device).

Used for the TFLite model itself (``edge.tflite_file``) and for the standard TFLite metadata
(``edge.tflite_metadata``). Fields are addressed by *slot*: the field's index in the table's vtable,
counted in declaration order in the ``.fbs`` schema, deprecated fields included; a union takes two
slots (its ``_type`` byte, then the value).

Every read is checked against the buffer's size: a damaged or hostile file raises ``FlatBufferError``
(a ``ValueError``) naming the bad offset, never ``IndexError``/``struct.error`` or a silently short read.
Callers translate it into their own error with the file's name.
"""

from __future__ import annotations

import struct

_SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8, "Q": 8, "f": 4, "d": 8}


class FlatBufferError(ValueError):
    """The buffer is truncated or holds an offset that points outside it."""


class FlatBufferReader:
    """Reads tables, scalars, strings and vectors of a little-endian FlatBuffer held in ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def _check(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or pos + length > self.size:
            raise FlatBufferError(
                f"{what} at offset {pos} (+{length} bytes) is outside the {self.size}-byte buffer"
            )

    def _unpack(self, kind: str, pos: int) -> int | float:
        self._check(pos, _SIZES[kind], "a value")
        value: int | float = struct.unpack_from("<" + kind, self.data, pos)[0]
        return value

    def u16(self, pos: int) -> int:
        return int(self._unpack("H", pos))

    def i32(self, pos: int) -> int:
        return int(self._unpack("i", pos))

    def u32(self, pos: int) -> int:
        return int(self._unpack("I", pos))

    def root(self) -> int:
        """Position of the root table."""
        return self.indirect(0)

    def identifier(self) -> bytes:
        """The 4-byte file identifier (bytes 4..8), or b"" when the buffer is too short to have one."""
        return bytes(self.data[4:8]) if self.size >= 8 else b""

    def field(self, table: int, slot: int) -> int:
        """Absolute position of a field in a table, or 0 when absent.

        ``table`` 0 (what ``table()`` returns for an absent sub-table; no table can start there) has
        every field absent, so an absent sub-table reads as one with default values."""
        if not table:
            return 0
        vtable = table - self.i32(table)
        vtable_size = self.u16(vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vtable_size:
            return 0
        offset = self.u16(vtable + entry)
        return table + offset if offset else 0

    def indirect(self, pos: int) -> int:
        target = pos + self.u32(pos)
        self._check(target, 1, "an offset's target")
        return target

    def table(self, table: int, slot: int) -> int:
        """Position of a sub-table, or 0 when absent."""
        pos = self.field(table, slot)
        return self.indirect(pos) if pos else 0

    def scalar(self, table: int, slot: int, kind: str, default: int = 0) -> int:
        pos = self.field(table, slot)
        if not pos:
            return default
        return int(self._unpack(kind, pos))

    def float32(self, table: int, slot: int, default: float = 0.0) -> float:
        pos = self.field(table, slot)
        if not pos:
            return default
        return float(self._unpack("f", pos))

    def _string_at(self, start: int) -> str:
        length = self.u32(start)
        self._check(start + 4, length, "a string")
        return bytes(self.data[start + 4 : start + 4 + length]).decode("utf-8", errors="replace")

    def string(self, table: int, slot: int) -> str:
        pos = self.field(table, slot)
        if not pos:
            return ""
        return self._string_at(self.indirect(pos))

    def vector(self, table: int, slot: int, element_size: int = 1) -> tuple[int, int]:
        """(position of first element, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, slot)
        if not pos:
            return 0, 0
        start = self.indirect(pos)
        length = self.u32(start)
        self._check(start + 4, length * element_size, f"a vector of {length} elements")
        return start + 4, length

    def tables(self, table: int, slot: int) -> list[int]:
        """Positions of the tables in a vector-of-tables field."""
        start, length = self.vector(table, slot, 4)
        return [self.indirect(start + 4 * i) for i in range(length)]

    def strings(self, table: int, slot: int) -> tuple[str, ...]:
        """The strings of a vector-of-strings field."""
        start, length = self.vector(table, slot, 4)
        return tuple(self._string_at(self.indirect(start + 4 * i)) for i in range(length))

    def numbers(self, table: int, slot: int, kind: str) -> tuple:
        """The elements of a vector of scalars (``kind`` is a ``struct`` code: "i", "f", "q", ...)."""
        start, length = self.vector(table, slot, _SIZES[kind])
        if not length:
            return ()
        return struct.unpack_from(f"<{length}{kind}", self.data, start)

    def bytes_vector(self, table: int, slot: int) -> bytes:
        start, length = self.vector(table, slot)
        return bytes(self.data[start : start + length])

    def union(self, table: int, slot: int) -> tuple[int, int]:
        """(type code, table position) of a union whose ``_type`` is at ``slot``, value at ``slot + 1``.

        (0, 0) when absent; a type without a value (or a value without a type) counts as absent."""
        kind = self.scalar(table, slot, "B")
        value = self.table(table, slot + 1)
        return (kind, value) if kind and value else (0, 0)
