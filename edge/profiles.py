"""Device profiles: what a Raspberry Pi, a Coral or a generic board wants from the runtime and the converter.

A profile is one TOML file in ``devices/`` (documented in ``devices/README.md``). The package reaches that
folder through ``edge/_devices``, a symlink to ``../devices`` that setuptools copies into a wheel as
package data (``MANIFEST.in`` grafts it); ``EDGE_PROFILES_DIR`` points elsewhere. ``explain_profile()``
picks one from the device tree model, ``/proc/cpuinfo``, the CPU architecture and Edge TPU presence.
"""

from __future__ import annotations

import os
import platform
import re
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

BACKENDS = ("auto", "litert", "tflite-runtime", "tensorflow")  # edge.backends names
DELEGATES = ("none", "edgetpu")
CONVERT_MODES = ("float32", "float16", "dynamic", "int8", "edgetpu")
IO_TYPES = ("float", "int8", "uint8")
RESIZE_MODES = ("stretch", "letterbox", "crop")
DEVICE_PATTERN = re.compile(r"^(usb|usb:\d+|pci|pci:\d+)$")
FLOAT_IO_MODES = ("float32", "float16", "dynamic")
NOT_PROFILES = ("example-",)


INTERPRETERS = ("shared", "per-source")  # edge run: one interpreter for all sources, or one each

@dataclass(frozen=True, slots=True)
class Profile:
    """One device's recommended settings. ``threads`` or ``decode_workers`` 0: one per CPU core."""

    name: str
    description: str
    backend: str
    delegate: str
    device: str
    threads: int
    convert_mode: str
    io_type: str
    memory_budget_mb: int
    # No longer applied: how an image fits a model is the model's (letterbox for YOLO heads, else stretch);
    # still read so that profiles written before keep loading. ``task.resize`` / ``--resize`` force one.
    resize_mode: str = ""
    require_accelerator: bool = False
    interpreters: str = "shared"  # or "per-source": one interpreter per source (edge run)
    # the most threads decoding images ahead of the interpreter (edge.pipeline.Pipeline(decode_workers=))
    decode_workers: int = 0

    def resolved_threads(self) -> int:
        """``threads``, with 0 replaced by the number of CPU cores."""
        return self.threads or os.cpu_count() or 1

    def resolved_decode_workers(self) -> int:
        """``decode_workers``, with 0 replaced by the number of CPU cores this process may use."""
        from edge.pipeline import usable_cores  # here: profiles are read without loading the pipeline

        return self.decode_workers or usable_cores()


def profiles_dir() -> Path:
    """The folder holding the profile files: ``$EDGE_PROFILES_DIR``, else the one shipped with ``edge``."""
    override = os.environ.get("EDGE_PROFILES_DIR")
    if override:
        return Path(override)
    return Path(str(resources.files("edge") / "_devices"))


def list_profiles() -> list[str]:
    """Names of every profile, sorted."""
    folder = profiles_dir()
    if not folder.is_dir():
        raise ConfigError(
            f"device profiles folder {folder} is missing; reinstall edge-runtime or set EDGE_PROFILES_DIR"
        )
    return sorted(p.stem for p in folder.glob("*.toml") if not p.name.startswith(NOT_PROFILES))


def load_profile(name: str) -> Profile:
    """Read and validate the profile ``name``; a ConfigError names the file, the key and what is allowed."""
    names = list_profiles()
    if name not in names:
        raise ConfigError(f"profile {name!r} does not exist; allowed: {', '.join(names)}")
    path = profiles_dir() / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path}: cannot be read as TOML ({exc})") from exc
    return _profile_from(name, data, path)


def _profile_from(name: str, data: dict[str, Any], path: Path) -> Profile:
    known = {f.name for f in fields(Profile)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"profile {path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    required = known - {"require_accelerator", "interpreters", "resize_mode", "decode_workers"}
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f"profile {path}: key {missing[0]!r} is missing")

    def bad(key: str, allowed: str) -> ConfigError:
        return ConfigError(f"profile {path}: {key} is {data[key]!r}; allowed: {allowed}")

    for key, allowed in (
        ("backend", BACKENDS),
        ("delegate", DELEGATES),
        ("convert_mode", CONVERT_MODES),
        ("io_type", IO_TYPES),
        ("resize_mode", ("", *RESIZE_MODES)),
    ):
        if data.get(key, "") not in allowed:
            raise bad(key, ", ".join(allowed))
    for key, low in (("threads", 0), ("memory_budget_mb", 1), ("decode_workers", 0)):
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise bad(key, f"an integer >= {low}")
    if not isinstance(data["description"], str):
        raise bad("description", "a string")
    if data.get("interpreters", "shared") not in INTERPRETERS:
        raise bad("interpreters", ", ".join(INTERPRETERS))
    if not isinstance(data.get("require_accelerator", False), bool):
        raise bad("require_accelerator", "true or false")
    device = data["device"]
    if data["delegate"] == "none" and device != "":
        raise bad("device", '"" when delegate is "none"')
    if data["delegate"] == "edgetpu" and not (isinstance(device, str) and DEVICE_PATTERN.match(device)):
        raise bad("device", "usb, usb:N, pci or pci:N")
    if data["convert_mode"] in FLOAT_IO_MODES and data["io_type"] != "float":
        raise bad("io_type", f"float for convert_mode {data['convert_mode']!r}")
    if data["convert_mode"] == "edgetpu" and data["io_type"] != "uint8":
        raise bad("io_type", "uint8 for convert_mode 'edgetpu'")
    return Profile(name=name, **data)


def explain_profile(root: Path = Path("/"), machine: str | None = None) -> tuple[str, str]:
    """The profile that matches this machine and why, e.g. ("coral-usb", "Coral USB Accelerator 18d1:9302").

    ``root`` and ``machine`` are for tests.
    """
    if (root / "dev" / "apex_0").exists():
        return "coral-dev-board", "Edge TPU on PCIe (/dev/apex_0)"
    usb = coral_usb_devices(root)
    if usb:
        return "coral-usb", f"Coral USB Accelerator {usb[0]}"
    model = board_model(root)
    for prefix, name in (
        ("Raspberry Pi 5", "raspberry-pi-5"),
        ("Raspberry Pi Compute Module 5", "raspberry-pi-5"),
        ("Raspberry Pi 4", "raspberry-pi-4"),
        ("Raspberry Pi Compute Module 4", "raspberry-pi-4"),
        ("Raspberry Pi Zero 2", "raspberry-pi-zero-2w"),
    ):
        if model.startswith(prefix):
            return name, f"board {model!r}"
    arch = (machine or platform.machine()).lower()
    generic = "generic-x86_64" if arch in ("x86_64", "amd64", "i686", "i386") else "generic-aarch64"
    why = f"CPU architecture {arch}" + (f", board {model!r}" if model else "")
    return generic, why


def board_model(root: Path = Path("/")) -> str:
    """The board name from the device tree, else the ``Model`` line of ``/proc/cpuinfo``; '' when unknown."""
    try:
        return (root / "proc/device-tree/model").read_bytes().rstrip(b"\0\n").decode("utf-8", "replace")
    except OSError:
        pass
    try:
        cpuinfo = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model":
            return value.strip()
    return ""


def coral_usb_devices(root: Path = Path("/")) -> list[str]:
    """``vendor:product`` of each Coral USB Accelerator plugged in (``edge.backends.edgetpu.USB_IDS``)."""
    from edge.backends.edgetpu import USB_IDS

    found = []
    for folder in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            vendor = (folder / "idVendor").read_text().strip().lower()
            product = (folder / "idProduct").read_text().strip().lower()
        except OSError:
            continue
        if (vendor, product) in USB_IDS:
            found.append(f"{vendor}:{product}")
    return found
