"""Tracking: hand-built sequences with known answers; the real SSD test model on moving synthetic frames."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest

from edge.errors import ConfigError, InputError
from edge.tasks.detection import DetectedObject
from edge.tracking import Track, TrackAnnotator, Tracker, track_ids

DT = 0.1


def obj(x: float, y: float, label: str = "person", score: float = 0.9, size: float = 40.0) -> DetectedObject:
    return DetectedObject(label, 0, score, (x, y, x + size, y + size))


def ids(tracker: Tracker, objects: list[DetectedObject], t: float) -> list[int | None]:
    return track_ids(tracker.update(objects, t), len(objects))


def test_one_object_keeps_its_id_and_confirms_after_min_hits():
    tracker = Tracker(min_hits=3)
    states = []
    for i in range(5):
        tracks = tracker.update([obj(10 + 5 * i, 20)], i * DT)
        assert [t.track_id for t in tracks] == [1]
        states.append(tracks[0].state)
    assert states == ["tentative", "tentative", "confirmed", "confirmed", "confirmed"]
    track = tracker.tracks[0]
    assert (track.hits, track.first_seen, track.last_seen) == (5, 0.0, pytest.approx(0.4))
    assert track.velocity == pytest.approx((50.0, 0.0))  # 5 px per 0.1 s


def test_two_objects_crossing_paths_keep_their_ids():
    # Same label, moving towards each other along x, 20 px apart in y: they overlap for several frames.
    tracker = Tracker(min_hits=1)
    seen: dict[str, set[int | None]] = {"right": set(), "left": set()}
    for i in range(21):
        going_right = obj(0 + 10 * i, 0)
        going_left = obj(200 - 10 * i, 20)
        a, b = ids(tracker, [going_right, going_left], i * DT)
        seen["right"].add(a)
        seen["left"].add(b)
    assert seen == {"right": {1}, "left": {2}}


def test_crossing_paths_with_detections_in_swapped_order():
    tracker = Tracker(min_hits=1)
    for i in range(21):
        right, left = obj(10 * i, 0), obj(200 - 10 * i, 20)
        objects = [left, right] if i % 2 else [right, left]
        got = ids(tracker, objects, i * DT)
        by_box = dict(zip((o.box for o in objects), got, strict=True))
        assert (by_box[right.box], by_box[left.box]) == (1, 2), i


def test_missing_for_a_frame_or_two_keeps_its_id_by_prediction():
    # 15 px per frame with a 40 px box: after two missed frames the object is 45 px from its last box
    # (no overlap with it), but the predicted box is right on it.
    tracker = Tracker(min_hits=2, max_age=1.0, max_distance=0)
    for i in range(4):
        tracker.update([obj(15 * i, 0)], i * DT)
    for i in (4, 5):
        (track,) = tracker.update([], i * DT)
        assert track.state == "lost" and track.detection is None
        assert track.box == pytest.approx((15 * i, 0, 15 * i + 40, 40))
    tracks = tracker.update([obj(15 * 6, 0)], 6 * DT)
    assert [(t.track_id, t.state, t.detection) for t in tracks] == [(1, "confirmed", 0)]


def test_constant_velocity_box_is_predicted():
    # Moving and growing at constant rates: the lost track's box is the straight-line extrapolation.
    tracker = Tracker(min_hits=1)
    for i in range(6):
        x, y, grow = 100 + 8 * i, 50 - 3 * i, 2 * i
        tracker.update([DetectedObject("car", 2, 0.8, (x, y, x + 60 + grow, y + 30 + grow))], i * DT)
    (track,) = tracker.update([], 0.75)  # 2.5 frames after the last one, between frames
    i = 7.5
    x, y, grow = 100 + 8 * i, 50 - 3 * i, 2 * i
    assert track.box == pytest.approx((x, y, x + 60 + grow, y + 30 + grow))
    assert track.velocity == pytest.approx((80 + 10, -30 + 10))  # centre: x + w/2, y + h/2 per second


def test_a_new_object_gets_a_new_id():
    tracker = Tracker(min_hits=1)
    assert ids(tracker, [obj(0, 0)], 0.0) == [1]
    assert ids(tracker, [obj(2, 0)], DT) == [1]
    assert ids(tracker, [obj(4, 0), obj(300, 300)], 2 * DT) == [1, 2]
    assert ids(tracker, [obj(300, 302), obj(6, 0), obj(150, 0)], 3 * DT) == [2, 1, 3]


def test_min_hits_debounce_drops_a_tentative_track_that_misses_a_frame():
    tracker = Tracker(min_hits=3)
    tracker.update([obj(0, 0)], 0.0)
    tracker.update([obj(1, 0)], DT)
    assert tracker.update([], 2 * DT) == []  # tentative, missed once: gone
    tracks = tracker.update([obj(2, 0)], 3 * DT)
    assert [(t.track_id, t.state, t.hits) for t in tracks] == [(2, "tentative", 1)]


def test_max_age_deletes_an_unseen_track():
    tracker = Tracker(min_hits=1, max_age=0.5, max_misses=0)
    tracker.update([obj(0, 0)], 0.0)
    tracker.update([obj(0, 0)], DT)
    assert [t.state for t in tracker.update([], 0.6)] == ["lost"]  # unseen 0.5 s: kept
    assert tracker.update([], 0.61) == []  # unseen over 0.5 s: deleted
    assert ids(tracker, [obj(0, 0)], 0.7) == [2]  # the same place again is a new track


def test_at_high_frame_rates_the_seconds_decide():
    tracker = Tracker(min_hits=1, max_age=0.5)  # max_misses 3: 3 frames are 0.1 s here
    for i in range(3):
        tracker.update([obj(0, 0)], i * 0.033)
    frames = [tracker.update([], 0.066 + (i + 1) * 0.033) for i in range(20)]
    alive = [bool(tracks) for tracks in frames]
    assert alive == [True] * 15 + [False] * 5  # lost until unseen for over 0.5 s (15 frames), then gone


def test_a_slow_source_keeps_a_track_through_missed_frames():
    # One frame every 2 s (edge run --fps 0.5): each miss is already past max_age, the frame count decides.
    tracker = Tracker(min_hits=3)
    assert [ids(tracker, [obj(10 * i, 0)], 2.0 * i) for i in range(3)] == [[1], [1], [1]]
    assert [t.state for t in tracker.update([], 6.0)] == ["lost"]  # one detection missed: not the end
    assert ids(tracker, [obj(40, 0)], 8.0) == [1]  # found again where it was going: the same track
    for t in (10.0, 12.0, 14.0):
        assert [tr.state for tr in tracker.update([], t)] == ["lost"]  # three misses in a row: kept
    assert tracker.update([], 16.0) == []  # the fourth, 8 s unseen: gone


def test_a_long_gap_does_not_throw_the_prediction_away():
    # A person walking, then still; the motion gate skips the frames of the still scene for a minute. Their
    # velocity is not extrapolated over the gap (it would put them 3,000 px away): at most max_age of it.
    tracker = Tracker(min_hits=1)
    for i in range(5):
        tracker.update([obj(100 + 5 * i, 100)], i * DT)  # 50 px/s
    assert ids(tracker, [obj(125, 100)], 60.0) == [1]


def test_labels_never_swap():
    # A cat and a dog on the same spot, the dog a frame late: each keeps its label's track.
    tracker = Tracker(min_hits=1)
    assert ids(tracker, [obj(0, 0, "cat")], 0.0) == [1]
    assert ids(tracker, [obj(1, 0, "dog"), obj(1, 0, "cat")], DT) == [2, 1]
    for i in range(2, 8):
        tracks = tracker.update([obj(i, 0, "dog"), obj(1 + 8 * (i - 1), 0, "cat")], i * DT)
        assert {t.track_id: t.label for t in tracks} == {1: "cat", 2: "dog"}
    # A dog where only the cat's track was: a new dog track, never the cat's id.
    tracker = Tracker(min_hits=1)
    tracker.update([obj(0, 0, "cat")], 0.0)
    assert ids(tracker, [obj(0, 0, "dog")], DT) == [2]


def test_flickering_low_score_detection_creates_no_track():
    tracker = Tracker(high_score=0.5, low_score=0.1, min_hits=1)
    for i in range(10):
        objects = [obj(50, 50, score=0.3)] if i % 2 else []
        assert tracker.update(objects, i * DT) == []


def test_flickering_high_score_detection_stays_tentative_and_unconfirmed():
    tracker = Tracker(min_hits=3)
    for i in range(10):
        objects = [obj(50, 50)] if i % 2 else []
        assert all(t.state == "tentative" for t in tracker.update(objects, i * DT))


def test_low_score_detection_keeps_a_confirmed_track_alive():
    # ByteTrack's second stage: an occluded person scoring 0.3 still extends their track.
    tracker = Tracker(high_score=0.5, low_score=0.1, min_hits=2)
    for i in range(3):
        tracker.update([obj(3 * i, 0)], i * DT)
    for i in range(3, 6):
        tracks = tracker.update([obj(3 * i, 0, score=0.3)], i * DT)
        assert [(t.track_id, t.state, t.detection, t.score) for t in tracks] == [(1, "confirmed", 0, 0.3)]
    # Below low_score the detection is ignored: the track goes lost.
    assert [t.state for t in tracker.update([obj(18, 0, score=0.05)], 6 * DT)] == ["lost"]


def test_fast_object_is_followed_by_centre_distance():
    # 50 px per frame with a 40 px box: no IoU between frames; the centre-distance stage follows it.
    tracker = Tracker(min_hits=1)
    assert {i for k in range(6) for i in ids(tracker, [obj(50 * k, 0)], k * DT)} == {1}
    tracker = Tracker(min_hits=1, max_distance=0)
    assert [ids(tracker, [obj(50 * k, 0)], k * DT)[0] for k in range(3)] == [1, 2, 3]


def test_deterministic():
    rng = np.random.default_rng(7)
    frames = [
        [obj(float(x), float(y), score=float(s)) for x, y, s in rng.uniform([0, 0, 0], [300, 300, 1], (8, 3))]
        for _ in range(20)
    ]

    def run() -> list[list[Track]]:
        tracker = Tracker(min_hits=2)
        return [tracker.update(f, i * DT) for i, f in enumerate(frames)]

    assert run() == run()


def test_to_json_and_errors():
    tracker = Tracker(min_hits=1)
    (track,) = tracker.update([obj(1.234, 2.0)], 5.0)
    assert track.to_json() == {
        "track_id": 1,
        "label": "person",
        "box": [1.23, 2.0, 41.23, 42.0],
        "score": 0.9,
        "first_seen": 5.0,
        "last_seen": 5.0,
        "hits": 1,
        "state": "confirmed",
        "velocity": [0.0, 0.0],
    }
    with pytest.raises(InputError, match="not decrease"):
        tracker.update([], 4.0)
    tracker.reset()
    assert ids(tracker, [obj(0, 0)], 0.0) == [2]  # ids keep increasing after a reset
    with pytest.raises(ConfigError, match="low_score=0.9"):
        Tracker(low_score=0.9, high_score=0.5)
    with pytest.raises(ConfigError, match="min_hits=0"):
        Tracker(min_hits=0)


def test_ssd_model_square_moving_across_quadrants_keeps_one_track(assets):
    # The SSD test model answers with fixed quadrant boxes scored by the quadrant's channel mean. A 48 px red
    # square on a 128x128 frame moves TL -> TR -> BR -> BL, four frames in each quadrant (drifting inside it):
    # score 48*48 / 64*64 = 0.5625 in its quadrant, 0 elsewhere. The quadrant boxes never overlap, so the
    # centre-distance stage carries the track across each jump (0.88 box diagonals).
    from edge.model import load_model
    from edge.pipeline import Pipeline

    pipeline = Pipeline(load_model(assets.model("ssd"), std=255.0), resize="letterbox")
    tracker = Tracker(min_hits=3, max_age=1.0)
    corners = [(0, 0), (64, 0), (64, 64), (0, 64)]  # TL, TR, BR, BL
    frame_ids: list[list[int | None]] = []
    states = []
    centres = []
    k = 0
    for qx, qy in corners:
        for step in range(4):
            image = np.zeros((128, 128, 3), np.uint8)
            x, y = qx + 4 + 4 * step, qy + 6
            image[y : y + 48, x : x + 48, 0] = 255
            result = pipeline.infer(image)
            assert result.error is None
            objects = result.result.objects
            assert len(objects) == 1 and objects[0].score == pytest.approx(0.5625, abs=0.02)
            tracks = tracker.update(objects, k * 0.2)
            frame_ids.append(track_ids(tracks, len(objects)))
            states.append(tracks[0].state)
            x0, y0, x1, y1 = objects[0].box
            centres.append(((x0 + x1) / 2 // 64, (y0 + y1) / 2 // 64))
            k += 1
    assert centres[::4] == [(0, 0), (1, 0), (1, 1), (0, 1)]  # it did visit every quadrant
    assert frame_ids == [[1]] * 16
    assert states[:3] == ["tentative", "tentative", "confirmed"] and set(states[2:]) == {"confirmed"}


class _Frame(NamedTuple):
    """The fields of ``edge.pipeline.InferenceResult`` a ``TrackAnnotator`` reads."""

    result: Any
    media_time: float | None
    source: str = "clip"
    error: None = None


class _Objects(NamedTuple):
    objects: list[DetectedObject]


def _annotate(annotator: TrackAnnotator, x: float, media_time: float | None) -> int | None:
    record: dict[str, Any] = {"objects": [{}]}
    annotator(_Frame(_Objects([obj(x, 0)]), media_time), record)  # type: ignore[arg-type]
    return record["objects"][0].get("track_id")  # type: ignore[no-any-return]


def test_a_video_file_is_tracked_on_its_own_timeline() -> None:
    # Decoded in microseconds, 25 fps in the file: velocities per second of film, a replay starts over.
    annotator = TrackAnnotator(min_hits=1)
    assert {_annotate(annotator, 2.0 * i, i / 25) for i in range(50)} == {1}  # 2 s of film
    assert annotator._trackers["clip"].tracks[0].velocity == pytest.approx((50.0, 0.0))
    assert _annotate(annotator, 100.0, 1.95) == 1  # a timestamp 10 ms back (jitter): held, same track
    assert _annotate(annotator, 101.0, None) == 1  # a frame without a timestamp keeps the file's time
    assert _annotate(annotator, 0.0, 0.0) == 2  # the timeline went back 2 s: played again, new tracks
