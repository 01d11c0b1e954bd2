"""``edge run --events`` as a user runs it: a real third-party detector on a real photo moving through a
video, events and snapshots over a real mosquitto through the outbox, ``cmd/snapshot`` on a real RTSP stream.

The sequence: scikit-image's astronaut (340 px) slides left to right across a black 640x360 canvas, 30 px a
frame at 10 fps, twice, with black frames before, between and after. nudenet's YOLOv8n
(tests/third_party_yolo.py) finds her face (FACE_FEMALE, ~0.7) in every frame where it is whole.
Hand-checked: a passage is one event; the face's box centre passes x = 320 (the "right" zone is the right
half) at frame 11 or 12 of each passage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher, wait_for
from tests.e2e.test_tracking_cli import moving_square
from tests.third_party_yolo import ThirdPartyYolo, third_party_yolo  # noqa: F401

pytest_plugins = ["tests.streams"]

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]
W, H = 640, 360
FPS = 10
BLANK, STEPS, PHOTO, START_X, STEP_X = 8, 24, 340, -170, 30


def passing_astronaut(path: Path) -> Path:
    from skimage import data

    from tests.streams import write_video

    photo = Image.fromarray(data.astronaut()).resize((PHOTO, PHOTO))
    frames = []
    for _ in range(2):
        frames += [np.zeros((H, W, 3), np.uint8)] * BLANK
        for i in range(STEPS):
            canvas = Image.new("RGB", (W, H))
            canvas.paste(photo, (START_X + STEP_X * i, 10))
            frames.append(np.asarray(canvas))
    frames += [np.zeros((H, W, 3), np.uint8)] * BLANK
    return write_video(path, frames, fps=FPS)


def edge_run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, "run", *args, "--profile", "none"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("pace", [("--realtime",), ()], ids=["realtime", "as-fast-as-it-decodes"])
def test_a_real_detector_on_a_real_sequence_gives_one_event_per_passage(
    third_party_yolo: ThirdPartyYolo, tmp_path: Path, pace: tuple[str, ...]  # noqa: F811
) -> None:
    # Played at its own pace or decoded as fast as it goes, a video file is tracked on its own timeline
    # (its frames' timestamps): the same events, lasting as long as in the film.
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(third_party_yolo.labels) + "\n")
    clip = passing_astronaut(tmp_path / "pass.mp4")
    done = edge_run(str(third_party_yolo.model), str(clip), *pace, "--labels", str(labels),
                    "--source-name", "porch", "--events", "--zone", "porch/right=0.5,0,1,0,1,1,0.5,1",
                    "--event-label", "FACE_FEMALE", "--threshold", "0.3", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    events = [r for r in lines if r.get("kind") == "event"]
    records = [r for r in lines if r.get("kind") is None]
    assert [r["media_time"] for r in records[:3]] == [0.0, 0.1, 0.2]  # seconds into the file
    assert [(e["type"], e["label"]) for e in events if e["type"] != "update"] == [
        ("new", "FACE_FEMALE"), ("end", "FACE_FEMALE"), ("new", "FACE_FEMALE"), ("end", "FACE_FEMALE")]
    ids = list(dict.fromkeys(e["event_id"] for e in events))
    assert len(ids) == 2  # no flapping: one event per passage
    for event_id in ids:
        mine = [e for e in events if e["event_id"] == event_id]
        assert [e["type"] for e in mine] == ["new", "update", "end"]  # the update is the zone entry
        new, entry, end = mine
        assert new["zones"] == [] and entry["entered_zones"] == ["right"] == end["entered_zones"]
        assert new["source"] == "porch" and new["snapshot"] is True and new["score"] > 0.5
        # the face is whole in about 21 frames of each passage at 10 fps: ~2 s, seen from first to last
        assert 1.4 <= end["end"] - end["start"] <= 2.8, end
    # every object's zones follow its box's bottom centre; the entry happens where the hand check says
    faces = [(r["frame"], o) for r in records for o in r["objects"] if o["label"] == "FACE_FEMALE"
             and "track_id" in o and "zones" in o]
    assert len(faces) >= 30
    for _, face in faces:
        centre = (face["box"][0] + face["box"][2]) / 2
        assert face["zones"] == (["right"] if centre > W / 2 else []), face
    for passage in range(2):
        start = passage * (BLANK + STEPS) + BLANK
        frames_in = sorted(f - start for f, o in faces if o["zones"] and 0 <= f - start < STEPS)
        assert frames_in and frames_in[0] in (11, 12), frames_in  # x0 = -170 + 30 i; face centre > 320
    assert "event new FACE_FEMALE" not in done.stderr  # the lines go to stdout with the results


def test_events_and_snapshots_go_out_over_mqtt_in_the_results_sequence(
    assets: Assets, mosquitto: Broker, tmp_path: Path
) -> None:
    clip = moving_square(tmp_path / "square.mp4")
    watch = Watcher(mosquitto.url, "edge/cam1/#")
    state = tmp_path / "state"
    # --realtime: the clip's own timeline (15 fps); events and the tracker's motion model run on the clock
    done = edge_run(str(assets.model("ssd")), str(clip), "--realtime", "--std", "255", "--resize",
                    "letterbox", "--source-name", "yard", "--events", "--min-frames", "2",
                    "--zone", "right=0.5,0,1,0,1,1,0.5,1",
                    "--mqtt", mosquitto.url, "--device-id", "cam1", "--state-dir", str(state),
                    "--telemetry-interval", "0")
    assert done.returncode == 0, done.stderr
    assert "yard: event new 0 #1" in done.stdout and "yard: event end 0 #1" in done.stdout  # console lines

    messages: dict[str, list[Any]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(messages.get("edge/cam1/events", [])) < 3:
        for message in watch.drain():
            messages.setdefault(message.topic, []).append(message)
        time.sleep(0.1)
    results = [json.loads(m.payload) for m in messages.get("edge/cam1/results", [])]
    events = [json.loads(m.payload) for m in messages["edge/cam1/events"]]
    assert [e["type"] for e in events] == ["new", "update", "end"]
    assert all(e["schema"] == "edge.event/1" and e["device"] == "cam1" and e["label"] == "0" for e in events)
    assert events[1]["entered_zones"] == ["right"]
    seqs = sorted([r["seq"] for r in results] + [e["seq"] for e in events])
    assert len(results) >= 12 and seqs == list(range(1, len(results) + 3 + 1))  # one sequence, no gap
    assert {e["stream"] for e in events} == {results[0]["stream"]}

    # retained state: a late subscriber gets the best frame of the latest event and the counts
    assert "edge/cam1/yard/0/snapshot" in messages, sorted(messages)
    late = Watcher(mosquitto.url, "edge/cam1/yard/#", client_id="late")
    retained = {}
    while len(retained) < 2:
        message = late.messages.get(timeout=10)
        retained[message.topic] = message
    snapshot = retained["edge/cam1/yard/0/snapshot"]
    assert snapshot.retain and retained["edge/cam1/yard/counts"].retain
    image = Image.open(io.BytesIO(snapshot.payload))
    assert image.format == "JPEG" and image.size == (128, 128)  # the frame, under the 640 px bound
    counts = json.loads(retained["edge/cam1/yard/counts"].payload)
    assert counts == {"labels": {"0": 0}, "zones": {"right": {}}}  # the square left at the end
    late.close()
    watch.close()
    outbox = subprocess.run([*EDGE, "outbox", "--state-dir", str(state), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(outbox.stdout)["pending"] == 0


def test_cmd_snapshot_publishes_the_latest_frame_of_a_live_stream(
    assets: Assets, mosquitto: Broker, rtsp_server: Any, tmp_path: Path
) -> None:
    from tests.streams import solid_frames

    server = rtsp_server(solid_frames([(250, 20, 20)], size=(320, 240), hold=15), fps=15)
    proc = subprocess.Popen(
        [*EDGE, "run", str(assets.model("digits_int8")), server.url, "--source-name", "door", "--mqtt",
         mosquitto.url, "--device-id", "cam2", "--state-dir", str(tmp_path / "state"), "--profile", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    watch = Watcher(mosquitto.url, "edge/cam2/#", client_id="snap")
    try:
        wait_for(lambda: any(m.topic.endswith("/results") for m in watch.drain()), timeout=60,
                 what="results from the stream")
        watch.conn.publish("edge/cam2/cmd/snapshot", json.dumps({"request_id": 7, "size": 160})).wait(5)
        reply = watch.next_json("cmd/snapshot/reply", timeout=30)
        assert reply["ok"] is True and reply["request_id"] == 7, reply
        assert reply["snapshots"]["door"]["topic"] == "edge/cam2/door/snapshot"
        pictures = Watcher(mosquitto.url, "edge/cam2/door/snapshot", client_id="pictures")  # it is retained
        picture = pictures.next("edge/cam2/door/snapshot", timeout=10)
        pictures.close()
        image = Image.open(io.BytesIO(picture.payload)).convert("RGB")
        assert image.size == (160, 120)
        r, g, b = image.getpixel((80, 60))
        assert r > 180 and g < 80 and b < 80  # the stream's red frame, not a blank one
        other = json.dumps({"request_id": 8, "source": "garage"})
        watch.conn.publish("edge/cam2/cmd/snapshot", other).wait(5)
        refused = watch.next_json("cmd/snapshot/reply", timeout=30)
        assert refused["ok"] is False and "garage" in refused["error"] and "door" in refused["error"]
    finally:
        proc.terminate()
        proc.wait(60)
        watch.close()
