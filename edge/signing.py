"""Ed25519 signing of model packages, and the device's trust in public keys.

The signature covers ``manifest.json``'s exact bytes; the manifest holds the sha256 and size of every other
file, so one signature protects the whole package. It is stored in the package as ``signature.json``::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

``key_id`` is the start of the sha256 of the raw public key: it names which trusted key to check against,
so a device may trust several keys at once (key rotation). Keys are PEM files: ``signing.key`` (PKCS#8,
mode 0600) and ``signing.pub`` (SubjectPublicKeyInfo).

Lives in ``edge`` (not ``converter``) because both the device (verify) and ``cloud_sync``'s publisher (sign)
need it, and ``cloud_sync`` may not import ``converter``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import ConfigError, PackageError
from edge.fsutil import atomic_write_bytes
from edge.package import read_package_bytes, with_signature

ALGORITHM = "ed25519"
PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"


class SignatureError(PackageError):
    """A package that is unsigned, signed by an untrusted key, or whose signature does not verify."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir``; returns (private key path, public key path)."""
    out = Path(out_dir)
    key_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    if not overwrite and (key_path.exists() or pub_path.exists()):
        raise ConfigError(f"{key_path} or {pub_path} already exists; choose another --out or pass --force")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(key_path, private_pem, mode=0o600)
        atomic_write_bytes(pub_path, public_pem(private.public_key()))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the key pair into {out}: {exc.strerror or exc}; pass a writable folder as --out"
        ) from exc
    return key_path, pub_path


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key written by ``edge keygen``."""
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key ({exc}); make one with 'edge keygen'"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; make one with 'edge keygen'"
        )
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key (``signing.pub``)."""
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a PEM public key ({exc}); pass the signing.pub from 'edge keygen'"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"{path} holds a {type(key).__name__}, not an Ed25519 key; pass an 'edge keygen' key"
        )
    return key


def sign_manifest(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``signature.json`` bytes for a manifest."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"


def sign_package(package_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The package with ``signature.json`` over its manifest (replacing any earlier signature)."""
    package = read_package_bytes(package_bytes)  # read and verified once, then re-zipped with the signature
    return with_signature(package, sign_manifest(package.manifest_bytes, private_key))


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The public keys a device accepts signatures from, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> TrustStore:
        keys = {}
        for path in paths:
            key = load_public_key(path)
            keys[key_id(key)] = key
        return cls(keys)

    def verify(self, manifest_bytes: bytes, signature: bytes | None) -> str:
        """Check ``signature`` (``signature.json`` bytes) over the manifest. Returns the key id.

        Raises SignatureError naming the reason: unsigned, unknown key, malformed or bad signature.
        """
        if signature is None:
            raise SignatureError(
                "package is unsigned; sign it with 'edge push-model --key' (or add signature.json)"
            )
        try:
            document = json.loads(signature.decode("utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            algorithm, kid = document.get("algorithm"), document.get("key_id")
            raw = base64.b64decode(str(document.get("signature", "")), validate=True)
        except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
            raise SignatureError(f"signature.json is malformed ({exc}); sign the package again") from exc
        if algorithm != ALGORITHM:
            raise SignatureError(f"signature algorithm is {algorithm!r}; only {ALGORITHM!r} is accepted")
        key = self.keys.get(str(kid))
        if key is None:
            raise SignatureError(
                f"package is signed by unknown key {kid!r}; add its public key with --trust "
                f"(trusted: {', '.join(sorted(self.keys)) or 'none'})"
            )
        try:
            key.verify(raw, manifest_bytes)
        except InvalidSignature as exc:
            raise SignatureError(
                f"bad signature by key {kid}: the manifest was changed after signing; refusing the package"
            ) from exc
        return str(kid)


def _read_key_file(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file not found: {path}; check the path or run 'edge keygen'") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc
