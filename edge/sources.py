"""Where inputs come from: files and folders, a watched folder (camera drops), a polled snapshot URL.

Every source yields ``InputItem``s; one that could not be fetched carries ``error`` and becomes a failed
result for that input only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class InputItem:
    """One input: its display name and a path or bytes, or the error that kept it from being read."""

    name: str
    payload: Path | bytes | None = None
    error: str | None = None


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(PARTIAL_SUFFIXES)


def expand_paths(paths: Iterable[str | Path]) -> Iterator[InputItem]:
    """Files as given; folders as their files (recursive, sorted, hidden skipped); missing paths as is."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                parts = child.relative_to(path).parts
                if not _skipped(child) and not any(part.startswith(".") for part in parts):
                    yield InputItem(str(child), child)
        else:
            yield InputItem(str(path), path)  # a missing path fails as that input, with a clear error


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
            if path.name in seen or _skipped(path) or not path.is_file():
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


def check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url {url!r} must start with http:// or https://")
    return url


def poll_url(url: str, interval: float, stop: threading.Event, timeout: float = 10.0) -> Iterator[InputItem]:
    """The snapshot at ``url`` every ``interval`` seconds; a failed fetch is an input with ``error``."""
    check_url(url)
    if interval <= 0:
        raise ConfigError(f"--interval must be more than 0 seconds, got {interval}")
    n = 0
    while not stop.is_set():
        n += 1
        yield fetch_snapshot(url, f"{url}#{n}", timeout)
        stop.wait(interval)


def fetch_snapshot(url: str, name: str, timeout: float = 10.0) -> InputItem:
    import urllib.error  # imported here: urllib.request costs ~15 ms at start-up
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            data = response.read(MAX_SNAPSHOT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return InputItem(name, error=f"{url} answered HTTP {exc.code} {exc.reason}; check the camera URL")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return InputItem(name, error=f"cannot fetch {url} ({reason}); check the camera is reachable")
    if len(data) > MAX_SNAPSHOT_BYTES:
        return InputItem(name, error=f"{url} sent more than {MAX_SNAPSHOT_BYTES} bytes; not a snapshot")
    return InputItem(name, data)
