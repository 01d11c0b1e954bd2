"""Conversion modes: configure ``tf.lite.TFLiteConverter`` for each and run it.

float32   plain conversion
float16   weights stored as float16
dynamic   dynamic-range quantization: int8 weights, float activations
int8      full integer with calibration; input/output type from --io (float, int8, uint8)
edgetpu   full integer, uint8 input/output, int8 builtin ops only (fixed batch of 1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from converter.errors import ConverterError, QuantizationError, SourceModelError
from edge.profiles import CONVERT_MODES
from edge.progress import Progress

log = logging.getLogger(__name__)

FULL_INTEGER_MODES = ("int8", "edgetpu")


def needs_calibration(mode: str) -> bool:
    return mode in FULL_INTEGER_MODES


def io_type_for(mode: str, io_type: str) -> str:
    """The input/output dtype of the converted model: 'float32', 'int8' or 'uint8'."""
    if mode == "edgetpu":
        return "uint8"
    if mode == "int8":
        return "float32" if io_type == "float" else io_type
    return "float32"


def convert_saved_model(
    saved_model: Path, mode: str, io_type: str = "uint8", calibration: np.ndarray | None = None
) -> bytes:
    """Convert a SavedModel folder to TFLite bytes in ``mode``."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode in FULL_INTEGER_MODES:
        if calibration is None or len(calibration) == 0:
            raise QuantizationError(f"--mode {mode} needs calibration data; pass --calib PATH")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type_for(mode, io_type)]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    elif mode != "float32":
        raise ConverterError(f"--mode {mode!r} is not known; choose one of {', '.join(CONVERT_MODES)}")
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the TF converter raises ConverterError, RuntimeError, ValueError
        message = _first_line(exc)
        if mode in FULL_INTEGER_MODES:
            raise QuantizationError(
                f"the model cannot be fully quantized for --mode {mode} ({message}); "
                "use --mode dynamic or float16, or replace the op"
            ) from exc
        raise SourceModelError(f"TensorFlow Lite cannot convert the model ({message})") from exc


def _representative(calibration: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def generate() -> Iterator[list[np.ndarray]]:
        with Progress("calibrating", total=len(calibration)) as bar:
            for sample in calibration:
                yield [sample[np.newaxis].astype(np.float32)]
                bar.advance()

    return generate


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TF's converter errors start with a location line; the first line naming an error is the useful one.
    for line in lines:
        if "error" in line.lower():
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]
