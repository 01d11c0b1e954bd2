"""Closing the update agent right after the store flips must not lose the activation's outcome.

``edge run`` with an empty store closes its first-model agent as soon as a model is active; the health
verdict arrives a moment later. The retained status must still end as active and healthy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from edge.store import StoreEntry
from tests.cloud_sync.update_support import PackageActivator, make_keys, publishing, start_device
from tests.edge.update_packages import make_package


class LateVerdictActivator(PackageActivator):
    """Reports healthy from another thread a little after activation, as a health window does."""

    def activate(
        self,
        candidate: Any,
        entry: StoreEntry,
        on_unhealthy: Callable[[str], None],
        on_healthy: Callable[[], None],
    ) -> None:
        self.activated.append(entry)
        threading.Timer(2.0, on_healthy).start()


def wait_until_active(device: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while device.store.active_path() is None:
        assert time.monotonic() < deadline, device.agent.status
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("settle", "healthy"),
    [
        (10.0, True),  # close(settle=): the late verdict is handled and published
        (0.0, None),  # the contrast that shows the test can fail: without settling, nothing waits
    ],
)
def test_close_settles_a_late_healthy_verdict(mosquitto, tmp_path, assets, settle, healthy):
    keys = make_keys(tmp_path / "keys")
    package = keys.sign(make_package(assets.model("digits_float32"), 1))
    device = start_device(
        mosquitto.url, tmp_path / "state", "dev-a", [keys.pub], activator=LateVerdictActivator()
    )
    try:
        with publishing(mosquitto.url, package) as publisher:
            publisher.offer_devices(["dev-a"])
            wait_until_active(device)
            device.agent.close(settle=settle)
        assert device.agent.status.state == "active" and device.agent.status.healthy is healthy
    finally:
        device.close()
