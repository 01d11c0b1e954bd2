"""``edge collect``: the cloud-side collector. Stores each distinct result once, reports and repairs gaps."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from edge.cli import EXIT_FAILED, EXIT_OK
from edge.cli.broker_options import add_broker_arguments, broker_settings
from edge.cli.commands._http import add_http_arguments, bind_http

if TYPE_CHECKING:
    from cloud_sync.connection import BrokerSettings
    from cloud_sync.store import _SqlStore

NAME = "collect"
HELP = "collect results from a fleet over MQTT into SQLite or PostgreSQL; report and repair seq gaps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--db", required=True, help="SQLite file, or a postgresql://user@host/db URL")
    parser.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    parser.add_argument("--share", metavar="NAME", help="MQTT 5 shared subscription group (split the load)")
    parser.add_argument("--print", action="store_true", help="print each new result as a JSON line")
    parser.add_argument(
        "--client-id", help="MQTT client id (default: from host, store and share; with --share, also the pid)"
    )
    parser.add_argument("--no-repair", action="store_true", help="report gaps, do not ask devices to replay")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS (default: run)")
    parser.add_argument("--report", action="store_true", help="print the gap report of --db and exit")
    add_http_arguments(parser)


def _client_id(args: argparse.Namespace) -> str:
    import hashlib
    import os
    import socket

    if args.client_id:
        return str(args.client_id)
    digest = hashlib.sha1(f"{args.db}|{args.share}".encode()).hexdigest()[:8]
    client_id = f"edge-collect-{socket.gethostname().split('.')[0]}-{digest}"
    # Collectors sharing the load on one host with the same --db: one id would make the broker close each
    # one's connection when the other connects, again and again; the process id keeps them apart.
    return f"{client_id}-{os.getpid()}" if args.share else client_id


def run(args: argparse.Namespace) -> int:
    from cloud_sync.collector import has_gaps, report_json, store_report
    from cloud_sync.store import open_store
    from cloud_sync.topics import check_prefix, check_segment
    from edge.errors import ConfigError

    check_prefix(args.prefix)
    if args.share is not None:
        check_segment(args.share, "share group", "--share")
    if args.report:
        store = open_store(args.db)
        try:
            devices = store_report(store)
        finally:
            store.close()
        print(report_json({"devices": devices}))
        return EXIT_FAILED if has_gaps(devices) else EXIT_OK
    if not args.mqtt:
        raise ConfigError("edge collect needs --mqtt URL (or --report to read --db only)")
    settings = broker_settings(args)  # before --db is made
    sock = bind_http(args)
    try:
        store = open_store(args.db)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    try:
        doc = _collect(args, settings, store, sock)
    finally:
        store.close()
    print(report_json(doc), file=sys.stderr if args.print else sys.stdout)
    return EXIT_FAILED if has_gaps(doc["devices"]) else EXIT_OK


def _collect(
    args: argparse.Namespace, settings: BrokerSettings, store: _SqlStore, sock: Any = None
) -> dict[str, Any]:
    """Collect until SIGTERM, Ctrl-C or --duration; the final report."""
    from cloud_sync.collector import Collector
    from cloud_sync.connection import MqttConnection

    connection = MqttConnection(settings, _client_id(args), clean_start=False, session_expiry=3600)
    lock = threading.Lock()

    def print_result(body: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(body, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    live = None
    if sock is not None:
        from cloud_sync.dashboard.live import LiveFleet

        live = LiveFleet(args.prefix)
        live.attach(connection, with_collector=True)
    collector = Collector(
        connection, store, prefix=args.prefix, share=args.share,
        on_result=print_result if args.print else None, repair=not args.no_repair,
        observer=live.observe if live is not None else None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dashboard = None
    try:
        if sock is not None:
            from cloud_sync.dashboard.server import Dashboard

            dashboard = Dashboard(sock, args.db, live, collector=collector, token=args.http_token).start()
        collector.start()
        print(f"edge collect: listening on {settings.url} for {args.prefix}/+/results -> {store.name}",
              file=sys.stderr)
        if dashboard is not None:
            print(f"edge collect: dashboard and /metrics on {dashboard.url}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.duration)
        collector.check_gaps()
    finally:
        if dashboard is not None:
            dashboard.close()
        elif sock is not None:
            sock.close()
        collector.close()
    return collector.report()
