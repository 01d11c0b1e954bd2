"""``edge outbox``: what the durable MQTT outbox of a state folder holds; ``--flush`` delivers it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.cli import EXIT_FAILED, EXIT_OK
from edge.cli.broker_options import add_broker_arguments, broker_settings
from edge.fsutil import default_state_dir

NAME = "outbox"
HELP = "show the MQTT outbox (pending results and telemetry) of a state folder; --flush delivers it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=default_state_dir(),
        help="the folder 'edge run' used (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--flush", action="store_true", help="publish what is pending, then exit")
    add_broker_arguments(parser, url_help="broker for --flush: mqtt://[user:pass@]host[:port] or mqtts://...")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds --flush waits (default: 60)")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def run(args: argparse.Namespace) -> int:
    from cloud_sync.outbox import Outbox, read_stats
    from edge.errors import ConfigError

    if args.flush:
        if not args.mqtt:
            raise ConfigError("--flush needs a broker; add --mqtt mqtt://host:1883")
        if args.timeout <= 0:
            raise ConfigError(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
        settings = broker_settings(args)  # a bad URL is the error, whether or not the outbox exists
        from cloud_sync.connection import MqttConnection, unique_client_id

        before = read_stats(args.state_dir)
        connection = MqttConnection(settings, unique_client_id("flush"))
        outbox = Outbox(args.state_dir)
        outbox.start(connection)
        connection.add_connect_listener(outbox.kick)
        try:
            connection.start(require=True)
            outbox.wait_drained(args.timeout)
        finally:
            outbox.close()
            connection.close()
    stats = read_stats(args.state_dir)
    doc = stats.to_json()
    del doc["published"], doc["acked"]
    if args.flush:
        doc["delivered"] = before.pending - stats.pending
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        lines = [
            f"outbox:        {args.state_dir}",
            f"pending:       {stats.pending} ({stats.pending_bytes} bytes), "
            f"oldest {_age(stats.oldest_age_s)}",
            f"kept for replay: {stats.retained}",
            f"dropped:       {stats.dropped} (bounds), rejected by the broker: {stats.rejected}",
            f"last seq:      {stats.last_seq} (stream {stats.stream or '-'})",
        ]
        if args.flush:
            lines.append(f"delivered:     {doc['delivered']}")
        print("\n".join(lines))
    if args.flush and stats.pending:
        print(f"edge outbox: {stats.pending} message(s) still pending after {args.timeout:g}s",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
