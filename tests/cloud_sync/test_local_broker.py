"""``cloud_sync.local_broker``: the throw-away mosquitto of ``edge simulate`` and of the tests' broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloud_sync.errors import BrokerError
from cloud_sync.local_broker import LocalBroker, port_open


def test_starts_listens_and_stops(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker").start()
    try:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}" and port_open(broker.host, broker.port)
    finally:
        broker.stop()
    assert broker.process is None and not port_open(broker.host, broker.port)


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        broker = LocalBroker(tmp_path / "broker")
        broker.port = int(taken.getsockname()[1])  # bound, not listening: mosquitto cannot bind it
        with pytest.raises(BrokerError, match=f"did not start on port {broker.port}"):
            broker.start()
    assert broker.process is None


def test_a_broker_that_never_listens_is_ended_and_its_stderr_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mosquitto"
    fake.write_text("#!/bin/sh\necho 'cannot open the log' >&2\nexec sleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    broker = LocalBroker(tmp_path / "broker")
    with pytest.raises(BrokerError, match="cannot open the log"):
        broker.start(timeout=0.5)  # used to hang reading the stderr of the live process
    assert broker.process is None


def test_a_folder_reused_from_an_earlier_run_gets_this_run_s_port(tmp_path: Path) -> None:
    first = LocalBroker(tmp_path / "broker").start()
    first.stop()
    again = LocalBroker(tmp_path / "broker")  # a new free port; the old config is still in the folder
    try:
        again.start()
        assert port_open(again.host, again.port)
    finally:
        again.stop()
