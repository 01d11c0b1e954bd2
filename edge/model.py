"""A loaded model: one interpreter, reused, with what is needed to feed it and read it.

Loading takes a model package or a bare ``.tflite`` (``edge.package.load_model_source``): the manifest,
when present, gives name, version, task, labels and mean/std. Tensor work is small pure functions
(``quantize``, ``dequantize``, ``to_input_tensor``) over numpy, per-channel aware.

Input values are always *pixels* (0..255 for images): the model gets ``(pixel - mean) / std``, quantized
with the input tensor's own scale and zero point. A uint8 model whose quantization undoes mean/std exactly
(scale * std == 1 and zero_point == mean) takes the pixels as they are: no float round trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edge.backends import Backend, get_backend
from edge.backends.edgetpu import EDGETPU_CUSTOM_OP, check_device, open_delegate
from edge.errors import BackendError, ConfigError, InputError, ModelError
from edge.model_defaults import (
    Choice,
    float_default_warning,
    guess_task,
    metadata_labels,
    metadata_threshold,
    parse_label_lines,
    resolve_labels,
    resolve_normalization,
    ssd_output_roles,
    standard_metadata,
    yolo_head,
)
from edge.package import LoadedModelSource, load_model_source
from edge.tasks import TASK_MODULES, Decoder, TaskContext, TaskResult, get_decoder
from edge.tflite_file import TFLiteFileInfo, read_tflite

if TYPE_CHECKING:
    from edge.manifest import Manifest
    from edge.preprocess import Geometry
    from edge.tflite_metadata import StandardMetadata

log = logging.getLogger(__name__)

CPU_DELEGATES = (None, "", "none", "cpu")
_warned_fallback: set[str] = set()


class TensorQuant(NamedTuple):
    """Affine quantization ``real = scale * (q - zero_point)``, per-tensor (one scale) or per-channel."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An interpreter tensor: index, name, shape, numpy dtype and quantization (None when float)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    quant: TensorQuant | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "quantization": None
            if self.quant is None
            else {
                "scale": list(self.quant.scale),
                "zero_point": list(self.quant.zero_point),
                "axis": self.quant.axis,
            },
        }


@dataclass(frozen=True, slots=True)
class InputSpec:
    """The model's image input: size, channels, layout and the normalization it expects."""

    tensor: TensorSpec
    height: int
    width: int
    channels: int
    layout: str  # "NHWC", "NCHW" or "other" (not an image: arrays only)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fast_uint8: bool
    # (a, b) of q = pixel * a + b for a per-tensor quantized integer input, derived once from the fields
    # above so the per-frame path does not rebuild it; None otherwise
    affine: tuple[np.ndarray, np.ndarray] | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", _fused_affine(self.tensor, self.mean, self.std))

    @property
    def is_image(self) -> bool:
        return self.layout in ("NHWC", "NCHW")


def _fused_affine(
    tensor: TensorSpec, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    quant = tensor.quant
    if quant is None or quant.per_channel or not np.issubdtype(tensor.dtype, np.integer):
        return None
    scaled_std = np.asarray(std, np.float32) * np.float32(quant.scale[0])
    a = np.float32(1.0) / scaled_std
    b = np.float32(quant.zero_point[0]) - np.asarray(mean, np.float32) / scaled_std
    return a, b


# ------------------------------------------------------------------------------------------ pure functions


def quant_of(details: dict[str, Any]) -> TensorQuant | None:
    """The quantization of an interpreter tensor detail dict, or None for float tensors."""
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), dtype=np.float64).ravel()
    zeros = np.asarray(params.get("zero_points", ()), dtype=np.int64).ravel()
    if scales.size == 0 or not np.any(scales != 0.0):
        scale, zero = details.get("quantization", (0.0, 0))
        if not scale:
            return None
        scales, zeros = np.array([scale]), np.array([zero])
    if zeros.size == 0:
        zeros = np.zeros_like(scales, dtype=np.int64)
    return TensorQuant(
        tuple(float(s) for s in scales),
        tuple(int(z) for z in zeros),
        int(params.get("quantized_dimension", 0)),
    )


def _broadcast(values: tuple[float, ...] | tuple[int, ...], axis: int, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 1:
        return array.reshape(())
    shape = [1] * ndim
    shape[axis] = array.size
    return array.reshape(shape)


def quantize(real: np.ndarray, quant: TensorQuant, dtype: np.dtype[Any] | type) -> np.ndarray:
    """Real values to ``dtype`` integers: ``round(real / scale) + zero_point``, saturated to the type."""
    real = np.asarray(real, dtype=np.float64)
    scale = _broadcast(quant.scale, quant.axis, real.ndim)
    zero = _broadcast(quant.zero_point, quant.axis, real.ndim)
    info = np.iinfo(dtype)
    return np.clip(np.rint(real / scale) + zero, info.min, info.max).astype(dtype)


def _dequant_params(quant: TensorQuant | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``dequantize``'s scale and zero point broadcast for an ``ndim`` tensor (ones and zeros when float)."""
    if quant is None:
        return np.ones(()), np.zeros(())
    return _broadcast(quant.scale, quant.axis, ndim), _broadcast(quant.zero_point, quant.axis, ndim)


def dequantize(values: np.ndarray, quant: TensorQuant | None) -> np.ndarray:
    """Integers back to float32 reals: ``scale * (q - zero_point)``; float tensors come back as float32."""
    if quant is None:
        return np.asarray(values, dtype=np.float32)
    scale = _broadcast(quant.scale, quant.axis, values.ndim)
    zero = _broadcast(quant.zero_point, quant.axis, values.ndim)
    return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def is_fast_uint8(
    dtype: np.dtype[Any], quant: TensorQuant | None, mean: Sequence[float], std: Sequence[float]
) -> bool:
    """True when uint8 pixels already are the quantized model input, within half a quantization step.

    ``q = (pixel - mean) / (std * scale) + zero_point`` is ``pixel`` when ``std * scale == 1`` and
    ``zero_point == mean``; a zero point off by at most 0.5 (127 for mean 127.5) is below the rounding error.
    """
    if dtype != np.uint8 or quant is None or quant.per_channel:
        return False
    scale, zero = quant.scale[0], quant.zero_point[0]
    return all(
        abs(scale * s - 1.0) < 1e-4 and abs(zero - m) <= 0.5 for m, s in zip(mean, std, strict=True)
    )


def to_input_tensor(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Pixels (H, W, C) or the exact tensor shape, with or without batch, to the model's input tensor."""
    tensor = spec.tensor
    array = np.asarray(pixels)
    if spec.layout == "NCHW" and array.ndim == 3 and array.shape[-1] == spec.channels:
        array = np.transpose(array, (2, 0, 1))
    if array.shape != tensor.shape:
        if (1,) + array.shape == tensor.shape:
            array = array.reshape(tensor.shape)
        else:
            raise InputError(
                f"input of shape {tuple(array.shape)} does not fit the model input {list(tensor.shape)}; "
                "pass an image or an array of that shape"
            )
    if spec.fast_uint8 and array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if spec.affine is not None:
        # one fused affine pass in float32: q = pixel * a + b
        a, b = spec.affine
        info = np.iinfo(tensor.dtype)
        fused = np.rint(array.astype(np.float32) * a + b)
        return np.clip(fused, info.min, info.max).astype(tensor.dtype)
    real: np.ndarray = array.astype(np.float32)
    if spec.mean and (any(spec.mean) or any(s != 1.0 for s in spec.std)):
        real = (real - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if tensor.quant is not None and np.issubdtype(tensor.dtype, np.integer):
        return quantize(real, tensor.quant, tensor.dtype)
    if np.issubdtype(tensor.dtype, np.integer):
        info = np.iinfo(tensor.dtype)
        return np.clip(np.rint(real), info.min, info.max).astype(tensor.dtype)
    return real.astype(tensor.dtype)


def _layout(shape: tuple[int, ...]) -> tuple[str, int, int, int]:
    """(layout, height, width, channels) of an input shape; 'other' when it is not an image."""
    if len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] > 4:
        return "NHWC", shape[1], shape[2], shape[3]
    if len(shape) == 4 and shape[1] in (1, 3) and shape[-1] > 4:
        return "NCHW", shape[2], shape[3], shape[1]
    if len(shape) == 3 and shape[1] > 4 and shape[2] > 4:
        return "NHWC", shape[1], shape[2], 1
    return "other", 0, 0, 0


def _per_channel(values: Sequence[float] | float | None, what: str) -> tuple[float, ...] | None:
    """A mean/std given as one number or a sequence, as floats; fitted to the channels by _fit_channels."""
    if values is None:
        return None
    items = (float(values),) if isinstance(values, int | float) else tuple(float(v) for v in values)
    if what == "std" and any(v == 0 for v in items):
        raise ConfigError(f"--std {list(items)} contains 0; std must be non-zero")
    return items


def _fit_channels(values: tuple[float, ...], channels: int, what: str) -> tuple[float, ...]:
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(
            f"--{what} has {len(values)} values {list(values)} but the model input has {channels} channels"
        )
    return values


def read_labels(labels: Sequence[str] | str | Path | None) -> tuple[str, ...] | None:
    """Labels given as a sequence or a labels file (one per line, or Coral's ``id label`` lines)."""
    if labels is None:
        return None
    if isinstance(labels, str | Path):
        try:
            text = Path(labels).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read labels file {labels}: {exc.strerror}; check the path") from exc
        return parse_label_lines(text.splitlines())
    return tuple(str(label) for label in labels)


# ------------------------------------------------------------------------------------------------ the model


class Model:
    """One interpreter with its tensors, labels and normalization. ``invoke`` is serialized by a lock.

    ``facts`` says where the task, the normalization and the labels came from (``edge inspect`` and
    ``describe()`` show it): the caller's options, the manifest, the standard metadata or a default.
    """

    def __init__(
        self,
        source: LoadedModelSource,
        interpreter: Any,
        backend: Backend,
        task: str,
        labels: tuple[str, ...],
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
        threads: int | None,
        accelerator: str | None,
        metadata: StandardMetadata | None = None,
        facts: dict[str, Choice] | None = None,
        score_threshold: float = 0.0,
    ) -> None:
        self.source = source
        self.path = source.path
        self.manifest: Manifest | None = source.manifest
        self.metadata = metadata
        self.name = self.manifest.name if self.manifest else source.path.stem
        self.version = self.manifest.version if self.manifest else 0
        self.task = task
        self.labels = labels
        self.backend_name = backend.name
        self.threads = threads
        self.accelerator = accelerator
        self.facts: dict[str, Choice] = dict(facts or {})
        self.score_threshold = score_threshold  # the model's own default (metadata), used when none is given
        self._interpreter = interpreter
        self._lock = threading.Lock()
        inputs = [_spec(d) for d in interpreter.get_input_details()]
        self.outputs = tuple(_spec(d) for d in interpreter.get_output_details())
        # (index, quant, scale, zero point) per output, built once: dequantizing is per frame
        self._readout = tuple(
            (o.index, o.quant, *_dequant_params(o.quant, len(o.shape))) for o in self.outputs
        )
        self.output_names = tuple(o.name for o in self.outputs)
        roles = ssd_output_roles(source.info, [o.index for o in self.outputs])
        self._decode_names = roles if roles and task == "detection" else self.output_names
        self._decoder: Decoder = get_decoder(task)
        if len(inputs) != 1:
            raise ModelError(f"{self.path} has {len(inputs)} inputs; this runtime runs models with one input")
        self.input = self._input_spec(inputs[0], mean, std)
        self.inputs = (self.input,)

    def _input_spec(
        self, tensor: TensorSpec, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
    ) -> InputSpec:
        """Normalization from the first that has it: the caller, the manifest, the metadata, the default."""
        layout, height, width, channels = _layout(tensor.shape)
        n = max(channels, 1)
        manifest_spec = self.manifest.inputs[0] if self.manifest and self.manifest.inputs else None
        stated = None
        if self.manifest is not None:
            stated = (
                _per_channel(manifest_spec.mean or None, "mean") or (),
                _per_channel(manifest_spec.std or None, "std") or (),
            ) if manifest_spec else ((), ())
        meta_norm = self.metadata.inputs[0].normalization if self.metadata and self.metadata.inputs else None
        quant = tensor.quant if tensor.quant and not tensor.quant.per_channel else None
        one_output = self.outputs[0].shape if len(self.outputs) == 1 else ()
        mean, std, choice = resolve_normalization(
            (mean, std),
            stated,
            (meta_norm.mean, meta_norm.std) if meta_norm else None,
            str(tensor.dtype),
            (quant.scale[0], quant.zero_point[0]) if quant else None,
            is_image=layout != "other",
            yolo=self.task == "detection" and yolo_head(one_output),
        )
        self.facts["normalization"] = choice
        if choice.source == "default" and np.issubdtype(tensor.dtype, np.floating) and layout != "other":
            log.warning(float_default_warning(self.path.name, mean[0], std[0]))
        mean = _fit_channels(mean, n, "mean")
        std = _fit_channels(std, n, "std")
        return InputSpec(
            tensor,
            height,
            width,
            channels,
            layout,
            mean,
            std,
            is_fast_uint8(tensor.dtype, tensor.quant, mean, std),
        )

    @property
    def preferred_resize(self) -> str:
        """How images fit this model unless told: letterbox for a YOLO-style head (Ultralytics trains so),
        stretch otherwise (classifiers; SSDs from the TF Object Detection API and AutoML: fixed-shape)."""
        one_output = self.outputs[0].shape if len(self.outputs) == 1 else ()
        return "letterbox" if self.task == "detection" and yolo_head(one_output) else "stretch"

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def invoke(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model on one input tensor; the raw output tensors (copies), in output order."""
        with self._lock:
            try:
                self._interpreter.set_tensor(self.input.tensor.index, tensor)
                self._interpreter.invoke()
            except ValueError as exc:
                raise InputError(f"the model refused the input ({_first_line(exc)})") from exc
            except RuntimeError as exc:
                raise ModelError(f"{self.path}: the interpreter failed ({_first_line(exc)})") from exc
            get = self._interpreter.get_tensor
            return [get(readout[0]) for readout in self._readout]

    def dequantized(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        """Raw outputs as float32 reals, each with its own scale/zero point (as ``dequantize``)."""
        out = []
        for value, (_, quant, scale, zero) in zip(raw, self._readout, strict=True):
            if quant is None or value.ndim != scale.ndim and scale.ndim:
                out.append(dequantize(value, quant))
            else:
                out.append(((value.astype(np.float64) - zero) * scale).astype(np.float32))
        return out

    def decode(
        self,
        outputs: list[np.ndarray],
        top_k: int = 5,
        threshold: float = 0.0,
        geometry: Geometry | None = None,
    ) -> TaskResult:
        """Dequantized outputs to the task's result (decoder resolved once, when the model loaded)."""
        context = TaskContext(
            output_names=self._decode_names,
            label=self.label,
            top_k=top_k,
            threshold=threshold if threshold > 0 else self.score_threshold,
            geometry=geometry,
            input_size=(self.input.width, self.input.height),
            num_labels=len(self.labels),
        )
        return self._decoder(outputs, context)

    def warmup(self) -> None:
        """One invoke on a zero input so the first real input does not pay for lazy initialization."""
        spec = self.input.tensor
        self.invoke(np.zeros(spec.shape, dtype=spec.dtype))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "path": str(self.path),
            "backend": self.backend_name,
            "threads": self.threads,
            "accelerator": self.accelerator,
            "labels": len(self.labels),
            "input": self.input.tensor.to_json(),
            "outputs": [o.to_json() for o in self.outputs],
            "fast_uint8": self.input.fast_uint8,
            "normalization": {"mean": list(self.input.mean), "std": list(self.input.std)},
            "facts": {key: _choice_json(choice) for key, choice in self.facts.items()},
        }

    def __repr__(self) -> str:
        return f"Model({self.name!r} v{self.version}, task={self.task}, backend={self.backend_name})"


def _choice_json(choice: Choice) -> dict[str, str]:
    return {"source": choice.source, "reason": choice.reason} if choice.reason else {"source": choice.source}


def _spec(details: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        index=int(details["index"]),
        name=str(details.get("name", "")),
        shape=tuple(int(d) for d in details["shape"]),
        dtype=np.dtype(details["dtype"]),
        quant=quant_of(details),
    )


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _custom_ops(info: TFLiteFileInfo) -> list[str]:
    return sorted({op.name for op in info.operators if op.custom})


def load_model(
    path: str | Path,
    backend: str = "auto",
    threads: int | None = None,
    task: str | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    delegate: str | None = None,
    device: str | None = None,
    require_accelerator: bool = False,
    labels: Sequence[str] | str | Path | None = None,
    warmup: bool = True,
    label_offset_override: int | None = None,
) -> Model:
    """Load a package or ``.tflite`` into a ready interpreter (warmed up unless ``warmup=False``).

    ``delegate``: None/``cpu`` for the CPU, ``edgetpu`` for the Coral (or a delegate library path).
    When the accelerator cannot be used the CPU model runs with one warning, or ``BackendError`` is raised
    with ``require_accelerator``. ``label_offset_override``: class id k is label k + offset (None: decided
    from the labels, ``edge.model_defaults.label_offset``).
    """
    if task is not None and task not in TASK_MODULES:
        raise ConfigError(f"task {task!r} is not known; choose one of: {', '.join(TASK_MODULES)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    chosen = get_backend(backend)
    source = load_model_source(path)
    model_bytes, info, accelerator, delegates = _choose_accelerator(
        source, chosen, delegate, device, require_accelerator
    )
    interpreter = _make_interpreter(chosen, source, model_bytes, info, threads, delegates)
    manifest = source.manifest
    metadata = standard_metadata(source)
    facts: dict[str, Choice] = {}
    shapes = [tuple(int(d) for d in o["shape"]) for o in interpreter.get_output_details()]  # allocated
    if task:
        resolved_task, facts["task"] = task, Choice("flags")
    elif manifest:
        resolved_task, facts["task"] = manifest.task, Choice("manifest")
    else:
        guess = guess_task(source.info, shapes)
        resolved_task, facts["task"] = guess.task, Choice("guessed", guess.reason)
    classes = shapes[0][-1] if len(shapes) == 1 and shapes[0] else None
    model_labels, facts["labels"] = resolve_labels(
        read_labels(labels),
        manifest.labels if manifest else None,
        metadata_labels(metadata),
        resolved_task,
        classes,
        source.info,
        label_offset_override,
    )
    model = Model(
        source,
        interpreter,
        chosen,
        resolved_task,
        model_labels,
        _per_channel(mean, "mean"),
        _per_channel(std, "std"),
        threads,
        accelerator,
        metadata=metadata,
        facts=facts,
        score_threshold=(manifest.score_threshold if manifest else None) or metadata_threshold(metadata),
    )
    if warmup:
        model.warmup()
    log.info("loaded %r from %s (%s)", model, source.path, accelerator or "cpu")
    return model


def _choose_accelerator(
    source: LoadedModelSource, backend: Backend, delegate: str | None, device: str | None, require: bool
) -> tuple[bytes, TFLiteFileInfo, str | None, list[Any]]:
    """(model bytes, their info, accelerator name or None, delegates) after trying the requested delegate."""
    device = check_device(device)
    edgetpu_bytes = source.package.edgetpu_model_bytes if source.package else None
    compiled_for_tpu = EDGETPU_CUSTOM_OP in _custom_ops(source.info)
    wants = (delegate or "").strip().lower()
    if wants in ("", "auto") and (edgetpu_bytes is not None or compiled_for_tpu or device):
        wants = "edgetpu"
    if wants in CPU_DELEGATES:
        if require:
            raise BackendError(
                "--require-accelerator was given but no accelerator (--delegate edgetpu) was asked for"
            )
        return source.model_bytes, source.info, None, []
    library = None if wants == "edgetpu" else delegate
    try:
        if wants == "edgetpu":
            opened = open_delegate(backend, device)
        else:
            opened = _open_library(backend, str(library))
    except BackendError as exc:
        if require or (compiled_for_tpu and edgetpu_bytes is None):
            if compiled_for_tpu and not require:
                raise BackendError(
                    f"{source.path} is compiled for the Edge TPU and has no CPU model; {exc}"
                ) from exc
            raise
        key = f"{source.path}:{wants}"
        if key not in _warned_fallback:
            _warned_fallback.add(key)
            log.warning("accelerator unavailable, running %s on the CPU: %s", source.path.name, exc)
        return source.model_bytes, source.info, None, []
    if wants == "edgetpu" and edgetpu_bytes is not None:
        return edgetpu_bytes, read_tflite(edgetpu_bytes, source=f"{source.path}:edgetpu"), "edgetpu", [opened]
    return source.model_bytes, source.info, wants if wants == "edgetpu" else str(library), [opened]


def _open_library(backend: Backend, library: str) -> Any:
    try:
        import ctypes  # only for a delegate library given by path

        ctypes.CDLL(library)  # fail before the interpreter's noisy cleanup of a half-made delegate
        return backend.load_delegate(library)
    except (ValueError, OSError, RuntimeError) as exc:
        raise BackendError(
            f"cannot load delegate library {library} ({_first_line(exc)}); check the path"
        ) from exc


def _make_interpreter(
    backend: Backend,
    source: LoadedModelSource,
    model_bytes: bytes,
    info: TFLiteFileInfo,
    threads: int | None,
    delegates: list[Any],
) -> Any:
    interpreter_class = backend.interpreter_class()
    kwargs: dict[str, Any] = {"model_content": model_bytes, "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    try:
        interpreter = interpreter_class(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        custom = [op for op in _custom_ops(info) if op != EDGETPU_CUSTOM_OP] or _custom_ops(info)
        if custom:
            raise ModelError(
                f"{source.path} needs custom op(s) {', '.join(custom)} that backend {backend.name!r} lacks; "
                "convert the model with builtin ops only (or use a runtime built with those ops)"
            ) from exc
        hint = ""
        if "Didn't find op" in str(exc):
            hint = "; the model needs newer operator versions than this backend has: use ai-edge-litert"
        raise ModelError(
            f"{source.path}: backend {backend.name!r} cannot load the model ({_first_line(exc)}){hint}"
        ) from exc
    return interpreter
