"""Real candidate models for the shadow stage's tests: ``edge convert`` packages (int8, TensorFlow), cached.

- ``active`` (v1): the digits CNN of ``tests.assets`` (trained with seed 0);
- ``good`` (v2): the same network trained again with seed 1: another model that agrees with it on almost
  every digit;
- ``bad`` (v3): the seed-0 network with the final layer's columns for 3 and 8, and for 1 and 7, swapped: it
  runs, passes validation and the converter's own agreement check (against its own Keras model), and is
  wrong for every 1, 3, 7 and 8 (about 40 % of the digits).

Each is an ``edge convert --mode int8`` package named ``digits`` with its converter report (agreement with
its Keras model on the held-out digits). Built once per builder version under ``.cache/shadow-models-<hash>``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.assets import ROOT, Assets, ensure_assets
from tests.cache import build_once

CACHE = ROOT / ".cache"
SWAPPED = ((3, 8), (1, 7))


@dataclass(frozen=True)
class ShadowModels:
    active: Path
    good: Path
    bad: Path


def _hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _convert(keras_path: Path, out: Path, version: int, assets: Assets) -> None:
    root = assets.root
    command = [sys.executable, "-m", "edge", "convert", str(keras_path), "-o", str(out), "--mode", "int8",
               "--calib", str(root / "calib.npy"), "--eval", str(assets.digits_eval), "--labels",
               str(root / "labels.txt"), "--name", "digits", "--version", str(version), "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"edge convert {keras_path.name} failed:\n{done.stderr[-2000:]}")


def build(folder: Path) -> None:
    import keras

    from converter.digits import load_digits_pixels, train_digits_model

    assets = ensure_assets()
    assert assets.digits_keras is not None
    good = train_digits_model(load_digits_pixels(), seed=1)
    good.save(folder / "good.keras")
    bad = keras.models.load_model(assets.digits_keras)
    weights, bias = bad.layers[-1].get_weights()
    for a, b in SWAPPED:
        weights[:, [a, b]] = weights[:, [b, a]]
        bias[[a, b]] = bias[[b, a]]
    bad.layers[-1].set_weights([weights, bias])
    bad.save(folder / "bad.keras")
    _convert(assets.digits_keras, folder / "active.edgepkg", 1, assets)
    _convert(folder / "good.keras", folder / "good.edgepkg", 2, assets)
    _convert(folder / "bad.keras", folder / "bad.edgepkg", 3, assets)
    (folder / "index.json").write_text(json.dumps({"built": True}))


def ensure_shadow_models() -> ShadowModels:
    folder = build_once(CACHE / f"shadow-models-{_hash()}", "index.json", build)
    return ShadowModels(folder / "active.edgepkg", folder / "good.edgepkg", folder / "bad.edgepkg")


@pytest.fixture(scope="session")
def shadow_models() -> ShadowModels:
    return ensure_shadow_models()
