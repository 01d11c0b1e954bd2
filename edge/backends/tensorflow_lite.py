"""The fallback backend: ``tensorflow.lite``, used only when TensorFlow happens to be installed.

Importing TensorFlow costs seconds and hundreds of MB, so this module imports it only when asked.
"""

from __future__ import annotations

from typing import Any


def interpreter_class() -> Any:
    import tensorflow as tf

    return tf.lite.Interpreter


def load_delegate(library: str, options: dict[str, str] | None = None) -> Any:
    import tensorflow as tf

    return tf.lite.experimental.load_delegate(library, options)
