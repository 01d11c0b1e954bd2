"""A snapshot URL polled every ``interval`` seconds (an HTTP camera that serves single images)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from edge.errors import ConfigError
from edge.sources.base import InputItem

MAX_SNAPSHOT_BYTES = 50 * 1024 * 1024


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
