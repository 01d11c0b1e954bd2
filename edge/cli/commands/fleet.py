"""``edge fleet status``: every device's online state, active model and last update state (cloud side)."""

from __future__ import annotations

import argparse
import json

from edge.cli import EXIT_OK
from edge.cli.broker_options import add_broker_arguments, broker_settings

NAME = "fleet"
HELP = "fleet overview from the broker's retained messages: 'edge fleet status --mqtt URL [--json]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status",), help="status: list devices")
    add_broker_arguments(parser, required=True)
    parser.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="longest wait for messages")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from cloud_sync.connection import MqttConnection, unique_client_id
    from cloud_sync.fleet import FleetView, render
    from cloud_sync.topics import check_prefix
    from edge.errors import ConfigError

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
    prefix = check_prefix(args.prefix)
    broker = broker_settings(args)
    connection = MqttConnection(broker, unique_client_id("fleet")).start()
    try:
        rows = FleetView(connection, prefix).start().settle(timeout=args.timeout)
    finally:
        connection.close()
    if args.json:
        print(json.dumps({"devices": [row.to_json() for row in rows]}, indent=2))
    else:
        print(render(rows))
    return EXIT_OK
