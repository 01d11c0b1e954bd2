"""The Python API (``edge.load_model`` -> ``Predictor``, edge/api.py) and its page, docs/python-api.md.

Real models and images from the ``assets`` fixture; every comparison is against ``edge run --json`` run as a
subprocess on the same files. The docs' examples run as written, with this placeholder convention: the file
names ``"model.edgepkg"``, ``"photo.jpg"``, ``"photos/"`` and ``"clip.mp4"`` (string literals in the examples)
are replaced by the digits package, the digit image ``00_8.png``, the folder of digit images and a video of
digits made here. Examples that name a URL (``://``) are not run: they need a camera.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import edge
from edge import ConfigError, EdgeError, InputError, ModelError, load_model
from edge.pipeline import InferenceResult
from edge.tasks.classification import ClassificationResult
from edge.tasks.detection import DetectionResult
from tests.assets import Assets
from tests.edge.helpers import ROOT, edge_cli
from tests.streams import frames_from_images, write_video

DOCS = ROOT / "docs" / "python-api.md"
PER_RUN = ("time", "timing_ms", "input", "source", "frame", "captured_at")  # differ between two runs
HOLD = 4  # video frames per digit


def same_parts(record: dict[str, Any]) -> dict[str, Any]:
    """A result record without what differs between two runs on the same input (names, times)."""
    return {k: v for k, v in record.items() if k not in PER_RUN}


def cli_records(*args: str) -> list[dict[str, Any]]:
    done = edge_cli("run", *args, "--json", "--profile", "none")
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def digit_video(assets: Assets, path: Path) -> tuple[Path, list[str]]:
    """A video of eight held-out digits of different labels, ``HOLD`` frames each; the labels in order."""
    chosen: dict[str, Path] = {}
    for image in sorted(assets.digit_images.iterdir()):
        chosen.setdefault(image.stem.split("_")[1], image)
    picked = sorted(chosen.items())[:8]
    images = [Image.open(p).convert("L").resize((64, 64), Image.NEAREST) for _, p in picked]
    write_video(path, frames_from_images(images, (320, 240), HOLD), fps=15)
    return path, [label for label, _ in picked]


@pytest.fixture(scope="module")
def digits(assets: Assets) -> Any:
    with load_model(assets.digits_package, top_k=3) as model:
        yield model


@pytest.fixture
def broken(assets: Assets, tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(assets.images["astronaut.jpg"].read_bytes()[:2000])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    return {"missing": tmp_path / "missing.png", "corrupt": corrupt, "text": text}


# ------------------------------------------------------------------------------------------ import edge


def test_import_edge_stays_light_and_exports_lazily() -> None:
    heavy = ("numpy", "PIL", "ai_edge_litert", "tflite_runtime", "tensorflow", "av", "typing")
    code = (
        "import sys, edge\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m.startswith('edge.')))\n"
        "from edge import load_model, Predictor\n"
        "import edge.model\n"
        "print(load_model.__module__, edge.model.load_model is not load_model, Predictor.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    # nothing heavy, not even typing, until a public name is used; then the API, not the low-level loader
    assert done.stdout.splitlines() == ["[]", "edge.api True edge.api"]
    timed = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edge"], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
    modules = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines() if "|" in line}
    assert "edge" in modules and not {m for m in modules if m.split(".")[0] in heavy}


def test_every_public_name_resolves() -> None:
    lazy = set(edge._LAZY)
    assert set(edge.__all__) == lazy | {"__version__"}
    for name in lazy:
        assert getattr(edge, name) is not None
    assert set(dir(edge)) >= lazy
    assert issubclass(edge.InputError, edge.EdgeError) and edge.InferenceResult is InferenceResult
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = edge.nothing_here


# ---------------------------------------------------------------------------------------------- predict


def test_predict_on_each_input_kind_agrees_with_edge_run(assets: Assets, digits: Any) -> None:
    png = assets.digit_images / "00_8.png"
    expected = same_parts(cli_records(str(assets.digits_package), str(png), "--top-k", "3")[0])
    assert expected["classes"][0]["label"] == "8" and expected["error"] is None
    with Image.open(png) as opened:
        image = opened.copy()
    pixels = np.asarray(image)  # (8, 8) grey, uint8
    assert pixels.shape == (8, 8)
    data = png.read_bytes()
    kinds = {"str": str(png), "path": png, "bytes": data, "bytearray": bytearray(data), "PIL": image,
             "RGB PIL": image.convert("RGB"), "HxW": pixels,
             "HxWx3": np.asarray(image.convert("RGB")), "float HxW": pixels.astype(np.float32)}
    for kind, item in kinds.items():
        result = digits.predict(item)
        assert isinstance(result, InferenceResult) and isinstance(result.result, ClassificationResult), kind
        assert result.ok and result.source is None, kind
        assert same_parts(result.to_json()) == expected, kind
        assert result.timing.total >= result.timing.invoke > 0, kind
        assert result.result.classes[0].label == "8", kind
    assert digits.predict(str(png)).input == str(png)
    assert digits.predict(png.read_bytes()).input == f"<{png.stat().st_size} bytes>"
    # an array of the model input's own shape is fed as it is: the same classes, no image size
    tensor = digits.predict(pixels[:, :, None]).to_json()
    assert tensor["classes"] == expected["classes"] and "image" not in tensor


def test_predict_detection_agrees_with_edge_run(assets: Assets) -> None:
    photo = assets.images["astronaut.bmp"]  # no JPEG draft decoding: every kind decodes the same pixels
    options = {"mean": 0.0, "std": 255.0, "threshold": 0.1}
    expected = same_parts(cli_records(str(assets.model("ssd")), str(photo), "--mean", "0", "--std", "255",
                                      "--threshold", "0.1")[0])
    assert expected["task"] == "detection" and expected["objects"]
    with load_model(assets.model("ssd"), **options) as ssd, Image.open(photo) as image:
        assert ssd.task == "detection" and ssd.input_size == (64, 64)
        for item in (photo, photo.read_bytes(), image, np.asarray(image)):
            result = ssd.predict(item)
            assert isinstance(result.result, DetectionResult)
            assert same_parts(result.to_json()) == expected
            assert all(0 <= o.box[0] < o.box[2] <= 512 for o in result.result.objects)  # original pixels


def test_predict_raises_the_error_edge_run_reports(
    assets: Assets, digits: Any, broken: dict[str, Path], tmp_path: Path
) -> None:
    records = cli_records(str(assets.digits_package), *(str(p) for p in broken.values()))
    reported = {record["input"]: record["error"] for record in records}
    for path in broken.values():
        with pytest.raises(InputError) as caught:
            digits.predict(path)
        assert str(caught.value) == reported[str(path)] and "\n" not in str(caught.value)
    video = tmp_path / "clip.mp4"
    cases: list[tuple[Any, str]] = [
        (b"", "empty"), (b"not an image", "not an image"), (np.zeros((2, 3, 4, 5), np.uint8), "rank"),
        (np.zeros((4, 4), complex), "dtype"), (42, "type int"), (str(video), "use model.stream"),
        ("rtsp://cam/stream", "use model.stream"), (assets.digit_images, "folder"),
    ]
    for item, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            digits.predict(item)
    assert digits.predict(assets.digit_images / "01_6.png").ok  # a bad input fails only itself


def test_options_and_models_that_cannot_be_used_raise(assets: Assets, tmp_path: Path) -> None:
    package = assets.digits_package
    for options, message in [({"top_k": 0}, "top_k"), ({"threshold": 2}, "threshold"),
                             ({"resize": "zoom"}, "resize mode"), ({"task": "poetry"}, "task"),
                             ({"threads": 0}, "threads"), ({"std": 0}, "std")]:
        with pytest.raises(ConfigError, match=message):
            load_model(package, **options)
    with pytest.raises(ModelError, match="model not found"):
        load_model(tmp_path / "nope.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelError):
        load_model(junk)
    labelled = load_model(assets.model("digits_float32"), labels=[f"digit {d}" for d in range(10)], top_k=1,
                          mean=0, std=1)
    assert labelled.predict(assets.digit_images / "00_8.png").result.classes[0].label == "digit 8"
    labelled.close()
    assert labelled.closed and repr(labelled) == "Predictor(closed)"
    with pytest.raises(ModelError, match="closed"):
        labelled.predict(assets.digit_images / "00_8.png")
    labelled.close()  # again: nothing


# ----------------------------------------------------------------------------------------------- stream


def test_stream_over_files_gives_edge_runs_results_in_order(
    assets: Assets, digits: Any, broken: dict[str, Path]
) -> None:
    inputs = [str(assets.digit_images), str(broken["missing"]), str(broken["corrupt"]),
              str(assets.digit_images / "03_5.png")]
    expected = cli_records(str(assets.digits_package), *inputs, "--top-k", "3")
    with digits.stream(inputs) as results:
        got = list(results)
        assert results.closed  # the end of the inputs closes it
    files = sorted(str(p) for p in assets.digit_images.iterdir())
    assert [r.input for r in got] == [*files, *inputs[1:]] == [r["input"] for r in expected]
    assert [r.frame for r in got] == list(range(len(got))) and {r.source for r in got} == {"files"}
    assert [same_parts(r.to_json()) for r in got] == [same_parts(r) for r in expected]
    assert [r.ok for r in got[-3:]] == [False, False, True]
    assert all(r.timing.capture_to_result is not None for r in got)
    assert got[len(files) - 1].to_json()["classes"] == digits.predict(files[-1]).to_json()["classes"]


def test_stream_over_a_video_file_gives_every_frame_in_order(
    assets: Assets, tmp_path: Path
) -> None:
    video, labels = digit_video(assets, tmp_path / "clip.mp4")
    with load_model(assets.digits_package, top_k=1, resize="crop") as model, model.stream([video]) as results:
        got = list(results)
        states = results.states()
    assert [r.frame for r in got] == list(range(len(labels) * HOLD))
    assert {r.source for r in got} == {"clip"} and all(r.input == f"clip#{r.frame}" for r in got)
    assert all(r.ok and r.image_size == (320, 240) for r in got)
    right = sum(r.result.classes[0].label == labels[r.frame // HOLD] for r in got)
    assert right >= 0.9 * len(got)
    expected = cli_records(str(assets.digits_package), str(video), "--top-k", "1", "--resize", "crop")
    assert [same_parts(r.to_json()) for r in got] == [same_parts(r) for r in expected]
    names = [(r["input"], r["source"], r["frame"]) for r in expected]
    assert [(r.input, r.source, r.frame) for r in got] == names
    assert states["clip"]["state"] == "finished" and states["clip"]["inferred"] == len(got)


def test_stream_limit_names_and_close(assets: Assets, digits: Any, tmp_path: Path) -> None:
    video, labels = digit_video(assets, tmp_path / "clip.mp4")
    with digits.stream(str(video), names=["door"], limit=5) as results:
        assert [r.input for r in results] == [f"door#{i}" for i in range(5)]
    # closed from another thread while it is being iterated: the iteration ends, the source thread too
    results = digits.stream([video], realtime=True)
    first = next(results)
    assert first.ok and first.source == "clip"
    threading.Timer(0.2, results.close).start()
    rest = list(results)
    assert results.closed and len(rest) < len(labels) * HOLD - 1
    assert all(thread.name != "edge-source-clip" for thread in threading.enumerate())
    # closing the predictor closes its open streams
    model = load_model(assets.digits_package)
    open_stream = model.stream([assets.digit_images])
    next(open_stream)
    model.close()
    assert open_stream.closed and list(open_stream) == []


def test_stream_yields_failed_results_and_refuses_bad_options(
    assets: Assets, digits: Any, tmp_path: Path
) -> None:
    png = assets.digit_images / "00_8.png"
    got = list(digits.stream([tmp_path / "gone.mp4", png]))
    by_source = {r.source: r for r in got}
    assert set(by_source) == {"gone", "files"}
    assert not by_source["gone"].ok and "no such video file" in (by_source["gone"].error or "")
    assert by_source["gone"].result is None and by_source["files"].ok
    for options, message in [({}, "no input"), ({"inputs": [png], "fps": 0}, "fps"),
                             ({"inputs": [png], "motion": 150}, "motion"),
                             ({"inputs": [png], "limit": 0}, "limit"),
                             ({"inputs": ["a.mp4"], "names": ["a", "b"]}, "source-name"),
                             ({"inputs": ["a.mp4"], "names": ["bad name"]}, "source name"),
                             ({"inputs": [png], "watch": tmp_path / "absent"}, "not a folder"),
                             ({"url": "ftp://cam/snap.jpg"}, "http")]:
        with pytest.raises(ConfigError, match=message):
            digits.stream(**options)
    with pytest.raises(EdgeError):
        digits.stream([png], rtsp_transport="carrier-pigeon")


# ------------------------------------------------------------------------------------------------- docs


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOCS.read_text(encoding="utf-8"), re.S | re.M)


def run_example(code: str, assets: Assets, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    video, _ = digit_video(assets, tmp_path / "clip.mp4")
    places = {"model.edgepkg": assets.digits_package, "photo.jpg": assets.digit_images / "00_8.png",
              "photos/": assets.digit_images, "clip.mp4": video}
    for placeholder, path in places.items():
        code = code.replace(f'"{placeholder}"', repr(str(path)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_the_readme_shows_the_same_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{python_blocks()[0]}```" in readme


def test_the_readme_example_runs_as_written(assets: Assets, tmp_path: Path) -> None:
    snippet = python_blocks()[0]
    assert len(snippet.splitlines()) <= 10 and all(len(line) <= 110 for line in snippet.splitlines())
    done = run_example(snippet, assets, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "'classes': [{'label': '8'" in lines[0]
    assert re.fullmatch(r"8 0\.\d\d in \d+\.\d ms", lines[1])
    streamed = lines[2:]
    files = sorted(assets.digit_images.iterdir())
    assert len(streamed) == len(files) + 8 * HOLD  # each image, then every frame of the video
    assert streamed[0].startswith(f"{files[0]} {{'classes'") and streamed[-1].startswith("clip#31 {'classes'")


def test_every_other_example_on_the_page_runs(assets: Assets, tmp_path: Path) -> None:
    blocks = [block for block in python_blocks()[1:] if "://" not in block]
    assert len(blocks) >= 4
    for block in blocks:
        done = run_example(block, assets, tmp_path)
        assert done.returncode == 0, f"{block}\n{done.stderr}"
        assert done.stdout.strip(), block
