"""Standard TFLite metadata added to a real converted model with the converter's embedding (TF's schema
API, hence here and not in tests/edge): the interpreter still runs it and the reader reads it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.tflite_file import read_tflite
from edge.tflite_metadata import read_standard_metadata_file
from tests.edge.test_tflite_metadata import (
    AXIS_LABELS,
    GRAYSCALE,
    IMAGE,
    METADATA_NAME,
    NORMALIZATION,
    T,
    content,
    file,
    metadata_buffer,
    unit,
    with_files,
)

pytestmark = pytest.mark.tf


def test_real_converted_model_with_metadata_still_runs(assets: Any, tmp_path: Path) -> None:
    """Metadata and a zip added to a real converted model, as the metadata writers do: the interpreter
    still runs it, our model reader still reads it, and the metadata reads back."""
    from converter.metadata import embed_metadata
    from edge.backends import get_backend

    original = assets.model("digits_int8").read_bytes()
    image = T(
        "TensorMetadata",
        name="image",
        content=content(IMAGE, T("ImageProperties", color_space=GRAYSCALE)),
        process_units=[unit(NORMALIZATION, T("NormalizationOptions", mean=[0.0], std=[1.0]))],
    )
    probability = T("TensorMetadata", name="probability", associated_files=[file("digits.txt", AXIS_LABELS)])
    sub = T("SubGraphMetadata", input_tensor_metadata=[image], output_tensor_metadata=[probability])
    buffer = metadata_buffer(T("ModelMetadata", name="digits", subgraph_metadata=[sub]))
    labels = "\n".join(assets.labels) + "\n"
    model = with_files(embed_metadata(original, METADATA_NAME, buffer), {"digits.txt": labels})
    path = tmp_path / "digits_with_metadata.tflite"
    path.write_bytes(model)

    md = read_standard_metadata_file(path)
    assert md is not None and md.name == "digits" and md.labels_for_output(0) == tuple(assets.labels)
    assert md.inputs[0].image is not None and md.inputs[0].image.color_space == "GRAYSCALE"
    assert md.inputs[0].normalization is not None and md.inputs[0].normalization.std == (1.0,)

    before, after = read_tflite(original), read_tflite(model)
    assert [t.name for t in after.inputs] == [t.name for t in before.inputs]
    assert [t.shape for t in after.outputs] == [t.shape for t in before.outputs]
    interpreter = get_backend("auto").interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert out.shape[-1] == len(md.labels_for_output(0))
