"""Every security rejection of issue 5 item 7, over a real broker: each is refused with a reason, and the
device keeps its old model active."""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_sync.publisher import Publisher, make_offer
from cloud_sync.update_protocol import Offer
from edge.package import read_package_bytes
from edge.store import ModelStore
from tests.cloud_sync.helpers import wait_for
from tests.cloud_sync.update_support import Keys, make_keys, publishing, start_device
from tests.edge.update_packages import make_package


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="module")
def model(assets) -> Path:
    return assets.model("digits_int8")


def rezip(
    package: bytes, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None
) -> bytes:
    """The package's zip with some members' bytes replaced or added, manifest untouched."""
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, (replace or {}).get(info.filename, source.read(info.filename)))
        for name, data in (add or {}).items():
            target.writestr(name, data)
    return out.getvalue()


def raw_offer(
    data: bytes, name: str, version: int, key_id: str, chunk_size: int = 64 * 1024, **changes
) -> Offer:
    """An offer for arbitrary bytes, as a hostile publisher would make it."""
    hashes = tuple(
        hashlib.sha256(data[i : i + chunk_size]).hexdigest() for i in range(0, len(data), chunk_size)
    )
    fields = dict(
        name=name,
        version=version,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk_size=chunk_size,
        chunk_sha256=hashes,
        signature="c2ln",
        key_id=key_id,
    )
    fields.update(changes)
    return Offer(**fields)


class OversizedChunks(Publisher):
    def chunk(self, index: int) -> bytes:
        return super().chunk(index) + b"\0" * 100


def key_id_of(keys: Keys) -> str:
    from edge.signing import key_id, load_public_key

    return key_id(load_public_key(keys.pub))


Case = Callable[[Path, Keys, Keys], tuple[bytes, Offer | None, type[Publisher]]]


def unsigned(model, keys, other):
    return make_package(model, 2), None, Publisher


def unsigned_with_forged_offer(model, keys, other):
    data = make_package(model, 2)
    return data, raw_offer(data, "digits", 2, key_id_of(keys)), Publisher


def unknown_key(model, keys, other):
    return other.sign(make_package(model, 2)), None, Publisher


def bad_signature(model, keys, other):
    signature = read_package_bytes(keys.sign(make_package(model, 3))).signature
    data = rezip(make_package(model, 2), add={"signature.json": signature or b""})
    return data, raw_offer(data, "digits", 2, key_id_of(keys)), Publisher


def tampered_file(model, keys, other):
    signed = keys.sign(make_package(model, 2))
    labels = b"\n".join(str(9 - d).encode() for d in range(10)) + b"\n"
    data = rezip(signed, replace={"labels.txt": labels})
    return data, raw_offer(data, "digits", 2, key_id_of(keys)), Publisher


def truncated_transfer(model, keys, other):
    data = keys.sign(make_package(model, 2))[:-500]
    return data, raw_offer(data, "digits", 2, key_id_of(keys)), Publisher


def oversized_chunks(model, keys, other):
    return keys.sign(make_package(model, 2)), None, OversizedChunks


def oversized_offer(model, keys, other):
    data = keys.sign(make_package(model, 2))
    return data, raw_offer(data, "digits", 2, key_id_of(keys), size=10**12, chunk_sha256=()), Publisher


def wrong_sha256(model, keys, other):
    data = keys.sign(make_package(model, 2))
    return (
        data,
        raw_offer(data, "digits", 2, key_id_of(keys), sha256=hashlib.sha256(b"x").hexdigest()),
        Publisher,
    )


def lower_version_than_offer_says(model, keys, other):
    data = keys.sign(make_package(model, 1))  # a replay of an old signed package, relabelled v9 in the offer
    return data, raw_offer(data, "digits", 9, key_id_of(keys)), Publisher


def equal_version(model, keys, other):
    return keys.sign(make_package(model, 1, labels=tuple("abcdefghij"))), None, Publisher


def path_escaping(model, keys, other):
    data = rezip(keys.sign(make_package(model, 2)), add={"../../evil.sh": b"rm -rf /"})
    return data, raw_offer(data, "digits", 2, key_id_of(keys)), Publisher


CASES: dict[str, tuple[Case, str]] = {
    "unsigned": (unsigned, "unsigned"),
    "unsigned_with_forged_offer": (unsigned_with_forged_offer, "unsigned"),
    "unknown_key": (unknown_key, "unknown key"),
    "bad_signature": (bad_signature, "bad signature"),
    "tampered_file": (tampered_file, "does not match its sha256"),
    "truncated_transfer": (truncated_transfer, "damaged or truncated|not a zip"),
    "oversized_chunks": (oversized_chunks, "oversized"),
    "oversized_offer": (oversized_offer, "over this device's limit"),
    "wrong_sha256": (wrong_sha256, "the offer said"),
    "lower_version_than_offer_says": (lower_version_than_offer_says, "the offer said 'digits' v9"),
    "equal_version": (equal_version, "not higher than 1"),
    "path_escaping": (path_escaping, "escaping the package"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rejected_with_reason_and_old_model_still_active(
    case, mosquitto_module, tmp_path, keys, other_keys, model
) -> None:
    make_case, reason = CASES[case]
    data, offer, publisher_class = make_case(model, keys, other_keys)
    state = tmp_path / "dev"
    old = keys.sign(make_package(model, 1))
    store = ModelStore(state)
    store.activate(store.install(old, read_package_bytes(old).manifest))
    device_id = f"dev-{case.replace('_', '-')}"
    device = start_device(mosquitto_module.url, state, device_id, [keys.pub], max_size=50 * 1024 * 1024)
    try:
        offer = offer or make_offer(data)
        with publishing(mosquitto_module.url, data, publisher_class, offer=offer) as publisher:
            publisher.offer_devices([device_id])
            assert not publisher.wait([device_id], time.monotonic() + 30)
            status = wait_for(
                lambda: device.agent.status.state == "rejected" and device.agent.status, what="reject"
            )
        assert re.search(reason, status.reason), status.reason
        assert device.store.active().version == 1
        assert device.activator.activated == []
        assert "\n" not in status.reason
        # The rejected offer is remembered: a re-delivered retained offer is not fetched again.
        assert device.store.outcome(offer.sha256)["state"] == "rejected"
    finally:
        device.close()


def test_a_package_the_store_cannot_write_is_rejected_and_a_new_push_retries_it(
    mosquitto_module, tmp_path, keys, model
) -> None:
    """install hits an OSError (here: ``versions`` is a file, not a folder): the offer is rejected with a
    one-line reason instead of staying ``validating``; once the disk is fixed, a new push installs it."""
    state = tmp_path / "dev"
    data = keys.sign(make_package(model, 2))
    device = start_device(mosquitto_module.url, state, "dev-unwritable", [keys.pub])
    versions = state / "models" / "versions"
    versions.parent.mkdir(parents=True, exist_ok=True)  # the store makes its folders on first write
    versions.write_bytes(b"not a folder")
    try:
        with publishing(mosquitto_module.url, data) as publisher:
            publisher.offer_devices(["dev-unwritable"])
            status = wait_for(
                lambda: device.agent.status.state == "rejected" and device.agent.status, what="reject"
            )
        assert "cannot write the package under" in status.reason and "--state-dir" in status.reason
        assert "\n" not in status.reason
        assert device.store.active() is None and device.activator.activated == []
        versions.unlink()
        versions.mkdir()
        with publishing(mosquitto_module.url, data) as publisher:
            publisher.offer_devices(["dev-unwritable"])
            wait_for(lambda: device.agent.status.state == "active", what="the new push installed")
        assert device.store.active().version == 2
    finally:
        device.close()


def test_an_offer_refused_for_the_size_limit_installs_once_the_limit_is_raised(
    mosquitto_module, tmp_path, keys, model
) -> None:
    """A refusal that depends only on this device's --max-model-size is not permanent: the same retained offer
    installs after a restart with a bigger limit (a re-delivery under the same limit is still not retried)."""
    state = tmp_path / "dev"
    data = keys.sign(make_package(model, 2))
    device = start_device(mosquitto_module.url, state, "dev-small", [keys.pub], max_size=len(data) - 1)
    with publishing(mosquitto_module.url, data) as publisher:
        try:
            publisher.offer_devices(["dev-small"])
            status = wait_for(
                lambda: device.agent.status.state == "rejected" and device.agent.status, what="reject"
            )
            assert "over this device's limit" in status.reason
            assert device.store.outcome(publisher.offer.sha256)["state"] == "rejected"
        finally:
            device.close()
        device = start_device(mosquitto_module.url, state, "dev-small", [keys.pub], max_size=len(data))
        try:
            # the status turns active as the store flips, just before the activator is called
            wait_for(lambda: device.agent.status.state == "active" and device.activator.activated,
                     what="installed under the new limit")
            assert device.store.active().version == 2
            assert [e.version for e in device.activator.activated] == [2]
        finally:
            device.close()
