"""The pipeline: ordered results, failures inline, hot swap with versions, sinks, stats."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from edge.errors import ConfigError
from edge.model import load_model
from edge.package import read_package, write_package
from edge.pipeline import SCHEMA_VERSION, Pipeline
from edge.sinks import JsonlFileSink, StdoutSink
from edge.sources import InputItem


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.closed = False

    def emit(self, record: dict) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


class BrokenSink:
    def emit(self, record: dict) -> None:
        raise RuntimeError("disk full")

    def close(self) -> None:
        raise RuntimeError("still full")


@pytest.fixture(scope="module")
def digits(assets):
    return load_model(assets.model("digits_int8"))


def mixed_inputs(assets, tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(assets.images["astronaut.jpg"].read_bytes()[:2000])
    digits = sorted(assets.digit_images.iterdir())[:3]
    return [digits[0], tmp_path / "missing.png", text, digits[1], corrupt, digits[2]]


def test_run_keeps_order_and_fails_only_bad_inputs(assets, digits, tmp_path):
    items = mixed_inputs(assets, tmp_path)
    sink = ListSink()
    pipeline = Pipeline(digits, top_k=1, sinks=[sink], overlap=True)
    results = list(pipeline.run(items))
    assert [r.input for r in results] == [str(p) for p in items]
    assert [r.error is None for r in results] == [True, False, False, True, False, True]
    assert "missing.png does not exist" in results[1].error
    assert "readme.txt is not an image" in results[2].error
    assert "broken.jpg is corrupt or truncated" in results[4].error
    for result, path in zip(results, items, strict=True):
        if result.ok:
            assert result.result.classes[0].label == path.stem.split("_")[1]
    assert [r["input"] for r in sink.records] == [str(p) for p in items]
    stats = pipeline.stats()
    assert stats["count"] == 6 and stats["errors"] == 3
    assert stats["invoke"]["n"] == 3 and stats["invoke"]["p50"] > 0


def test_result_record_schema(assets, digits):
    record = Pipeline(digits, top_k=2).infer(sorted(assets.digit_images.iterdir())[0]).to_json()
    assert record["schema"] == SCHEMA_VERSION
    assert record["model"] == {"name": "digits_int8", "version": 0}
    assert record["task"] == "classification" and len(record["classes"]) == 2
    assert set(record["timing_ms"]) == {"decode", "preprocess", "invoke", "postprocess", "total"}
    assert record["timing_ms"]["total"] >= record["timing_ms"]["invoke"] > 0
    assert record["error"] is None and record["image"] == {"width": 8, "height": 8}
    assert record["time"].endswith("Z")
    json.dumps(record)  # JSON-ready


def test_infer_takes_paths_bytes_pil_arrays_and_items(assets, digits):
    pipeline = Pipeline(digits, top_k=1)
    path = sorted(assets.digit_images.iterdir())[0]
    label = path.stem.split("_")[1]
    x, y = assets.eval_set()
    for item in (
        path,
        str(path),
        path.read_bytes(),
        Image.open(path),
        np.asarray(Image.open(path)),
        InputItem("cam", path.read_bytes()),
    ):
        result = pipeline.infer(item)
        assert result.error is None and result.result.classes[0].label == label, type(item)
    tensor_shaped = pipeline.infer(x[0])  # (8, 8, 1) float pixels: the model input shape, no resize
    assert tensor_shaped.result.classes[0].index == int(y[0])
    failed = pipeline.infer(InputItem("cam#3", error="cannot fetch http://cam (timed out)"))
    assert failed.error.startswith("cam#3: cannot fetch") and failed.input == "cam#3"
    wrong_rank = pipeline.infer(np.zeros((2, 8, 8, 1), np.float32)).error
    assert "(2, 8, 8, 1) fits neither the model input [1, 8, 8, 1] nor an image" in wrong_rank
    assert "cannot use an input of type int" in pipeline.infer(42).error


def test_swap_model_takes_effect_between_inferences_and_results_name_the_version(assets, digits, tmp_path):
    package = read_package(assets.digits_package)
    from dataclasses import replace

    v2_path = tmp_path / "digits-v2.edgepkg"
    write_package(v2_path, replace(package.manifest, version=2), dict(package.files))
    v1, v2 = load_model(assets.digits_package), load_model(v2_path)
    pipeline = Pipeline(v1, top_k=1, overlap=True)
    files = sorted(assets.digit_images.iterdir())[:10]
    versions = []
    for i, result in enumerate(pipeline.run(files)):
        versions.append(result.model_version)
        if i == 3:
            pipeline.swap_model(v2)
    # inputs already decoded ahead still run on the model current at invoke time
    assert versions == [1, 1, 1, 1] + [2] * 6
    assert pipeline.model is v2


def test_swap_to_a_model_with_another_input_re_prepares(assets, digits):
    ssd = load_model(assets.model("ssd"), std=255.0)
    pipeline = Pipeline(digits, overlap=True)
    image = assets.images["coffee.webp"]
    results = []
    for i, result in enumerate(pipeline.run([image] * 4)):
        results.append(result)
        if i == 0:
            pipeline.swap_model(ssd)
    assert [r.task for r in results] == ["classification", "detection", "detection", "detection"]
    assert all(r.error is None for r in results)


def test_swap_from_another_thread_while_running(assets, digits):
    other = load_model(assets.model("digits_float32"))
    pipeline = Pipeline(digits, top_k=1, overlap=True)
    files = sorted(assets.digit_images.iterdir()) * 5
    stop = threading.Event()

    def flip() -> None:
        models = [other, digits]
        i = 0
        while not stop.is_set():
            pipeline.swap_model(models[i % 2])
            i += 1

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        results = list(pipeline.run(files))
    finally:
        stop.set()
        thread.join()
    assert len(results) == len(files) and all(r.error is None for r in results)
    assert {r.model_name for r in results} <= {"digits_int8", "digits_float32"}


def test_swap_model_refuses_non_models(digits):
    with pytest.raises(ConfigError, match="needs a loaded Model"):
        Pipeline(digits).swap_model("model.tflite")


def test_set_options_and_validation(assets, digits):
    pipeline = Pipeline(digits, top_k=5)
    path = sorted(assets.digit_images.iterdir())[0]
    assert len(pipeline.infer(path).result.classes) == 5
    pipeline.set_options(top_k=2)
    assert len(pipeline.infer(path).result.classes) == 2
    pipeline.set_options(threshold=0.5)
    assert all(c.score >= 0.5 for c in pipeline.infer(path).result.classes)
    with pytest.raises(ConfigError, match="top_k"):
        pipeline.set_options(top_k=0)
    with pytest.raises(ConfigError, match="threshold"):
        pipeline.set_options(threshold=1.5)
    with pytest.raises(ConfigError, match="resize mode"):
        Pipeline(digits, resize="zoom")


def test_a_broken_sink_does_not_lose_results_for_the_others(assets, digits, caplog):
    good = ListSink()
    pipeline = Pipeline(digits, sinks=[BrokenSink(), good])
    results = list(pipeline.run(sorted(assets.digit_images.iterdir())[:3]))
    assert len(good.records) == 3 and all(r.ok for r in results)
    pipeline.close()
    assert good.closed
    assert "disk full" in caplog.text


def test_jsonl_and_stdout_sinks(assets, digits, tmp_path, capsys):
    out = tmp_path / "results" / "run.jsonl"
    pipeline = Pipeline(digits, sinks=[JsonlFileSink(out), StdoutSink()])
    list(pipeline.run(sorted(assets.digit_images.iterdir())[:2]))
    pipeline.close()
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["model"]["name"] == "digits_int8"
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["input"] for line in printed] == [json.loads(line)["input"] for line in lines]
    with pytest.raises(ConfigError, match="cannot open results file"):
        JsonlFileSink(out / "x.jsonl")  # out is a file, not a folder


def test_stdout_sink_formats_lines_and_goes_quiet_when_its_reader_is_gone():
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    readable = io.StringIO()
    sink = StdoutSink(readable, formatter=lambda record: f"{record['input']}: ok")
    sink.emit({"input": "a.png"})
    assert readable.getvalue() == "a.png: ok\n"
    gone = StdoutSink(ClosedPipe())
    gone.emit({"input": "a.png"})  # no exception: the pipeline would log one per result
    gone.emit({"input": "b.png"})
    assert gone.broken
    gone.close()


def test_source_exception_reaches_the_caller(digits):
    def items():
        yield np.zeros((8, 8), np.uint8)
        raise ConfigError("camera went away")

    pipeline = Pipeline(digits, overlap=True)
    run = pipeline.run(items())
    assert next(run).ok
    with pytest.raises(ConfigError, match="camera went away"):
        next(run)


def test_stats_window_percentiles(digits):
    pipeline = Pipeline(digits, stats_window=5)
    for _ in range(8):
        pipeline.infer(np.zeros((8, 8), np.uint8))
    stats = pipeline.stats()
    assert stats["count"] == 8 and stats["invoke"]["n"] == 5
    for stage in ("decode", "preprocess", "invoke", "postprocess", "total"):
        assert stats[stage]["p50"] <= stats[stage]["p95"] <= stats[stage]["p99"]
    assert stats["fps"] > 0


def test_overlap_is_chosen_from_the_first_frames(assets, digits):
    files = sorted(assets.digit_images.iterdir())[:8]
    pipeline = Pipeline(digits, top_k=1, decode_workers=2)
    assert len(list(pipeline.run(files))) == 8
    assert pipeline.workers_used == 0  # 8x8 PNGs on a tiny CNN: sub-millisecond stages stay serial
    serial = [r.result.classes[0].index for r in Pipeline(digits, top_k=1, overlap=False).run(files)]
    overlapped = Pipeline(digits, top_k=1, overlap=True, decode_workers=2)
    indices = [r.result.classes[0].index for r in overlapped.run(files)]
    assert serial == indices and overlapped.workers_used == 2
