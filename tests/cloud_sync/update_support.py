"""Helpers for the model-update tests: devices (agent + store) and publishers on a real broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from cloud_sync.publisher import Publisher
from cloud_sync.update_agent import UpdateAgent
from cloud_sync.update_protocol import Status
from edge.manifest import Manifest
from edge.package import read_package
from edge.signing import TrustStore, generate_keys, load_private_key, sign_package
from edge.store import ModelStore, StoreEntry


def connect(url: str, client_id: str, status_topic: str | None = None) -> MqttConnection:
    return MqttConnection(
        parse_broker_url(url), client_id, reconnect_max=2, status_topic=status_topic
    ).start()


@dataclass
class Keys:
    key: Path
    pub: Path

    def sign(self, package: bytes) -> bytes:
        return sign_package(package, load_private_key(self.key))


def make_keys(folder: Path) -> Keys:
    key, pub = generate_keys(folder)
    return Keys(key, pub)


class PackageActivator:
    """The device side without an interpreter: validation reads the package again; activation records."""

    def __init__(self) -> None:
        self.activated: list[StoreEntry] = []
        self.restored: list[StoreEntry] = []

    def validate(self, path: Path, manifest: Manifest) -> Any:
        return read_package(path)

    def activate(
        self,
        candidate: Any,
        entry: StoreEntry,
        on_unhealthy: Callable[[str], None],
        on_healthy: Callable[[], None],
    ) -> None:
        self.activated.append(entry)
        on_healthy()

    def restore(self, entry: StoreEntry) -> None:
        self.restored.append(entry)


@dataclass
class Device:
    device_id: str
    store: ModelStore
    agent: UpdateAgent
    connection: MqttConnection
    activator: Any

    def close(self) -> None:
        self.agent.close()
        self.connection.close()


def start_device(
    url: str,
    state_dir: Path,
    device_id: str,
    trusted: list[Path],
    *,
    groups: tuple[str, ...] = (),
    activator: Any = None,
    **agent_options: Any,
) -> Device:
    connection = connect(url, f"edge-{device_id}", status_topic=f"edge/{device_id}/status")
    store = ModelStore(state_dir)
    activator = activator or PackageActivator()
    agent = UpdateAgent(
        connection,
        store,
        TrustStore.from_files(trusted),
        activator,
        device_id,
        groups=groups,
        **agent_options,
    ).start()
    return Device(device_id, store, agent, connection, activator)


@dataclass
class StatusWatcher:
    """Every model status seen on the broker, per device."""

    seen: dict[str, list[Status]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, message: Message) -> None:
        if not message.payload:
            return
        status = Status.from_bytes(message.payload)
        with self.lock:
            self.seen.setdefault(status.device, []).append(status)

    def last(self, device: str) -> Status | None:
        with self.lock:
            history = self.seen.get(device)
            return history[-1] if history else None

    def states(self, device: str) -> list[str]:
        with self.lock:
            return [s.state for s in self.seen.get(device, [])]


@contextlib.contextmanager
def watching(url: str, prefix: str = "edge") -> Iterator[StatusWatcher]:
    watcher = StatusWatcher()
    connection = connect(url, "status-watcher")
    connection.subscribe(f"{prefix}/+/model/status", watcher.on_message)
    try:
        yield watcher
    finally:
        connection.close()


@contextlib.contextmanager
def publishing(
    url: str, package: bytes, publisher_class: type[Publisher] = Publisher, **options: Any
) -> Iterator[Publisher]:
    connection = connect(url, "publisher")
    publisher = publisher_class(connection, package, **options).start()
    try:
        yield publisher
    finally:
        publisher.close()
        connection.close()
