"""OTA model updates: delivery + activation of a ~4 MB signed package to 1, 10 and 50 simulated devices.

Each simulated device is a real update agent with its own MQTT connection and model store, validating with
the real interpreter (no pipeline). Baseline, same run, same broker: the same bytes copied raw in 64 KiB
QoS 1 messages to the same number of subscribers (no requests, no verification, no activation).
Bytes on the wire come from mosquitto's own ``$SYS/broker/bytes/*`` counters.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FLEETS = ((1, False), (10, False), (50, False), (50, True))  # (devices, offered to one group)


def _big_model(folder: Path) -> bytes:
    """A real ~4 MB float32 model (one 1024x1024 dense layer), converted with TensorFlow."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(0).normal(size=(1024, 1024)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((1, 1024), tf.float32)])
    def model(x):  # noqa: ANN001, ANN202
        return tf.nn.softmax(tf.matmul(x, weights))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return bytes(converter.convert())


def _package(model: bytes, version: int, key: Path) -> bytes:
    from edge.package import build_package_bytes
    from edge.signing import load_private_key, sign_package
    from tests.edge.update_packages import manifest_for

    manifest = manifest_for(model, version, name="big", task="raw", labels=())
    return sign_package(build_package_bytes(manifest, {"model.tflite": model}), load_private_key(key))


class _SysBytes:
    """mosquitto's byte counters ($SYS, published every second with sys_interval 1)."""

    def __init__(self, url: str) -> None:
        from tests.cloud_sync.update_support import connect

        self.values: dict[str, int] = {}
        self._connection = connect(url, "bench-sys")
        self._connection.subscribe("$SYS/broker/bytes/#", self._on)

    def _on(self, message) -> None:  # noqa: ANN001
        self.values[message.topic.rsplit("/", 1)[1]] = int(message.payload)

    def settled(self) -> dict[str, int]:
        time.sleep(2.2)  # two publications of the counters
        return dict(self.values)

    def close(self) -> None:
        self._connection.close()


def _raw_copy(url: str, data: bytes, devices: int) -> float:
    """Seconds to copy ``data`` in 64 KiB QoS 1 messages to ``devices`` subscribers."""
    from tests.cloud_sync.update_support import connect

    chunk = 64 * 1024
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    expected = devices * len(parts)
    lock, done, count = threading.Lock(), threading.Event(), [0]

    def on_message(message) -> None:  # noqa: ANN001
        with lock:
            count[0] += 1
            if count[0] == expected:
                done.set()

    subscribers = []
    for n in range(devices):
        connection = connect(url, f"raw-{n}")
        connection.subscribe(f"raw/{n}/#", on_message)
        subscribers.append(connection)
    sender = connect(url, "raw-sender")
    time.sleep(0.3)
    start = time.perf_counter()
    for n in range(devices):
        for index, part in enumerate(parts):
            sender.publish(f"raw/{n}/{index}", part, qos=1)
    done.wait(timeout=600)
    elapsed = time.perf_counter() - start
    for connection in [sender, *subscribers]:
        connection.close()
    return elapsed


def _ota(
    url: str, data: bytes, devices: int, folder: Path, pub: Path, group: bool
) -> tuple[float, list[float], int]:
    """(seconds until all active, per-device seconds, chunk bytes the publisher sent)."""
    from cloud_sync.publisher import DeviceProgress, Publisher
    from edge.activation import PipelineActivator
    from edge.store import ModelStore
    from tests.cloud_sync.update_support import connect, start_device

    fleet = []
    for n in range(devices):
        state = folder / f"dev{n}"
        fleet.append(
            start_device(
                url,
                state,
                f"{folder.name}-{n}",
                [pub],
                groups=("bench",) if group else (),
                activator=PipelineActivator(None, ModelStore(state)),
            )
        )
    connection = connect(url, "bench-publisher")
    publisher = Publisher(connection, data).start()
    names = [d.device_id for d in fleet]
    done_at: dict[str, float] = {}

    def on_change(progress) -> None:  # noqa: ANN001
        if progress.result == "success":
            done_at.setdefault(progress.device, time.perf_counter())

    for name in names:
        publisher.rollout.devices[name] = DeviceProgress(name)
    start = time.perf_counter()
    if group:
        publisher.offer_group("bench")
    else:
        publisher.offer_devices(names)
    ok = publisher.wait(names, time.monotonic() + 900, on_change=on_change)
    total = time.perf_counter() - start
    if not ok:
        raise RuntimeError(f"OTA benchmark: not every device succeeded: {publisher.rollout.devices}")
    per_device = [done_at.get(n, start + total) - start for n in names]
    sent = publisher.bytes_sent
    publisher.close()
    connection.close()
    for device in fleet:
        device.close()
    return total, per_device, sent


def run() -> str:
    from edge.signing import generate_keys
    from tests.broker import Broker

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        root = Path(tmp)
        key, pub = generate_keys(root / "keys")
        data = _package(_big_model(root), 2, key)
        broker = Broker(root / "broker", global_extra=["sys_interval 1"]).start()
        try:
            counters = _SysBytes(broker.url)
            for devices, group in FLEETS:
                before = counters.settled()
                folder = root / f"fleet{devices}{'g' if group else ''}"
                ota_s, per_device, sent = _ota(broker.url, data, devices, folder, pub, group)
                after = counters.settled()
                raw_s = _raw_copy(broker.url, data, devices)
                wire_in = after.get("received", 0) - before.get("received", 0)
                wire_out = after.get("sent", 0) - before.get("sent", 0)
                label = f"{devices} (one group)" if group else str(devices)
                rows.append(
                    (label, devices, ota_s, statistics.median(per_device), raw_s, sent, wire_in, wire_out)
                )
            counters.close()
        finally:
            broker.kill()
    size = len(data)
    lines = [
        f"Package: {size / 1e6:.2f} MB signed (a real 1024x1024 float32 model), 64 KiB chunks "
        f"({-(-size // 65536)} chunks), window 16 chunks per device, one local mosquitto, every simulated "
        "device in one Python process (its own MQTT connection, store and interpreter validation).",
        "",
        "| devices | all active (s) | median device (s) | raw copy baseline (s) | OTA / raw "
        "| chunk bytes sent / (devices x size) | broker in / size | broker out / (devices x size) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, devices, ota_s, median_s, raw_s, sent, wire_in, wire_out in rows:
        lines.append(
            f"| {label} | {ota_s:.2f} | {median_s:.2f} | {raw_s:.2f} | {ota_s / raw_s:.2f} | "
            f"{sent / (devices * size):.3f} | {wire_in / size:.2f} | {wire_out / (devices * size):.3f} |"
        )
    lines += [
        "",
        "OTA time covers offer -> chunk requests -> transfer -> sha256 + signature check -> "
        "interpreter load, smoke inference -> atomic activation -> retained `active` status. "
        "The raw copy moves the same bytes without any of that. "
        "Broker in/out include every MQTT header, request, status and PUBACK. Offered to a group, the chunks "
        "go once to the group's chunk topic (the broker fans them out), so the publisher uploads the package "
        "about once instead of once per device.",
    ]
    return "\n".join(lines)
