"""``edge dashboard``: the fleet dashboard and ``/metrics`` beside a collector running elsewhere (read-only).

It reads the collector's store (``--db``, SQLite or PostgreSQL) and listens on MQTT for the live state; it
stores nothing and asks no device for anything.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from edge.cli import EXIT_OK
from edge.cli.broker_options import add_broker_arguments, broker_settings
from edge.cli.commands._http import add_http_arguments, bind_http

NAME = "dashboard"
HELP = "serve the fleet dashboard and /metrics from a collector's store and the live MQTT state (read-only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--db", required=True, help="the collector's SQLite file or postgresql:// URL")
    parser.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    parser.add_argument("--client-id", help="MQTT client id (default: edge-dashboard-<host>-<pid>)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS (default: run)")
    add_http_arguments(parser)
    parser.set_defaults(http="127.0.0.1:8080")


def run(args: argparse.Namespace) -> int:
    import os
    import socket
    from pathlib import Path

    from cloud_sync.connection import MqttConnection
    from cloud_sync.dashboard.live import LiveFleet
    from cloud_sync.dashboard.server import Dashboard
    from cloud_sync.topics import check_prefix
    from edge.errors import ConfigError

    check_prefix(args.prefix)
    if not args.mqtt:
        raise ConfigError("edge dashboard needs --mqtt URL (the broker the fleet and its collector use)")
    if "://" not in args.db and not Path(args.db).exists():
        raise ConfigError(f"--db {args.db}: no such file; point it at the store `edge collect --db` writes")
    settings = broker_settings(args)
    sock = bind_http(args)
    try:
        live = LiveFleet(args.prefix)
        client_id = args.client_id or f"edge-dashboard-{socket.gethostname().split('.')[0]}-{os.getpid()}"
        connection = MqttConnection(settings, client_id)
        live.attach(connection, with_collector=False)
        dashboard = Dashboard(sock, args.db, live, token=args.http_token)
    except BaseException:
        sock.close()
        raise
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        dashboard.start()
        connection.start()
        print(f"edge dashboard: {dashboard.url} (store {dashboard.store.name}, live from {settings.url})",
              file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.duration)
    finally:
        connection.close()
        dashboard.close()
    return EXIT_OK
