"""Calibration/evaluation data loading and the device-equivalent image preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from converter.data import load_samples
from converter.errors import CalibrationError
from converter.preprocess import preprocess_image


def test_preprocess_is_the_devices_plus_normalization(tmp_path: Path) -> None:
    from edge.preprocess import prepare_image

    path = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=90)
    rgb = preprocess_image(path, 32, 48, 3, mean=(127.5,), std=(127.5,))
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.float32
    assert -1.0 <= rgb.min() < 0 < rgb.max() <= 1.0
    device = prepare_image(path, 48, 32, 3, mode="stretch").pixels.astype(np.float32)
    np.testing.assert_allclose(rgb, (device - 127.5) / 127.5, rtol=1e-6)
    gray = preprocess_image(Image.open(path), 10, 10, 1)
    assert gray.shape == (10, 10, 1) and gray.min() >= 0 and gray.max() <= 255
    per_channel = preprocess_image(path, 8, 8, 3, mean=(10.0, 20.0, 30.0), std=(2.0, 2.0, 2.0))
    plain = preprocess_image(path, 8, 8, 3)
    np.testing.assert_allclose(per_channel, (plain - [10, 20, 30]) / 2, rtol=1e-6)


def test_arrays_with_or_without_batch_axis(tmp_path: Path) -> None:
    single = tmp_path / "one.npy"
    np.save(single, np.ones((4, 4, 1)))
    assert load_samples(single, (4, 4, 1), option="--calib").x.shape == (1, 4, 4, 1)
    batch = tmp_path / "many.npz"
    np.savez(batch, x=np.arange(5 * 16).reshape(5, 4, 4, 1), y=np.eye(3)[[0, 1, 2, 0, 1]])
    samples = load_samples(batch, (4, 4, 1), option="--eval", limit=3)
    assert samples.x.shape == (3, 4, 4, 1) and samples.y is not None
    assert all(int(y) == int(x[0, 0, 0]) // 16 % 3 for x, y in zip(samples.x, samples.y, strict=True))


def test_array_errors(tmp_path: Path) -> None:
    text = tmp_path / "strings.npy"
    np.save(text, np.array(["a", "b"]))
    with pytest.raises(CalibrationError, match="holds <U1 values"):
        load_samples(text, (2,), option="--calib")
    keys = tmp_path / "keys.npz"
    np.savez(keys, a=np.zeros(2), b=np.zeros(2))
    with pytest.raises(CalibrationError, match=r"holds arrays \['a', 'b'\] but no 'x'"):
        load_samples(keys, (2,), option="--calib")
    with pytest.raises(CalibrationError, match="neither a folder of images nor a .npy/.npz"):
        load_samples(_touch(tmp_path / "data.csv"), (2,), option="--calib")
    with pytest.raises(CalibrationError, match="is not an image"):
        load_samples(tmp_path, (2,), option="--calib")


def _touch(path: Path) -> Path:
    path.write_text("1,2\n")
    return path


def test_class_folder_must_match_labels(tmp_path: Path) -> None:
    (tmp_path / "dog").mkdir()
    Image.fromarray(data.chelsea()).save(tmp_path / "dog" / "x.png")
    with pytest.raises(CalibrationError, match="subfolder 'dog' is not one of the labels"):
        load_samples(tmp_path, (8, 8, 3), option="--eval", class_folders=True, labels=("cat",))
    samples = load_samples(tmp_path, (8, 8, 3), option="--eval", class_folders=True)
    assert samples.y is not None and samples.y.tolist() == [0]
