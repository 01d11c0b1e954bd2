"""Checks on a converted model's operators, read with the TensorFlow-free FlatBuffer reader.

``float_ops``: ops a full-integer conversion left in float (TF 2.21's converter does this silently for
ops without an int8 kernel, e.g. SIN, even with TFLITE_BUILTINS_INT8 only).
``edgetpu_fallback_ops``: ops the Edge TPU compiler would leave to the CPU, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.tflite_file import TFLiteFileInfo

INTEGER_TYPES = ("int8", "uint8")
FLOAT_TYPES = ("float32", "float16", "float64")

# Operators the Edge TPU runs (Coral's published table for edgetpu_compiler 16).
EDGETPU_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PADV2",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
    }
)


@dataclass(frozen=True, slots=True)
class OpIssue:
    """One operator that is not as the mode requires."""

    index: int
    op: str
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "op": self.op, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.op} (op {self.index}): {self.reason}"


def float_ops(info: TFLiteFileInfo) -> list[OpIssue]:
    """Ops with float tensors in a full-integer model (boundary QUANTIZE/DEQUANTIZE of float I/O allowed)."""
    graph_inputs = {t.index for t in info.inputs}
    graph_outputs = {t.index for t in info.outputs}
    issues = []
    for index, op in enumerate(info.operators):
        if op.name == "QUANTIZE" and set(op.inputs) <= graph_inputs:
            continue
        if op.name == "DEQUANTIZE" and set(op.outputs) <= graph_outputs:
            continue
        floats = sorted(
            {info.tensors[t].dtype for t in (*op.inputs, *op.outputs) if t >= 0} & set(FLOAT_TYPES)
        )
        if floats:
            issues.append(OpIssue(index, op.name, f"runs in {'/'.join(floats)}: no int8 kernel for this op"))
    # QUANTIZE/DEQUANTIZE around a float op are its consequence, not the cause: name the cause.
    return [i for i in issues if i.op not in ("QUANTIZE", "DEQUANTIZE")] or issues


def edgetpu_fallback_ops(info: TFLiteFileInfo) -> list[OpIssue]:
    """Ops the Edge TPU would not run. The compiler maps only ops before the first unsupported one."""
    issues: list[OpIssue] = []
    for index, op in enumerate(info.operators):
        tensors = [info.tensors[t] for t in (*op.inputs, *op.outputs) if t >= 0]
        reason = ""
        if op.custom or op.name not in EDGETPU_OPS:
            reason = "operation not supported by the Edge TPU"
        elif any(t.dtype in FLOAT_TYPES for t in tensors):
            reason = "not quantized (float tensors)"
        elif any(t.dtype in INTEGER_TYPES and not t.is_quantized for t in tensors):
            reason = "int8/uint8 tensor without quantization parameters"
        elif any(d < 0 for t in tensors for d in t.shape_signature):
            reason = "dynamic-sized tensor (static shapes are required)"
        elif issues:
            reason = "follows an op that runs on the CPU (the compiler maps one contiguous part)"
        if reason:
            issues.append(OpIssue(index, op.name, reason))
    return issues
