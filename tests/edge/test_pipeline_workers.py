"""Decoding on several workers: input order, bad inputs mid-batch, bounded inputs in flight, Ctrl-C, worker
counts from the cores and the profiles, and the serial fast path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from edge.errors import ConfigError
from edge.model import load_model
from edge.package import read_package, write_package
from edge.pipeline import Pipeline, usable_cores, workers_for
from edge.profiles import list_profiles, load_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ssd(assets):
    return load_model(assets.model("ssd"), std=255.0)


def camera_photos(assets, folder: Path) -> list[Path]:
    """The sample photos at camera sizes, as JPEGs (EXIF-rotated chelsea included)."""
    out = []
    for i, name in enumerate(("astronaut.jpg", "coffee.webp", "camera.png", "chelsea_exif6.jpg")):
        size = (1280, 720) if i % 2 else (640, 480)
        with Image.open(assets.images[name]) as image:
            exif = image.getexif()
            fitted = ImageOps.fit(image.convert("RGB"), size)
        path = folder / f"{Path(name).stem}_{size[0]}x{size[1]}.jpg"
        fitted.save(path, quality=90, exif=exif)
        out.append(path)
    return out


def test_several_workers_keep_input_order_and_survive_bad_inputs_mid_batch(assets, ssd, tmp_path):
    photos = camera_photos(assets, tmp_path)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos[0].read_bytes()[:3000])
    items = [*photos, truncated, tmp_path / "missing.jpg", *photos[::-1], *photos]
    annotated: list[str] = []
    pipeline = Pipeline(
        ssd, decode_workers=3, overlap=True, annotators=[lambda _, record: annotated.append(record["input"])]
    )
    results = list(pipeline.run(items))
    assert pipeline.workers_used == 3
    assert [r.input for r in results] == [str(p) for p in items] == annotated
    assert [r.ok for r in results] == [True] * 4 + [False, False] + [True] * 8
    assert "truncated.jpg is corrupt or truncated" in results[4].error
    assert "missing.jpg does not exist" in results[5].error
    serial = list(Pipeline(ssd, overlap=False).run(items))
    for one, other in zip(results, serial, strict=True):
        assert one.model_name == other.model_name == "ssd"
        assert one.image_size == other.image_size
        assert (one.result and one.result.to_json()) == (other.result and other.result.to_json())
    assert results[3].image_size == (720, 1280)  # EXIF orientation 6: stored 1280x720, upright portrait


def test_inputs_in_flight_are_bounded_by_the_workers(assets, ssd, tmp_path):
    photos = camera_photos(assets, tmp_path)
    pulled = 0

    def source():
        nonlocal pulled
        for _ in range(5):
            for photo in photos:
                pulled += 1
                yield photo

    workers, most_ahead, consumed = 2, 0, 0
    for result in Pipeline(ssd, decode_workers=workers, overlap=True).run(source()):
        assert result.ok, result.error
        consumed += 1
        time.sleep(0.01)  # a slow sink: the decoders run ahead, up to their bound
        most_ahead = max(most_ahead, pulled - consumed)
    assert consumed == 20
    # slots for the workers plus the decoded one waiting, plus one the feeder holds until a slot frees up
    assert 2 <= most_ahead <= workers + 2


CTRL_C_CHILD = """
import itertools, sys, threading, time
from edge.model import load_model
from edge.pipeline import Pipeline
def ours():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("edge-"))
pipeline = Pipeline(load_model(sys.argv[1], std=255.0), decode_workers=3, overlap=True)
try:
    for i, result in enumerate(pipeline.run(itertools.cycle(sys.argv[2:]))):
        assert result.ok, result.error
        if i == 10:
            print("running", ours(), flush=True)
except KeyboardInterrupt:
    deadline = time.monotonic() + 10
    while ours() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("left", ours(), flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_every_worker(assets, tmp_path):
    photos = [str(p) for p in camera_photos(assets, tmp_path)]
    child = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, str(assets.model("ssd")), *photos],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        running = child.stdout.readline()
        assert running.startswith("running") and "edge-decode" in running and "edge-feed" in running, running
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert out.strip() == "left []"


def test_default_workers_follow_the_cores_this_process_may_use(ssd):
    allowed = os.sched_getaffinity(0)
    assert Pipeline(ssd).decode_workers == usable_cores() == len(allowed)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert Pipeline(ssd).decode_workers == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert Pipeline(ssd, decode_workers=0).run  # 0: serial, allowed
    for bad in (-1, "2", 1.5):
        with pytest.raises(ConfigError, match="decode_workers must be a whole number >= 0"):
            Pipeline(ssd, decode_workers=bad)  # type: ignore[arg-type]


def test_workers_for_keeps_the_interpreter_busy_and_no_more():
    assert workers_for(0.08, 0.02, 4) == 0  # a tiny model: handing frames over costs more than it saves
    assert workers_for(7.7, 0.3, 4) == 0  # an invoke under the hand-off cost stays serial too
    assert workers_for(1.7, 3.6, 4) == 1  # the interpreter is the bottleneck: one decoder keeps up
    assert workers_for(3.4, 3.5, 4) == 1
    assert workers_for(7.7, 3.5, 4) == 3
    assert workers_for(7.7, 3.5, 2) == 2  # never more than allowed
    assert workers_for(40.0, 3.0, 4) == 4  # a Coral: decode is everything, every core decodes
    assert workers_for(7.7, 3.5, 0) == 0


def test_profiles_carry_their_decode_workers(tmp_path, monkeypatch):
    counts = {name: load_profile(name).resolved_decode_workers() for name in list_profiles()}
    assert counts["raspberry-pi-zero-2w"] == 2 and counts["raspberry-pi-4"] == counts["raspberry-pi-5"] == 3
    assert counts["coral-usb"] == counts["coral-dev-board"] == 4
    assert counts["generic-x86_64"] == counts["generic-aarch64"] == usable_cores()
    base = (ROOT / "devices" / "raspberry-pi-4.toml").read_text()
    monkeypatch.setenv("EDGE_PROFILES_DIR", str(tmp_path))
    (tmp_path / "old.toml").write_text(base.replace("decode_workers = 3", ""))
    assert load_profile("old").decode_workers == 0  # written before the key: one per core
    (tmp_path / "bad.toml").write_text(base.replace("decode_workers = 3", "decode_workers = -2"))
    with pytest.raises(ConfigError, match=r"bad.toml: decode_workers is -2; allowed: an integer >= 0"):
        load_profile("bad")


def test_serial_fast_path_takes_a_swap_between_inferences(assets, tmp_path):
    package = read_package(assets.digits_package)
    v2_path = tmp_path / "digits-v2.edgepkg"
    write_package(v2_path, replace(package.manifest, version=2), dict(package.files))
    v1, v2 = load_model(assets.digits_package), load_model(v2_path)
    pipeline = Pipeline(v1, top_k=1)
    files = sorted(assets.digit_images.iterdir())[:10]
    versions, labels = [], []
    for i, result in enumerate(pipeline.run(files)):
        versions.append(result.model_version)
        labels.append(result.result.classes[0].label)
        if i == 5:
            pipeline.swap_model(v2)
    assert pipeline.workers_used == 0  # the digits CNN on 8x8 PNGs: serial
    assert versions == [1] * 6 + [2] * 4
    assert labels == [Pipeline(v1, top_k=1).infer(f).result.classes[0].label for f in files]


def test_the_orientation_shortcut_still_reads_exif_in_png_and_webp(assets, ssd, tmp_path):
    with Image.open(assets.images["chelsea_exif6.jpg"]) as image:  # stored 300x451, upright 451x300
        pixels, exif = image.convert("RGB"), image.getexif()
    for suffix in (".png", ".webp", ".jpg"):
        path = tmp_path / f"turned{suffix}"
        pixels.save(path, exif=exif)
        plain = tmp_path / f"plain{suffix}"
        pixels.save(plain)
        assert Pipeline(ssd).infer(path).image_size == (451, 300), suffix
        assert Pipeline(ssd).infer(plain).image_size == (300, 451), suffix
