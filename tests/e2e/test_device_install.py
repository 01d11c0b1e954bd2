"""The default install (pyproject's ``dependencies``) is binary wheels only on 64-bit Raspberry Pi OS/Debian.

For CPython 3.11 (Raspberry Pi OS and Debian 12 "bookworm") and 3.13 (Debian 13 "trixie") on Linux aarch64,
the markers are evaluated for that target and ``pip download --only-binary=:all:`` resolves every requirement
and its dependencies for the manylinux tags such a device accepts: manylinux_2_17 up to its glibc (2.36 on
bookworm, the older of the two) and manylinux2014. pip matches ``--platform`` tags exactly (it does not widen
``manylinux_2_28`` to the ``manylinux_2_27`` that ai-edge-litert and numpy ship), so every step is listed.
Downloads are kept in ``.cache/device-wheels`` so a second run only asks the index. Needs PyPI.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "device-wheels"
DEVICE_GLIBC = (2, 36)  # Debian 12 / Raspberry Pi OS bookworm
ARCH = "aarch64"
PYTHONS = ("3.11", "3.13")
SAVED = re.compile(r"^\s*(?:Saved|File was already downloaded) (.+)$", re.M)


def device_platforms(arch: str = ARCH, glibc: tuple[int, int] = DEVICE_GLIBC) -> list[str]:
    """The manylinux tags a glibc ``glibc`` Linux on ``arch`` accepts, newest first."""
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{arch}" for minor in range(newest, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def marker_environment(python: str, machine: str = ARCH) -> dict[str, str]:
    """PEP 508 marker values of CPython ``python`` (e.g. "3.11") on Linux ``machine``."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
        "extra": "",
    }


def default_requirements(environment: dict[str, str]) -> list[Requirement]:
    """pyproject's ``dependencies`` that apply in ``environment`` (markers evaluated there)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def _pip_download(python: str, requirements: list[Requirement], folder: Path) -> list[str]:
    """File names pip chose for ``requirements`` and their dependencies (fetched, or found in ``folder``)."""
    abi = "cp" + python.replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--progress-bar", "off",
        *(flag for tag in device_platforms() for flag in ("--platform", tag)),
        "--python-version", python, "--implementation", "cp", "--abi", abi, "-d", str(folder),
        *(f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}"
          for r in requirements),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR")]
    assert done.returncode == 0, f"pip download for CPython {python} {ARCH} failed: {problems or done.stderr}"
    return sorted({Path(path.strip()).name for path in SAVED.findall(done.stdout)})


@pytest.mark.parametrize("python", PYTHONS)
def test_default_install_is_binary_wheels_on_64_bit_arm(python: str) -> None:
    requirements = default_requirements(marker_environment(python))
    names = {canonicalize_name(r.name) for r in requirements}
    assert {"ai-edge-litert", "numpy", "pillow", "paho-mqtt", "cryptography", "av"} <= names, names
    folder = CACHE / f"cp{python.replace('.', '')}-{ARCH}"
    folder.mkdir(parents=True, exist_ok=True)
    files = _pip_download(python, requirements, folder)
    not_wheels = [name for name in files if not name.endswith(".whl")]
    assert files and not not_wheels, f"CPython {python} {ARCH} would build from source: {not_wheels}"
    got = {canonicalize_name(name.split("-", 1)[0]) for name in files}
    assert names <= got, f"no wheel chosen for {sorted(names - got)}; pip chose {files}"
    for name in files:  # binary wheels are for this Python and this machine; the rest are pure
        tags = name.removesuffix(".whl").split("-")[-3:]
        assert tags[2] == "any" or ARCH in tags[2], name

