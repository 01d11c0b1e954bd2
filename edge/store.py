"""The on-device model store in ``--state-dir``: staged transfers, installed versions, the active pointer.

Layout (``<state-dir>/models/``)::

    active.json                 the pointer: active entry, previous entries (newest first), version floors
    versions/v<N>-<sha16>.edgepkg   verified packages; the active one and up to ``keep`` previous ones
    staging/<sha256>/<index>.chunk  chunks of a transfer in progress, each checked against its sha256
    outcomes/<sha256>.json      how an offer ended (active, rejected, rolled_back; failed: a local fault such
                                as a full disk, retried on a new push) so it is not tried again

Activation writes the package file durably first, then flips ``active.json`` with temp + fsync + rename, then
prunes files no longer referenced: a ``kill -9`` at any point leaves the old or the new model active, never
neither. Anti-rollback: a version must be higher than the highest version of that model ever activated here.
File names come from the package's sha256, never from anything a package says about itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, PackageError
from edge.fsutil import atomic_write_bytes
from edge.manifest import Manifest
from edge.package import SHA256_HEX, sha256_hex

log = logging.getLogger(__name__)

KEEP_PREVIOUS = 2


class DowngradeError(PackageError):
    """A package whose version is not higher than what the device already ran (anti-rollback)."""


@dataclass(frozen=True, slots=True)
class StoreEntry:
    """One installed model version."""

    name: str
    version: int
    sha256: str
    file: str
    size: int
    activated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreEntry:
        entry = cls(
            name=str(data["name"]),
            version=int(data["version"]),
            sha256=str(data["sha256"]),
            file=str(data["file"]),
            size=int(data["size"]),
            activated_at=float(data.get("activated_at", 0.0)),
        )
        if not SHA256_HEX.match(entry.sha256) or "/" in entry.file or entry.file.startswith("."):
            raise ValueError(f"bad store entry {data!r}")
        return entry


class ModelStore:
    """Installed model versions and the active pointer under ``<state_dir>/models``. Thread-safe."""

    def __init__(self, state_dir: str | Path, keep: int = KEEP_PREVIOUS) -> None:
        self.root = Path(state_dir) / "models"
        self.keep = keep
        self._lock = threading.RLock()
        # Folders are made on the first write only: asking an empty store (edge run without MODEL on a wrong
        # --state-dir) leaves nothing behind. A path that can never hold the store is refused now.
        existing = next(p for p in (self.root, *self.root.parents) if p.exists() or p == p.parent)
        if existing.exists() and not existing.is_dir():
            raise ConfigError(
                f"cannot create the model store in {self.root}: {existing} is a file; check --state-dir"
            )

    # -- the pointer ------------------------------------------------------------------------------------

    @property
    def pointer_path(self) -> Path:
        return self.root / "active.json"

    def _read_pointer(self) -> dict[str, Any]:
        try:
            data = json.loads(self.pointer_path.read_bytes())
            active = StoreEntry.from_json(data["active"]) if data.get("active") else None
            previous = [StoreEntry.from_json(p) for p in data.get("previous", [])]
            floors = {str(k): int(v) for k, v in dict(data.get("floors", {})).items()}
        except FileNotFoundError:
            return {"active": None, "previous": [], "floors": {}}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.pointer_path} is damaged ({exc}); remove it to start the store again"
            ) from exc
        return {"active": active, "previous": previous, "floors": floors}

    def _write_pointer(
        self, active: StoreEntry | None, previous: list[StoreEntry], floors: dict[str, int]
    ) -> None:
        document = {
            "active": active.to_json() if active else None,
            "previous": [p.to_json() for p in previous],
            "floors": floors,
        }
        atomic_write_bytes(self.pointer_path, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")

    def active(self) -> StoreEntry | None:
        """The active version, or None when nothing was ever activated."""
        with self._lock:
            return self._read_pointer()["active"]

    def previous(self) -> list[StoreEntry]:
        """Earlier versions kept for rollback, newest first."""
        with self._lock:
            return list(self._read_pointer()["previous"])

    def path_of(self, entry: StoreEntry) -> Path:
        return self.root / "versions" / entry.file

    def active_path(self) -> Path | None:
        entry = self.active()
        return self.path_of(entry) if entry else None

    def floor(self, name: str) -> int:
        """The highest version of model ``name`` ever activated here (0 when none)."""
        with self._lock:
            return int(self._read_pointer()["floors"].get(name, 0))

    def check_version(self, manifest: Manifest) -> None:
        """Anti-rollback: refuse a version not higher than the active one or any version activated before."""
        with self._lock:
            pointer = self._read_pointer()
        active: StoreEntry | None = pointer["active"]
        floor = max(int(pointer["floors"].get(manifest.name, 0)), active.version if active else 0)
        if manifest.version <= floor:
            raise DowngradeError(
                f"version {manifest.version} of {manifest.name!r} is not higher than {floor} "
                "(active or activated before); publish the model with a higher version"
            )

    # -- installing and activating -----------------------------------------------------------------------

    def install(self, package_bytes: bytes, manifest: Manifest) -> StoreEntry:
        """Write a verified package into ``versions/`` durably; it is not active yet."""
        sha = sha256_hex(package_bytes)
        entry = StoreEntry(
            manifest.name,
            manifest.version,
            sha,
            f"v{manifest.version}-{sha[:16]}.edgepkg",
            len(package_bytes),
        )
        path = self.path_of(entry)
        with self._lock:
            if not (path.exists() and path.stat().st_size == len(package_bytes)):
                atomic_write_bytes(path, package_bytes)
        return entry

    def activate(self, entry: StoreEntry) -> StoreEntry | None:
        """Make ``entry`` active (one atomic rename); returns the entry it replaced."""
        with self._lock:
            path = self.path_of(entry)
            if not path.is_file():
                raise ConfigError(f"{path} is missing; install the package before activating it")
            if entry.size and path.stat().st_size != entry.size:
                raise ConfigError(
                    f"{path} is {path.stat().st_size} bytes, not the {entry.size} installed; it is damaged "
                    "(a full disk?): push the model again"
                )
            pointer = self._read_pointer()
            old: StoreEntry | None = pointer["active"]
            previous = [p for p in pointer["previous"] if p.sha256 != entry.sha256]
            if old is not None and old.sha256 != entry.sha256:
                previous.insert(0, old)
            floors = dict(pointer["floors"])
            floors[entry.name] = max(floors.get(entry.name, 0), entry.version)
            new = StoreEntry(entry.name, entry.version, entry.sha256, entry.file, entry.size, time.time())
            self._write_pointer(new, previous[: self.keep], floors)
            self._prune()
            log.info("activated %s v%d (%s)", entry.name, entry.version, entry.file)
            return old

    def rollback(self) -> StoreEntry | None:
        """Make the newest previous version active again and drop the current one; returns the new active
        (None when there was no previous version: the model given on the command line serves again)."""
        with self._lock:
            pointer = self._read_pointer()
            previous: list[StoreEntry] = pointer["previous"]
            target = previous[0] if previous else None
            self._write_pointer(target, previous[1:], pointer["floors"])
            self._prune()
            log.warning(
                "rolled back to %s", f"{target.name} v{target.version}" if target else "no stored model"
            )
            return target

    def discard(self, entry: StoreEntry) -> None:
        """Remove an installed version that never became active (active and kept ones stay)."""
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        pointer = self._read_pointer()
        keep = {e.file for e in ([pointer["active"]] if pointer["active"] else []) + pointer["previous"]}
        for path in _entries(self.root / "versions"):
            if path.name not in keep and not path.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- outcomes of offers ------------------------------------------------------------------------------

    def record_outcome(
        self,
        sha256: str,
        state: str,
        name: str,
        version: int,
        reason: str = "",
        offer_at: float = 0.0,
        max_size: int | None = None,
    ) -> None:
        """Remember how the offer of package ``sha256`` (published at ``offer_at``) ended, so the same
        retained offer is not tried again; ``max_size``: the device's size limit a refusal depended on."""
        _check_sha(sha256)
        document: dict[str, Any] = {
            "state": state,
            "name": name,
            "version": version,
            "reason": reason,
            "at": time.time(),
            "offer_at": offer_at,
        }
        if max_size is not None:
            document["max_size"] = max_size
        atomic_write_bytes(self.root / "outcomes" / f"{sha256}.json", json.dumps(document).encode())

    def outcome(self, sha256: str) -> dict[str, Any] | None:
        _check_sha(sha256)
        try:
            data = json.loads((self.root / "outcomes" / f"{sha256}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save_status(self, status: dict[str, Any]) -> None:
        """Keep the last final update status, so a restarted device reports it again."""
        atomic_write_bytes(self.root / "status.json", json.dumps(status).encode())

    def load_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "status.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- staging transfers -------------------------------------------------------------------------------

    def staging(self, sha256: str, chunk_hashes: list[str]) -> Staging:
        """The chunk staging area of package ``sha256``; other transfers in progress are discarded."""
        _check_sha(sha256)
        with self._lock:
            for other in _entries(self.root / "staging"):
                if other.name != sha256:
                    shutil.rmtree(other, ignore_errors=True)
            return Staging(self.root / "staging" / sha256, chunk_hashes)

    def staging_discard(self, sha256: str) -> None:
        _check_sha(sha256)
        shutil.rmtree(self.root / "staging" / sha256, ignore_errors=True)


class Staging:
    """Chunks of one transfer on disk. Each chunk is checked against its sha256 when written and when
    found again after a restart, so a resumed transfer fetches only what is missing or damaged."""

    def __init__(self, folder: Path, chunk_hashes: list[str]) -> None:
        self.folder = folder
        self.hashes = list(chunk_hashes)
        folder.mkdir(parents=True, exist_ok=True)
        self._have: set[int] = set()
        for path in folder.glob("*.chunk"):
            index = int(path.stem) if path.stem.isdigit() else -1
            if 0 <= index < len(self.hashes) and sha256_hex(path.read_bytes()) == self.hashes[index]:
                self._have.add(index)
            else:
                path.unlink(missing_ok=True)
        self.resumed = len(self._have)

    @property
    def count(self) -> int:
        return len(self.hashes)

    def have(self, index: int) -> bool:
        return index in self._have

    def done(self) -> int:
        return len(self._have)

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self._have]

    def complete(self) -> bool:
        return len(self._have) == self.count

    def write(self, index: int, data: bytes) -> bool:
        """Store chunk ``index`` if its sha256 matches; False (and nothing stored) when it does not."""
        if not 0 <= index < self.count or sha256_hex(data) != self.hashes[index]:
            return False
        if index in self._have:
            return True
        tmp = self.folder / f".{index}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.folder / f"{index}.chunk")  # a kill -9 leaves the whole chunk or none
        except OSError:  # disk full: no half chunk left taking the space
            tmp.unlink(missing_ok=True)
            raise
        self._have.add(index)
        return True

    def assemble(self) -> bytes:
        """The whole transfer; every chunk is read back and checked again."""
        parts = []
        for index in range(self.count):
            data = (self.folder / f"{index}.chunk").read_bytes()
            if sha256_hex(data) != self.hashes[index]:
                self._have.discard(index)
                raise PackageError(f"staged chunk {index} changed on disk; it will be fetched again")
            parts.append(data)
        return b"".join(parts)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds; nothing when it was never made."""
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def _check_sha(value: str) -> None:
    if not SHA256_HEX.match(value):
        raise PackageError(f"{value!r} is not a sha256 hex digest")
