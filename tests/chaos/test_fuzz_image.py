"""Hostile images (issue 14): the decoder on random bytes, truncated and bit-flipped real JPEGs, PNGs,
GIFs, BMPs and WebPs (scikit-image's sample photos encoded by Pillow), and headers declaring huge sizes.

``prepare_image`` returns pixels of the model's shape or raises ``InputError`` with one line; nothing else.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from skimage import data as samples

from edge.errors import InputError
from edge.preprocess import prepare_image
from tests.chaos.fuzz import REPORT, fuzz_settings


def _encoded(fmt: str, **options: Any) -> bytes:
    image = Image.fromarray(samples.astronaut()[::4, ::4])  # 128x128 RGB, a real photo
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


REAL = {
    "jpeg": _encoded("JPEG", quality=80),
    "progressive jpeg": _encoded("JPEG", progressive=True),
    "png": _encoded("PNG"),
    "gif": _encoded("GIF"),
    "bmp": _encoded("BMP"),
    "webp": _encoded("WEBP"),
}


def _prepare(data: bytes, what: str, mode: str = "stretch") -> None:
    REPORT[f"image {what}: cases"] += 1
    try:
        prepared = prepare_image(data, 32, 24, 3, mode=mode)
    except InputError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 2000
        REPORT[f"image {what}: rejected"] += 1
        return
    assert prepared.pixels.shape == (24, 32, 3) and prepared.pixels.dtype == np.uint8


@fuzz_settings(300)
@given(data=st.binary(min_size=0, max_size=3000), magic=st.sampled_from(
    [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"]))
def test_random_bytes(data: bytes, magic: bytes) -> None:
    _prepare(magic + data, "random bytes")


@pytest.mark.parametrize("fmt", sorted(REAL))
@fuzz_settings(120)
@given(data=st.data())
def test_truncated_and_flipped_real_images(fmt: str, data: st.DataObject) -> None:
    real = bytearray(REAL[fmt])
    for _ in range(data.draw(st.integers(0, 6))):
        at = data.draw(st.integers(0, len(real) - 1))
        real[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(real)))
    mode = data.draw(st.sampled_from(["stretch", "letterbox", "crop"]))
    _prepare(bytes(real[:cut]), fmt, mode)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (2**31 - 1, 1), (1, 0), (0, 0)])
def test_declared_huge_or_empty_sizes_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(InputError, match="pixels|too large|corrupt|not an image"):
        prepare_image(_png_header(width, height) + b"\x00" * 64, 32, 32, 3)
