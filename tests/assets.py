"""Test assets: small real models and scikit-image sample images, built once and cached.

``assets`` (a session fixture) gives paths under ``.cache/test-assets/<hash>/`` where ``<hash>`` covers the
builder's source, so editing a builder rebuilds. Models are real TensorFlow conversions:

- the digits CNN (``converter.digits``) as float32, float16, dynamic-range, int8 with uint8 io and int8 with
  int8 io ``.tflite`` files (bare: no manifest), plus an int8 *package* made by ``converter.convert``;
- ``ssd.tflite``: a tiny SSD-style post-processed detector. Four fixed boxes, one per image quadrant
  (``QUADRANT_BOXES``, normalized ymin, xmin, ymax, xmax), scored by the quadrant's brightest channel mean
  (input float32 0..1, so run it with mean 0 / std 255) and classed by which channel (0 red, 1 green, 2 blue).
  Its four outputs (boxes, classes, scores, count) come out in the converter's order, not TFLite's usual one;
- ``yolo.tflite``: a YOLOv8-style raw head, output (1, 4 + 2, 32): for each 16x16 cell of the 64x64 input a
  box ``cx, cy, 16, 16`` and a 20x20 box around the same centre scored 0.9x as high (IoU 0.64: NMS drops it);
  class scores are the cell's red and green means (input float32 0..1);
- ``custom_op.tflite``: a model holding a custom op no interpreter has;
- the trained Keras digits model (``digits_keras``) for tests that convert it themselves;
- the digits held-out set (``digits_eval.npz``: x float32 0..255 (N, 8, 8, 1), y) and the first 40 of it as
  PNG files named ``<index>_<label>.png``;
- scikit-image's sample images as JPEG/PNG/WebP/GIF/BMP, an RGBA PNG, a grayscale PNG and a JPEG with
  EXIF orientation 6 (stored rotated; upright it is chelsea, 451 wide and 300 high).

Without TensorFlow in this interpreter the builder runs as ``$EDGE_TF_PYTHON -m tests.assets <dir>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cache import build_once

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "test-assets"
DIGITS_LABELS = tuple(str(d) for d in range(10))
DIGIT_MODELS = ("digits_float32", "digits_float16", "digits_dynamic", "digits_int8", "digits_int8_int8io")
# Normalized [ymin, xmin, ymax, xmax] of the SSD model's four boxes: quadrants TL, TR, BL, BR, inset 0.05.
QUADRANT_BOXES = tuple(
    (r * 0.5 + 0.05, c * 0.5 + 0.05, r * 0.5 + 0.45, c * 0.5 + 0.45) for r in (0, 1) for c in (0, 1)
)
DETECTOR_SIZE = 64
YOLO_CELL = 16
IMAGE_FILES = (
    "astronaut.jpg", "astronaut.bmp", "coffee.webp", "chelsea.gif", "camera.png", "astronaut_rgba.png",
    "chelsea_exif6.jpg",
)


@dataclass(frozen=True)
class Assets:
    """Paths of the built assets."""

    root: Path
    models: dict[str, Path]
    digits_eval: Path
    digit_images: Path
    images: dict[str, Path]
    digits_package: Path
    digits_keras: Path | None = None
    labels: tuple[str, ...] = DIGITS_LABELS
    extra: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> Path:
        return self.models[name]

    def eval_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The digits held-out set: x float32 0..255 (N, 8, 8, 1), y int."""
        with np.load(self.digits_eval) as data:
            return data["x"], data["y"]


def builder_hash() -> str:
    """Content hash of everything that decides what the assets are."""
    digest = hashlib.sha256()
    for path in (Path(__file__), ROOT / "converter" / "digits.py", ROOT / "converter" / "convert.py"):
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def ensure_assets() -> Assets:
    """Build the assets unless cached; safe when several test processes start at once."""
    builder = build_all if tensorflow_available() else _build_in_subprocess
    return load_index(build_once(CACHE / builder_hash(), "assets.json", builder))


def _build_in_subprocess(folder: Path) -> None:
    python = os.environ.get("EDGE_TF_PYTHON")
    if not python:
        raise RuntimeError(
            "TensorFlow is not importable here and EDGE_TF_PYTHON is not set; set it to a Python with "
            "TensorFlow (e.g. .venv/bin/python) so the test models can be built once"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_BACKEND", "PYTHONPATH")}
    subprocess.run([python, "-m", "tests.assets", str(folder)], cwd=ROOT, env=env, check=True)


def load_index(folder: Path) -> Assets:
    index = json.loads((folder / "assets.json").read_text())
    return Assets(
        root=folder,
        models={name: folder / rel for name, rel in index["models"].items()},
        digits_eval=folder / index["digits_eval"],
        digit_images=folder / index["digit_images"],
        images={name: folder / rel for name, rel in index["images"].items()},
        digits_package=folder / index["digits_package"],
        digits_keras=folder / "digits.keras",
    )


@pytest.fixture(scope="session")
def assets() -> Assets:
    """Real test models and images, built once per builder version."""
    return ensure_assets()


# ---------------------------------------------------------------------------------------------- builders
# Everything below runs only where TensorFlow is installed.


def build_all(folder: Path) -> None:
    """Write every asset into ``folder`` and an ``assets.json`` index."""
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"models": {}}
    index["digits_eval"], index["digit_images"], data = _write_digits_data(folder)
    index["images"] = _write_images(folder)
    index["models"].update(_write_digit_models(folder, data))
    index["models"]["ssd"] = _write(folder / "ssd.tflite", _convert_fn(*_ssd_function()))
    index["models"]["yolo"] = _write(folder / "yolo.tflite", _convert_fn(*_yolo_function()))
    index["models"]["custom_op"] = _write(folder / "custom_op.tflite", _custom_op_model())
    index["digits_package"] = _write_digits_package(folder, data)
    (folder / "assets.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return path.name


def _write_digits_data(folder: Path) -> tuple[str, str, Any]:
    from PIL import Image

    from converter.digits import load_digits_pixels

    data = load_digits_pixels()
    np.savez(folder / "digits_eval.npz", x=data.x_test, y=data.y_test)
    images = folder / "digits"
    images.mkdir()
    for i in range(40):
        pixels = np.clip(np.rint(data.x_test[i, :, :, 0]), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(images / f"{i:02d}_{int(data.y_test[i])}.png")
    return "digits_eval.npz", "digits", data


def _write_images(folder: Path) -> dict[str, str]:
    from PIL import Image
    from skimage import data as samples

    out = folder / "images"
    out.mkdir()
    astronaut = Image.fromarray(samples.astronaut())
    astronaut.save(out / "astronaut.jpg", quality=90)
    astronaut.save(out / "astronaut.bmp")
    Image.fromarray(samples.coffee()).save(out / "coffee.webp", quality=85)
    chelsea = Image.fromarray(samples.chelsea())
    chelsea.convert("P", palette=Image.Palette.ADAPTIVE).save(out / "chelsea.gif")
    Image.fromarray(samples.camera()).save(out / "camera.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(out / "astronaut_rgba.png")
    # Stored rotated 90° clockwise-compensated: orientation 6 means "rotate 270° (i.e. 90° CW) to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    chelsea.transpose(Image.Transpose.ROTATE_90).save(out / "chelsea_exif6.jpg", exif=exif, quality=90)
    return {name: f"images/{name}" for name in IMAGE_FILES}


def _digits_converter(saved_model: Path) -> Any:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def _export_digits(model: Any, folder: Path) -> Path:
    import keras
    import tensorflow as tf

    path = folder / "digits_savedmodel"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", model.call, input_signature=[tf.TensorSpec((1, 8, 8, 1), tf.float32, name="pixels")]
    )
    archive.write_out(str(path), verbose=False)
    return path


def _write_digit_models(folder: Path, data: Any) -> dict[str, str]:
    import tensorflow as tf

    from converter.digits import train_digits_model

    model = train_digits_model(data)
    calib = data.x_train[:200]

    def representative() -> Any:
        for sample in calib:
            yield [sample[None].astype(np.float32)]

    saved = _export_digits(model, folder)
    written = {}
    for name in DIGIT_MODELS:
        converter = _digits_converter(saved)
        if name != "digits_float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if name == "digits_float16":
            converter.target_spec.supported_types = [tf.float16]
        if name.startswith("digits_int8"):
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = tf.int8 if name.endswith("int8io") else tf.uint8
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        written[name] = _write(folder / f"{name}.tflite", converter.convert())
    model.save(folder / "digits.keras")  # the trained Keras source, for tests converting it themselves
    return written


def _convert_fn(fn: Any, shape: tuple[int, ...]) -> bytes:
    import tensorflow as tf

    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete.get_concrete_function()])
    return bytes(converter.convert())


def _ssd_function() -> tuple[Any, tuple[int, ...]]:
    import tensorflow as tf

    boxes_const = tf.constant([QUADRANT_BOXES], tf.float32)  # (1, 4, 4)

    def ssd(image: Any) -> Any:
        half = DETECTOR_SIZE // 2
        means = tf.nn.avg_pool2d(image, half, half, "VALID")  # (1, 2, 2, 3)
        means = tf.reshape(means, (1, 4, 3))
        scores = tf.reduce_max(means, axis=-1)
        classes = tf.cast(tf.argmax(means, axis=-1), tf.float32)
        touch = tf.reduce_sum(image) * 0.0
        boxes = boxes_const + touch
        count = tf.reshape(tf.constant(4.0) + touch, (1,))
        return {"scores": scores, "boxes": boxes, "count": count, "classes": classes}

    return ssd, (1, DETECTOR_SIZE, DETECTOR_SIZE, 3)


def yolo_cells() -> list[tuple[float, float]]:
    """Centres (cx, cy) in model pixels of the YOLO model's cells, in output order."""
    half = YOLO_CELL / 2
    n = DETECTOR_SIZE // YOLO_CELL
    return [(c * YOLO_CELL + half, r * YOLO_CELL + half) for r in range(n) for c in range(n)]


def _yolo_function() -> tuple[Any, tuple[int, ...]]:
    import tensorflow as tf

    cells = np.array(yolo_cells(), np.float32)  # (16, 2)
    n = len(cells)
    small = np.concatenate([cells, np.full((n, 2), YOLO_CELL, np.float32)], axis=1)
    large = np.concatenate([cells, np.full((n, 2), YOLO_CELL * 1.25, np.float32)], axis=1)
    geometry = tf.constant(np.concatenate([small, large]).T[None], tf.float32)  # (1, 4, 32)

    def yolo(image: Any) -> Any:
        means = tf.nn.avg_pool2d(image, YOLO_CELL, YOLO_CELL, "VALID")  # (1, 4, 4, 3)
        rg = tf.reshape(means[..., :2], (1, n, 2))
        scores = tf.concat([rg, rg * 0.9], axis=1)  # (1, 32, 2)
        return tf.concat([geometry + tf.reduce_sum(image) * 0.0, tf.transpose(scores, (0, 2, 1))], axis=1)

    return yolo, (1, DETECTOR_SIZE, DETECTOR_SIZE, 3)


def _custom_op_model() -> bytes:
    import tensorflow as tf

    concrete = tf.function(
        lambda x: tf.math.bessel_i1e(x) + tf.math.lgamma(x),
        input_signature=[tf.TensorSpec((1, 4), tf.float32, name="x")],
    ).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.allow_custom_ops = True
    return bytes(converter.convert())


def _write_digits_package(folder: Path, data: Any) -> str:
    """An int8 digits package made by ``converter.convert`` (a failure fails the build, loudly)."""
    from converter.convert import ConvertOptions, convert

    calib = folder / "calib.npy"
    np.save(calib, data.x_train[:200])
    labels = folder / "labels.txt"
    labels.write_text("\n".join(DIGITS_LABELS) + "\n")
    out = folder / "digits_int8.edgepkg"
    convert(
        ConvertOptions(
            source=folder / "digits.keras", output=out, mode="int8", calib=calib, labels=labels,
            name="digits", version=1, task="classification",
        )
    )
    return out.name


if __name__ == "__main__":
    build_all(Path(sys.argv[1]))
