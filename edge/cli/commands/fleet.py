"""``edge fleet status``: every device's online state, active model and last update state (cloud side)."""

from __future__ import annotations

import argparse
import json

from edge.cli import EXIT_OK

NAME = "fleet"
HELP = "fleet overview from the broker's retained messages: 'edge fleet status --mqtt URL [--json]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status",), help="status: list devices")
    parser.add_argument("--mqtt", required=True, metavar="URL", help="broker: mqtt://[user:pass@]host[:port]")
    parser.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    parser.add_argument("--ca", help="CA certificate (PEM) for mqtts://")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--cert-key", help="private key (PEM) of --cert")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="longest wait for messages")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from cloud_sync.connection import MqttConnection, parse_broker_url, unique_client_id
    from cloud_sync.fleet import FleetView, render
    from cloud_sync.topics import check_prefix

    broker = parse_broker_url(args.mqtt, ca=args.ca, cert=args.cert, key=args.cert_key)
    connection = MqttConnection(broker, unique_client_id("fleet")).start()
    try:
        rows = FleetView(connection, check_prefix(args.prefix)).start().settle(timeout=args.timeout)
    finally:
        connection.close()
    if args.json:
        print(json.dumps({"devices": [row.to_json() for row in rows]}, indent=2))
    else:
        print(render(rows))
    return EXIT_OK
