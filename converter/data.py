"""Calibration and evaluation samples: image folders and ``.npy``/``.npz`` arrays in model-input space.

Images are decoded and resized with :func:`converter.preprocess.preprocess_image` (the device's code);
arrays are taken as they are and must match the model input with or without a leading batch axis.
Files that cannot be decoded as images are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import CalibrationError
from converter.preprocess import preprocess_image
from edge.errors import InputError
from edge.progress import Progress

log = logging.getLogger(__name__)

SEED = 0


@dataclass(frozen=True)
class Samples:
    """Inputs in model space, shape (N, *sample_shape), with optional integer class labels."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, start: int, stop: int | None = None) -> Samples:
        y = None if self.y is None else self.y[start:stop]
        return Samples(self.x[start:stop], y, self.source, self.skipped)


def load_samples(
    path: Path,
    sample_shape: tuple[int, ...],
    *,
    option: str,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    limit: int | None = None,
    class_folders: bool = False,
    labels: Sequence[str] = (),
) -> Samples:
    """Read samples for ``option`` (``--calib``/``--eval``) from a folder of images or an array file.

    ``class_folders``: the folder holds one subfolder per class (``--eval``); labels come from the
    subfolder names (their index in ``labels`` when given, else in sorted order).
    """
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"{option} {path} not found; pass a folder of images or a .npy/.npz file")
    if path.is_dir():
        return _load_image_folder(path, sample_shape, option, mean, std, limit, class_folders, labels)
    if path.suffix not in (".npy", ".npz"):
        raise CalibrationError(
            f"{option} {path} is neither a folder of images nor a .npy/.npz file; pass one of those"
        )
    return _load_array_file(path, sample_shape, option, limit)


def _load_array_file(path: Path, sample_shape: tuple[int, ...], option: str, limit: int | None) -> Samples:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise CalibrationError(
            f"{option} {path} cannot be read as a NumPy array ({exc}); re-save it"
        ) from exc
    y = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if "x" in keys:
                x = loaded["x"]
                y = loaded["y"] if "y" in keys else None
            elif len(keys) == 1:
                x = loaded[keys[0]]
            else:
                raise CalibrationError(
                    f"{option} {path} holds arrays {keys} but no 'x'; save inputs as x (and labels as y)"
                )
    else:
        x = loaded
    x = _check_shape(np.asarray(x), sample_shape, option, path)
    if y is not None:
        y = _check_labels(np.asarray(y), len(x), option, path)
    order = np.random.default_rng(SEED).permutation(len(x))
    if limit is not None:
        order = order[:limit]
    return Samples(x[order], None if y is None else y[order], path.name)


def _check_shape(x: np.ndarray, sample_shape: tuple[int, ...], option: str, path: Path) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise CalibrationError(
            f"{option} {path} holds {x.dtype} values; it needs numbers in model-input space"
        )
    if tuple(x.shape) == sample_shape:
        x = x[np.newaxis]
    elif tuple(x.shape[1:]) != sample_shape:
        raise CalibrationError(
            f"{option} {path} has shape {tuple(x.shape)} but the model input is {sample_shape} "
            f"(or (N, {', '.join(map(str, sample_shape))}) with a batch axis); reshape the array"
        )
    if len(x) == 0:
        raise CalibrationError(f"{option} {path} holds no samples; it needs at least one")
    return x.astype(np.float32)


def _check_labels(y: np.ndarray, count: int, option: str, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[0] == count:
        y = y.argmax(axis=1)  # one-hot
    if y.ndim != 1 or len(y) != count or y.dtype.kind not in "biu":
        raise CalibrationError(
            f"{option} {path}: y has shape {tuple(y.shape)} ({y.dtype}); it needs {count} integer class ids"
        )
    return y.astype(np.int64)


def _image_geometry(sample_shape: tuple[int, ...], option: str) -> tuple[int, int, int]:
    if len(sample_shape) != 3 or sample_shape[2] not in (1, 3):
        raise CalibrationError(
            f"{option} is a folder of images but the model input {sample_shape} is not an image "
            "(height, width, 1 or 3 channels); pass a .npy/.npz array instead"
        )
    return sample_shape[0], sample_shape[1], sample_shape[2]


def _load_image_folder(
    folder: Path,
    sample_shape: tuple[int, ...],
    option: str,
    mean: Sequence[float],
    std: Sequence[float],
    limit: int | None,
    class_folders: bool,
    labels: Sequence[str],
) -> Samples:
    height, width, channels = _image_geometry(sample_shape, option)
    files, classes = _list_images(folder, option, class_folders, labels)
    order = np.random.default_rng(SEED).permutation(len(files))
    if limit is not None:
        order = order[:limit]
    arrays: list[np.ndarray] = []
    ids: list[int] = []
    skipped = 0
    with Progress(f"reading {option} images", total=len(order)) as bar:
        for i in order:
            try:
                arrays.append(preprocess_image(files[i], height, width, channels, mean, std))
                ids.append(classes[i])
            except (InputError, OSError) as exc:
                skipped += 1
                log.info("%s: skipping %s: %s", option, files[i], exc)
            bar.advance()
    if not arrays:
        raise CalibrationError(
            f"{option} {folder}: none of the {skipped} files could be decoded as images; "
            "add JPEG/PNG images or pass a .npy/.npz array"
        )
    if skipped:
        log.warning("%s: skipped %d file(s) that could not be decoded as images", option, skipped)
    y = np.asarray(ids, dtype=np.int64) if class_folders else None
    return Samples(np.stack(arrays), y, f"{folder.name}/", skipped)


def _list_images(
    folder: Path, option: str, class_folders: bool, labels: Sequence[str]
) -> tuple[list[Path], list[int]]:
    if not class_folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise CalibrationError(
                f"{option} folder {folder} is empty; put images in it or pass a .npy/.npz array"
            )
        return files, [-1] * len(files)
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise CalibrationError(
            f"{option} folder {folder} has no class subfolders; it needs one subfolder of images per class"
        )
    names = list(labels) or [p.name for p in subfolders]
    found: list[Path] = []
    classes: list[int] = []
    for sub in subfolders:
        if sub.name not in names:
            raise CalibrationError(
                f"{option} subfolder {sub.name!r} is not one of the labels {names[:10]}; "
                "name each subfolder after its label"
            )
        for image in sorted(p for p in sub.rglob("*") if p.is_file() and not p.name.startswith(".")):
            found.append(image)
            classes.append(names.index(sub.name))
    if not found:
        raise CalibrationError(f"{option} folder {folder} has class subfolders but no images in them")
    return found, classes
