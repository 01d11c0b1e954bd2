"""Import TensorFlow without its native start-up chatter on the terminal.

TF 2.21 logs oneDNN/CUDA notices from C++ straight to file descriptor 2 while it is imported, before
``TF_CPP_MIN_LOG_LEVEL`` can apply; a CLI user would see them above every one-line error.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once with fd 2 pointed at /dev/null; errors still raise (and print) normally."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
