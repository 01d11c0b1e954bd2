"""Updates into a running pipeline (real interpreter, real broker): hot swap under load with zero failed
inferences, validation rejections with the old model still serving, and an automatic rollback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.activation import PipelineActivator
from edge.health import HealthPolicy
from edge.model import load_model
from edge.package import read_package_bytes
from edge.pipeline import Pipeline
from edge.store import ModelStore
from tests.cloud_sync.helpers import wait_for
from tests.cloud_sync.update_support import make_keys, publishing, start_device
from tests.edge.update_packages import make_package


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory) -> Path:  # needs TensorFlow (the main environment)
    """A digits-shaped model that is fine on a zero input (smoke test) and gives NaN on real images."""
    import tensorflow as tf

    weights = tf.constant(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 1), tf.float32)])
    def model(x):
        flat = tf.reshape(x, (1, 64))
        # log(0.5 - mean(pixels)): finite for zeros, NaN for any real digit (mean pixel far above 0.5)
        return tf.matmul(flat, weights) + tf.math.log(0.5 - tf.reduce_mean(flat, axis=1, keepdims=True))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    path = tmp_path_factory.mktemp("nan") / "nan.tflite"
    path.write_bytes(converter.convert())
    return path


class Device:
    """A pipeline serving the store's active model, under constant load, with the update agent."""

    def __init__(self, url: str, state: Path, keys, first: bytes, device_id: str) -> None:
        store = ModelStore(state)
        store.activate(store.install(first, read_package_bytes(first).manifest))
        self.pipeline = Pipeline(load_model(store.active_path()))
        activator = PipelineActivator(self.pipeline, store, policy=HealthPolicy(inferences=15, seconds=60))
        self.device = start_device(url, state, device_id, [keys.pub], activator=activator)
        self.results: list = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self, images: list[Path]) -> None:
        def loop() -> None:
            i = 0
            while not self._stop.is_set():
                self.results.append(self.pipeline.infer(images[i % len(images)]))
                i += 1
                time.sleep(0.002)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.device.close()


@pytest.fixture
def images(assets) -> list[Path]:
    return sorted(assets.digit_images.glob("*.png"))[:10]


def test_hot_swap_under_load_has_zero_failed_inferences(mosquitto, tmp_path, keys, assets, images) -> None:
    v1 = keys.sign(make_package(assets.model("digits_float32"), 1))
    v2 = keys.sign(make_package(assets.model("digits_int8"), 2))
    dev = Device(mosquitto.url, tmp_path / "dev", keys, v1, "dev1")
    try:
        dev.load(images)
        wait_for(lambda: len(dev.results) > 20, what="inferences on v1")
        with publishing(mosquitto.url, v2) as publisher:
            publisher.offer_devices(["dev1"])
            assert publisher.wait(["dev1"], time.monotonic() + 60), publisher.rollout.devices["dev1"].detail
        count = len(dev.results)
        wait_for(lambda: len(dev.results) > count + 20, what="inferences on v2")
    finally:
        dev.close()
    results = list(dev.results)
    assert [r.error for r in results if r.error] == []
    versions = [r.model_version for r in results]
    switch = versions.index(2)
    assert set(versions[:switch]) == {1} and set(versions[switch:]) == {2}  # one clean switch, never back
    labels = {r.input: r.result.classes[0].label for r in results if r.model_version == 2}
    assert sum(Path(name).stem.endswith(f"_{label}") for name, label in labels.items()) >= len(labels) * 0.8
    assert dev.device.store.active().version == 2


def test_a_model_that_fails_validation_is_rejected_and_the_old_one_keeps_serving(
    mosquitto, tmp_path, keys, assets, images
) -> None:
    v1 = keys.sign(make_package(assets.model("digits_float32"), 1))
    model = assets.model("digits_int8")
    x, _ = assets.eval_set()
    wrong_golden = (x[:1].astype(np.float32), np.full((1, 10), 0, dtype=np.int8))
    bad = {
        "does not load": keys.sign(make_package(model, 2, extra={"model.tflite": b"TFL3" + b"\0" * 200})),
        "task is 'detection'": keys.sign(make_package(assets.model("ssd"), 3, task="detection")),
        "incompatible tensors": keys.sign(make_package(assets.model("yolo"), 4, labels=("a", "b"))),
        "golden output mismatch": keys.sign(make_package(model, 5, golden=wrong_golden)),
    }
    dev = Device(mosquitto.url, tmp_path / "dev", keys, v1, "dev1")
    try:
        dev.load(images)
        for reason, package in bad.items():
            with publishing(mosquitto.url, package) as publisher:
                publisher.offer_devices(["dev1"])
                assert not publisher.wait(["dev1"], time.monotonic() + 60)
                status = publisher.rollout.devices["dev1"].status
            assert status.state == "rejected" and reason in status.reason, status.reason
            assert dev.pipeline.model.version == 1
        count = len(dev.results)
        wait_for(lambda: len(dev.results) > count + 5, what="more inferences")
    finally:
        dev.close()
    assert all(r.error is None and r.model_version == 1 for r in dev.results)
    assert dev.device.store.active().version == 1


@pytest.mark.tf
def test_automatic_rollback_when_the_new_model_gives_nan(
    mosquitto, tmp_path, keys, assets, images, nan_model
) -> None:
    v1 = keys.sign(make_package(assets.model("digits_float32"), 1))
    v2 = keys.sign(make_package(nan_model, 2))
    dev = Device(mosquitto.url, tmp_path / "dev", keys, v1, "dev1")
    try:
        dev.load(images)
        with publishing(mosquitto.url, v2) as publisher:
            publisher.offer_devices(["dev1"])
            assert not publisher.wait(["dev1"], time.monotonic() + 60)
            status = publisher.rollout.devices["dev1"].status
        assert status.state == "rolled_back" and "NaN" in status.reason, status
        assert status.active["version"] == 1
        wait_for(lambda: dev.pipeline.model.version == 1, what="v1 serving again")
        count = len(dev.results)
        wait_for(lambda: len(dev.results) > count + 5, what="inferences after the rollback")
    finally:
        dev.close()
    assert dev.device.store.active().version == 1
    assert dev.results[-1].model_version == 1 and dev.results[-1].error is None
    # The rolled back version is not fetched again from the retained offer, and is below the floor now.
    assert dev.device.store.outcome(publisher.offer.sha256)["state"] == "rolled_back"
    assert dev.device.store.floor("digits") == 2
