"""Chunked, resumable model transfer over a real mosquitto: full update, broker SIGKILL, device SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.package import read_package
from tests.cloud_sync.helpers import wait_for
from tests.cloud_sync.update_support import make_keys, publishing, start_device, watching
from tests.edge.update_packages import make_package

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 4096


@pytest.fixture
def keys(tmp_path: Path):
    return make_keys(tmp_path / "keys")


@pytest.fixture
def package(assets, keys) -> bytes:
    return keys.sign(make_package(assets.model("digits_float32"), 2))


def staged_chunks(state_dir: Path) -> set[int]:
    staging = state_dir / "models" / "staging"  # made by the store on the first transfer
    folders = list(staging.iterdir()) if staging.is_dir() else []
    return {int(p.stem) for f in folders for p in f.glob("*.chunk")}


def test_full_update_activates_and_reports_retained_status(mosquitto, tmp_path, keys, package) -> None:
    device = start_device(mosquitto.url, tmp_path / "dev", "dev1", [keys.pub])
    try:
        with watching(mosquitto.url) as watcher, publishing(mosquitto.url, package) as publisher:
            publisher.offer_devices(["dev1"])
            ok = publisher.wait(["dev1"], time.monotonic() + 30)
            assert ok, publisher.rollout.devices["dev1"].detail
            wait_for(lambda: watcher.last("dev1") and watcher.last("dev1").healthy, what="healthy status")
            states = watcher.states("dev1")
        order = [states.index(s) for s in ("downloading", "verifying", "validating", "active")]
        assert order == sorted(order), states
        assert device.store.active().version == 2
        assert read_package(device.store.active_path()).manifest.version == 2
        assert [e.version for e in device.activator.activated] == [2]
        assert publisher.bytes_sent == len(package)  # every byte once: nothing fetched twice
    finally:
        device.close()
    # The status is retained: a newcomer sees it without the device publishing again.
    with watching(mosquitto.url) as late:
        status = wait_for(lambda: late.last("dev1"), what="retained status")
    assert status.state == "active" and status.version == 2 and status.active["version"] == 2


def test_transfer_survives_a_broker_sigkill_without_refetching_finished_chunks(
    mosquitto, tmp_path, keys, package
) -> None:
    state = tmp_path / "dev"
    device = start_device(mosquitto.url, state, "dev1", [keys.pub], retry_seconds=1.0)
    try:
        with publishing(mosquitto.url, package, chunk_size=CHUNK, rate=40_000) as publisher:
            publisher.offer_devices(["dev1"])
            total = publisher.offer.chunks
            wait_for(lambda: len(staged_chunks(state)) >= total // 3, what="a third of the chunks")
            mosquitto.kill()
            finished = staged_chunks(state)
            assert 0 < len(finished) < total
            time.sleep(1.0)
            mosquitto.start()
            assert publisher.wait(["dev1"], time.monotonic() + 60), publisher.rollout.devices["dev1"].detail
            served = publisher.served["dev1"]
        assert device.store.active().version == 2
        assert all(served[index] == 1 for index in finished), {i: served[i] for i in finished}
        assert set(served) == set(range(total))
    finally:
        device.close()


DEVICE_PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.cloud_sync.update_support import start_device
    url, state, trusted = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    device = start_device(url, state, "dev1", [trusted], retry_seconds=1.0)
    print("ready", flush=True)
    while True:
        time.sleep(1)
    """
)


def spawn_device(url: str, state: Path, pub: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DEVICE_PROCESS, url, str(state), str(pub)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_transfer_resumes_after_device_kill_9_without_refetching_finished_chunks(
    mosquitto, tmp_path, keys, package
) -> None:
    state = tmp_path / "dev"
    with publishing(mosquitto.url, package, chunk_size=CHUNK, rate=40_000) as publisher:
        publisher.offer_devices(["dev1"])
        total = publisher.offer.chunks
        proc = spawn_device(mosquitto.url, state, keys.pub)
        try:
            wait_for(lambda: len(staged_chunks(state)) >= total // 2, what="half of the chunks")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            finished = staged_chunks(state)
            assert 0 < len(finished) < total
            proc = spawn_device(mosquitto.url, state, keys.pub)
            assert publisher.wait(["dev1"], time.monotonic() + 60), publisher.rollout.devices["dev1"].detail
            served = publisher.served["dev1"]
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
    assert all(served[index] == 1 for index in finished), {i: served[i] for i in finished}
    assert set(served) == set(range(total))
    from edge.store import ModelStore

    assert ModelStore(state).active().version == 2


def test_offer_of_the_package_already_active_reports_active(mosquitto, tmp_path, keys, package) -> None:
    # As after a kill -9 between the pointer flip and the outcome record: the store has it active already.
    from edge.package import read_package_bytes
    from edge.store import ModelStore

    store = ModelStore(tmp_path / "dev")
    store.activate(store.install(package, read_package_bytes(package).manifest))
    device = start_device(mosquitto.url, tmp_path / "dev", "dev1", [keys.pub])
    try:
        with publishing(mosquitto.url, package) as publisher:
            publisher.offer_devices(["dev1"])
            assert publisher.wait(["dev1"], time.monotonic() + 30), publisher.rollout.devices["dev1"].detail
            assert publisher.bytes_sent == 0
    finally:
        device.close()


def test_offer_set_aside_for_a_higher_version_is_taken_when_that_one_is_rejected(
    mosquitto, tmp_path, keys, assets, package
) -> None:
    from edge.signing import key_id, load_public_key
    from tests.cloud_sync.test_update_rejections import raw_offer

    device = start_device(mosquitto.url, tmp_path / "dev", "dev1", [keys.pub], groups=("garage",))
    try:
        with publishing(mosquitto.url, package) as group_publisher:  # v2, for the group
            # v3 for the device alone: unsigned, its offer claiming a trusted key, so it is refused only once
            # downloaded; v2 arrives meanwhile and is set aside as the lower version.
            unsigned = make_package(assets.model("digits_int8"), 3)
            offer = raw_offer(unsigned, "digits", 3, key_id(load_public_key(keys.pub)), chunk_size=1024)
            with publishing(mosquitto.url, unsigned, offer=offer, rate=20_000) as device_publisher:
                device_publisher.offer_devices(["dev1"])
                wait_for(lambda: device.agent.status.state == "downloading", what="v3 downloading")
                group_publisher.offer_group("garage")
                assert not device_publisher.wait(["dev1"], time.monotonic() + 30)
                assert "unsigned" in device_publisher.rollout.devices["dev1"].detail
            wait_for(lambda: device.store.active() is not None, what="v2 from the group offer")
        assert device.store.active().version == 2
    finally:
        device.close()
