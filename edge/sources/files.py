"""Files and folders given on the command line, expanded to one input per file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from edge.sources.base import InputItem

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


def skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(PARTIAL_SUFFIXES)


def expand_paths(paths: Iterable[str | Path]) -> Iterator[InputItem]:
    """Files as given; folders as their files (recursive, sorted, hidden skipped); missing paths as is."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                parts = child.relative_to(path).parts
                if not skipped(child) and not any(part.startswith(".") for part in parts):
                    yield InputItem(str(child), child)
        else:
            yield InputItem(str(path), path)  # a missing path fails as that input, with a clear error
