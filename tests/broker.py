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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from cloud_sync.local_broker import LocalBroker, free_port

__all__ = ["Broker", "BrokerFactory", "free_port"]  # free_port: tests import it from here
START_TIMEOUT_S = 10.0


class Broker(LocalBroker):
    """A mosquitto process with its own config file, data folder and log; restartable on the same port."""

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
        super().__init__(workdir, port=port)
        self.workdir = self.folder
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.scheme = scheme
        self.write_config(extra=extra, global_extra=global_extra, anonymous=anonymous)
        self.config_written = True

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
        super().start(timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: no persistence save, no goodbye to clients."""
        self.stop(signal.SIGKILL)

    def restart(self) -> Broker:
        self.stop()
        return self.start()

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
