"""A watched folder: each file a camera drops into it, once, when complete."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from edge.errors import ConfigError
from edge.sources.base import InputItem
from edge.sources.files import skipped

log = logging.getLogger(__name__)


def watch_folder(folder: str | Path, stop: threading.Event, poll: float = 0.2) -> Iterator[InputItem]:
    """Files created in ``folder`` from this call on, once each, after their size held for one poll.

    A name whose file was removed counts as new when it appears again (cameras reuse names).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--watch {folder}: not a folder; create it or check the path")
    return _watch(folder, {p.name for p in folder.iterdir()}, stop, poll)


def _watch(folder: Path, seen: set[str], stop: threading.Event, poll: float) -> Iterator[InputItem]:
    pending: dict[str, int] = {}
    while not stop.is_set():
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            stop.wait(poll)
            continue
        present = {path.name for path in entries}
        seen.intersection_update(present)  # a removed file's name may come back with a new image
        for name in pending.keys() - present:
            del pending[name]
        for path in entries:
            if path.name in seen or skipped(path) or not path.is_file():
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size > 0 and pending.get(path.name) == size:
                seen.add(path.name)
                del pending[path.name]
                yield InputItem(str(path), path)
            else:
                pending[path.name] = size
        stop.wait(poll)
