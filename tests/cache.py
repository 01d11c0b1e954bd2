"""Build a cached test folder once, safely when several test processes start at once."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(folder: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``folder`` built by ``build(tmp)`` into a temporary sibling and renamed into place, unless it already
    holds ``marker`` (the file ``build`` writes last); an interrupted build leaves nothing half-made."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / marker).exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                build(tmp)
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder
