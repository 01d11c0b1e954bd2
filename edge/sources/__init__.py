"""Where inputs come from; one module per kind of source.

- ``files``: files and folders given on the command line;
- ``watch``: a watched folder (each file a camera drops, once);
- ``snapshot``: a polled snapshot URL;
- ``stream``: video files, stream URLs (RTSP, RTMP, HTTP MJPEG, HLS) and V4L2 cameras, through PyAV;
- ``picamera``: the Raspberry Pi camera through picamera2;
- ``base``: the input item, frames, source states and URL masking they share.
"""

from __future__ import annotations

import importlib

# public name -> its module, imported at first use: a run on image files needs neither the watch folder
# (inotify) nor the snapshot source (base64, http), and ``import edge.sources.base`` must not pay for them
_LAZY = {
    "InputItem": "base",
    "SourceBoard": "base",
    "SourceState": "base",
    "mask_url": "base",
    "PARTIAL_SUFFIXES": "files",
    "expand_paths": "files",
    "MAX_SNAPSHOT_BYTES": "snapshot",
    "check_url": "snapshot",
    "fetch_snapshot": "snapshot",
    "poll_url": "snapshot",
    "watch_folder": "watch",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.sources' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edge.sources.{module}"), name)
    globals()[name] = value
    return value
