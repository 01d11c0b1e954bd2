"""A snapshot URL polled every ``interval`` seconds (an HTTP camera that serves single images)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from edge.errors import ConfigError
from edge.sources.base import InputItem, mask_in, mask_url

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
    shown = mask_url(url)
    while not stop.is_set():
        n += 1
        yield fetch_snapshot(url, f"{shown}#{n}", timeout)
        stop.wait(interval)


def fetch_snapshot(url: str, name: str, timeout: float = 10.0) -> InputItem:
    """One image from ``url`` (user and password in the URL go as HTTP basic auth, never into messages)."""
    import urllib.error  # imported here: urllib.request costs ~15 ms at start-up
    import urllib.request

    shown = mask_url(url)
    request = urllib.request.Request(without_credentials(url), headers=auth_header(url))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            data = response.read(MAX_SNAPSHOT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return InputItem(name, error=f"{shown} answered HTTP {exc.code} {exc.reason}; check the camera URL")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = mask_in(str(getattr(exc, "reason", exc)), url)
        return InputItem(name, error=f"cannot fetch {shown} ({reason}); check the camera is reachable")
    if len(data) > MAX_SNAPSHOT_BYTES:
        return InputItem(name, error=f"{shown} sent more than {MAX_SNAPSHOT_BYTES} bytes; not a snapshot")
    return InputItem(name, data)


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))


def auth_header(url: str) -> dict[str, str]:
    """The HTTP basic ``Authorization`` header for the user and password in ``url``, if any."""
    parts = urlsplit(url)
    if parts.username is None:
        return {}
    token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(token).decode()}
