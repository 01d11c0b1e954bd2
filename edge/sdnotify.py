"""systemd readiness and watchdog notifications (the sd_notify protocol), with no dependency.

The unit in ``devices/edge.service`` has ``Type=notify`` and ``WatchdogSec=``: systemd then sets
``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``/``WATCHDOG_PID``) and expects ``READY=1`` once the service
serves, then ``WATCHDOG=1`` at least every ``WatchdogSec``. Outside systemd every call is a no-op.

    start_keepalive(lambda: not stop.is_set())  # a thread: WATCHDOG=1 every interval/2 while alive() holds
    ready("serving digits v3")                  # once, when the first model is loaded (or waiting for one)
    Watchdog().ping()                           # or ping from a loop yourself; sends at most every interval/2
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd or the send failed."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        import socket  # here: only under systemd, and it costs ~9 ms at start-up

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def ready(status: str = "", environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is up (``Type=notify``), with an optional status line."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is shutting down on purpose."""
    return notify("STOPPING=1", environ)


class Watchdog:
    """Keep-alive pings for ``WatchdogSec=``: ``ping()`` is cheap to call often; it sends every interval/2."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._clock = clock
        self.interval = self._interval()
        self._last = float("-inf")

    def _interval(self) -> float | None:
        usec = self._environ.get("WATCHDOG_USEC", "")
        pid = self._environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self.interval is not None and bool(self._environ.get("NOTIFY_SOCKET"))

    def ping(self) -> bool:
        """Send ``WATCHDOG=1`` when half the watchdog interval has passed since the last one."""
        if not self.enabled or self.interval is None:
            return False
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return notify("WATCHDOG=1", self._environ)


def start_keepalive(
    alive: Callable[[], bool], environ: Mapping[str, str] | None = None
) -> threading.Thread | None:
    """A daemon thread pinging the watchdog while ``alive()`` is true; None outside a watchdog.

    Once ``alive()`` returns False the pings stop, so systemd kills and restarts a stuck service.
    """
    watchdog = Watchdog(environ)
    if not watchdog.enabled or watchdog.interval is None:
        return None
    period = watchdog.interval / 2

    def loop() -> None:
        while alive():
            watchdog.ping()
            time.sleep(period)

    thread = threading.Thread(target=loop, name="sd-watchdog", daemon=True)
    thread.start()
    return thread
