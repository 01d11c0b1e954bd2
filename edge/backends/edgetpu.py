"""The Coral Edge TPU delegate (``libedgetpu.so.1``); device selection ``usb``, ``usb:N``, ``pci``, ``pci:N``.

``open_delegate`` returns the delegate, or raises ``BackendError`` saying what is missing; the caller
decides between falling back to the CPU (one warning) and failing (``--require-accelerator``).
"""

from __future__ import annotations

import ctypes
import platform
import re
from typing import Any

from edge.backends import Backend
from edge.errors import BackendError, ConfigError

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
DEVICE_PATTERN = re.compile(r"^(usb|pci)(:\d+)?$")
USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))  # Global Unichip (before firmware load), Google (after)


def library_name() -> str:
    """The delegate library's file name on this platform."""
    system = platform.system()
    if system == "Darwin":
        return "libedgetpu.1.dylib"
    if system == "Windows":
        return "edgetpu.dll"
    return "libedgetpu.so.1"


def check_device(device: str | None) -> str | None:
    """Validate a device selector; None means the first Edge TPU found."""
    if device is None or device == "":
        return None
    device = device.strip().lower()
    if not DEVICE_PATTERN.match(device):
        raise ConfigError(f"Edge TPU device {device!r} is not valid; use usb, usb:N, pci or pci:N (N from 0)")
    return device


def open_delegate(backend: Backend, device: str | None = None, library: str | None = None) -> Any:
    """Load the Edge TPU delegate for ``device`` through ``backend``; BackendError when it cannot."""
    device = check_device(device)
    library = library or library_name()
    options = {"device": device} if device else {}
    try:
        ctypes.CDLL(library)  # a missing library fails here, before the interpreter's noisy delegate cleanup
        return backend.load_delegate(library, options)
    except (ValueError, OSError, RuntimeError) as exc:
        where = f" for device {device}" if device else ""
        raise BackendError(
            f"cannot load the Edge TPU delegate {library}{where} ({_first_line(exc)}); install libedgetpu "
            "(https://coral.ai/software/#edgetpu-runtime) and check the Coral is plugged in"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
