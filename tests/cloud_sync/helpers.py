"""Helpers for the MQTT tests: a device session on a fake pipeline, an in-process collector, waits."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud_sync.collector import Collector
from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.store import SqliteStore
from tests.cloud_sync.fakes import FakePipeline

WAIT = 30.0


def wait_for(condition: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def device(
    url: str, state_dir: Path, device_id: str = "dev1", pipeline: Any = None, **options: Any
) -> DeviceSync:
    options.setdefault("telemetry_interval_s", 0.5)
    opts = DeviceOptions(
        broker=parse_broker_url(url), device_id=device_id, state_dir=state_dir, reconnect_max=1, **options
    )
    return DeviceSync(opts, pipeline or FakePipeline()).start()


def collector(url: str, db: Path, client_id: str = "", **kwargs: Any) -> Collector:
    connection = MqttConnection(
        parse_broker_url(url), client_id or f"collector-{db.stem}", clean_start=False, session_expiry=600,
        reconnect_max=1,
    )
    kwargs.setdefault("check_interval_s", 0.3)
    kwargs.setdefault("replay_retry_s", 0.5)
    return Collector(connection, SqliteStore(db), **kwargs).start()


class Watcher:
    """A plain MQTT client that records everything under some filters."""

    def __init__(self, url: str, *filters: str, client_id: str = "watcher") -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.conn = MqttConnection(parse_broker_url(url), client_id, reconnect_max=1)
        for f in filters:
            self.conn.subscribe(f, self.messages.put)
        self.conn.start()

    def next(self, topic_part: str, timeout: float = WAIT) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if topic_part in msg.topic:
                return msg

    def next_json(self, topic_part: str, timeout: float = WAIT) -> dict[str, Any]:
        return json.loads(self.next(topic_part, timeout).payload)

    def drain(self) -> list[Message]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.conn.close()
