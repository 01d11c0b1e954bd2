"""Install what the Home Assistant the tests run needs, ahead of time: ``HA_PYTHON provision.py``.

Home Assistant installs an integration's requirements with pip when it first sets the integration up; the
tests run it with ``--skip-pip`` (no network, no surprise at test time), so this script, run with Home
Assistant's own interpreter once after ``pip install homeassistant``, installs the requirements of every
integration it loads by itself (``bootstrap``'s core and default sets) and of those the tests use, with
their manifest dependencies, under Home Assistant's own ``package_constraints.txt``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import homeassistant
from homeassistant import bootstrap

# What the tests set up besides Home Assistant's defaults (the MQTT platforms the device announces).
USED = ("http", "api", "auth", "onboarding", "config", "websocket_api", "mqtt", "sensor", "binary_sensor",
        "button", "image", "event", "update")


def requirements(domains: set[str]) -> list[str]:
    """Every requirement of ``domains`` and their dependencies (manifest ``dependencies``)."""
    root = Path(homeassistant.__file__).parent / "components"
    seen: set[str] = set()
    reqs: list[str] = []
    todo = sorted(domains)
    while todo:
        domain = todo.pop()
        if domain in seen or not (root / domain / "manifest.json").exists():
            continue
        seen.add(domain)
        manifest = json.loads((root / domain / "manifest.json").read_text())
        reqs += [r for r in manifest.get("requirements", []) if r not in reqs]
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
    return reqs


def main() -> None:
    domains = {*bootstrap.CORE_INTEGRATIONS, *bootstrap.DEFAULT_INTEGRATIONS, *USED}
    reqs = requirements(domains)
    constraints = Path(homeassistant.__file__).parent / "package_constraints.txt"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs]
    if constraints.exists():
        command += ["--constraint", str(constraints)]
    print("installing:", " ".join(reqs), flush=True)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
