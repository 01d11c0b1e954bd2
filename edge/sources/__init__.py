"""Where inputs come from; one module per kind of source.

- ``files``: files and folders given on the command line;
- ``watch``: a watched folder (each file a camera drops, once);
- ``snapshot``: a polled snapshot URL;
- ``stream``: video files, stream URLs (RTSP, RTMP, HTTP MJPEG, HLS) and V4L2 cameras, through PyAV;
- ``picamera``: the Raspberry Pi camera through picamera2;
- ``base``: the input item, frames, source states and URL masking they share.
"""

from edge.sources.base import InputItem, SourceBoard, SourceState, mask_url
from edge.sources.files import PARTIAL_SUFFIXES, expand_paths
from edge.sources.snapshot import MAX_SNAPSHOT_BYTES, check_url, fetch_snapshot, poll_url
from edge.sources.watch import watch_folder

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "PARTIAL_SUFFIXES",
    "InputItem",
    "SourceBoard",
    "SourceState",
    "check_url",
    "expand_paths",
    "fetch_snapshot",
    "mask_url",
    "poll_url",
    "watch_folder",
]
