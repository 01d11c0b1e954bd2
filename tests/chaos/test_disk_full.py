"""Disk full on the state folder (issue 14), on a real small filesystem (tmpfs, else a loop ext4 image).

The outbox: results committed before the disk filled are kept and published; new ones are refused with one
log line and counted (``refused``), telemetry still goes out with ``outbox.disk_full: true``; once space
returns the outbox resumes by itself and the refused seqs are what a replay reports as missing (the
collector records them as lost). The model store: a package that does not fit is never half-installed nor
activatable, the active model stays, and a staged chunk that does not fit leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.connection import Message, MqttConnection, parse_broker_url
from cloud_sync.errors import OutboxError
from cloud_sync.messages import dumps
from cloud_sync.outbox import Outbox, read_stats
from cloud_sync.telemetry import build_telemetry
from edge.errors import ConfigError
from edge.manifest import Manifest, TensorSpec
from edge.package import build_package_bytes
from edge.store import ModelStore
from tests.chaos.smallfs import fill, small_fs

RESULTS, TELEMETRY = "edge/cam1/results", "edge/cam1/telemetry"


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class _Pipeline:
    model = None

    def stats(self) -> dict[str, Any]:
        return {}


def test_outbox_refuses_new_results_keeps_committed_and_resumes(
    tmp_path: Path, mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cloud_sync.outbox")
    state = tmp_path / "state"
    received: dict[str, list[dict[str, Any]]] = {RESULTS: [], TELEMETRY: []}
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        with lock:
            received[message.topic].append(json.loads(message.payload))

    settings = parse_broker_url(mosquitto.url)
    watcher = MqttConnection(settings, "watcher").start()
    watcher.subscribe("edge/cam1/#", on_message)
    device = MqttConnection(settings, "cam1").start()
    with small_fs(state, 2048) as kind:
        outbox = Outbox(state).start(device)
        seqs: list[int] = []

        def add(n: int) -> list[int]:
            added = []
            for _ in range(n):
                seq = outbox.reserve_seq()
                outbox.add(RESULTS, dumps({"seq": seq, "pad": "x" * 1500}), seq=seq)
                added.append(seq)
            seqs.extend(added)
            return added

        before = add(100)
        assert outbox.wait_drained(30)
        ballast = fill(state)
        queued: list[int] = []
        while not outbox.disk_full:  # the batch that hits the full disk stays queued for a retry
            queued += add(1)
            time.sleep(0.05)
            assert len(queued) < 200, "the outbox never noticed the full disk"
        refused = add(30)
        assert outbox.stats().refused == 30 and outbox.stats().disk_full
        telemetry = build_telemetry(device="cam1", started=time.monotonic(), pipeline=_Pipeline(),
                                    outbox=outbox.stats(), bad_payloads=0)
        outbox.add(TELEMETRY, dumps(telemetry), kind="telemetry")
        _wait(lambda: received[TELEMETRY], 10, "telemetry sent while the disk is full")
        assert received[TELEMETRY][-1]["outbox"]["disk_full"] is True
        assert received[TELEMETRY][-1]["outbox"]["refused"] == 30

        ballast.unlink()  # space returns: nothing else is done, the outbox resumes by itself
        _wait(lambda: not outbox.disk_full, 15, "the outbox to resume")
        after = add(50)
        assert outbox.wait_drained(30)
        _, missing = outbox.replay(1, seqs[-1])
        outbox.close()
        stats = read_stats(state)
    device.close()
    _wait(lambda: len(received[RESULTS]) >= len(seqs) - len(refused), 10, "every result")
    watcher.close()
    got = sorted({m["seq"] for m in received[RESULTS]})
    assert got == sorted(before + queued + after), kind  # nothing committed or queued lost, none refused sent
    assert missing == refused  # what the replay reply's 'missing' tells the collector: recorded as lost
    assert stats.refused == 30 and stats.pending == 0
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    resumed = [r for r in caplog.records if "writing resumed" in r.getMessage()]
    assert len(full) == 1 and "Free space there" in full[0].getMessage() and full[0].levelno == logging.ERROR
    assert len(resumed) == 1 and "30 new result(s) refused" in resumed[0].getMessage()


def test_an_outbox_opened_on_a_full_disk_says_so(tmp_path: Path) -> None:
    """A device restarted while its disk is full cannot open SQLite's WAL files: one line says why and what
    to do (not 'disk I/O error; check --state-dir is a writable folder'); what it held is still there."""
    state = tmp_path / "state"
    with small_fs(state, 1024):
        outbox = Outbox(state).start(None)
        for _ in range(20):
            outbox.add(RESULTS, b"{}", seq=outbox.reserve_seq())
        outbox.close()
        ballast = fill(state)
        with pytest.raises(OutboxError, match=r"the disk holding it is full \(\d+ bytes free.*bigger disk"):
            Outbox(state)
        ballast.unlink()
        reopened = Outbox(state)
        assert reopened.stats().pending == 20
        reopened.close()


MANIFEST = Manifest(name="tiny", version=1, task="classification",
                    inputs=(TensorSpec("in", (1, 8, 8, 1), "float32"),),
                    outputs=(TensorSpec("out", (1, 3), "float32"),))


def _package(version: int, size: int) -> tuple[bytes, Manifest]:
    manifest = Manifest(**{**{f: getattr(MANIFEST, f) for f in MANIFEST.__slots__}, "version": version})
    data = build_package_bytes(manifest, {"model.tflite": b"TFL3" + os.urandom(size)})
    return data, manifest


@pytest.mark.parametrize("fs", [("tmpfs",), ("ext4",)])
def test_model_store_never_activates_a_package_that_did_not_fit(tmp_path: Path, fs: tuple[str, ...]) -> None:
    state = tmp_path / "state"
    with small_fs(state, 1024, fs):
        store = ModelStore(state)
        v1 = store.install(*_package(1, 20_000))
        store.activate(v1)
        staging = store.staging("c" * 64, ["0" * 64])
        ballast = fill(state)
        big, manifest = _package(2, 300_000)
        with pytest.raises(OSError) as err:
            store.install(big, manifest)
        assert err.value.errno == 28  # ENOSPC
        versions = sorted(p.name for p in (state / "models" / "versions").iterdir())
        assert versions == [v1.file]  # no temp file, no half package
        with pytest.raises(ConfigError, match="missing; install the package"):
            store.activate(_entry_like(v1, big))
        assert store.active().sha256 == v1.sha256  # type: ignore[union-attr]
        chunk = os.urandom(200_000)
        staging.hashes[0] = hashlib.sha256(chunk).hexdigest()
        with pytest.raises(OSError):
            staging.write(0, chunk)
        assert list(staging.folder.iterdir()) == []  # the half-written chunk was removed
        ballast.unlink()
        v2 = store.install(big, manifest)
        store.activate(v2)
        assert store.active().version == 2  # type: ignore[union-attr]


def _entry_like(v1: Any, package: bytes) -> Any:
    """The entry install() would have made for ``package`` (it failed: there is no such file)."""
    from dataclasses import replace

    from edge.package import sha256_hex

    sha = sha256_hex(package)
    return replace(v1, version=2, sha256=sha, file=f"v2-{sha[:16]}.edgepkg", size=len(package))


def test_model_store_refuses_a_truncated_package_file(tmp_path: Path) -> None:
    """A package file cut short behind the store's back (a full disk under another writer, a bad card) is
    refused at activation instead of being made active."""
    store = ModelStore(tmp_path / "state")
    entry = store.install(*_package(1, 5000))
    path = store.path_of(entry)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="damaged .*push the model again"):
        store.activate(entry)
    assert store.active() is None
