"""Read the *standard* TFLite metadata without TensorFlow or tflite-support.

Models written by the TFLite Support metadata writers (TF Hub, Kaggle, MediaPipe Model Maker, Coral's zoo)
carry an entry named ``TFLITE_METADATA`` in the model's metadata table. Its buffer is a FlatBuffer of
``ModelMetadata`` (schema: tensorflow/tflite-support,
``tensorflow_lite_support/metadata/metadata_schema.fbs``, file identifier ``M001``; read here up to
schema 1.5: tensor groups, audio properties, file versions).
The associated files it names (labels, score calibration, ...) are appended to the ``.tflite`` file as a
ZIP archive, read with ``zipfile`` over the whole file.

``read_standard_metadata(data)`` returns a ``StandardMetadata`` (or ``None`` when the model has none):
the model's name, version, description, author and license, and per input and output tensor (in the
order of the main subgraph's inputs and outputs) its content (image color space, bounding box layout),
normalization, value range, score threshold and calibration and associated files; ``labels_for_output(i)``
gives an output's labels. Damaged metadata raises ``ModelError`` with one line naming the file; pass
``strict=False`` to get a warning instead (logged, and kept in ``StandardMetadata.problems``).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge.errors import ModelError
from edge.flatbuffer import FlatBufferReader
from edge.tflite_file import STANDARD_METADATA_NAME, read_metadata_entries

logger = logging.getLogger(__name__)

METADATA_NAME = STANDARD_METADATA_NAME
METADATA_IDENTIFIER = b"M001"

# Enums of metadata_schema.fbs, by code.
ASSOCIATED_FILE_TYPES = (
    "UNKNOWN",
    "DESCRIPTIONS",
    "TENSOR_AXIS_LABELS",
    "TENSOR_VALUE_LABELS",
    "TENSOR_AXIS_SCORE_CALIBRATION",
    "VOCABULARY",
    "SCANN_INDEX_FILE",
)
COLOR_SPACES = ("UNKNOWN", "RGB", "GRAYSCALE")
BOUNDING_BOX_TYPES = ("UNKNOWN", "BOUNDARIES", "UPPER_LEFT", "CENTER")
COORDINATE_TYPES = ("RATIO", "PIXEL")
SCORE_TRANSFORMATIONS = ("IDENTITY", "LOG", "INVERSE_LOGISTIC")
# Union members, by type code (0 is NONE).
_CONTENT_KINDS = ("", "feature", "image", "bounding_box", "audio")
_PROCESS_UNITS = (
    "",
    "NormalizationOptions",
    "ScoreCalibrationOptions",
    "ScoreThresholdingOptions",
    "BertTokenizerOptions",
    "SentencePieceTokenizerOptions",
    "RegexTokenizerOptions",
)

# Field slots (index in the vtable, declaration order; a union takes two: _type, then the value).
_MODEL_NAME, _MODEL_DESCRIPTION, _MODEL_VERSION, _MODEL_SUBGRAPHS = 0, 1, 2, 3
_MODEL_AUTHOR, _MODEL_LICENSE, _MODEL_FILES, _MODEL_MIN_PARSER = 4, 5, 6, 7
_SG_NAME, _SG_DESCRIPTION, _SG_INPUTS, _SG_OUTPUTS, _SG_FILES = 0, 1, 2, 3, 4
_SG_INPUT_UNITS, _SG_OUTPUT_UNITS, _SG_INPUT_GROUPS, _SG_OUTPUT_GROUPS = 5, 6, 7, 8
_TENSOR_NAME, _TENSOR_DESCRIPTION, _TENSOR_DIMENSION_NAMES, _TENSOR_CONTENT = 0, 1, 2, 3
_TENSOR_UNITS, _TENSOR_STATS, _TENSOR_FILES = 4, 5, 6
_FILE_NAME, _FILE_DESCRIPTION, _FILE_TYPE, _FILE_LOCALE, _FILE_VERSION = 0, 1, 2, 3, 4
_CONTENT_PROPERTIES, _CONTENT_RANGE = 0, 2  # 0: properties_type, 1: properties
_IMAGE_COLOR_SPACE, _IMAGE_DEFAULT_SIZE = 0, 1
_SIZE_WIDTH, _SIZE_HEIGHT = 0, 1
_BOX_INDEX, _BOX_TYPE, _BOX_COORDINATE_TYPE = 0, 1, 2
_AUDIO_SAMPLE_RATE, _AUDIO_CHANNELS = 0, 1
_RANGE_MIN, _RANGE_MAX = 0, 1
_UNIT_OPTIONS = 0  # 0: options_type, 1: options
_NORM_MEAN, _NORM_STD = 0, 1
_CALIBRATION_TRANSFORMATION, _CALIBRATION_DEFAULT_SCORE = 0, 1
_THRESHOLD_GLOBAL = 0
_STATS_MAX, _STATS_MIN = 0, 1
_GROUP_NAME, _GROUP_TENSOR_NAMES = 0, 1

# Associated files whose (small, text) contents are read from the zip; the others are only listed.
_TEXT_FILE_TYPES = frozenset(
    {"DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS", "TENSOR_AXIS_SCORE_CALIBRATION"}
)


@dataclass(frozen=True)
class AssociatedFile:
    """A file the metadata names; its contents are packed in the model's zip under ``name``."""

    name: str
    type: str  # one of ASSOCIATED_FILE_TYPES ("TENSOR_AXIS_LABELS", ...), or "TYPE_<code>" if newer
    description: str = ""
    locale: str = ""
    version: str = ""

    def to_json(self) -> dict[str, object]:
        return _compact(
            {
                "name": self.name,
                "type": self.type,
                "description": self.description,
                "locale": self.locale,
                "version": self.version,
            }
        )


@dataclass(frozen=True)
class ImageProperties:
    color_space: str  # "RGB", "GRAYSCALE" or "UNKNOWN"
    default_size: tuple[int, int] | None = None  # (width, height), for tensors of dynamic shape

    def to_json(self) -> dict[str, object]:
        return _compact({"color_space": self.color_space, "default_size": list(self.default_size or ())})


@dataclass(frozen=True)
class BoundingBoxProperties:
    """How an output's boxes are laid out: ``index`` gives the position of each of the type's four
    values (BOUNDARIES: left, top, right, bottom; UPPER_LEFT and CENTER: x, y, width, height); empty is
    the default order."""

    index: tuple[int, ...]
    type: str  # "BOUNDARIES", "UPPER_LEFT", "CENTER" or "UNKNOWN"
    coordinate_type: str  # "RATIO" (0..1) or "PIXEL"

    def to_json(self) -> dict[str, object]:
        return _compact(
            {"index": list(self.index), "type": self.type, "coordinate_type": self.coordinate_type}
        )


@dataclass(frozen=True)
class AudioProperties:
    sample_rate: int
    channels: int

    def to_json(self) -> dict[str, object]:
        return {"sample_rate": self.sample_rate, "channels": self.channels}


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` per channel (one value: all channels), applied before quantization."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Stats:
    """The tensor's value range per channel (one value: all channels)."""

    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()

    def to_json(self) -> dict[str, object]:
        return _compact({"min": list(self.min), "max": list(self.max)})


@dataclass(frozen=True)
class ScoreCalibration:
    """Sigmoid score calibration: ``f(x) = scale / (1 + exp(-(slope * g(x) + offset)))`` for ``x >
    min_score``, else ``default_score``; ``g`` is ``transformation``. ``parameters`` has one entry per
    class from the calibration file: ``(scale, slope, offset)`` or ``(scale, slope, offset, min_score)``,
    or ``None`` (an empty line: that class gets ``default_score``)."""

    transformation: str  # "IDENTITY", "LOG" or "INVERSE_LOGISTIC"
    default_score: float
    file: AssociatedFile | None = None
    parameters: tuple[tuple[float, ...] | None, ...] = ()

    def to_json(self) -> dict[str, object]:
        return _compact(
            {
                "transformation": self.transformation,
                "default_score": self.default_score,
                "file": self.file.name if self.file else "",
                "classes": len(self.parameters),
            }
        )


@dataclass(frozen=True)
class TensorGroup:
    """Tensors that belong together, by name (e.g. a detector's location, category, score outputs)."""

    name: str
    tensor_names: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "tensor_names": list(self.tensor_names)}


@dataclass(frozen=True)
class TensorMetadata:
    """The metadata of one input or output tensor."""

    name: str = ""
    description: str = ""
    dimension_names: tuple[str, ...] = ()
    content: str = ""  # "", "feature", "image", "bounding_box" or "audio"
    content_range: tuple[int, int] | None = None  # (min, max) dimensions the content spans; None: all
    image: ImageProperties | None = None
    bounding_box: BoundingBoxProperties | None = None
    audio: AudioProperties | None = None
    normalization: Normalization | None = None
    stats: Stats | None = None  # None: no Stats (or an empty one)
    score_threshold: float | None = None  # ScoreThresholdingOptions.global_score_threshold
    score_calibration: ScoreCalibration | None = None
    process_units: tuple[str, ...] = ()  # every process unit's kind, in order ("NormalizationOptions", ...)
    associated_files: tuple[AssociatedFile, ...] = ()

    def files_of_type(self, file_type: str) -> tuple[AssociatedFile, ...]:
        return tuple(f for f in self.associated_files if f.type == file_type)

    @property
    def label_files(self) -> tuple[AssociatedFile, ...]:
        """The TENSOR_AXIS_LABELS files (one per locale; the first is the default)."""
        return self.files_of_type("TENSOR_AXIS_LABELS")

    @property
    def value_label_files(self) -> tuple[AssociatedFile, ...]:
        """The TENSOR_VALUE_LABELS files (a tensor of class ids; one file per locale)."""
        return self.files_of_type("TENSOR_VALUE_LABELS")

    def to_json(self) -> dict[str, object]:
        content: dict[str, object] = {"type": self.content}
        for key, part in (("image", self.image), ("bounding_box", self.bounding_box), ("audio", self.audio)):
            if part is not None:
                content[key] = part.to_json()
        if self.content_range is not None:
            content["range"] = list(self.content_range)
        return _compact(
            {
                "name": self.name,
                "description": self.description,
                "dimension_names": list(self.dimension_names),
                "content": _compact(content),
                "normalization": self.normalization.to_json() if self.normalization else None,
                "stats": self.stats.to_json() if self.stats else None,
                "score_threshold": self.score_threshold,
                "score_calibration": self.score_calibration.to_json() if self.score_calibration else None,
                "process_units": list(self.process_units),
                "associated_files": [f.to_json() for f in self.associated_files],
            }
        )


@dataclass(frozen=True)
class StandardMetadata:
    """A model's standard TFLite metadata (its main subgraph), and the text files its zip packs.

    ``inputs`` and ``outputs`` follow the order of the model's inputs and outputs."""

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    min_parser_version: str = ""
    associated_files: tuple[AssociatedFile, ...] = ()  # the model's own (and its subgraph's)
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()
    input_tensor_groups: tuple[TensorGroup, ...] = ()
    output_tensor_groups: tuple[TensorGroup, ...] = ()  # detectors: the order of their outputs
    subgraph_name: str = ""
    subgraph_description: str = ""
    packed_files: tuple[str, ...] = ()  # every file name in the model's zip
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # contents of the text files
    problems: tuple[str, ...] = ()  # with strict=False: what was wrong with the packed files
    source: str = field(default="model", compare=False)

    def output_index(self, name: str) -> int | None:
        """The position of the output whose metadata is named ``name``, or ``None``."""
        return next((i for i, t in enumerate(self.outputs) if t.name == name), None)

    def labels_for_output(self, index: int = 0, locale: str | None = None) -> tuple[str, ...]:
        """The labels of output ``index`` from its first TENSOR_AXIS_LABELS file (the one of ``locale``
        when given and present); ``()`` when it has none."""
        if not 0 <= index < len(self.outputs):
            return ()
        return self._labels(self.outputs[index].label_files, locale)

    def value_labels_for_output(self, index: int = 0, locale: str | None = None) -> tuple[str, ...]:
        """Like ``labels_for_output`` for a TENSOR_VALUE_LABELS file (a detector's class-id output)."""
        if not 0 <= index < len(self.outputs):
            return ()
        return self._labels(self.outputs[index].value_label_files, locale)

    def _labels(self, candidates: tuple[AssociatedFile, ...], locale: str | None) -> tuple[str, ...]:
        readable = [f for f in candidates if f.name in self.files]  # all, unless strict=False lost some
        chosen = next((f for f in readable if locale and f.locale == locale), None)
        chosen = chosen or next(iter(readable), None)
        return _label_lines(self.files[chosen.name]) if chosen else ()

    def to_json(self) -> dict[str, object]:
        """A JSON-serializable summary for ``edge inspect``; empty values are left out."""
        outputs = []
        for i, tensor in enumerate(self.outputs):
            entry = tensor.to_json()
            labels = self.labels_for_output(i)
            if labels:
                entry["label_count"] = len(labels)
            outputs.append(entry)
        return _compact(
            {
                "name": self.name,
                "version": self.version,
                "description": self.description,
                "author": self.author,
                "license": self.license,
                "min_parser_version": self.min_parser_version,
                "subgraph_name": self.subgraph_name,
                "subgraph_description": self.subgraph_description,
                "associated_files": [f.to_json() for f in self.associated_files],
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": outputs,
                "input_tensor_groups": [g.to_json() for g in self.input_tensor_groups],
                "output_tensor_groups": [g.to_json() for g in self.output_tensor_groups],
                "packed_files": list(self.packed_files),
                "problems": list(self.problems),
            }
        )


def read_standard_metadata(
    data: bytes,
    source: str = "model",
    *,
    entries: Mapping[str, bytes] | None = None,
    strict: bool = True,
) -> StandardMetadata | None:
    """The standard TFLite metadata of the model in ``data``, or ``None`` when it has none.

    ``source`` names the model in messages. ``entries`` is the model's metadata table when the caller has
    already read it (``TFLiteFileInfo.metadata``); otherwise it is read from ``data``.
    Damaged metadata, or a damaged or incomplete zip of associated files, raises ``ModelError``. With
    ``strict=False`` that is a logged warning instead: damaged metadata gives ``None``, a bad zip gives the
    metadata without those files and the message in ``problems``. (``data`` that is not a TFLite model
    always raises.)"""
    if entries is None:
        entries = read_metadata_entries(data, source)
    buffer = entries.get(METADATA_NAME)
    if buffer is None:
        return None
    try:
        metadata = _parse(buffer, source)
    except ModelError as exc:
        if strict:
            raise
        logger.warning("%s", exc)
        return None
    files, packed, problems = _read_files(data, source, _all_files(metadata), strict)
    calibrated = tuple(_with_calibration(t, files, source, problems, strict) for t in metadata.outputs)
    return StandardMetadata(
        name=metadata.name,
        description=metadata.description,
        version=metadata.version,
        author=metadata.author,
        license=metadata.license,
        min_parser_version=metadata.min_parser_version,
        associated_files=metadata.associated_files,
        inputs=metadata.inputs,
        outputs=calibrated,
        input_tensor_groups=metadata.input_tensor_groups,
        output_tensor_groups=metadata.output_tensor_groups,
        subgraph_name=metadata.subgraph_name,
        subgraph_description=metadata.subgraph_description,
        packed_files=packed,
        files=files,
        problems=tuple(problems),
        source=source,
    )


def read_standard_metadata_file(path: str | Path, *, strict: bool = True) -> StandardMetadata | None:
    """``read_standard_metadata`` of a ``.tflite`` file on disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}; check the path") from exc
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    return read_standard_metadata(data, str(path), strict=strict)


# --- parsing the ModelMetadata FlatBuffer ---------------------------------------------------------------


def _parse(buffer: bytes, source: str) -> StandardMetadata:
    r = FlatBufferReader(buffer)
    if r.identifier() != METADATA_IDENTIFIER:
        found = r.identifier()
        raise ModelError(
            f"{source}: its {METADATA_NAME} entry is not TFLite metadata (identifier {found!r}, expected "
            f"{METADATA_IDENTIFIER!r}); re-add the metadata with the TFLite Support metadata writer"
        )
    try:
        return _model(r)
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelError(
            f"{source}: its standard TFLite metadata ({METADATA_NAME}) is damaged ({exc}); re-download the "
            "model or re-add the metadata with the TFLite Support metadata writer"
        ) from exc


def _model(r: FlatBufferReader) -> StandardMetadata:
    root = r.root()
    subgraphs = r.tables(root, _MODEL_SUBGRAPHS)
    main = subgraphs[0] if subgraphs else 0  # the main subgraph (0, no table: every field reads as absent)
    return StandardMetadata(
        name=r.string(root, _MODEL_NAME),
        description=r.string(root, _MODEL_DESCRIPTION),
        version=r.string(root, _MODEL_VERSION),
        author=r.string(root, _MODEL_AUTHOR),
        license=r.string(root, _MODEL_LICENSE),
        min_parser_version=r.string(root, _MODEL_MIN_PARSER),
        associated_files=_files(r, root, _MODEL_FILES) + _files(r, main, _SG_FILES),
        inputs=tuple(_tensor(r, t) for t in r.tables(main, _SG_INPUTS)),
        outputs=tuple(_tensor(r, t) for t in r.tables(main, _SG_OUTPUTS)),
        input_tensor_groups=_groups(r, main, _SG_INPUT_GROUPS),
        output_tensor_groups=_groups(r, main, _SG_OUTPUT_GROUPS),
        subgraph_name=r.string(main, _SG_NAME),
        subgraph_description=r.string(main, _SG_DESCRIPTION),
    )


def _tensor(r: FlatBufferReader, table: int) -> TensorMetadata:
    content, image, box, audio = "", None, None, None
    content_range = None
    content_table = r.table(table, _TENSOR_CONTENT)
    if content_table:
        kind, props = r.union(content_table, _CONTENT_PROPERTIES)
        content = _enum(_CONTENT_KINDS, kind) if kind else ""
        if content == "image":
            size_table = r.table(props, _IMAGE_DEFAULT_SIZE)
            size = (r.scalar(size_table, _SIZE_WIDTH, "I"), r.scalar(size_table, _SIZE_HEIGHT, "I"))
            image = ImageProperties(
                color_space=_enum(COLOR_SPACES, r.scalar(props, _IMAGE_COLOR_SPACE, "b")),
                default_size=size if size_table and any(size) else None,
            )
        elif content == "bounding_box":
            box = BoundingBoxProperties(
                index=tuple(int(i) for i in r.numbers(props, _BOX_INDEX, "I")),
                type=_enum(BOUNDING_BOX_TYPES, r.scalar(props, _BOX_TYPE, "b")),
                coordinate_type=_enum(COORDINATE_TYPES, r.scalar(props, _BOX_COORDINATE_TYPE, "b")),
            )
        elif content == "audio":
            audio = AudioProperties(
                sample_rate=r.scalar(props, _AUDIO_SAMPLE_RATE, "I"),
                channels=r.scalar(props, _AUDIO_CHANNELS, "I"),
            )
        range_table = r.table(content_table, _CONTENT_RANGE)
        if range_table:
            content_range = (r.scalar(range_table, _RANGE_MIN, "i"), r.scalar(range_table, _RANGE_MAX, "i"))
    normalization, threshold, calibration = None, None, None
    units = []
    for unit in r.tables(table, _TENSOR_UNITS):
        kind, options = r.union(unit, _UNIT_OPTIONS)
        if not kind:
            continue
        units.append(_enum(_PROCESS_UNITS, kind))
        if units[-1] == "NormalizationOptions" and normalization is None:
            normalization = Normalization(
                mean=_floats(r.numbers(options, _NORM_MEAN, "f")),
                std=_floats(r.numbers(options, _NORM_STD, "f")),
            )
        elif units[-1] == "ScoreThresholdingOptions" and threshold is None:
            threshold = _float32(r.float32(options, _THRESHOLD_GLOBAL))
        elif units[-1] == "ScoreCalibrationOptions" and calibration is None:
            transformation = r.scalar(options, _CALIBRATION_TRANSFORMATION, "b")
            calibration = ScoreCalibration(
                transformation=_enum(SCORE_TRANSFORMATIONS, transformation),
                default_score=_float32(r.float32(options, _CALIBRATION_DEFAULT_SCORE)),
            )
    stats_table = r.table(table, _TENSOR_STATS)
    low = _floats(r.numbers(stats_table, _STATS_MIN, "f"))
    high = _floats(r.numbers(stats_table, _STATS_MAX, "f"))
    return TensorMetadata(
        name=r.string(table, _TENSOR_NAME),
        description=r.string(table, _TENSOR_DESCRIPTION),
        dimension_names=r.strings(table, _TENSOR_DIMENSION_NAMES),
        content=content,
        content_range=content_range,
        image=image,
        bounding_box=box,
        audio=audio,
        normalization=normalization,
        stats=Stats(min=low, max=high) if low or high else None,
        score_threshold=threshold,
        score_calibration=calibration,
        process_units=tuple(units),
        associated_files=_files(r, table, _TENSOR_FILES),
    )


def _files(r: FlatBufferReader, table: int, slot: int) -> tuple[AssociatedFile, ...]:
    return tuple(
        AssociatedFile(
            name=r.string(t, _FILE_NAME),
            type=_enum(ASSOCIATED_FILE_TYPES, r.scalar(t, _FILE_TYPE, "b")),
            description=r.string(t, _FILE_DESCRIPTION),
            locale=r.string(t, _FILE_LOCALE),
            version=r.string(t, _FILE_VERSION),
        )
        for t in r.tables(table, slot)
    )


def _groups(r: FlatBufferReader, table: int, slot: int) -> tuple[TensorGroup, ...]:
    return tuple(
        TensorGroup(name=r.string(t, _GROUP_NAME), tensor_names=r.strings(t, _GROUP_TENSOR_NAMES))
        for t in r.tables(table, slot)
    )


def _enum(names: tuple[str, ...], code: int) -> str:
    return names[code] if 0 <= code < len(names) else f"TYPE_{code}"


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32 (0.1, not 0.10000000149011612)."""
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", short))[0] == value:
            return short
    return value


def _floats(values: tuple) -> tuple[float, ...]:
    return tuple(_float32(float(v)) for v in values)


# --- the associated files, zipped onto the end of the model ---------------------------------------------


def _all_files(metadata: StandardMetadata) -> tuple[AssociatedFile, ...]:
    files = list(metadata.associated_files)
    for tensor in (*metadata.inputs, *metadata.outputs):
        files.extend(tensor.associated_files)
    return tuple(files)


def _read_files(
    data: bytes, source: str, named: tuple[AssociatedFile, ...], strict: bool
) -> tuple[dict[str, bytes], tuple[str, ...], list[str]]:
    """(contents of the named text files, every packed name, problems) from the model's zip."""
    import zipfile  # not at import time: it pulls in bz2 and lzma

    problems: list[str] = []

    def problem(message: str) -> None:
        if strict:
            raise ModelError(message)
        logger.warning("%s", message)
        problems.append(message)

    wanted = sorted({f.name for f in named if f.type in _TEXT_FILE_TYPES and f.name})
    stream = io.BytesIO(data)
    if not zipfile.is_zipfile(stream):
        if named:
            names = ", ".join(sorted({_shown(f.name) for f in named}))
            problem(
                f"{source}: its metadata names associated files ({names}) "
                "but the model packs none (no zip archive at its end); re-download the model or re-add the "
                "metadata with the TFLite Support metadata writer"
            )
        return {}, (), problems
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(stream) as archive:
            packed = tuple(archive.namelist())
            missing = [name for name in wanted if name not in packed]
            if missing:
                listed = ", ".join(_shown(name) for name in packed) or "nothing"
                absent = ", ".join(_shown(name) for name in missing)
                problem(
                    f"{source}: its metadata names {absent} but the model's "
                    f"zip does not pack {'it' if len(missing) == 1 else 'them'} (it packs: {listed}); "
                    "re-add the metadata with the TFLite Support metadata writer"
                )
            for name in wanted:
                if name in packed:
                    files[name] = archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        problem(
            f"{source}: the zip of associated files (labels) packed in the model is damaged ({exc}); "
            "re-download the model"
        )
        return {}, (), problems
    return files, packed, problems


def _with_calibration(
    tensor: TensorMetadata, files: Mapping[str, bytes], source: str, problems: list[str], strict: bool
) -> TensorMetadata:
    """``tensor`` with its score calibration's file and per-class parameters filled in."""
    calibration = tensor.score_calibration
    if calibration is None:
        return tensor
    file = next(iter(tensor.files_of_type("TENSOR_AXIS_SCORE_CALIBRATION")), None)
    parameters: tuple[tuple[float, ...] | None, ...] = ()
    if file is not None and file.name in files:
        try:
            parameters = _calibration_parameters(files[file.name])
        except ValueError as exc:
            message = (
                f"{source}: the score calibration file {_shown(file.name)} of output "
                f"{_shown(tensor.name) or '?'} is not "
                f"valid ({exc}); re-add the metadata with the TFLite Support metadata writer"
            )
            if strict:
                raise ModelError(message) from exc
            logger.warning("%s", message)
            problems.append(message)
    filled = ScoreCalibration(calibration.transformation, calibration.default_score, file, parameters)
    return replace(tensor, score_calibration=filled)


def _calibration_parameters(content: bytes) -> tuple[tuple[float, ...] | None, ...]:
    rows: list[tuple[float, ...] | None] = []
    for number, line in enumerate(_label_lines(content), start=1):
        if not line.strip():
            rows.append(None)
            continue
        values = tuple(float(v) for v in line.split(","))
        if len(values) not in (3, 4):
            raise ValueError(f"line {number} has {len(values)} values, expected 3 or 4")
        rows.append(values)
    return tuple(rows)


def _label_lines(content: bytes) -> tuple[str, ...]:
    """One label per line, as the TFLite Task library reads them (a last empty line is dropped)."""
    lines = content.decode("utf-8-sig", errors="replace").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return tuple(line.removesuffix("\r") for line in lines)


def _shown(name: str, limit: int = 60) -> str:
    """A name from the file, safe in a one-line message (control characters escaped, long ones cut)."""
    shown = name if name.isprintable() else repr(name)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _compact(values: dict[str, object]) -> dict[str, object]:
    """``values`` without its empty entries (None, "", [], {})."""
    return {k: v for k, v in values.items() if v is not None and v != "" and v != [] and v != {}}
