"""Session fixtures for converter tests: real models trained or built once, real data.

TensorFlow loads once per session; every model here is small enough to convert in about a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN trained on scikit-learn's digits, with calib.npy, eval.npz and labels.txt."""
    from converter.digits import save_digits_assets

    return save_digits_assets(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def rgb_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small RGB CNN (16x16x3 -> 3 classes; a LeakyReLU the Edge TPU lacks): .keras, .h5, SavedModel."""
    import keras

    folder = tmp_path_factory.mktemp("rgb")
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(8, 3),
            keras.layers.LeakyReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    paths = {"keras": folder / "rgb.keras", "h5": folder / "rgb_legacy.h5", "savedmodel": folder / "rgb_sm"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.export(str(paths["savedmodel"]), verbose=False)
    return paths


@pytest.fixture(scope="session")
def sin_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel using SIN, an op without an int8 kernel."""
    import tensorflow as tf

    class SinModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.nn.softmax(tf.sin(x) * 2.0)}

    path = tmp_path_factory.mktemp("sin") / "sin_model"
    module = SinModel()
    tf.saved_model.save(module, str(path), signatures=module.__call__)
    return path


@pytest.fixture(scope="session")
def dynamic_savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel taking images of any height and width."""
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("dyn") / "dynamic_model"
    model.export(str(path), verbose=False)
    return path


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's bundled photos as JPEG/PNG files in different sizes and modes."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "camera": data.camera(),
    }
    for name, pixels in photos.items():
        image = Image.fromarray(pixels)
        for size in (40, 64, 90):
            image.resize((size, size * 3 // 4)).save(folder / f"{name}_{size}.png")
        image.save(folder / f"{name}.jpg", quality=85)
    return folder


def rgb_calibration(count: int = 60, seed: int = 0) -> np.ndarray:
    """Pixels 0..255 for the RGB model: scikit-image photos cut into 16x16 tiles."""
    from skimage import data

    tiles = []
    for photo in (data.astronaut(), data.coffee(), data.chelsea()):
        for i in range(0, 16 * 8, 16):
            for j in range(0, 16 * 8, 16):
                tiles.append(photo[i * 2 : i * 2 + 16, j * 3 : j * 3 + 16, :3])
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(tiles), size=min(count, len(tiles)), replace=False)
    return np.stack([tiles[k] for k in picked]).astype(np.float32)
