"""Embedding metadata with TF's schema object API; read back by the TF-free reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.metadata import embed_metadata
from edge.tflite_file import read_tflite

pytestmark = pytest.mark.tf


def test_embed_replaces_and_keeps_other_metadata(digits: dict[str, Path]) -> None:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(digits["model"])
    plain = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    before = read_tflite(plain)
    once = embed_metadata(plain, "edge_manifest", b'{"a": 1}')
    twice = embed_metadata(once, "edge_manifest", b'{"a": 2}')
    info = read_tflite(twice)
    assert info.metadata["edge_manifest"] == b'{"a": 2}'
    assert set(info.metadata) == set(before.metadata) | {"edge_manifest"}
    assert [op.name for op in info.operators] == [op.name for op in before.operators]
