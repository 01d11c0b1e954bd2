"""The model manifest: everything a device needs to use a model correctly.

Written by ``edge convert`` into the package (``manifest.json``) and embedded in the ``.tflite``
metadata table under the name ``edge_manifest``. Schema documented in ``docs/package-format.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from edge.errors import PackageError

FORMAT = "edge-model-package"
FORMAT_VERSION = 1
TASKS = ("classification", "detection", "raw", "segmentation")
LAYOUTS = ("NHWC", "NCHW", "other")


@dataclass(frozen=True, slots=True)
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point); per-channel along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Quantization | None:
        if data is None:
            return None
        obj = _mapping(data, where)
        return cls(
            scale=tuple(float(s) for s in _list(obj, "scale", where)),
            zero_point=tuple(int(z) for z in _list(obj, "zero_point", where)),
            axis=int(obj.get("axis", 0)),
        )


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output tensor as the device sees it.

    ``mean``/``std`` apply to inputs only: the model expects ``(pixel - mean) / std`` with pixels in 0..255.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None = None
    layout: str = "other"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quantization": self.quantization.to_json() if self.quantization else None,
        }
        if self.mean or self.std or self.layout != "other":
            data.update(layout=self.layout, mean=list(self.mean), std=list(self.std))
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> TensorSpec:
        obj = _mapping(data, where)
        layout = str(obj.get("layout", "other"))
        if layout not in LAYOUTS:
            raise PackageError(f"manifest {where}.layout is {layout!r}; expected one of {', '.join(LAYOUTS)}")
        return cls(
            name=str(obj.get("name", "")),
            shape=tuple(int(d) for d in _list(obj, "shape", where)),
            dtype=_str(obj, "dtype", where),
            quantization=Quantization.from_json(obj.get("quantization"), f"{where}.quantization"),
            layout=layout,
            mean=tuple(float(m) for m in obj.get("mean", [])),
            std=tuple(float(s) for s in obj.get("std", [])),
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file inside the package and its digest."""

    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The self-description of a converted model."""

    name: str
    version: int
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] = ()
    mode: str = "float32"
    created_at: str = ""
    files: dict[str, FileEntry] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    converter: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    edgetpu: dict[str, Any] | None = None
    # What a third-party model says about itself (standard TFLite metadata: name, version, description,
    # author, license, as written there) and its default score threshold; written only when present.
    about: dict[str, Any] = field(default_factory=dict)
    score_threshold: float | None = None

    def with_files(self, files: dict[str, FileEntry]) -> Manifest:
        return replace(self, files=dict(files))

    def to_json(self, include_files: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "mode": self.mode,
            "created_at": self.created_at,
            "labels": list(self.labels),
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "source": self.source,
            "converter": self.converter,
            "report": self.report,
            "edgetpu": self.edgetpu,
        }
        if self.about:
            data["about"] = self.about
        if self.score_threshold is not None:
            data["score_threshold"] = self.score_threshold
        if include_files:
            data["files"] = {name: entry.to_json() for name, entry in sorted(self.files.items())}
        return data

    def to_bytes(self, include_files: bool = True) -> bytes:
        """Canonical JSON bytes (sorted keys): what a signature covers."""
        return json.dumps(self.to_json(include_files), sort_keys=True, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        obj = _mapping(data, "manifest")
        if obj.get("format") != FORMAT:
            raise PackageError(f"manifest format is {obj.get('format')!r}; expected {FORMAT!r}")
        fmt_version = obj.get("format_version")
        if not isinstance(fmt_version, int) or fmt_version > FORMAT_VERSION:
            raise PackageError(
                f"manifest format_version is {fmt_version!r}; this runtime reads up to {FORMAT_VERSION}, "
                "upgrade edge-runtime"
            )
        version = obj.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise PackageError(f"manifest version is {version!r}; expected a positive integer")
        task = _str(obj, "task", "manifest")
        if task not in TASKS:
            raise PackageError(f"manifest task is {task!r}; expected one of {', '.join(TASKS)}")
        files = {}
        for name, entry in _mapping(obj.get("files", {}), "manifest.files").items():
            entry_obj = _mapping(entry, f"manifest.files[{name!r}]")
            files[str(name)] = FileEntry(
                sha256=_str(entry_obj, "sha256", f"files[{name!r}]"), size=int(entry_obj.get("size", -1))
            )
        return cls(
            name=_str(obj, "name", "manifest"),
            version=version,
            task=task,
            inputs=tuple(
                TensorSpec.from_json(t, f"inputs[{i}]")
                for i, t in enumerate(_list(obj, "inputs", "manifest"))
            ),
            outputs=tuple(
                TensorSpec.from_json(t, f"outputs[{i}]")
                for i, t in enumerate(_list(obj, "outputs", "manifest"))
            ),
            labels=tuple(str(label) for label in obj.get("labels", [])),
            mode=str(obj.get("mode", "")),
            created_at=str(obj.get("created_at", "")),
            files=files,
            source=dict(obj.get("source") or {}),
            converter=dict(obj.get("converter") or {}),
            report=obj.get("report"),
            edgetpu=obj.get("edgetpu"),
            about=dict(obj.get("about") or {}),
            score_threshold=_threshold(obj.get("score_threshold")),
        )

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "manifest.json") -> Manifest:
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PackageError(f"{source} is not valid JSON ({exc}); the package is damaged") from exc
        return cls.from_json(parsed)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise PackageError(f"{where}.{key} must be a list, got {value!r}")
    return value


def _threshold(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise PackageError(f"manifest score_threshold is {value!r}; expected a number between 0 and 1")
    return float(value)


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PackageError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value
