"""A throw-away local mosquitto for tools that need a broker and got none (``edge simulate``).

Anonymous, on 127.0.0.1 and a free port, config and data in a folder of its own; ``stop()`` ends it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cloud_sync.errors import BrokerError

CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    """Path of the mosquitto binary; a BrokerError saying how to install it when missing."""
    for name in CANDIDATES:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    raise BrokerError("mosquitto is not installed; run: sudo apt-get install mosquitto (or pass --mqtt URL)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGKILL after 10 s without effect), reap the process and close its stderr pipe."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


class LocalBroker:
    """``LocalBroker(folder).start()``; ``url`` is ``mqtt://127.0.0.1:PORT``.

    Subclasses (the tests' broker fixture) write their own config with ``write_config`` and set
    ``config_written`` before ``start``; ``start`` after ``stop`` restarts on the same port and config.
    """

    host = "127.0.0.1"
    scheme = "mqtt"

    def __init__(self, folder: str | Path, max_queued: int = 100_000, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.max_queued = max_queued
        self.config_path = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.config_written = False  # a subclass that wrote its own config sets it
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self) -> None:
        """An anonymous listener on 127.0.0.1, no persistence, a log file in the folder."""
        lines = [
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to user 'mosquitto'
            "persistence false",
            f"log_dest file {self.log_path}",
            f"max_queued_messages {self.max_queued}",
            "allow_anonymous true",
            f"listener {self.port} {self.host}",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start (or restart) mosquitto; returns once the port accepts connections."""
        if self.running:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.config_written:  # this port, even when the folder holds an older run's config
            self.write_config()
            self.config_written = True
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port):  # a previous process may still be releasing the port
            if time.monotonic() > deadline:
                raise BrokerError(f"port {self.port} is still taken; cannot start mosquitto on it")
            time.sleep(0.05)
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        while not port_open(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self._end_and_read() or self._last_log_line()
                raise BrokerError(
                    f"local mosquitto did not start on port {self.port}: {err}; see {self.log_path}"
                )
            time.sleep(0.02)
        return self

    def _end_and_read(self) -> str:
        """Kill a broker that failed to start; what it wrote to stderr (read after it ended: no hang)."""
        proc, self.process = self.process, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
        return " ".join((err or b"").decode(errors="replace").split())

    def _last_log_line(self) -> str:
        lines = self.log().strip().splitlines()
        return lines[-1] if lines else "no output"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End mosquitto (SIGTERM: a clean shutdown that saves persistence; SIGKILL: none of that)."""
        proc, self.process = self.process, None
        if proc is not None:
            end_process(proc, sig)
