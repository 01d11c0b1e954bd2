"""Standard TFLite metadata (``TFLITE_METADATA`` + the zip of associated files), read without TensorFlow.

The models are built here, at test time: the ``ModelMetadata`` FlatBuffer and a small TFLite model
carrying it are written with the ``flatbuffers`` package's own ``Builder`` (an implementation independent
of our reader) from a transcription of the two schemas, and the associated files are appended with
``zipfile`` in append mode, as tflite-support's ``MetadataPopulator`` does. (The field slots were also
checked once, field by field, against models written by tflite-support 0.4.4's metadata writers.) One test
does the same to a real converted model and runs it.
"""

from __future__ import annotations

import io
import json
import logging
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flatbuffers  # writes the test models' metadata (every test environment installs it)
import pytest

from edge.errors import ModelError
from edge.tflite_file import MANIFEST_METADATA_NAME, read_metadata_entries, read_tflite
from edge.tflite_metadata import (
    METADATA_NAME,
    StandardMetadata,
    read_standard_metadata,
    read_standard_metadata_file,
)

# Transcription of the two schemas: each table's fields in declaration order (slot = position), as
# name:kind. kind: s string, t table (or vector of tables, or a union's value), b/B/i/I/Q/f a scalar
# (byte, ubyte, int, uint, ulong, float), [x] a vector of x. A union is its `_type` (B) then its value (t).
METADATA_SCHEMA = {  # tensorflow_lite_support/metadata/metadata_schema.fbs (1.5.0)
    "ModelMetadata": "name:s description:s version:s subgraph_metadata:t author:s license:s "
    "associated_files:t min_parser_version:s",
    "SubGraphMetadata": "name:s description:s input_tensor_metadata:t output_tensor_metadata:t "
    "associated_files:t input_process_units:t output_process_units:t input_tensor_groups:t "
    "output_tensor_groups:t custom_metadata:t",
    "TensorMetadata": "name:s description:s dimension_names:[s] content:t process_units:t stats:t "
    "associated_files:t",
    "AssociatedFile": "name:s description:s type:b locale:s version:s",
    "Content": "content_properties_type:B content_properties:t range:t",
    "FeatureProperties": "",
    "ImageProperties": "color_space:b default_size:t",
    "ImageSize": "width:I height:I",
    "BoundingBoxProperties": "index:[I] type:b coordinate_type:b",
    "AudioProperties": "sample_rate:I channels:I",
    "ValueRange": "min:i max:i",
    "ProcessUnit": "options_type:B options:t",
    "NormalizationOptions": "mean:[f] std:[f]",
    "ScoreCalibrationOptions": "score_transformation:b default_score:f",
    "ScoreThresholdingOptions": "global_score_threshold:f",
    "BertTokenizerOptions": "vocab_file:t",
    "Stats": "max:[f] min:[f]",
    "TensorGroup": "name:s tensor_names:[s]",
}
TFLITE_SCHEMA = {  # tensorflow/lite/schema/schema.fbs
    "Model": "version:I operator_codes:t subgraphs:t description:s buffers:t metadata_buffer:[i] metadata:t",
    "SubGraph": "tensors:t inputs:[i] outputs:[i] operators:t name:s",
    "Tensor": "shape:[i] type:b buffer:I name:s quantization:t is_variable:B sparsity:t shape_signature:[i]",
    "Buffer": "data:[B] offset:Q size:Q",
    "Metadata": "name:s buffer:I",
}
SCHEMAS = {**METADATA_SCHEMA, **TFLITE_SCHEMA}
# Enum and union codes used below.
DESCRIPTIONS, AXIS_LABELS, VALUE_LABELS, SCORE_CALIBRATION, VOCABULARY = 1, 2, 3, 4, 5
FEATURE, IMAGE, BOUNDING_BOX, AUDIO = 1, 2, 3, 4  # ContentProperties
NORMALIZATION, CALIBRATION, THRESHOLDING, BERT = 1, 2, 3, 4  # ProcessUnitOptions
RGB, GRAYSCALE = 1, 2
BOUNDARIES, UPPER_LEFT, CENTER = 1, 2, 3
RATIO, PIXEL = 0, 1
LOG, INVERSE_LOGISTIC = 1, 2
UINT8, FLOAT32 = 3, 0

_PREPEND = {"b": "Int8", "B": "Uint8", "i": "Int32", "I": "Uint32", "Q": "Uint64", "f": "Float32"}
_SIZE = {"b": 1, "B": 1, "i": 4, "I": 4, "Q": 8, "f": 4}


class T:
    """A table to write: its type name (a key of SCHEMAS) and some of its fields."""

    def __init__(self, table: str, **values: Any) -> None:
        fields = [f.split(":") for f in SCHEMAS[table].split()]
        unknown = set(values) - {name for name, _ in fields}
        assert not unknown, f"{table} has no field {unknown}"
        self.table, self.fields, self.values = table, fields, values


def build(b: Any, node: T) -> int:
    """Write ``node`` (children first, as FlatBuffers builds bottom-up); return its offset."""
    offsets: dict[int, int] = {}
    for slot, (name, kind) in enumerate(node.fields):
        if name not in node.values:
            continue
        value = node.values[name]
        if kind == "s":
            offsets[slot] = b.CreateString(value)
        elif kind == "t" and isinstance(value, list):
            offsets[slot] = _offset_vector(b, [build(b, v) for v in value])
        elif kind == "t":
            offsets[slot] = build(b, value)
        elif kind == "[s]":
            offsets[slot] = _offset_vector(b, [b.CreateString(v) for v in value])
        elif kind == "[B]":
            offsets[slot] = b.CreateByteVector(bytes(value))
        elif kind.startswith("["):
            code = kind[1]
            b.StartVector(_SIZE[code], len(value), _SIZE[code])
            for v in reversed(value):
                getattr(b, "Prepend" + _PREPEND[code])(v)
            offsets[slot] = b.EndVector()
    b.StartObject(len(node.fields))
    for slot, (name, kind) in enumerate(node.fields):
        if slot in offsets:
            b.PrependUOffsetTRelativeSlot(slot, offsets[slot], 0)
        elif name in node.values:  # a scalar: written even when it equals the default
            getattr(b, f"Prepend{_PREPEND[kind]}Slot")(slot, node.values[name], None)
    return int(b.EndObject())


def _offset_vector(b: Any, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return int(b.EndVector())


def finish(root: T, identifier: bytes) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(build(b, root), file_identifier=identifier)
    return bytes(b.Output())


def metadata_buffer(root: T) -> bytes:
    return finish(root, b"M001")


def tflite_model(metadata: Mapping[str, bytes] | None = None) -> bytes:
    """A small TFLite model (parsed, never run): a uint8 image input and four detector-like outputs."""
    tensors = [
        T("Tensor", shape=[1, 8, 8, 3], type=UINT8, buffer=0, name="image"),
        T("Tensor", shape=[1, 10], type=FLOAT32, buffer=0, name="probability"),
        T("Tensor", shape=[1, 10, 4], type=FLOAT32, buffer=0, name="location"),
        T("Tensor", shape=[1, 10], type=FLOAT32, buffer=0, name="category"),
        T("Tensor", shape=[1, 10], type=FLOAT32, buffer=0, name="score"),
    ]
    buffers = [T("Buffer")]
    entries = []
    for name, payload in (metadata or {}).items():
        buffers.append(T("Buffer", data=payload))
        entries.append(T("Metadata", name=name, buffer=len(buffers) - 1))
    subgraph = T("SubGraph", tensors=tensors, inputs=[0], outputs=[1, 2, 3, 4], name="main")
    return finish(T("Model", version=3, subgraphs=[subgraph], buffers=buffers, metadata=entries), b"TFL3")


def with_files(model: bytes, files: Mapping[str, str | bytes]) -> bytes:
    """``model`` with ``files`` appended as a zip, the way tflite-support's populator appends them."""
    stream = io.BytesIO(model)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return stream.getvalue()


def file(name: str, kind: int, **values: Any) -> T:
    return T("AssociatedFile", name=name, type=kind, **values)


def unit(kind: int, options: T) -> T:
    return T("ProcessUnit", options_type=kind, options=options)


def content(kind: int, properties: T) -> T:
    return T("Content", content_properties_type=kind, content_properties=properties)


def model_with(node: T) -> bytes:
    """A model whose metadata is ``node`` (a ModelMetadata, or a SubGraphMetadata to wrap in one)."""
    root = node if node.table == "ModelMetadata" else T("ModelMetadata", subgraph_metadata=[node])
    return tflite_model({METADATA_NAME: metadata_buffer(root)})


ENGLISH = [f"class {i}" for i in range(10)]
GERMAN = [f"Klasse {i}" for i in range(9)] + ["Straße 9"]
CALIBRATION_CSV = "1.0,2.0,0.5\n\n0.9,3.0,-1.0,0.1\n" + "1,1,1\n" * 7
FILES = {
    "labels_en.txt": "\n".join(ENGLISH) + "\n",
    "labels_de.txt": "\n".join(GERMAN),  # no final newline
    "coco.txt": "person\nbicycle\n",
    "calibration.csv": CALIBRATION_CSV,
    "README.txt": "read me\n",
    "vocab.txt": "a\nb\n",
}


def full_metadata() -> T:
    """Metadata using every field the reader reads."""
    image = T(
        "TensorMetadata",
        name="image",
        description="Input image",
        dimension_names=["batch", "height", "width", "channels"],
        content=T(
            "Content",
            content_properties_type=IMAGE,
            content_properties=T(
                "ImageProperties", color_space=RGB, default_size=T("ImageSize", width=224, height=192)
            ),
        ),
        process_units=[
            unit(NORMALIZATION, T("NormalizationOptions", mean=[127.5, 127.0, 126.5], std=[127.5]))
        ],
        stats=T("Stats", max=[255.0], min=[0.0]),
        associated_files=[file("vocab.txt", VOCABULARY)],
    )
    probability = T(
        "TensorMetadata",
        name="probability",
        description="Probabilities of the 10 classes",
        content=T("Content", content_properties_type=FEATURE, content_properties=T("FeatureProperties")),
        process_units=[
            unit(THRESHOLDING, T("ScoreThresholdingOptions", global_score_threshold=0.3)),
            unit(CALIBRATION, T("ScoreCalibrationOptions", score_transformation=LOG, default_score=0.2)),
        ],
        stats=T("Stats", max=[1.0], min=[0.0]),
        associated_files=[
            file("labels_en.txt", AXIS_LABELS, locale="en", description="English names", version="2"),
            file("labels_de.txt", AXIS_LABELS, locale="de"),
            file("calibration.csv", SCORE_CALIBRATION),
        ],
    )
    location = T(
        "TensorMetadata",
        name="location",
        content=T(
            "Content",
            content_properties_type=BOUNDING_BOX,
            content_properties=T(
                "BoundingBoxProperties", index=[1, 0, 3, 2], type=BOUNDARIES, coordinate_type=RATIO
            ),
            range=T("ValueRange", min=2, max=2),
        ),
    )
    category = T(
        "TensorMetadata",
        name="category",
        content=T(
            "Content",
            content_properties_type=FEATURE,
            content_properties=T("FeatureProperties"),
            range=T("ValueRange", min=2, max=2),
        ),
        associated_files=[file("coco.txt", VALUE_LABELS, locale="en")],
    )
    score = T("TensorMetadata", name="score")
    subgraph = T(
        "SubGraphMetadata",
        name="detector",
        description="the main subgraph",
        input_tensor_metadata=[image],
        output_tensor_metadata=[probability, location, category, score],
        output_tensor_groups=[
            T("TensorGroup", name="detection_result", tensor_names=["location", "category", "score"])
        ],
        input_tensor_groups=[T("TensorGroup", name="pixels", tensor_names=["image"])],
    )
    return T(
        "ModelMetadata",
        name="Quadrant finder",
        description="Finds things",
        version="v1.2",
        subgraph_metadata=[subgraph],
        author="The edge team",
        license="Apache License. Version 2.0",
        associated_files=[file("README.txt", DESCRIPTIONS)],
        min_parser_version="1.5.0",
    )


@pytest.fixture(scope="module")
def full_model() -> bytes:
    return with_files(tflite_model({METADATA_NAME: metadata_buffer(full_metadata())}), FILES)


@pytest.fixture(scope="module")
def metadata(full_model: bytes) -> StandardMetadata:
    result = read_standard_metadata(full_model, "full.tflite")
    assert result is not None
    return result


# ----------------------------------------------------------------------------------------------- fields


def test_model_fields(metadata: StandardMetadata) -> None:
    assert metadata.name == "Quadrant finder"
    assert metadata.description == "Finds things"
    assert metadata.version == "v1.2"
    assert metadata.author == "The edge team"
    assert metadata.license == "Apache License. Version 2.0"
    assert metadata.min_parser_version == "1.5.0"
    assert metadata.subgraph_name == "detector" and metadata.subgraph_description == "the main subgraph"
    assert [(f.name, f.type) for f in metadata.associated_files] == [("README.txt", "DESCRIPTIONS")]
    assert set(metadata.packed_files) == set(FILES)
    assert metadata.files["README.txt"] == b"read me\n"
    assert "vocab.txt" not in metadata.files  # only the text file types are read; the others are listed
    assert metadata.problems == ()


def test_input_tensor(metadata: StandardMetadata) -> None:
    (image,) = metadata.inputs
    assert image.name == "image" and image.description == "Input image"
    assert image.dimension_names == ("batch", "height", "width", "channels")
    assert image.content == "image"
    assert image.image is not None
    assert image.image.color_space == "RGB" and image.image.default_size == (224, 192)
    assert image.normalization is not None
    assert image.normalization.mean == (127.5, 127.0, 126.5) and image.normalization.std == (127.5,)
    assert image.stats is not None and image.stats.min == (0.0,) and image.stats.max == (255.0,)
    assert image.process_units == ("NormalizationOptions",)
    assert [(f.name, f.type) for f in image.associated_files] == [("vocab.txt", "VOCABULARY")]
    assert image.bounding_box is None and image.score_threshold is None and image.score_calibration is None


def test_grayscale_and_audio_content() -> None:
    gray = T("TensorMetadata", name="g", content=content(IMAGE, T("ImageProperties", color_space=GRAYSCALE)))
    audio = T(
        "TensorMetadata",
        name="a",
        content=content(AUDIO, T("AudioProperties", sample_rate=16000, channels=1)),
    )
    md = read_standard_metadata(model_with(T("SubGraphMetadata", input_tensor_metadata=[gray, audio])))
    assert md is not None
    assert md.inputs[0].image is not None and md.inputs[0].image.color_space == "GRAYSCALE"
    assert md.inputs[0].image.default_size is None and md.inputs[0].normalization is None
    assert md.inputs[1].content == "audio" and md.inputs[1].audio is not None
    assert (md.inputs[1].audio.sample_rate, md.inputs[1].audio.channels) == (16000, 1)


def test_output_labels_first_file_and_locales(metadata: StandardMetadata) -> None:
    probability = metadata.outputs[0]
    assert probability.name == "probability" and probability.description == "Probabilities of the 10 classes"
    assert probability.content == "feature"
    assert [(f.name, f.type, f.locale) for f in probability.label_files] == [
        ("labels_en.txt", "TENSOR_AXIS_LABELS", "en"),
        ("labels_de.txt", "TENSOR_AXIS_LABELS", "de"),
    ]
    first = probability.label_files[0]
    assert first.description == "English names" and first.version == "2"
    assert metadata.labels_for_output(0) == tuple(ENGLISH)  # the first file (final newline dropped)
    assert metadata.labels_for_output(0, locale="de") == tuple(GERMAN)  # UTF-8, no final newline
    assert metadata.labels_for_output(0, locale="fr") == tuple(ENGLISH)  # unknown locale: the first
    assert metadata.labels_for_output(1) == () and metadata.labels_for_output(9) == ()


def test_value_labels(metadata: StandardMetadata) -> None:
    category = metadata.outputs[2]
    assert [(f.name, f.type, f.locale) for f in category.value_label_files] == [
        ("coco.txt", "TENSOR_VALUE_LABELS", "en")
    ]
    assert category.label_files == ()
    assert metadata.value_labels_for_output(2) == ("person", "bicycle")
    assert metadata.labels_for_output(2) == ()


def test_score_threshold_and_calibration(metadata: StandardMetadata) -> None:
    probability = metadata.outputs[0]
    assert probability.score_threshold == 0.3  # the float32 0.3, given back as the decimal that was written
    calibration = probability.score_calibration
    assert calibration is not None
    assert calibration.transformation == "LOG" and calibration.default_score == 0.2
    assert calibration.file is not None and calibration.file.name == "calibration.csv"
    assert calibration.parameters[:3] == ((1.0, 2.0, 0.5), None, (0.9, 3.0, -1.0, 0.1))
    assert len(calibration.parameters) == 10
    assert probability.process_units == ("ScoreThresholdingOptions", "ScoreCalibrationOptions")
    assert probability.stats is not None and probability.stats.max == (1.0,)


def test_detection_outputs(metadata: StandardMetadata) -> None:
    location = metadata.outputs[1]
    assert location.content == "bounding_box" and location.content_range == (2, 2)
    assert location.bounding_box is not None
    assert location.bounding_box.index == (1, 0, 3, 2)
    assert location.bounding_box.type == "BOUNDARIES" and location.bounding_box.coordinate_type == "RATIO"
    assert metadata.outputs[3].name == "score" and metadata.outputs[3].content == ""
    (group,) = metadata.output_tensor_groups
    assert group.name == "detection_result" and group.tensor_names == ("location", "category", "score")
    assert [metadata.output_index(n) for n in group.tensor_names] == [1, 2, 3]
    assert metadata.output_index("nothing") is None
    assert [(g.name, g.tensor_names) for g in metadata.input_tensor_groups] == [("pixels", ("image",))]


@pytest.mark.parametrize(
    ("box_type", "coordinates", "expected"),
    [
        (UPPER_LEFT, PIXEL, ("UPPER_LEFT", "PIXEL")),
        (CENTER, RATIO, ("CENTER", "RATIO")),
        (9, 7, ("TYPE_9", "TYPE_7")),  # from a newer schema: named by code
    ],
)
def test_bounding_box_types(box_type: int, coordinates: int, expected: tuple[str, str]) -> None:
    box = T("BoundingBoxProperties", type=box_type, coordinate_type=coordinates)
    out = T("TensorMetadata", content=content(BOUNDING_BOX, box))
    md = read_standard_metadata(model_with(T("SubGraphMetadata", output_tensor_metadata=[out])))
    assert md is not None and md.outputs[0].bounding_box is not None
    bb = md.outputs[0].bounding_box
    assert (bb.type, bb.coordinate_type) == expected and bb.index == ()  # empty: the type's default order


def test_to_json(metadata: StandardMetadata) -> None:
    report = metadata.to_json()
    assert json.loads(json.dumps(report)) == report
    assert report["name"] == "Quadrant finder" and report["author"] == "The edge team"
    image = report["inputs"][0]
    assert image["content"] == {"type": "image", "image": {"color_space": "RGB", "default_size": [224, 192]}}
    assert image["normalization"] == {"mean": [127.5, 127.0, 126.5], "std": [127.5]}
    assert image["stats"] == {"min": [0.0], "max": [255.0]}
    probability = report["outputs"][0]
    assert probability["label_count"] == 10 and probability["score_threshold"] == 0.3
    assert probability["score_calibration"] == {
        "transformation": "LOG",
        "default_score": 0.2,
        "file": "calibration.csv",
        "classes": 10,
    }
    assert report["outputs"][1]["content"] == {
        "type": "bounding_box",
        "range": [2, 2],
        "bounding_box": {"index": [1, 0, 3, 2], "type": "BOUNDARIES", "coordinate_type": "RATIO"},
    }
    assert report["outputs"][3] == {"name": "score"}  # empty values are left out
    assert report["output_tensor_groups"] == [
        {"name": "detection_result", "tensor_names": ["location", "category", "score"]}
    ]
    assert "problems" not in report


def test_minimal_metadata_has_no_tensors_and_empty_json() -> None:
    md = read_standard_metadata(model_with(T("ModelMetadata", name="bare")))
    assert md is not None
    assert md.inputs == () and md.outputs == () and md.labels_for_output(0) == () and md.packed_files == ()
    assert md.to_json() == {"name": "bare"}


def test_absent_union_value_and_non_normalization_units_are_tolerated() -> None:
    """A union type without its value reads as absent; tokenizer units are listed, not interpreted."""
    tensor = T(
        "TensorMetadata",
        content=T("Content", content_properties_type=IMAGE),
        process_units=[
            T("ProcessUnit", options_type=NORMALIZATION),
            unit(BERT, T("BertTokenizerOptions", vocab_file=[file("vocab.txt", VOCABULARY)])),
        ],
    )
    md = read_standard_metadata(model_with(T("SubGraphMetadata", input_tensor_metadata=[tensor])))
    assert md is not None
    assert md.inputs[0].content == "" and md.inputs[0].image is None
    assert md.inputs[0].normalization is None and md.inputs[0].process_units == ("BertTokenizerOptions",)


# ------------------------------------------------------------------------------------ absent metadata


def test_no_standard_metadata_is_none() -> None:
    assert read_standard_metadata(tflite_model()) is None
    assert read_standard_metadata(tflite_model({MANIFEST_METADATA_NAME: b'{"name": "x"}'})) is None


def test_entries_given_by_the_caller(full_model: bytes) -> None:
    info = read_tflite(full_model, "full.tflite")
    assert read_metadata_entries(full_model) == info.metadata
    assert set(info.metadata) == {METADATA_NAME}
    assert [t.name for t in info.outputs] == ["probability", "location", "category", "score"]  # zip: harmless
    md = read_standard_metadata(full_model, "full.tflite", entries=info.metadata)
    assert md is not None and md.labels_for_output(0) == tuple(ENGLISH)
    assert read_standard_metadata(full_model, entries={}) is None


def test_path_variant(tmp_path: Path, full_model: bytes) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(full_model)
    md = read_standard_metadata_file(path)
    assert md is not None and md.source == str(path) and md.name == "Quadrant finder"
    with pytest.raises(ModelError, match="not found"):
        read_standard_metadata_file(tmp_path / "missing.tflite")


def test_not_a_tflite_model_always_raises() -> None:
    with pytest.raises(ModelError, match="not a TFLite model"):
        read_standard_metadata(b"PK\x03\x04 not a model", "x.zip", strict=False)


# ----------------------------------------------------------------------------------- damaged metadata


def _one_line_model_error(exc: pytest.ExceptionInfo[ModelError], source: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and source in message
    return message


def test_truncated_metadata_buffer_is_a_model_error(caplog: pytest.LogCaptureFixture) -> None:
    buffer = metadata_buffer(full_metadata())
    model = with_files(tflite_model({METADATA_NAME: buffer[: len(buffer) // 2]}), FILES)
    with pytest.raises(ModelError) as exc:
        read_standard_metadata(model, "cut.tflite")
    message = _one_line_model_error(exc, "cut.tflite")
    assert "TFLITE_METADATA" in message and "damaged" in message and "re-download" in message
    with caplog.at_level(logging.WARNING, logger="edge.tflite_metadata"):
        assert read_standard_metadata(model, "cut.tflite", strict=False) is None
    assert any("cut.tflite" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_offset_out_of_range_is_a_model_error() -> None:
    buffer = bytearray(metadata_buffer(full_metadata()))
    buffer[0:4] = (len(buffer) + 1000).to_bytes(4, "little")  # the root table's offset points past the end
    with pytest.raises(ModelError) as exc:
        read_standard_metadata(tflite_model({METADATA_NAME: bytes(buffer)}), "far.tflite")
    assert "outside the" in _one_line_model_error(exc, "far.tflite")


def test_wrong_identifier_is_a_model_error() -> None:
    buffer = bytearray(metadata_buffer(full_metadata()))
    buffer[4:8] = b"XXXX"
    with pytest.raises(ModelError, match="not TFLite metadata"):
        read_standard_metadata(tflite_model({METADATA_NAME: bytes(buffer)}), "id.tflite")
    with pytest.raises(ModelError, match="not TFLite metadata"):
        read_standard_metadata(tflite_model({METADATA_NAME: b"M0"}), "tiny.tflite")


def test_random_damage_never_escapes_as_another_exception() -> None:
    """Truncations and flipped bytes anywhere in the metadata: a result or a ModelError, nothing else."""
    buffer = metadata_buffer(full_metadata())
    rng = random.Random(10)
    damaged = [buffer[:n] for n in range(0, len(buffer), 7)]
    for _ in range(300):
        copy = bytearray(buffer)
        for _ in range(rng.randint(1, 4)):
            copy[rng.randrange(8, len(copy))] = rng.randrange(256)
        damaged.append(bytes(copy))
    outcomes = {"read": 0, "error": 0}
    for payload in damaged:
        model = with_files(tflite_model({METADATA_NAME: payload}), FILES)
        try:
            result = read_standard_metadata(model, "fuzz.tflite")
        except ModelError as exc:
            assert "\n" not in str(exc) and "fuzz.tflite" in str(exc)
            outcomes["error"] += 1
        else:
            if result is not None:
                json.dumps(result.to_json())
            outcomes["read"] += 1
    assert outcomes["read"] and outcomes["error"]


# ----------------------------------------------------------------------------------- damaged zip


def _stored_zip_model() -> tuple[bytes, int]:
    """The full model with its files stored (not deflated), and where labels_en.txt's bytes start."""
    stream = io.BytesIO(tflite_model({METADATA_NAME: metadata_buffer(full_metadata())}))
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in FILES.items():
            archive.writestr(name, content)
    data = stream.getvalue()
    return data, data.index(FILES["labels_en.txt"].encode())


def test_bad_crc_in_the_zip_is_a_model_error(caplog: pytest.LogCaptureFixture) -> None:
    data, labels_at = _stored_zip_model()
    damaged = bytearray(data)
    damaged[labels_at] ^= 0xFF
    with pytest.raises(ModelError) as exc:
        read_standard_metadata(bytes(damaged), "crc.tflite")
    message = _one_line_model_error(exc, "crc.tflite")
    assert "zip" in message and "damaged" in message and "re-download" in message
    with caplog.at_level(logging.WARNING, logger="edge.tflite_metadata"):
        md = read_standard_metadata(bytes(damaged), "crc.tflite", strict=False)
    assert md is not None and md.labels_for_output(0) == ()  # the files are lost, the rest is kept
    assert md.inputs[0].normalization is not None and md.inputs[0].normalization.std == (127.5,)
    assert len(md.problems) == 1 and "crc.tflite" in md.problems[0]
    assert md.to_json()["problems"] == list(md.problems)
    assert any("zip" in r.getMessage() for r in caplog.records)


def test_damaged_central_directory_is_a_model_error() -> None:
    data, _ = _stored_zip_model()
    central = data.rindex(b"PK\x01\x02")  # the last central-directory entry
    damaged = data[:central] + b"\x00" * 20 + data[central + 20 :]
    with pytest.raises(ModelError) as exc:
        read_standard_metadata(damaged, "cd.tflite")
    assert "zip" in _one_line_model_error(exc, "cd.tflite")


def test_truncated_zip_is_a_model_error() -> None:
    data, labels_at = _stored_zip_model()
    end = data.rindex(b"PK\x05\x06")  # keep the end record but lose the files before it
    damaged = data[:labels_at] + data[end:]
    with pytest.raises(ModelError) as exc:
        read_standard_metadata(damaged, "short.tflite")
    _one_line_model_error(exc, "short.tflite")


def test_named_file_missing_from_the_zip() -> None:
    files = {k: v for k, v in FILES.items() if k != "labels_de.txt"}
    model = with_files(tflite_model({METADATA_NAME: metadata_buffer(full_metadata())}), files)
    with pytest.raises(ModelError, match="labels_de.txt but the model's zip does not pack it") as exc:
        read_standard_metadata(model, "missing.tflite")
    _one_line_model_error(exc, "missing.tflite")
    md = read_standard_metadata(model, "missing.tflite", strict=False)
    assert md is not None and md.labels_for_output(0) == tuple(ENGLISH)
    assert md.labels_for_output(0, locale="de") == tuple(ENGLISH)  # the German file is gone: the first one
    assert len(md.problems) == 1


def test_files_named_but_no_zip() -> None:
    model = tflite_model({METADATA_NAME: metadata_buffer(full_metadata())})
    with pytest.raises(ModelError, match="packs none") as exc:
        read_standard_metadata(model, "nozip.tflite")
    _one_line_model_error(exc, "nozip.tflite")
    md = read_standard_metadata(model, "nozip.tflite", strict=False)
    assert md is not None and md.labels_for_output(0) == () and md.packed_files == ()


def test_bad_calibration_file_is_a_model_error() -> None:
    files = {**FILES, "calibration.csv": "1.0,2.0\n"}
    model = with_files(tflite_model({METADATA_NAME: metadata_buffer(full_metadata())}), files)
    with pytest.raises(ModelError, match="score calibration file calibration.csv") as exc:
        read_standard_metadata(model, "calib.tflite")
    _one_line_model_error(exc, "calib.tflite")
    md = read_standard_metadata(model, "calib.tflite", strict=False)
    assert md is not None and md.outputs[0].score_calibration is not None
    assert md.outputs[0].score_calibration.parameters == () and md.labels_for_output(0) == tuple(ENGLISH)
