"""Ed25519 keys and package signatures (no TensorFlow)."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import ConfigError
from edge.package import SIGNATURE_NAME, read_package_bytes
from edge.signing import (
    SignatureError,
    TrustStore,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
    sign_package,
)
from tests.edge.update_packages import make_package


@pytest.fixture
def package(assets) -> bytes:
    return make_package(assets.model("digits_int8"), 2)


def test_keygen_writes_private_key_readable_by_owner_only(tmp_path: Path) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    key, pub = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key_id(load_private_key(key).public_key()) == key_id(load_public_key(pub))
    # A second keygen must not overwrite an existing key silently.
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 2


def test_keygen_into_an_unwritable_place_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["keygen", "--out", str(blocker / "keys")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edge keygen: error: cannot write the key pair into") and str(blocker) in line
    assert "--out" in line


def test_signature_verifies_with_the_trusted_key(tmp_path: Path, package: bytes) -> None:
    key_path, pub_path = generate_keys(tmp_path)
    signed = read_package_bytes(sign_package(package, load_private_key(key_path)))
    trust = TrustStore.from_files([pub_path])
    assert trust.verify(signed.manifest_bytes, signed.signature) == key_id(load_public_key(pub_path))
    document = json.loads(signed.signature or b"")
    assert document["algorithm"] == "ed25519"


def test_key_rotation_trusts_several_keys(tmp_path: Path, package: bytes) -> None:
    old_key, old_pub = generate_keys(tmp_path / "old")
    new_key, new_pub = generate_keys(tmp_path / "new")
    trust = TrustStore.from_files([old_pub, new_pub])
    for key in (old_key, new_key):
        signed = read_package_bytes(sign_package(package, load_private_key(key)))
        trust.verify(signed.manifest_bytes, signed.signature)
    only_new = TrustStore.from_files([new_pub])
    signed_old = read_package_bytes(sign_package(package, load_private_key(old_key)))
    with pytest.raises(SignatureError, match="unknown key"):
        only_new.verify(signed_old.manifest_bytes, signed_old.signature)


def test_unsigned_and_bad_signatures_are_refused(tmp_path: Path, package: bytes) -> None:
    key_path, pub_path = generate_keys(tmp_path)
    trust = TrustStore.from_files([pub_path])
    unsigned = read_package_bytes(package)
    with pytest.raises(SignatureError, match="unsigned"):
        trust.verify(unsigned.manifest_bytes, unsigned.signature)
    signed = read_package_bytes(sign_package(package, load_private_key(key_path)))
    tampered_manifest = signed.manifest_bytes.replace(b'"version": 2', b'"version": 9')
    assert tampered_manifest != signed.manifest_bytes
    with pytest.raises(SignatureError, match="bad signature"):
        trust.verify(tampered_manifest, signed.signature)
    with pytest.raises(SignatureError, match="malformed"):
        trust.verify(signed.manifest_bytes, b"not json")


def test_signature_file_is_in_the_package(tmp_path: Path, package: bytes) -> None:
    key_path, _ = generate_keys(tmp_path)
    signed = sign_package(package, load_private_key(key_path))
    names = zipfile.ZipFile(io.BytesIO(signed)).namelist()
    assert SIGNATURE_NAME in names


def test_key_files_that_are_not_keys_are_clear_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_key(bogus)
    with pytest.raises(ConfigError, match="not found"):
        load_private_key(tmp_path / "missing.key")
