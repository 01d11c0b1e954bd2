"""Mosquitto broker fixture: a real broker on a free port with its own config and data folder.

Fixtures (registered by tests/conftest.py):

- ``mosquitto``: a fresh broker per test (function scope).
- ``mosquitto_module``: one broker shared by a test module.
- ``mosquitto_factory``: build brokers with extra config lines (TLS listener, ``acl_file``,
  ``password_file``), e.g. ``mosquitto_factory(extra=["password_file /x"], anonymous=False)``.

Each ``Broker`` has ``.host``, ``.port``, ``.url`` (``mqtt://127.0.0.1:PORT``), ``.kill()`` (SIGKILL),
``.start()`` (same port, same persistent data folder), ``.stop()`` (SIGTERM, saves persistence),
``.restart()``, ``.log()`` and ``.data_dir``. Brokers are always stopped at teardown.
"""

from __future__ import annotations

import contextlib
import getpass
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cloud_sync.local_broker import end_process, find_mosquitto, free_port, port_open

START_TIMEOUT_S = 10.0


class Broker:
    """A mosquitto process with its own config file, data folder and log; restartable on the same port."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra: Sequence[str] = (),
        global_extra: Sequence[str] = (),
        anonymous: bool = True,
        scheme: str = "mqtt",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.port = port or free_port()
        self.scheme = scheme
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config(extra=extra, global_extra=global_extra, anonymous=anonymous)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def write_config(
        self, *, extra: Sequence[str] = (), global_extra: Sequence[str] = (), anonymous: bool = True
    ) -> None:
        """(Re)write the config: global lines, then the listener and its ``extra`` lines."""
        lines = [
            f"user {getpass.getuser()}",  # as root, mosquitto would otherwise switch to 'mosquitto'
            "persistence true",
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            *global_extra,
            f"listener {self.port} {self.host}",
            *extra,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = START_TIMEOUT_S) -> Broker:
        """Start (or restart) mosquitto; returns once the port accepts connections."""
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port):  # the previous process may still be releasing the port
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} is still taken; cannot start mosquitto")
            time.sleep(0.05)
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s: {self.log()}")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no persistence save, no goodbye to clients."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that saves persistence."""
        self._end(signal.SIGTERM)

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def _end(self, sig: int) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            end_process(proc, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __repr__(self) -> str:
        return f"Broker({self.url}, running={self.running})"


BrokerFactory = Callable[..., Broker]


@contextlib.contextmanager
def _factory(root: Path) -> Iterator[BrokerFactory]:
    brokers: list[Broker] = []

    def make(*, start: bool = True, **kwargs: object) -> Broker:
        broker = Broker(root / f"broker{len(brokers)}", **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start() if start else broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.kill()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Build brokers with extra config lines; all are killed at teardown."""
    with _factory(tmp_path / "mosquitto") as make:
        yield make


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> Broker:
    """A fresh anonymous broker for one test."""
    return mosquitto_factory()


@pytest.fixture(scope="module")
def mosquitto_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One anonymous broker shared by a test module (do not kill it in a test)."""
    with _factory(tmp_path_factory.mktemp("mosquitto")) as make:
        yield make()
