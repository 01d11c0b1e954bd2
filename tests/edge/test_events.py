"""Zones, filters and events: hand-built sequences through the real tracker, with known answers."""

from __future__ import annotations

import io
import time
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from edge.errors import ConfigError
from edge.events import (
    END,
    NEW,
    UPDATE,
    Event,
    EventAnnotator,
    EventEngine,
    EventListener,
    EventSettings,
    FrameKeeper,
    render_jpeg,
    tracker_options_for,
)
from edge.sources.base import FINISHED, STALLED, STREAMING, InputItem, SourceBoard
from edge.tasks.detection import DetectedObject
from edge.tracking import Tracker
from edge.zones import (
    ObjectFilter,
    inside,
    inside_many,
    make_zone,
    parse_min_scores,
    parse_zone,
    zone_from_table,
)

W, H = 400, 200
DT = 0.1
RIGHT = make_zone("right", [0.5, 0, 1, 0, 1, 1, 0.5, 1])


def obj(x: float, y: float = 60, label: str = "person", score: float = 0.9, size: float = 40
        ) -> DetectedObject:
    return DetectedObject(label, 0, score, (x, y, x + size, y + size))


def run(frames: list[list[DetectedObject]], settings: EventSettings, gap_after: int | None = None) -> list:
    """Feed frames (0.1 s apart) through a tracker and an engine; every event, in order."""
    tracker = Tracker(**tracker_options_for(settings, max_age=0.5))
    engine = EventEngine("cam", settings)
    events = []
    for i, objects in enumerate(frames):
        t = i * DT
        step = engine.update(tracker.update(objects, t), W, H, 1000.0 + t, frame=i)
        events.extend(step.events)
    return events


# ------------------------------------------------------------------------------------------------ zones


def test_point_in_polygon_on_a_concave_shape():
    ell = [(0, 0), (1, 0), (1, 0.4), (0.4, 0.4), (0.4, 1), (0, 1)]
    assert inside(0.2, 0.9, ell) and inside(0.9, 0.2, ell)
    assert not inside(0.7, 0.7, ell)  # the notch
    assert not inside(1.5, 0.2, ell)


def test_many_points_at_once_agree_with_one_at_a_time():
    rng = np.random.default_rng(3)
    for _ in range(20):
        polygon = [tuple(p) for p in rng.uniform(0, 1, (int(rng.integers(3, 9)), 2)).tolist()]
        x, y = rng.uniform(-0.1, 1.1, 500), rng.uniform(-0.1, 1.1, 500)
        one_by_one = [inside(a, b, polygon) for a, b in zip(x, y, strict=True)]
        assert inside_many(x, y, polygon).tolist() == one_by_one


def test_a_zone_holds_an_object_by_the_bottom_centre_of_its_box():
    # box from x 180..260 (centre 220 > 200 = half of 400), bottom at y 100 (of 200)
    assert RIGHT.holds("person", (180, 20, 260, 100), W, H)
    assert not RIGHT.holds("person", (100, 20, 190, 100), W, H)  # centre 145: left half
    cars_only = make_zone("drive", [0, 0, 1, 0, 1, 1], labels=["car"])
    assert cars_only.holds("car", (300, 0, 390, 50), W, H)
    assert not cars_only.holds("person", (300, 0, 390, 50), W, H)


def test_zone_parsing_from_the_command_line_and_tables():
    zone = parse_zone("yard/drive=0,0.5, 1,0.5, 1,1")
    assert (zone.name, zone.source, zone.points) == ("drive", "yard", ((0, 0.5), (1, 0.5), (1, 1)))
    assert parse_zone("all=0,0,1,0,1,1").source is None
    points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.9]]
    table = zone_from_table({"name": "door", "points": points, "labels": ["person"]})
    assert table.labels == frozenset({"person"}) and len(table.points) == 3
    for bad, words in [("drive=0,0,1,0", "at least 3 points"), ("drive=0,0,2,0,1,1", "0 to 1"),
                       ("drive", "expected"), ("dr ive=0,0,1,0,1,1", "letters"),
                       ("d=a,b,c,d,e,f", "numbers")]:
        with pytest.raises(ConfigError, match=words):
            parse_zone(bad)
    with pytest.raises(ConfigError, match="unknown key"):
        zone_from_table({"name": "a", "points": [[0, 0], [1, 0], [1, 1]], "colour": "red"})


def test_min_scores_parse_into_a_default_and_per_label_values():
    assert parse_min_scores(["0.6", "person=0.8", "car=0.3"]) == (0.6, (("person", 0.8), ("car", 0.3)))
    assert parse_min_scores([]) == (None, ())
    with pytest.raises(ConfigError, match="LABEL=SCORE"):
        parse_min_scores(["person=1.5"])
    policy = ObjectFilter(min_score=0.6, label_min_score=(("person", 0.8),), min_area=0.01)
    assert policy.admits("car", 0.7, (0, 0, 40, 40), W, H)
    assert not policy.admits("person", 0.7, (0, 0, 40, 40), W, H)  # its own bar is 0.8
    assert not policy.admits("car", 0.7, (0, 0, 5, 5), W, H)  # 25 px^2 < 1 % of 80000


# ----------------------------------------------------------------------------------------------- events


def passage(start: int = 0, frames: int = 30, step: float = 12.0) -> list[list[DetectedObject]]:
    """A person walking left to right across the frame, one frame per 0.1 s."""
    return [[obj(10 + step * i)] for i in range(frames)]


def test_one_passage_is_one_event_with_its_zone_entry_and_end():
    frames = passage() + [[] for _ in range(10)]
    events = run(frames, EventSettings(filter=ObjectFilter(min_frames=3), zones=(RIGHT,), update_interval=60))
    assert [e.type for e in events] == [NEW, UPDATE, END]
    new, entered, end = events
    assert new.zones == () and new.label == "person" and new.track_id == 1
    assert new.start == pytest.approx(1000.0)  # the start is the first sighting, not the debounced frame
    # bottom centre x = 10 + 12 i + 20 > 200 from i = 15 on: the entry update comes at that frame, at once
    assert entered.zones == ("right",) and entered.entered_zones == ("right",)
    assert end.end == pytest.approx(1000.0 + 29 * DT) and end.entered_zones == ("right",)
    assert {e.event_id for e in events} == {new.event_id}
    assert 0 <= end.box[0] <= end.box[2] <= 1


def test_debounce_keeps_a_flicker_from_making_events():
    flicker = [[obj(100)] if i % 3 == 0 else [] for i in range(30)]  # seen one frame in three
    assert run(flicker, EventSettings(filter=ObjectFilter(min_frames=3))) == []
    short = [[obj(100)], [obj(102)], [], [], [], [], [], [], [], []]  # two frames, then gone
    assert run(short, EventSettings(filter=ObjectFilter(min_frames=3))) == []


def test_a_missed_frame_does_not_split_the_event():
    frames = passage(frames=20)
    frames[8] = frames[9] = []  # two misses inside the tracker's max_age
    events = run(frames + [[]] * 10, EventSettings(update_interval=60))
    assert [e.type for e in events] == [NEW, END]


def test_two_passages_are_two_events():
    frames = passage(frames=15) + [[]] * 10 + passage(frames=15)
    events = run(frames + [[]] * 10, EventSettings(update_interval=60))
    assert [e.type for e in events] == [NEW, END, NEW, END]
    assert events[0].track_id != events[2].track_id and events[0].event_id != events[2].event_id


def test_filters_keep_labels_scores_and_areas_out():
    frames = [[obj(100, label="cat"), obj(250, label="person", score=0.4), obj(10, y=150, size=4)]
              for _ in range(10)]
    strict = ObjectFilter(labels=frozenset({"person", "cat"}), min_score=0.5,
                          label_min_score=(("cat", 0.95),), min_area=0.001)
    assert run(frames, EventSettings(filter=strict)) == []
    taken = run(frames + [[]] * 10, EventSettings(filter=ObjectFilter(min_score=0.3, min_area=0.0)))
    assert sorted({e.label for e in taken}) == ["cat", "person"]
    assert len([e for e in taken if e.type == NEW]) == 3  # the tiny one too, with no area bar


def test_updates_on_a_better_score_come_at_most_every_interval():
    frames = [[obj(100 + i, score=0.5 + 0.01 * i)] for i in range(40)]  # better every frame, 4 s in all
    events = run(frames, EventSettings(filter=ObjectFilter(min_score=0.5), update_interval=1.0))
    updates = [e for e in events if e.type == UPDATE]
    assert 2 <= len(updates) <= 4  # ~every second of the 3.7 s after the new event, not 37
    assert updates[-1].score > updates[0].score


def test_counts_per_label_and_zone_change_with_events():
    tracker, engine = Tracker(max_age=0.5), EventEngine("cam", EventSettings(zones=(RIGHT,)))
    counts = []
    frames = [[obj(20), obj(300, label="car")]] * 5 + [[obj(20)]] * 10 + [[]] * 10
    for i, objects in enumerate(frames):
        step = engine.update(tracker.update(objects, i * DT), W, H, 1000 + i * DT)
        if step.counts is not None:
            counts.append(step.counts)
    assert counts[0] == {"labels": {}, "zones": {"right": {}}}
    assert {"labels": {"person": 1, "car": 1}, "zones": {"right": {"car": 1}}} in counts
    assert counts[-1] == {"labels": {"person": 0, "car": 0}, "zones": {"right": {}}}


def test_snapshots_are_asked_for_the_best_frame_and_at_most_every_interval():
    tracker, engine = Tracker(), EventEngine("cam", EventSettings(update_interval=1.0))
    asked: list[str] = []
    scores = [0.6, 0.6, 0.6, 0.7, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    for i, score in enumerate(scores):
        tracks = tracker.update([obj(100, score=score)], i * DT)
        step = engine.update(tracks, W, H, 1000 + i * DT, frame=f"f{i}")
        asked.extend(token for _, token, _ in step.snapshots)
        for event, _, _ in step.snapshots:
            engine.mark_snapshot(event.event_id)  # what the annotator does once it published one
    step = engine.close()
    asked.extend(token for _, token, _ in step.snapshots)
    # new at frame 2 (third match), best at frame 4 (0.9) waits for the 1 s interval, taken at frame 12
    assert asked == ["f2", "f4"]
    end = step.events[0]
    assert end.type == END and end.snapshot and end.score == pytest.approx(0.9)


def test_a_snapshot_is_a_bounded_jpeg_with_the_box_drawn():
    pixels = np.zeros((720, 1280, 3), np.uint8)
    jpeg = render_jpeg(pixels, 320, (640, 360, 800, 600), "person 91%")
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(jpeg))
    assert image.size == (320, 180)
    r, g, b = image.convert("RGB").getpixel((200, 120))  # on the box's bottom edge (800/4, 600/4 - 30)
    assert r > 150 and g < 120  # red outline on black
    assert render_jpeg(pixels, 320, max_bytes=10) is None  # cannot fit: no half picture
    assert render_jpeg(b"not an image", 320) is None


def test_the_frame_keeper_holds_the_last_frames_of_each_source():
    keeper = FrameKeeper(per_source=2)
    items = [InputItem(f"a#{i}", payload=b"x%d" % i, source="a", frame=i) for i in range(4)]
    assert list(keeper.wrap(items)) == items
    assert keeper.get("a", 3) == b"x3" and keeper.get("a", 1) is None and keeper.latest("a") == b"x3"
    assert keeper.sources() == ["a"] and keeper.get("b", 0) is None


# ------------------------------------------------------------------------------------------------ annotator

class _Objects(NamedTuple):
    objects: list[DetectedObject]


class _Outcome(NamedTuple):
    """The fields of ``edge.pipeline.InferenceResult`` an ``EventAnnotator`` reads."""

    result: _Objects
    source: str
    frame: int
    error: None = None
    image_size: tuple[int, int] = (W, H)
    model_name: str = "ssd"
    model_version: int = 1


class _Heard(EventListener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_event(self, event: Event) -> None:
        self.events.append((event.source, event.type))


def _frame(annotator: EventAnnotator, source: str, index: int, objects: list[DetectedObject]) -> None:
    record = {"objects": [{"label": o.label} for o in objects]}
    annotator(_Outcome(_Objects(objects), source, index), record)  # type: ignore[arg-type]


def _annotator(board: SourceBoard | None, min_hits: int = 1) -> tuple[EventAnnotator, _Heard]:
    annotator = EventAnnotator(EventSettings(update_interval=60), min_hits=min_hits)
    heard = _Heard()
    annotator.add_listener(heard)
    if board is not None:
        annotator.follow(board)
    annotator.quiet_after = 0.05  # seconds without a frame before an unfollowed source counts as gone
    return annotator, heard


@pytest.mark.parametrize("followed", [False, True])
def test_a_still_source_keeps_its_events_while_another_streams(followed: bool) -> None:
    # The driveway's motion gate holds its frames back while a car stands still; the porch keeps streaming.
    board = SourceBoard()
    for name in ("driveway", "porch"):
        board.add(name, "rtsp", f"rtsp://cam/{name}")
        board.set_state(name, STREAMING)
    annotator, heard = _annotator(board if followed else None)
    for i in range(3):
        _frame(annotator, "driveway", i, [obj(100)])
        _frame(annotator, "porch", i, [])
    assert heard.events == [("driveway", NEW)]
    time.sleep(0.2)
    _frame(annotator, "porch", 3, [])
    # without the board's word the quiet source counts as gone; with it, the car's event stays open
    assert heard.events == [("driveway", NEW)] + ([] if followed else [("driveway", END)])


def test_a_source_that_goes_down_ends_its_events_at_once() -> None:
    board = SourceBoard()
    board.add("driveway", "rtsp", "rtsp://cam/driveway")
    board.set_state("driveway", STREAMING)
    annotator, heard = _annotator(board)
    for i in range(3):
        _frame(annotator, "driveway", i, [obj(100)])
    board.set_state("driveway", STALLED, "no frame for 10 s")
    assert heard.events == [("driveway", NEW), ("driveway", END)]
    _frame(annotator, "driveway", 3, [obj(100)])  # a frame still in the pipeline: no new event from it
    assert len(heard.events) == 2
    board.set_state("driveway", STREAMING)
    board.set_state("driveway", FINISHED)  # a finished source ends as a quiet one, after its last frames
    for i in range(4, 7):
        _frame(annotator, "driveway", i, [obj(100)])
    time.sleep(0.2)
    _frame(annotator, "porch", 0, [])
    assert heard.events[2:] == [("driveway", NEW), ("driveway", END)]


def test_a_slow_source_is_not_quiet_between_its_frames() -> None:
    # The driveway sends a frame every 0.1 s (its --fps), the porch one every 0.02 s; with quiet_after at
    # 0.05 s, four of the driveway's own intervals count, not the floor.
    annotator, heard = _annotator(None, min_hits=3)
    for i in range(30):
        if i % 5 == 0:
            _frame(annotator, "driveway", i // 5, [obj(100)])
        _frame(annotator, "porch", i, [])
        time.sleep(0.02)
    assert heard.events == [("driveway", NEW)]
    time.sleep(5 * annotator._engines["driveway"].frame_interval)  # past four of its intervals, however long
    _frame(annotator, "porch", 30, [])
    assert heard.events == [("driveway", NEW), ("driveway", END)]  # now it is gone
