"""sd_notify over a real unix datagram socket, as systemd provides it to a Type=notify service."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sdnotify import Watchdog, notify, ready, start_keepalive, stopping


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_and_stopping_reach_the_notify_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    assert ready("serving digits v1", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving digits v1"
    assert stopping({"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_is_sent() -> None:
    assert notify("READY=1", {}) is False
    assert Watchdog({}).ping() is False and not Watchdog({}).enabled


def test_a_missing_socket_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_pings_at_half_the_interval(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    now = [100.0]
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    watchdog = Watchdog(env, clock=lambda: now[0])
    assert watchdog.enabled and watchdog.interval == 30.0
    assert watchdog.ping() is True and sock.recv(64) == b"WATCHDOG=1"
    now[0] += 29.0
    assert watchdog.ping() is False  # too soon: no datagram
    now[0] += 1.0
    assert watchdog.ping() is True and sock.recv(64) == b"WATCHDOG=1"


def test_watchdog_meant_for_another_process_stays_off(systemd_socket: tuple[socket.socket, str]) -> None:
    _, path = systemd_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert not Watchdog(env).enabled


def test_keepalive_pings_while_alive_and_stops_when_not(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    beats = [3]

    def alive() -> bool:
        beats[0] -= 1
        return beats[0] >= 0

    thread = start_keepalive(alive, env)
    assert thread is not None
    assert sock.recv(64) == b"WATCHDOG=1"
    thread.join(timeout=10)
    assert not thread.is_alive() and beats[0] < 0  # it stopped once alive() said no
    assert start_keepalive(lambda: True, {}) is None
