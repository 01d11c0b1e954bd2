"""Preprocessing on scikit-image's sample images written as JPEG/PNG/BMP/WebP/GIF, plus broken inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge.errors import ConfigError, InputError
from edge.preprocess import (
    array_to_image,
    decode,
    geometry_for,
    original_size,
    prepare_image,
    to_channels,
)
from tests.assets import IMAGE_FILES

SIZES = {
    "astronaut.jpg": (512, 512),
    "astronaut.bmp": (512, 512),
    "astronaut_rgba.png": (512, 512),
    "coffee.webp": (600, 400),
    "chelsea.gif": (451, 300),
    "camera.png": (512, 512),
    "chelsea_exif6.jpg": (451, 300),
}


@pytest.mark.parametrize("name", IMAGE_FILES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_format_decodes_to_the_model_channels(assets, name, channels):
    prepared = prepare_image(assets.images[name], 48, 32, channels)
    assert prepared.pixels.shape == (32, 48, channels) and prepared.pixels.dtype == np.uint8
    assert (prepared.geometry.original_width, prepared.geometry.original_height) == SIZES[name]
    assert prepared.pixels.std() > 10  # a real picture, not a blank canvas


def test_exif_orientation_makes_the_image_upright(assets):
    upright = np.asarray(decode(assets.images["astronaut.jpg"]))  # unrotated reference is chelsea below
    assert upright.shape == (512, 512, 3)
    rotated = decode(assets.images["chelsea_exif6.jpg"])
    assert rotated.size == (451, 300)
    reference = np.asarray(decode(assets.images["chelsea.gif"]).convert("RGB"), dtype=np.float64)
    difference = np.abs(np.asarray(rotated, dtype=np.float64) - reference).mean()
    assert difference < 12, f"mean difference {difference:.1f}: the EXIF rotation was not applied"
    assert original_size(assets.images["chelsea_exif6.jpg"]) == (451, 300)


def test_rgba_palette_and_grayscale_conversions(assets):
    rgba = Image.open(assets.images["astronaut_rgba.png"])
    assert rgba.mode == "RGBA" and to_channels(rgba, 3).mode == "RGB"
    gif = Image.open(assets.images["chelsea.gif"])
    assert gif.mode == "P" and to_channels(gif, 3).mode == "RGB"
    gray = Image.open(assets.images["camera.png"])
    assert gray.mode == "L" and np.asarray(to_channels(gray, 3)).shape == (512, 512, 3)
    sixteen = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    assert np.array_equal(np.asarray(to_channels(sixteen, 1)), np.asarray(gray))


def test_letterbox_geometry_is_hand_computable():
    g = geometry_for(600, 400, 300, 300, "letterbox")
    assert (g.scale_x, g.scale_y, g.offset_x, g.offset_y) == (0.5, 0.5, 0.0, 50.0)
    x, y = g.to_original(150.0, 50.0)
    assert (float(x), float(y)) == (300.0, 0.0)
    assert g.box_to_original(0, 0, 300, 300) == (0.0, 0.0, 600.0, 400.0)  # the bars are clipped off


def test_crop_geometry_is_hand_computable():
    g = geometry_for(600, 400, 200, 200, "crop")
    assert (g.scale_x, g.scale_y, g.offset_x, g.offset_y) == (0.5, 0.5, -50.0, 0.0)
    assert g.box_to_original(0, 0, 200, 200) == (100.0, 0.0, 500.0, 400.0)


def test_letterbox_pads_and_crop_fills(assets):
    letterbox = prepare_image(assets.images["coffee.webp"], 60, 60, 3, "letterbox")
    assert letterbox.geometry.offset_y == 10.0
    assert letterbox.pixels[:10].max() == 0 and letterbox.pixels[-10:].max() == 0
    assert letterbox.pixels[10:50].mean() > 20
    crop = prepare_image(assets.images["coffee.webp"], 60, 60, 3, "crop")
    assert crop.pixels[:10].mean() > 20 and crop.geometry.offset_x == -15.0


def test_crop_matches_an_explicit_centre_crop(assets):
    image = Image.open(assets.images["coffee.webp"]).convert("RGB")
    expected = np.asarray(
        image.crop((100, 0, 500, 400)).resize((40, 40), Image.Resampling.BILINEAR), np.float64
    )
    got = prepare_image(assets.images["coffee.webp"], 40, 40, 3, "crop").pixels.astype(np.float64)
    assert np.abs(got - expected).mean() < 2


def test_jpeg_draft_decodes_smaller_when_the_target_is_small(assets):
    full = decode(assets.images["astronaut.jpg"])
    small = decode(assets.images["astronaut.jpg"], size=(64, 64))
    assert full.size == (512, 512)
    assert small.size[0] < 512 and small.size[0] >= 64  # DCT-scaled, never below what the resize needs
    prepared = prepare_image(assets.images["astronaut.jpg"], 64, 64, 3)
    reference = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR), np.float64)
    assert np.abs(prepared.pixels.astype(np.float64) - reference).mean() < 6


def test_numpy_arrays_are_images():
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))
    prepared = prepare_image(gray, 32, 8, 1)
    assert prepared.pixels.shape == (8, 32, 1)
    assert (prepared.geometry.original_width, prepared.geometry.original_height) == (64, 16)
    floats = array_to_image(np.full((4, 4, 3), 300.0))
    assert np.asarray(floats).max() == 255
    with pytest.raises(InputError, match=r"shape \(2, 3, 4, 5\) is not an image"):
        prepare_image(np.zeros((2, 3, 4, 5)), 8, 8, 1)
    with pytest.raises(InputError, match="dtype"):
        array_to_image(np.array([["a", "b"], ["c", "d"]]))


def test_zero_byte_truncated_corrupt_and_text_inputs(assets, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        prepare_image(empty, 8, 8, 3)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(assets.images["astronaut.jpg"].read_bytes()[:4000])
    with pytest.raises(InputError, match="truncated.jpg is corrupt or truncated"):
        prepare_image(truncated, 8, 8, 3)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(InputError, match="corrupt.png"):
        prepare_image(corrupt, 8, 8, 3)
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with pytest.raises(InputError, match="notes.txt is not an image"):
        prepare_image(text, 8, 8, 3)
    with pytest.raises(InputError, match="does not exist"):
        prepare_image(tmp_path / "missing.jpg", 8, 8, 3)
    with pytest.raises(InputError, match="is a folder"):
        prepare_image(tmp_path, 8, 8, 3)
    with pytest.raises(InputError, match="0 bytes"):
        prepare_image(b"", 8, 8, 3)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx in a tiny file
    assert bomb.stat().st_size < 200_000
    with pytest.raises(InputError, match=r"9000x9000 = 81000000 pixels, over the limit"):
        prepare_image(bomb, 8, 8, 1)
    with pytest.raises(InputError, match="over the limit of 1000"):
        prepare_image(Image.new("L", (40, 40)), 8, 8, 1, max_pixels=1000)


def test_pillow_bomb_error_is_translated(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    buffer = io.BytesIO()
    Image.new("L", (300, 300)).save(buffer, "PNG")  # 90 kpx > 2 x 10 kpx: Pillow's own DecompressionBombError
    with pytest.raises(InputError, match="too large to decode safely"):
        prepare_image(buffer.getvalue(), 8, 8, 1)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("L", (16, 16), color) for color in (10, 200, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    prepared = prepare_image(path, 16, 16, 1)
    assert abs(int(prepared.pixels.mean()) - 10) <= 1


def test_unknown_resize_mode():
    with pytest.raises(ConfigError, match="resize mode 'fit'"):
        prepare_image(np.zeros((8, 8), np.uint8), 8, 8, 1, "fit")
