"""``edge doctor``: can this machine run models, and how best? Exit 1 when no backend can run one."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from edge.cli import EXIT_FAILED, EXIT_OK

NAME = "doctor"
HELP = "check backends, CPU, Edge TPU, memory and the matching device profile"
CPU_FEATURES = (
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def backends_report(probe: bool = True) -> list[dict[str, Any]]:
    """Each backend: installed, version, and whether its interpreter imports (TensorFlow only when needed)."""
    from edge.backends import BACKENDS

    report = []
    usable_found = False
    for backend in BACKENDS.values():
        entry: dict[str, Any] = {
            "name": backend.name,
            "package": backend.package,
            "installed": backend.installed(),
            "version": backend.version(),
            "usable": False,
        }
        heavy = backend.name == "tensorflow" and usable_found
        if entry["installed"] and probe and not heavy:
            try:
                backend.interpreter_class()
                entry["usable"] = True
            except Exception as exc:  # any import failure means unusable; report it
                entry["problem"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        elif entry["installed"] and heavy:
            entry["usable"] = True
            entry["note"] = "not imported (TensorFlow is slow to import; a lighter backend works)"
        usable_found = usable_found or entry["usable"]
        report.append(entry)
    return report


def cpu_report(root: Path = Path("/")) -> dict[str, Any]:
    flags: set[str] = set()
    try:
        text = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return {
        "machine": platform.machine(),
        "cores": os.cpu_count() or 1,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": [f for f in CPU_FEATURES if f in flags],
    }


def edgetpu_report(root: Path = Path("/")) -> dict[str, Any]:
    from edge.backends.edgetpu import library_name
    from edge.profiles import coral_usb_devices

    pci = sorted(str(p) for p in (root / "dev").glob("apex_*"))
    usb = coral_usb_devices(root)
    library = library_name()
    try:
        ctypes.CDLL(library)
        loadable, problem = True, None
    except OSError as exc:
        loadable, problem = False, str(exc)
    return {
        "pci_devices": pci,
        "usb_devices": usb,
        "library": library,
        "library_loads": loadable,
        "problem": problem,
    }


def memory_report(root: Path = Path("/")) -> dict[str, Any]:
    values: dict[str, int] = {}
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0])
    except OSError:
        pass
    return {
        "total_mb": values.get("MemTotal", 0) // 1024 or None,
        "available_mb": values.get("MemAvailable", values.get("MemFree", 0)) // 1024 or None,
    }


def profile_report() -> dict[str, Any]:
    try:
        from edge.profiles import explain_profile

        name, why = explain_profile()
        return {"suggested": name, "why": why}
    except Exception as exc:  # profiles are advice; doctor still reports the rest
        return {"suggested": None, "why": f"cannot suggest a profile: {exc}"}


def collect() -> dict[str, Any]:
    import numpy
    import PIL

    backends = backends_report()
    return {
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "backends": backends,
        "cpu": cpu_report(),
        "edgetpu": edgetpu_report(),
        "memory": memory_report(),
        "profile": profile_report(),
        "can_run_models": any(b["usable"] for b in backends),
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_OK if report["can_run_models"] else EXIT_FAILED


def render(report: dict[str, Any]) -> str:
    lines = [f"python     {report['python']}  numpy {report['numpy']}  pillow {report['pillow']}"]
    for b in report["backends"]:
        if b["usable"]:
            state = f"ok ({b['version']})"
        elif b["installed"]:
            state = f"installed but broken: {b.get('problem', '?')}"
        else:
            state = f"not installed (pip install {b['package']})"
        lines.append(f"backend    {b['name']:<15} {state}")
    cpu = report["cpu"]
    lines.append(
        f"cpu        {cpu['machine']}, {cpu['cores']} cores ({cpu['usable_cores']} usable), "
        f"features: {', '.join(cpu['features']) or 'none detected'}"
    )
    tpu = report["edgetpu"]
    devices = tpu["pci_devices"] + tpu["usb_devices"]
    lines.append(f"edge tpu   devices: {', '.join(devices) or 'none found'}")
    lines.append(
        f"edge tpu   delegate {tpu['library']}: "
        + ("loads" if tpu["library_loads"] else "not found (install libedgetpu1-std to use a Coral)")
    )
    mem = report["memory"]
    lines.append(f"memory     {mem['available_mb']} MB available of {mem['total_mb']} MB")
    prof = report["profile"]
    lines.append(f"profile    {prof['suggested']}  ({prof['why']})")
    if report["can_run_models"]:
        lines.append("verdict    ready: this machine can run models")
    else:
        lines.append("verdict    NOT ready: no interpreter works; run: pip install ai-edge-litert")
    return "\n".join(lines)
