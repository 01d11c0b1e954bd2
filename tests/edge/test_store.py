"""The on-device model store: install, atomic activation, keep 2, rollback, anti-rollback, chunk staging.

No TensorFlow here (the models come from the cached assets).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.package import read_package, read_package_bytes
from edge.store import DowngradeError, ModelStore
from tests.edge.update_packages import make_package

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def packages(assets) -> dict[int, bytes]:
    return {v: make_package(assets.model("digits_int8"), v) for v in range(1, 6)}


def install_and_activate(store: ModelStore, data: bytes):
    entry = store.install(data, read_package_bytes(data).manifest)
    store.activate(entry)
    return entry


def test_empty_store_has_no_active_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.active() is None and store.active_path() is None and store.previous() == []


def test_asking_a_fresh_store_leaves_the_folder_untouched(tmp_path: Path, packages) -> None:
    """``edge run`` without MODEL on a wrong --state-dir only asks: no ``models/`` folders are left behind;
    they are made on the first write."""
    state = tmp_path / "typo"
    store = ModelStore(state)
    assert store.active_path() is None and store.floor("digits") == 0
    assert store.outcome("0" * 64) is None and store.load_status() is None
    store.staging_discard("0" * 64)
    assert not state.exists()
    install_and_activate(store, packages[1])  # the first write makes the folders
    assert ModelStore(state).active().version == 1


def test_a_state_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"state is a file; check --state-dir"):
        ModelStore(tmp_path / "state" / "deeper")


def test_activation_keeps_two_previous_versions(tmp_path: Path, packages: dict[int, bytes]) -> None:
    store = ModelStore(tmp_path)
    for version in range(1, 6):
        install_and_activate(store, packages[version])
    assert store.active().version == 5
    assert [e.version for e in store.previous()] == [4, 3]
    files = sorted(p.name for p in (tmp_path / "models" / "versions").iterdir())
    assert len(files) == 3 and all(f.startswith(("v5-", "v4-", "v3-")) for f in files)
    assert read_package(store.active_path()).manifest.version == 5


def test_rollback_returns_to_the_previous_version_and_keeps_the_floor(tmp_path: Path, packages) -> None:
    store = ModelStore(tmp_path)
    install_and_activate(store, packages[1])
    install_and_activate(store, packages[2])
    assert store.rollback().version == 1
    assert store.active().version == 1
    assert store.floor("digits") == 2
    with pytest.raises(DowngradeError, match="not higher than 2"):
        store.check_version(read_package_bytes(packages[2]).manifest)
    store.check_version(read_package_bytes(packages[3]).manifest)


def test_anti_rollback_refuses_lower_and_equal_versions(tmp_path: Path, packages) -> None:
    store = ModelStore(tmp_path)
    install_and_activate(store, packages[3])
    for version in (1, 3):
        with pytest.raises(DowngradeError, match=f"version {version} of 'digits' is not higher than 3"):
            store.check_version(read_package_bytes(packages[version]).manifest)


def test_outcomes_and_status_survive_a_new_store_object(tmp_path: Path) -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    ModelStore(tmp_path).record_outcome(sha, "rejected", "digits", 4, "bad signature")
    ModelStore(tmp_path).save_status({"state": "rejected"})
    again = ModelStore(tmp_path)
    assert again.outcome(sha)["reason"] == "bad signature"
    assert again.load_status() == {"state": "rejected"}


def test_staging_resumes_only_missing_chunks_and_drops_damaged_ones(tmp_path: Path, packages) -> None:
    data = packages[2]
    size = 4096
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    hashes = [hashlib.sha256(c).hexdigest() for c in chunks]
    sha = hashlib.sha256(data).hexdigest()
    staging = ModelStore(tmp_path).staging(sha, hashes)
    assert not staging.write(0, chunks[0][:-1])  # truncated chunk refused
    for index in range(0, len(chunks), 2):
        assert staging.write(index, chunks[index])
    # Damage one staged chunk on disk, as a power cut might.
    (staging.folder / "2.chunk").write_bytes(b"garbage")
    resumed = ModelStore(tmp_path).staging(sha, hashes)
    expected_missing = [i for i in range(len(chunks)) if i % 2 == 1 or i == 2]
    assert resumed.missing() == expected_missing
    for index in resumed.missing():
        resumed.write(index, chunks[index])
    assert resumed.assemble() == data
    # Starting another transfer discards this one.
    ModelStore(tmp_path).staging(hashlib.sha256(b"other").hexdigest(), hashes[:1])
    assert not resumed.folder.exists()


ACTIVATE_FOREVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edge.package import read_package_bytes
    from edge.store import ModelStore
    store = ModelStore(sys.argv[1])
    packages = [Path(p).read_bytes() for p in sys.argv[2:]]
    print("ready", flush=True)
    while True:
        for data in packages:
            store.activate(store.install(data, read_package_bytes(data).manifest))
    """
)


def test_kill_9_during_activation_leaves_old_or_new_active(tmp_path: Path, packages) -> None:
    store_dir = tmp_path / "state"
    install_and_activate(ModelStore(store_dir), packages[1])
    files = []
    for version in (2, 3):
        path = tmp_path / f"v{version}.edgepkg"
        path.write_bytes(packages[version])
        files.append(str(path))
    rng = random.Random(5)
    seen = set()
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", ACTIVATE_FOREVER, str(store_dir), *files], cwd=ROOT, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = ModelStore(store_dir)
        active = store.active()
        assert active is not None
        package = read_package(store.active_path())  # the file is there and every digest checks
        assert package.manifest.version == active.version
        seen.add(active.version)
    assert seen <= {1, 2, 3}
