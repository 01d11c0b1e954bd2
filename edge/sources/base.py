"""What every source shares: the input item, the lazily converted frame, source states and URL masking.

A source yields ``InputItem``s. Files, the watch folder and snapshots carry a path or bytes that the pipeline
decodes; live sources (streams, cameras, video files) carry a ``FrameImage``: a frame already decoded by the
source, converted to RGB only at the size the model needs and only when it is inferred. An item that could not
be fetched carries ``error`` and becomes a failed result for that input only.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote

if TYPE_CHECKING:
    import numpy as np

# The life of a source: connecting -> streaming -> stalled/down -> connecting ...; finished at end of input.
CONNECTING, STREAMING, STALLED, DOWN, FINISHED = "connecting", "streaming", "stalled", "down", "finished"
STATES = (CONNECTING, STREAMING, STALLED, DOWN, FINISHED)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mjpeg", ".mjpg", ".h264", ".h265")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "rtp")
# key=value pairs whose value is a secret, in a query or a path (some DVRs put the login in the path)
# a key=value login in a URL's path or query; compiled at first use (re's cache): most runs mask no URL
_SECRET_PAIR = r"(?i)([A-Za-z_-]*(?:pass|pwd|token|key|auth|secret|user|sig)[A-Za-z_-]*)=([^&;/#\s]*)"


@runtime_checkable
class FrameImage(Protocol):
    """A decoded frame; pixels are produced at the size asked for, so frames never inferred cost no copy."""

    @property
    def size(self) -> tuple[int, int]:
        """The full (width, height) of the frame as captured."""
        ...

    def to_array(self, width: int, height: int) -> np.ndarray:
        """RGB uint8 pixels, shape (height, width, 3), scaled from the full frame."""
        ...

    def grey(self, width: int, height: int) -> np.ndarray:
        """Luma uint8 pixels, shape (height, width): the cheap picture the motion gate compares."""
        ...


class InputItem(NamedTuple):
    """One input: its display name and a path, bytes or frame, or the error that kept it from being read.

    ``source`` names the source it came from, ``frame`` is its index within that source (from 0),
    ``captured_at`` the wall-clock Unix time it was captured and ``captured_mono`` the same moment on
    ``time.perf_counter`` (for the capture-to-result latency). ``media_time`` is its time in seconds on the
    source's own timeline when it has one that should time tracks and events (a video file's frame
    timestamps, which pass faster than the clock unless the file is played with ``--realtime``).
    """

    name: str
    payload: Path | bytes | FrameImage | np.ndarray | None = None
    error: str | None = None
    source: str | None = None
    frame: int | None = None
    captured_at: float | None = None
    captured_mono: float | None = None
    media_time: float | None = None


def is_frame(payload: object) -> bool:
    """Whether ``payload`` is a ``FrameImage`` (duck-typed: isinstance on a Protocol costs ~11 us)."""
    return hasattr(payload, "to_array") and hasattr(payload, "grey")


class SourceState(NamedTuple):
    """Where a source stands: ``state`` (one of ``STATES``), why (``reason``), since when (Unix time)."""

    name: str
    kind: str
    state: str
    reason: str | None = None
    since: float = 0.0
    target: str = ""  # the file, device or URL, credentials masked

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "kind": self.kind,
            "state": self.state,
            "reason": self.reason,
            "since": round(self.since, 3),
            "target": self.target,
        }


@dataclass(slots=True)
class SourceCounters:
    """Per-source counts: frames captured, frames dropped for a newer one (by the ``--fps`` cap too),
    frames the motion gate skipped, inputs handed to inference, reconnects, and read or decode errors."""

    captured: int = 0
    skipped: int = 0
    motion_skipped: int = 0
    inferred: int = 0
    reconnects: int = 0
    errors: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


StateListener = Callable[[SourceState], None]


class SourceBoard:
    """The states and counters of every source of one run; listeners hear each state change.

    Thread-safe: capture threads report, the MQTT side listens and reads snapshots for telemetry.
    A listener that raises is logged by the caller's logger and does not stop the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, SourceState] = {}
        self._counters: dict[str, SourceCounters] = {}
        self._listeners: list[StateListener] = []

    def add(self, name: str, kind: str, target: str) -> None:
        """A new source, ``connecting``; listeners hear of it as of any state change."""
        state = SourceState(name, kind, CONNECTING, None, time.time(), target)
        with self._lock:
            if name in self._states:
                raise ValueError(f"source {name!r} is on the board already")
            self._states[name] = state
            self._counters[name] = SourceCounters()
            listeners = list(self._listeners)
        for listener in listeners:
            _call(listener, state)

    def subscribe(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on every change from now on (and once now for each known source)."""
        with self._lock:
            self._listeners.append(listener)
            current = list(self._states.values())
        for state in current:
            _call(listener, state)

    def set_state(self, name: str, state: str, reason: str | None = None) -> bool:
        """Record a new state; False (and no listener told) when neither state nor reason changed."""
        with self._lock:
            old = self._states[name]
            if old.state == state and old.reason == reason:
                return False
            new = old._replace(state=state, reason=reason, since=time.time())
            self._states[name] = new
            listeners = list(self._listeners)
        for listener in listeners:
            _call(listener, new)
        return True

    def count(self, name: str, field: str, n: int = 1) -> None:
        with self._lock:
            counters = self._counters[name]
            setattr(counters, field, getattr(counters, field) + n)

    def state(self, name: str) -> SourceState:
        with self._lock:
            return self._states[name]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._states)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{name: {state fields..., counter fields...}}`` for telemetry and the log."""
        with self._lock:
            return {
                name: {**state.to_json(), **self._counters[name].to_json()}
                for name, state in self._states.items()
            }


def _call(listener: StateListener, state: SourceState) -> None:
    import logging

    try:
        listener(state)
    except Exception:  # a broken listener must not stop a capture thread
        logging.getLogger(__name__).warning("source state listener %r failed", listener, exc_info=True)


def split_credentials(url: str) -> tuple[str, str, str] | None:
    """``(scheme, userinfo, rest)`` of a URL; ``userinfo`` is all before the last ``@`` ("" when none).

    Not ``urlsplit``: a password with a raw ``/``, ``?`` or ``#`` (cameras allow them) would hide the ``@``
    from it and leave the password in what it calls the host.
    """
    if "://" not in url:
        return None
    scheme, rest = url.split("://", 1)
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        return scheme, userinfo, rest
    return scheme, "", rest


def _secret_values(text: str) -> list[str]:
    return [match.group(2) for match in re.finditer(_SECRET_PAIR, text)]


def mask_url(url: str) -> str:
    """``url`` with its user name and password, and the values of secret-looking ``key=value`` pairs in its
    path or query (``password=``, ``token=``, ``user=``...), replaced by ``***``. Fails closed."""
    split = split_credentials(url)
    if split is None:
        return url
    scheme, userinfo, rest = split
    rest = re.sub(_SECRET_PAIR, lambda m: f"{m.group(1)}=***", rest)
    return f"{scheme}://{'***@' if userinfo else ''}{rest}"


def mask_in(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` masked, and its user name, password and secret values
    wherever they appear on their own."""
    text = text.replace(url, mask_url(url))
    split = split_credentials(url)
    if split is None:
        return text
    _, userinfo, rest = split
    user, _, password = userinfo.partition(":")
    secrets = [userinfo, password, user, *_secret_values(rest)]
    for quoted in [quote(value, safe="") for value in secrets if value]:
        secrets.append(quoted)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # a one-letter value would mask unrelated text
            text = text.replace(secret, "***")
    return text


def is_video_file(target: str) -> bool:
    return "://" not in target and Path(target).suffix.lower() in VIDEO_SUFFIXES


def is_stream_url(target: str) -> bool:
    return "://" in target and target.split("://", 1)[0].lower() in STREAM_SCHEMES


def is_camera(target: str) -> bool:
    return target.startswith("/dev/video")


def kind_of(target: str) -> str:
    """``picamera``, ``camera``, ``stream``, ``video`` or ``files`` (a file or folder of images)."""
    if target.startswith("picamera:"):
        return "picamera"
    if is_camera(target):
        return "camera"
    if is_stream_url(target):
        return "stream"
    if is_video_file(target):
        return "video"
    return "files"


def source_name_for(target: str | Path) -> str:
    """A default source name from what it reads: a host, a device, a file stem (``[A-Za-z0-9_.-]``)."""
    text = str(target)
    if text.startswith("picamera:"):
        base = "picamera" + text.split(":", 1)[1]
    elif text.startswith("/dev/"):
        base = Path(text).name
    elif "://" in text:
        split = split_credentials(text)
        assert split is not None
        scheme, _, rest = split
        host_port, _, path = rest.partition("/")
        ipv6 = host_port.startswith("[")  # [IPv6]:port
        base = host_port[1:].split("]", 1)[0] if ipv6 else host_port.rsplit(":", 1)[0]
        base = base or scheme
        last = path.split("?", 1)[0].strip("/").split("/")[-1]
        if last and "=" not in last:  # key=value parts may hold a login: never in a name
            base = f"{base}-{Path(last).stem}"
    else:
        base = Path(text).stem or Path(text).name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "source"
    return cleaned[:64]


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats made unique by a ``-2``, ``-3``... suffix."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name}-{count}")
    return out
