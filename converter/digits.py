"""A small CNN trained on scikit-learn's bundled digits: the demo's and the tests' model.

The images are 8x8 with values 0..16; we scale them to 0..255 pixels so the model sees the same
numbers a grayscale PNG of the digit gives. The model normalizes inside (a Rescaling layer), so it is
converted with the default mean 0 / std 1 and a uint8 model takes the PNG's bytes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGITS_LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsData:
    """Train/test split of the digits as float32 pixels 0..255, shape (N, 8, 8, 1), and int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_pixels(test_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """scikit-learn's bundled digits as 0..255 pixel images, split reproducibly."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) * (255.0 / 16.0)).reshape(-1, 8, 8, 1)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(len(images) * (1 - test_fraction))
    train, test = order[:split], order[split:]
    return DigitsData(images[train], labels[train], images[test], labels[test])


def train_digits_model(data: DigitsData | None = None, epochs: int = 12, seed: int = 0):  # noqa: ANN201
    """Train a small CNN on the digits (input: 0..255 pixels). Returns the Keras model."""
    import keras

    data = data or load_digits_pixels()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def save_digits_assets(
    folder: str | Path, data: DigitsData | None = None, epochs: int = 12
) -> dict[str, Path]:
    """Train and write ``digits.keras``, ``calib.npy`` (train pixels), ``eval.npz`` (test), ``labels.txt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = data or load_digits_pixels()
    model = train_digits_model(data, epochs=epochs)
    paths = {
        "model": folder / "digits.keras",
        "calib": folder / "calib.npy",
        "eval": folder / "eval.npz",
        "labels": folder / "labels.txt",
    }
    model.save(paths["model"])
    np.save(paths["calib"], data.x_train[:300])
    np.savez(paths["eval"], x=data.x_test, y=data.y_test)
    paths["labels"].write_text("\n".join(DIGITS_LABELS) + "\n")
    return paths
