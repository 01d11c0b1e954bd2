"""``edge simulate --devices N``: a fleet of N device agents on this machine, with a model rollout midway."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edge.cli import EXIT_FAILED, EXIT_OK
from edge.cli.broker_options import add_broker_arguments, broker_settings
from edge.errors import ConfigError

NAME = "simulate"
HELP = "simulate N devices (real outbox, MQTT, interpreter, update agent) against one broker, with a rollout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=10, metavar="N", help="simulated devices (default 10)")
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="PACKAGE",
        help="model package the devices start with; the rollout ships its next version",
    )
    add_broker_arguments(parser, url_help="broker (default: a local mosquitto started for the run)")
    parser.add_argument(
        "--duration", type=float, default=20.0, metavar="S", help="seconds of inputs (default 20)"
    )
    parser.add_argument(
        "--rate", type=float, default=2.0, metavar="R", help="inferences per second per device (default 2)"
    )
    parser.add_argument("--prefix", default="sim", help="topic prefix (default: sim)")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="state folders, keys and the collector database (default: a temp folder)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from cloud_sync.local_broker import LocalBroker
    from cloud_sync.simulate import Simulation, SimulationOptions

    if not args.model.is_file():
        raise ConfigError(f"--model {args.model}: no such file; pass a model package from 'edge convert'")
    with tempfile.TemporaryDirectory(prefix="edge-simulate-") as tmp:
        workdir = args.workdir or Path(tmp)
        broker = None if args.mqtt else LocalBroker(workdir / "broker").start()
        try:
            url = args.mqtt or broker.url  # type: ignore[union-attr]
            settings = broker_settings(args, url)
            options = SimulationOptions(
                broker=settings,
                package=args.model,
                workdir=workdir,
                devices=args.devices,
                duration_s=args.duration,
                rate=args.rate,
                prefix=args.prefix,
            )
            report = Simulation(options).run()
        finally:
            if broker is not None:
                broker.stop()
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    ok = report.lost == 0 and not report.rollout_failed and report.rollout_s is not None
    return EXIT_OK if ok else EXIT_FAILED
