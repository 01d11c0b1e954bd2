"""Helpers shared by the runtime's tests (not fixtures: those live in tests/assets.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge.backends import get_backend

ROOT = Path(__file__).resolve().parents[2]


def backend_name() -> str:
    """The backend these tests run on: $EDGE_BACKEND when set (the legacy environment), else auto's pick."""
    return get_backend("auto").name


def edge_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge ARGS`` in a fresh process (the environment's backend choice passes through)."""
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ),
        **kwargs,  # type: ignore[arg-type]
    )


def interpreter_noise(stderr: str) -> str:
    """stderr without the interpreter's own C++ INFO lines."""
    return "\n".join(
        line for line in stderr.splitlines() if not line.startswith(("INFO:", "WARNING: All log"))
    )
