"""``edge run``, ``edge bench`` and ``edge doctor`` as a user runs them: real processes, real models."""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.edge.helpers import ROOT, backend_name, edge_cli, interpreter_noise
from tests.edge.test_sources import camera  # noqa: F401 (fixture)


@pytest.fixture
def photo_folder(assets, tmp_path):
    """A folder of photos with a corrupt file, a text file, an empty file and a truncated JPEG mixed in."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.jpg", "coffee.webp", "chelsea_exif6.jpg", "camera.png"):
        shutil.copy(assets.images[name], folder / name)
    (folder / "notes.txt").write_text("shopping list: milk, eggs\n")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(assets.images["astronaut.jpg"].read_bytes()[:3000])
    return folder


def test_new_user_folder_with_bad_files_and_a_wrong_path(assets, photo_folder):
    done = edge_cli(
        "run",
        str(assets.model("ssd")),
        str(photo_folder),
        str(photo_folder / "nope" / "x.jpg"),
        "--std",
        "255",
    )
    assert done.returncode == 1, done.stderr  # some inputs failed
    lines = done.stdout.splitlines()
    assert len(lines) == 9
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 5
    text = "\n".join(errors)
    assert "notes.txt is not an image" in text and "corrupt.jpg is corrupt or truncated" in text
    assert "empty.png is empty (0 bytes)" in text and "truncated.jpg is corrupt or truncated" in text
    assert "x.jpg does not exist; check the path" in text
    assert "object(s)" in done.stdout
    assert "Traceback" not in done.stderr
    assert "9 input(s), 5 failed" in done.stderr


def test_json_lines_and_jsonl_output(assets, photo_folder, tmp_path):
    out = tmp_path / "results.jsonl"
    done = edge_cli(
        "run",
        str(assets.model("digits_int8")),
        str(photo_folder),
        "--json",
        "--output",
        str(out),
        "--top-k",
        "3",
    )
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records == [json.loads(line) for line in out.read_text().splitlines()]
    ok = [r for r in records if r["error"] is None]
    failed = [r for r in records if r["error"] is not None]
    assert len(ok) == 4 and len(failed) == 4
    for record in ok:
        assert record["model"] == {"name": "digits_int8", "version": 0}
        assert record["task"] == "classification" and len(record["classes"]) == 3
        assert set(record["timing_ms"]) == {
            "decode", "preprocess", "invoke", "postprocess", "total", "capture_to_result"
        }
        timing = record["timing_ms"]
        assert record["source"] == "files" and timing["capture_to_result"] >= timing["total"]


def test_package_run_reports_manifest_name_and_version(assets):
    done = edge_cli("run", str(assets.digits_package), str(assets.digit_images), "--json", "--top-k", "1")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 40 and all(r["model"] == {"name": "digits", "version": 1} for r in records)
    correct = sum(r["classes"][0]["label"] == r["input"].rsplit("_", 1)[1][0] for r in records)
    assert correct >= 36


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{bogus}", "x.jpg"], "is not a TFLite model"),
        (["{missing}", "x.jpg"], "model not found"),
        (["{custom}", "x.jpg"], "needs custom op(s) BesselI1e"),
        (["{model}", "x.jpg", "--threshold", "2"], "--threshold must be between 0 and 1, got 2.0"),
        (["{model}", "x.jpg", "--backend", "onnx"], "unknown backend 'onnx'"),
        (["{model}", "x.jpg", "--device", "usb:one"], "Edge TPU device 'usb:one' is not valid"),
        (["{model}", "--watch", "{missing}"], "not a folder"),
        (["{model}", "--url", "ftp://cam"], "must start with http"),
        (["{model}"], "no input given"),
        (["{model}", "x.jpg", "--mean", "1", "2"], "--mean has 2 values"),
        (["{model}", "x.jpg", "--delegate", "edgetpu", "--require-accelerator"], "libedgetpu"),
        (["{model}", "x.jpg", "--decode-workers", "0"], "--decode-workers must be at least 1, got 0"),
        (["{model}", "x.jpg", "--zone", "drive=0,0,1,0"], "--zone"),
        (["{model}", "x.jpg", "--events", "--zone", "drive=0,0,1,0"], "at least 3 points"),
        (["{model}", "x.jpg", "--min-score", "0.7"], "--min-score needs --events"),
        (["{model}", "x.jpg", "--shadow-budget", "0.5"], "--shadow-budget needs --shadow"),
    ],
)
def test_bad_options_and_models_are_one_line_errors(assets, tmp_path, args, message):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_text("not a model")
    names = {
        "{bogus}": str(bogus),
        "{missing}": str(tmp_path / "missing"),
        "{model}": str(assets.model("digits_int8")),
        "{custom}": str(assets.model("custom_op")),
    }
    done = edge_cli("run", *[names.get(a, a) for a in args])
    assert done.returncode == 2, done.stdout + done.stderr
    errors = interpreter_noise(done.stderr).strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("edge run: error:"), done.stderr
    assert message in errors[0]


def test_delegate_fallback_warns_once_and_runs(assets):
    done = edge_cli(
        "run",
        str(assets.model("digits_int8")),
        str(assets.digit_images),
        "--delegate",
        "edgetpu",
        "--limit",
        "3",
    )
    assert done.returncode == 0
    assert interpreter_noise(done.stderr).count("accelerator unavailable") == 1
    assert len(done.stdout.splitlines()) == 3


def test_url_source(assets, camera):  # noqa: F811
    done = edge_cli(
        "run",
        str(assets.model("ssd")),
        "--std",
        "255",
        "--url",
        f"{camera}/snapshot.jpg",
        "--interval",
        "0.05",
        "--limit",
        "2",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in records] == [f"{camera}/snapshot.jpg#1", f"{camera}/snapshot.jpg#2"]
    assert all(r["image"] == {"width": 512, "height": 512} and r["objects"] for r in records)


def test_watch_then_sigterm_shuts_down_cleanly(assets, tmp_path):
    watched = tmp_path / "inbox"
    watched.mkdir()
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge",
            "-v",  # its INFO line "watching <folder> ..." says when a new file will be seen
            "run",
            str(assets.model("digits_int8")),
            "--watch",
            str(watched),
            "--json",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    errors: list[str] = []

    def read(stream: Any, name: str) -> None:
        for line in stream:
            if name == "err":
                errors.append(line)
            lines.put((name, line))

    threading.Thread(target=read, args=(process.stdout, "out"), daemon=True).start()
    threading.Thread(target=read, args=(process.stderr, "err"), daemon=True).start()

    def next_line(want: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            name, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if name == "out" and want == "out" or name == "err" and want in line:
                return line

    try:
        next_line(f"watching {watched}")  # files already there when it starts are not new: wait for it
        digit = sorted(assets.digit_images.iterdir())[0]
        shutil.copy(digit, watched / digit.name)
        first = next_line("out")
        assert json.loads(first)["input"].endswith(digit.name)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.2)  # the reader threads take the last lines
    stderr = "".join(errors)
    assert process.returncode == 0, stderr
    assert "1 input(s), 0 failed (stopped)" in stderr and "Traceback" not in stderr
    assert len(out.read_text().splitlines()) == 1  # the JSONL sink was flushed and closed


def test_bench_json(assets):
    done = edge_cli("bench", str(assets.model("digits_int8")), "--runs", "20", "--warmup", "2", "--json")
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["results"]
    assert report["backend"] == backend_name() and report["runs"] == 20
    latency = report["latency_ms"]
    assert latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert (
        report["peak_rss_mb"] > 0 and report["model_size_bytes"] == assets.model("digits_int8").stat().st_size
    )
    assert report["init_ms"] > 0 and report["first_inference_ms"] > 0


def test_bench_all_backends_side_by_side(assets):
    done = edge_cli("bench", str(assets.model("digits_float32")), "--backend", "all", "--runs", "10")
    assert done.returncode == 0, done.stderr
    from edge.backends import installed_backends

    for backend in installed_backends():
        assert any(line.startswith(backend.name) for line in done.stdout.splitlines()), done.stdout
    assert "p99" in done.stdout.splitlines()[0]


def test_doctor(tmp_path):
    done = edge_cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    usable = [b["name"] for b in report["backends"] if b["usable"]]
    assert backend_name() in usable and report["can_run_models"]
    assert report["cpu"]["cores"] >= 1 and report["memory"]["total_mb"] > 0
    assert report["edgetpu"]["library"] == "libedgetpu.so.1" and report["profile"]["suggested"]
    human = edge_cli("doctor")
    assert "verdict    ready" in human.stdout


def test_doctor_fails_when_nothing_can_run_a_model():
    code = (
        "import sys\n"
        "from edge.backends import Backend\n"
        "Backend.installed = lambda self: False\n"
        "from edge.cli import main\n"
        "sys.exit(main(['doctor']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert "NOT ready" in done.stdout and "pip install ai-edge-litert" in done.stdout


def test_edge_never_imports_tensorflow(assets):
    model, folder = str(assets.model("digits_int8")), str(assets.digit_images)
    code = (
        "import importlib, pkgutil, sys\n"
        "import edge\n"
        "for info in pkgutil.walk_packages(edge.__path__, 'edge.'):\n"  # every module, the backends too
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "    assert 'tensorflow' not in sys.modules, info.name\n"
        "from edge.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'tensorflow' not in sys.modules, 'edge --help'\n"
        f"rc = main(['run', {model!r}, {folder!r}, '--limit', '2'])\n"
        "assert rc == 0, rc\n"
        "assert 'tensorflow' not in sys.modules, 'edge run'\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


def test_the_suggested_device_profile_sets_threads(assets):
    from edge.profiles import explain_profile, load_profile

    name, _ = explain_profile()
    done = edge_cli("-v", "run", str(assets.model("digits_int8")), str(assets.digit_images), "--limit", "1")
    assert done.returncode == 0, done.stderr
    assert f"device profile {name}" in done.stderr
    unknown = edge_cli("run", str(assets.model("digits_int8")), "x.jpg", "--profile", "toaster")
    assert unknown.returncode == 2
    (line,) = interpreter_noise(unknown.stderr).strip().splitlines()
    assert line.startswith("edge run: error:") and "toaster" in line
    assert load_profile(name).resolved_threads() >= 1


def _run_into_a_reader_that_stops_early(assets, tmp_path, *flags: str) -> tuple[str, list[str]]:
    """Start ``edge run`` on 400 inputs (far more than a pipe buffer holds), read one line, close the pipe;
    -> (that line, stderr lines without interpreter noise)."""
    folders = [str(assets.digit_images)] * 10
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", str(assets.model("digits_int8")), *folders, *flags],
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away
        assert proc.wait(timeout=120) == 0
    return first, interpreter_noise(err_path.read_text()).strip().splitlines()


def test_json_into_a_reader_that_stops_early_ends_quietly(assets, tmp_path):
    """``edge run ... --json | head -1``: no error per result and no traceback once the reader is gone."""
    first, lines = _run_into_a_reader_that_stops_early(assets, tmp_path, "--json")
    assert json.loads(first)["task"] == "classification"
    assert len(lines) == 1 and lines[0].startswith("edge run: 400 input(s), 0 failed"), lines


def test_readable_lines_into_a_reader_that_stops_early_end_quietly(assets, tmp_path):
    """``edge run MODEL FOLDER | head -1``: readable lines go quiet: no warning per result, no traceback."""
    first, lines = _run_into_a_reader_that_stops_early(assets, tmp_path)
    assert first.startswith(str(assets.digit_images)) and " ms)" in first, first
    assert len(lines) == 1 and lines[0].startswith("edge run: 400 input(s), 0 failed"), lines
