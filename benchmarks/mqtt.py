"""MQTT: raw paho QoS 1 publishing vs results through the durable outbox, same broker, same run.

The baseline is a bare paho 2.x client publishing a ready-made result payload at QoS 1 as fast as it can
and waiting for every PUBACK. The contender is ``DeviceSync.emit``: wrap the record in the result envelope,
commit it to the SQLite outbox (WAL), publish after the commit, mark it acknowledged on PUBACK. Both use
the same in-flight window against the same local mosquitto. Goal: the outbox delivers at least 50% of raw.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_sync.connection import parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from cloud_sync.messages import build_result, dumps
from tests.broker import Broker

N = 20_000
ROUNDS = 5
WINDOW = 1000


def _record(i: int) -> dict:  # type: ignore[type-arg]
    return {
        "schema": "edge.classification/1",
        "input": f"/data/cam/frame{i:06d}.jpg",
        "model": {"name": "digits", "version": 3},
        "task": "classification",
        "classes": [{"index": 7, "label": "7", "score": 0.98}, {"index": 1, "label": "1", "score": 0.01}],
        "timing_ms": {"decode": 0.4, "preprocess": 0.2, "invoke": 1.1, "postprocess": 0.05, "total": 1.8},
    }


class _Pipeline:
    model = None

    def stats(self) -> dict:  # type: ignore[type-arg]
        return {}


def raw_paho(port: int, n: int) -> float:
    """Messages per second: bare paho, QoS 1, until the last PUBACK."""
    payload = dumps(build_result(_record(0), device="bench", stream="s", seq=1))
    done = threading.Event()
    acked = 0

    def on_publish(client, userdata, mid, rc, props):  # type: ignore[no-untyped-def]
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-raw",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(WINDOW)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    for _ in range(n):
        client.publish("edge/bench/results", payload, qos=1)
    done.wait(120)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return n / elapsed


def outbox(port: int, n: int, state: Path) -> float:
    """Messages per second: DeviceSync.emit -> SQLite commit -> publish -> PUBACK recorded."""
    options = DeviceOptions(
        broker=parse_broker_url(f"mqtt://127.0.0.1:{port}"), device_id="bench", state_dir=state,
        telemetry_interval_s=0,
    )
    sync = DeviceSync(options, _Pipeline()).start()
    sync.connection.wait_connected(10)
    records = [_record(i) for i in range(n)]
    start = time.perf_counter()
    for record in records:
        sync.emit(record)
    deadline = time.monotonic() + 120
    while sync.outbox.acked < n and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    sync.close(drain_timeout=1)
    return n / elapsed


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            raw, box = [], []
            for r in range(ROUNDS):
                raw.append(raw_paho(broker.port, N))
                box.append(outbox(broker.port, N, Path(tmp) / f"state{r}"))
        finally:
            broker.stop()
    raw_m, box_m = statistics.median(raw), statistics.median(box)
    ratio = statistics.median(b / r for b, r in zip(box, raw, strict=True))  # paired: same moment, same load
    return "\n".join([
        f"{N} result messages (~{len(dumps(build_result(_record(0), device='bench', stream='s', seq=1)))} B) "
        f"at QoS 1 to a local mosquitto, paho in-flight window {WINDOW}, {ROUNDS} alternating rounds "
        "(msgs/s: medians; ratio: median of the per-round ratios):",
        "",
        "| path | msgs/s | vs raw |",
        "|---|---:|---:|",
        f"| raw paho publish, wait for PUBACKs (baseline) | {raw_m:,.0f} | 1.00 |",
        f"| `DeviceSync.emit` → outbox commit → publish → PUBACK recorded | {box_m:,.0f} | {ratio:.2f} |",
        "",
        f"Goal ≥ 0.50 of raw: {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f}). "
        f"Rounds raw: {', '.join(f'{v:,.0f}' for v in raw)}; outbox: {', '.join(f'{v:,.0f}' for v in box)}.",
    ])


if __name__ == "__main__":
    print(run())
