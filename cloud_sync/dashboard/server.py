"""Run the dashboard under uvicorn in a daemon thread, on a socket bound before anything else starts."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

from edge.errors import ConfigError
from edge.metrics import parse_address

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'edge-runtime[dashboard]'"


def bind(value: str, flag: str = "--http") -> socket.socket:
    """A listening socket for ``[HOST:]PORT`` (127.0.0.1 without a host); bad values and a busy port are
    one-line ``ConfigError``s."""
    host, port = parse_address(value, flag)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{flag} {value!r}: unknown host {host!r} ({exc.strerror}); give an address "
                          "of this machine, e.g. 127.0.0.1:8080") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: uvicorn writes a response's head and body apart, and without it the
    # body of a small response waits for the client's delayed ACK (40 ms on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{flag} {where}: port {port} is in use; stop what uses it or pick another port"
            ) from exc
        raise ConfigError(f"{flag} {where}: cannot listen there ({exc.strerror or exc})") from exc
    return sock


def check_installed() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--http needs {exc.name}; install the dashboard: {INSTALL_HINT}") from None


class DashboardServer:
    """The app on an already bound socket; ``start`` returns once uvicorn serves."""

    def __init__(self, app: Any, sock: socket.socket, closing: threading.Event) -> None:
        import uvicorn

        self.sock = sock
        self.closing = closing
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="dashboard-http", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:
            log.exception("the dashboard's HTTP server stopped")

    def start(self, timeout: float = 10.0) -> DashboardServer:
        import time

        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info("dashboard on %s", self.url)
        return self

    def close(self) -> None:
        self.closing.set()
        self.server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        self.sock.close()


class Dashboard:
    """Everything behind ``--http``: its own store connection (reads do not wait on the collector's writes),
    the counts refresher, the app and the server."""

    def __init__(self, sock: socket.socket, db: str, live: Any, *, collector: Any = None,
                 token: str | None = None, refresh_s: float = 2.0) -> None:
        from cloud_sync.dashboard.app import build_app
        from cloud_sync.dashboard.data import FleetData, StoreCounts
        from cloud_sync.store import open_store

        self.store = open_store(db)
        try:  # its own connection: a long count must not hold up the pages' reads
            self.counts = StoreCounts(open_store(db), refresh_s)
        except BaseException:
            self.store.close()
            raise
        self.data = FleetData(live, self.store, self.counts, collector)
        closing = threading.Event()
        self.server = DashboardServer(build_app(self.data, token, closing), sock, closing)
        self.url = self.server.url

    def start(self) -> Dashboard:
        self.counts.start()
        self.server.start()
        return self

    def close(self) -> None:
        self.server.close()
        self.counts.close()
        self.counts.store.close()
        self.store.close()
