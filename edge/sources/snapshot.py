"""A snapshot URL polled every ``interval`` seconds (an HTTP camera that serves single images)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from edge.errors import ConfigError
from edge.sources.base import InputItem, mask_in, mask_url, split_credentials

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


def open_url(url: str, timeout: float) -> Any:
    """``urlopen`` of ``url`` with its user and password as HTTP basic auth, sent to that host only.

    urllib would copy the ``Authorization`` header onto a redirect to any other host. A malformed answer
    (``http.client.HTTPException``) comes out as an ``OSError`` like every other failure.
    """
    import http.client
    import urllib.request  # imported here: urllib.request costs ~15 ms at start-up

    class SameHostAuth(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
                new.remove_header("Authorization")
            return new

    request = urllib.request.Request(without_credentials(url), headers=auth_header(url))
    opener = urllib.request.build_opener(SameHostAuth)
    try:
        return opener.open(request, timeout=timeout)
    except http.client.HTTPException as exc:
        raise OSError(f"malformed answer ({type(exc).__name__}: {exc})") from exc


def fetch_snapshot(url: str, name: str, timeout: float = 10.0) -> InputItem:
    """One image from ``url`` (user and password in the URL go as HTTP basic auth, never into messages)."""
    import http.client
    import urllib.error

    shown = mask_url(url)
    try:
        with open_url(url, timeout) as response:
            data = response.read(MAX_SNAPSHOT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return InputItem(name, error=f"{shown} answered HTTP {exc.code} {exc.reason}; check the camera URL")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = mask_in(str(getattr(exc, "reason", exc)), url)
        return InputItem(name, error=f"cannot fetch {shown} ({reason}); check the camera is reachable")
    if len(data) > MAX_SNAPSHOT_BYTES:
        return InputItem(name, error=f"{shown} sent more than {MAX_SNAPSHOT_BYTES} bytes; not a snapshot")
    return InputItem(name, data)


def without_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (everything before the last ``@``, as ``mask_url`` reads it)."""
    split = split_credentials(url)
    if split is None or not split[1]:
        return url
    return f"{split[0]}://{split[2]}"


def auth_header(url: str) -> dict[str, str]:
    """The HTTP basic ``Authorization`` header for the user and password in ``url``, if any."""
    split = split_credentials(url)
    if split is None or not split[1]:
        return {}
    user, _, password = split[1].partition(":")
    token = f"{unquote(user)}:{unquote(password)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(token).decode()}
