"""A small filesystem a test can fill: a size-limited tmpfs, else a loop-mounted ext4 image (both need root,
which CI has). ``small_fs(path, size_kb)`` mounts one on ``path`` and unmounts it afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def small_fs(path: Path, size_kb: int, kinds: tuple[str, ...] = ("tmpfs", "ext4")) -> Iterator[str]:
    """Yield the kind mounted ('tmpfs' or 'ext4 loop') on ``path`` (made if missing): the first of
    ``kinds`` that works."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    tried = []
    kind = "tmpfs"
    if "tmpfs" in kinds:
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path))
    if "tmpfs" not in kinds or done.returncode != 0:
        if "tmpfs" in kinds:
            tried.append(f"tmpfs: {done.stderr.strip()}")
        image = path.parent / f".{path.name}.img"
        with open(image, "wb") as handle:
            handle.truncate(max(size_kb, 1024) * 1024)
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        done = _run("mount", "-o", "loop", str(image), str(path)) if made.returncode == 0 else made
        kind = "ext4 loop"
        if done.returncode != 0:
            tried.append(f"ext4 loop: {done.stderr.strip()}")
            raise RuntimeError("cannot make a small filesystem here: " + "; ".join(tried))
    try:
        yield kind
    finally:
        for _ in range(20):
            if _run("umount", str(path)).returncode == 0:
                break
            _run("sync")
        else:
            _run("umount", "-l", str(path))


def fill(folder: Path, name: str = "ballast") -> Path:
    """Fill the filesystem of ``folder`` with one file (until ENOSPC); delete the file to free the space."""
    ballast = folder / name
    chunk = b"\xa5" * 4096
    with open(ballast, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(chunk)
    with open(ballast, "ab", buffering=0) as handle, contextlib.suppress(OSError):
        while True:  # the last few bytes of the last block
            handle.write(b"\xa5")
    return ballast
