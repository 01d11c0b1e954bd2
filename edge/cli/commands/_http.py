"""``--http`` and ``--http-token``: the options of the collector's HTTP side, shared by ``edge collect`` and
``edge dashboard`` (a helper module: not a command)."""

from __future__ import annotations

import argparse
from typing import Any


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """``--http`` and ``--http-token``."""
    parser.add_argument(
        "--http", metavar="[HOST:]PORT",
        help="serve the fleet dashboard and Prometheus /metrics there (127.0.0.1 without a host; "
             "needs the 'dashboard' extra)",
    )
    parser.add_argument(
        "--http-token", metavar="TOKEN",
        help="require TOKEN on every HTTP request ('Authorization: Bearer TOKEN' or ?token=TOKEN); "
             "default: the EDGE_HTTP_TOKEN environment variable, else no token",
    )


def http_token(args: argparse.Namespace) -> str | None:
    import os

    from edge.errors import ConfigError

    token = args.http_token if args.http_token is not None else os.environ.get("EDGE_HTTP_TOKEN")
    if token is not None and not token.strip():
        raise ConfigError("--http-token is empty; give a token, or leave the option out for none")
    if token is not None and args.http is None:
        raise ConfigError("--http-token protects the dashboard: give --http [HOST:]PORT with it")
    return token.strip() if token else None


def bind_http(args: argparse.Namespace) -> Any:
    """The dashboard's listening socket (before anything else starts: a busy port fails first), or None."""
    token = http_token(args)
    if args.http is None:
        return None
    from cloud_sync.dashboard.server import bind, check_installed

    check_installed()
    args.http_token = token
    sock = bind(args.http)
    host = sock.getsockname()[0]
    if token is None and not (host.startswith("127.") or host == "::1"):
        import sys

        print(f"edge: warning: the dashboard on {host} is open to anyone who reaches it; "
              "give --http-token to protect it", file=sys.stderr)
    return sock
