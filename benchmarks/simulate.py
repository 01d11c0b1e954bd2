"""Fleet simulation (``edge simulate``): 50 and 200 real device agents on one local broker, rollout midway.

Each device: own state folder, durable SQLite outbox, MQTT connection, LiteRT interpreter on generated
inputs, update agent. The collector stores every result once. The ratio that matters is delivered
(stored once, end to end) over offered; lost must be 0.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

RUNS = ((50, 2.0), (200, 1.0))  # (devices, inferences per second per device)
DURATION_S = 30.0


def _package() -> Path:
    from tests.assets import ensure_assets

    package = ensure_assets().digits_package
    if package is None:
        raise RuntimeError("the digits package is missing from the test assets; run the converter first")
    return package


def run() -> str:
    from cloud_sync.connection import parse_broker_url
    from cloud_sync.local_broker import LocalBroker
    from cloud_sync.simulate import DEVICES_PER_PROCESS, Simulation, SimulationOptions

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp:
        package = _package()
        for devices, rate in RUNS:
            broker = LocalBroker(Path(tmp) / f"broker{devices}").start()
            try:
                options = SimulationOptions(
                    broker=parse_broker_url(broker.url),
                    package=package,
                    workdir=Path(tmp) / f"run{devices}",
                    devices=devices,
                    duration_s=DURATION_S,
                    rate=rate,
                )
                report = Simulation(options).run()
            finally:
                broker.stop()
            produced = report.emitted / DURATION_S
            rows.append(
                f"| {devices} | {report.offered_per_s:.0f} | {produced:.0f} | {report.results_per_s:.0f} "
                f"| {report.results_per_s / report.offered_per_s:.2f} | {report.delivery_s:.0f} "
                f"| {report.lost} | {report.duplicates} | {report.gaps} "
                f"| {report.rollout_s:.1f} ({report.rollout_ok}/{devices}) | {len(report.rolled_back)} |"
            )
    return "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
            f"Python {platform.python_version()}; {DURATION_S:.0f} s of inputs per run, one local mosquitto, "
            f"devices in worker processes of at most {DEVICES_PER_PROCESS}; the digits int8 model; rollout "
            f"of its next version (signed) at {DURATION_S / 2:.0f} s.",
            "",
            "| devices | offered results/s | produced/s | delivered end to end/s | delivered / offered "
            "| all stored after (s) | lost | duplicates | seq gaps | rollout: offer to active on all (s) "
            "| rolled back |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
