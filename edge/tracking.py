"""Multi-object tracking: detections associated across frames into tracks, SORT/ByteTrack style.

One ``Tracker`` per source. ``Tracker.update(objects, timestamp)`` takes one frame's detections (anything with
``label``, ``score`` and ``box`` = xmin, ymin, xmax, ymax, as ``edge.tasks.detection.DetectedObject``) and the
frame's time in seconds, and returns the live tracks. Pure: no threads, no I/O; the same inputs give the same
tracks and ids.

Each track predicts its box with a constant-velocity alpha-beta filter on (cx, cy, w, h), velocities per
second (so irregular frame rates are fine). Matching, always within one label, greedy by best pair first:

1. detections scoring at least ``high_score`` against every track, by IoU with the predicted box
   (at least ``iou_threshold``);
2. ByteTrack's second stage: detections between ``low_score`` and ``high_score`` against the tracks still
   unmatched that are confirmed or lost (a low score keeps a track alive, it never starts one);
3. a fallback for fast objects and low frame rates: high-score detections still unmatched against tracks still
   unmatched, by the distance between box centres, at most ``max_distance`` times the predicted box's diagonal
   (0 turns this stage off).

High-score detections left over start ``tentative`` tracks; a track is ``confirmed`` once it has ``min_hits``
matched frames (a tentative track missing a frame is dropped: debounce); a confirmed track that misses frames
is ``lost`` (its box is the prediction) and is deleted once unseen for more than ``max_age`` seconds *and*
more than ``max_misses`` frames: at 30 fps the seconds decide, on a slow source (``--fps 0.5``) or after
frames the motion gate skipped the frames do, so one missed detection does not end a track. A prediction
never runs further ahead than ``max_age`` seconds (velocities are not trusted beyond that). Track ids start
at 1 and increase per tracker; an id is never reused.

Wire format of a track: ``docs/tracking.md``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from edge.errors import ConfigError, InputError

Box = tuple[float, float, float, float]
State = Literal["tentative", "confirmed", "lost"]

# a media time (a video file's) going back by more than this many seconds is its timeline starting over
RESTART_S = 1.0

TENTATIVE: State = "tentative"
CONFIRMED: State = "confirmed"
LOST: State = "lost"


class Detection(Protocol):
    """What the tracker reads from a detection (``DetectedObject`` fits)."""

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def box(self) -> Box: ...


@dataclass(frozen=True, slots=True)
class Track:
    """One tracked object as of the latest ``update``.

    ``box`` is the matched detection's box, or the predicted box while ``lost``; ``score`` the latest matched
    detection's score; ``detection`` the index of the matched object in that update's input (``None`` when not
    matched in it); ``velocity`` the estimated centre velocity in pixels per second.
    """

    track_id: int
    label: str
    box: Box
    score: float
    first_seen: float
    last_seen: float
    hits: int
    state: State
    velocity: tuple[float, float] = (0.0, 0.0)
    detection: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "label": self.label,
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 6),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "hits": self.hits,
            "state": self.state,
            "velocity": [round(v, 2) for v in self.velocity],
        }


def track_ids(tracks: Sequence[Track], count: int) -> list[int | None]:
    """The track id of each of the ``count`` objects given to the update that returned ``tracks``."""
    ids: list[int | None] = [None] * count
    for track in tracks:
        if track.detection is not None and track.detection < count:
            ids[track.detection] = track.track_id
    return ids


class _Live:
    """Mutable state of one track inside the tracker (its filter state is a row of the tracker's arrays)."""

    __slots__ = ("track_id", "label", "box", "score", "first_seen", "last_seen", "hits", "state", "misses")

    def __init__(self, track_id: int, label: str, box: Box, score: float, t: float) -> None:
        self.track_id = track_id
        self.label = label
        self.box: Box = box
        self.score = score
        self.first_seen = t
        self.last_seen = t
        self.hits = 1
        self.state: State = TENTATIVE
        self.misses = 0  # frames in a row without a match


class Tracker:
    """Tracks of one source; call ``update`` once per frame, in time order."""

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        high_score: float = 0.5,
        low_score: float = 0.1,
        min_hits: int = 3,
        max_age: float = 1.0,
        max_misses: int = 3,
        max_distance: float = 1.0,
        alpha: float = 0.85,
        beta: float = 0.3,
    ) -> None:
        checks = {
            "iou_threshold": 0 < iou_threshold <= 1,
            "high_score": 0 <= high_score <= 1,
            "low_score": 0 <= low_score <= high_score,
            "min_hits": min_hits >= 1,
            "max_age": max_age >= 0,
            "max_misses": max_misses >= 0,
            "max_distance": max_distance >= 0,
            "alpha": 0 < alpha <= 1,
            "beta": 0 <= beta <= 2,
        }
        values = locals()
        bad = [f"{name}={values[name]!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"tracker settings out of range: {', '.join(bad)}; need 0 < iou_threshold <= 1, "
                "0 <= low_score <= high_score <= 1, min_hits >= 1, max_age >= 0, max_misses >= 0, "
                "max_distance >= 0, "
                "0 < alpha <= 1, 0 <= beta <= 2"
            )
        self.iou_threshold = iou_threshold
        self.high_score = high_score
        self.low_score = low_score
        self.min_hits = min_hits
        self.max_age = max_age
        self.max_misses = max_misses
        self.max_distance = max_distance
        self.alpha = alpha
        self.beta = beta
        self._tracks: list[_Live] = []
        # Each track's alpha-beta filter, one row per track in ``_tracks`` order: state (cx, cy, w, h), its
        # velocity per second, the time of its last correction, and how many corrections it had.
        self._x = np.zeros((0, 4))
        self._v = np.zeros((0, 4))
        self._t = np.zeros(0)
        self._n = np.zeros(0, dtype=np.intp)
        self._next_id = 1
        self._time: float | None = None

    @property
    def last_time(self) -> float | None:
        """The timestamp of the last update (None before the first, or after ``reset``)."""
        return self._time

    def reset(self) -> None:
        """Forget every track (ids keep increasing), e.g. after a source restarts its clock."""
        self._tracks = []
        self._x, self._v = np.zeros((0, 4)), np.zeros((0, 4))
        self._t, self._n = np.zeros(0), np.zeros(0, dtype=np.intp)
        self._time = None

    def update(self, objects: Sequence[Detection], timestamp: float) -> list[Track]:
        """Associate one frame's detections; the live tracks, oldest first."""
        t = float(timestamp)
        if not math.isfinite(t) or (self._time is not None and t < self._time):
            raise InputError(
                f"tracker timestamps must be finite and not decrease: got {timestamp!r} after "
                f"{self._time!r}; use one Tracker per source, or call reset() when a source restarts its "
                "clock"
            )
        self._time = t
        tracks = self._tracks
        predicted = self._x + self._v * np.clip(t - self._t, 0.0, self.max_age)[:, None]
        predicted[:, 2:] = np.maximum(predicted[:, 2:], 1.0)
        predicted_boxes = _to_corners(predicted)
        det_boxes = np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
        scores = np.array([o.score for o in objects], dtype=np.float64)
        codes: dict[str, int] = {}
        track_labels = np.array([codes.setdefault(tr.label, len(codes)) for tr in tracks], dtype=np.intp)
        det_labels = np.array([codes.setdefault(o.label, len(codes)) for o in objects], dtype=np.intp)
        same_label = track_labels[:, None] == det_labels[None, :]
        overlap = _iou_matrix(predicted_boxes, det_boxes)
        overlap[~same_label] = 0.0

        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        all_tracks = np.arange(len(tracks))
        matches = _greedy(overlap, all_tracks, high, self.iou_threshold, descending=True)
        matched_tracks = {ti for ti, _ in matches}
        matched_dets = {di for _, di in matches}
        if low.size:
            established = np.array(
                [i for i in all_tracks if i not in matched_tracks and tracks[i].state != TENTATIVE],
                dtype=np.intp,
            )
            second = _greedy(overlap, established, low, self.iou_threshold, descending=True)
            matches += second
            matched_tracks |= {ti for ti, _ in second}
        if self.max_distance > 0 and len(matched_tracks) < len(tracks) and len(matched_dets) < high.size:
            rest_tracks = np.array([i for i in all_tracks if i not in matched_tracks], dtype=np.intp)
            rest_dets = np.array([i for i in high if i not in matched_dets], dtype=np.intp)
            distance = _centre_distance(predicted, det_boxes)
            distance[~same_label] = np.inf
            third = _greedy(distance, rest_tracks, rest_dets, self.max_distance, descending=False)
            matches += third
            matched_tracks |= {ti for ti, _ in third}
        matched_dets = {di for _, di in matches}

        detection_of: dict[int, int] = {}
        if matches:
            rows = np.array([ti for ti, _ in matches], dtype=np.intp)
            self._correct(rows, _xywh(det_boxes[[di for _, di in matches]]), t)
        for ti, di in matches:
            track = tracks[ti]
            x0, y0, x1, y1 = det_boxes[di].tolist()
            track.box = (x0, y0, x1, y1)
            track.score = float(scores[di])
            track.last_seen = t
            track.hits += 1
            track.misses = 0
            if track.state != CONFIRMED and (track.state == LOST or track.hits >= self.min_hits):
                track.state = CONFIRMED
            detection_of[track.track_id] = di

        kept: list[_Live] = []
        rows_kept: list[int] = []
        for ti, track in enumerate(tracks):
            if ti in matched_tracks:
                kept.append(track)
                rows_kept.append(ti)
            elif track.state != TENTATIVE and (
                t - track.last_seen <= self.max_age or track.misses < self.max_misses
            ):
                track.state = LOST
                track.misses += 1
                x0, y0, x1, y1 = predicted_boxes[ti].tolist()
                track.box = (x0, y0, x1, y1)
                kept.append(track)
                rows_kept.append(ti)
        fresh = [di for di in high.tolist() if di not in matched_dets]
        for di in fresh:
            x0, y0, x1, y1 = det_boxes[di].tolist()
            track = _Live(self._next_id, objects[di].label, (x0, y0, x1, y1), float(scores[di]), t)
            self._next_id += 1
            if self.min_hits <= 1:
                track.state = CONFIRMED
            kept.append(track)
            detection_of[track.track_id] = di
        keep = np.array(rows_kept, dtype=np.intp)
        born = _xywh(det_boxes[fresh]) if fresh else np.zeros((0, 4))
        self._x = np.concatenate([self._x[keep], born])
        self._v = np.concatenate([self._v[keep], np.zeros((len(fresh), 4))])
        self._t = np.concatenate([self._t[keep], np.full(len(fresh), t)])
        self._n = np.concatenate([self._n[keep], np.ones(len(fresh), dtype=np.intp)])
        self._tracks = kept
        velocity = self._v[:, :2].tolist()
        found = detection_of.get
        return [_snapshot(track, found(track.track_id), velocity[i]) for i, track in enumerate(kept)]

    def _correct(self, rows: np.ndarray, z: np.ndarray, t: float) -> None:
        """The alpha-beta correction of the filters in ``rows`` with measurements ``z`` (cx, cy, w, h) at
        ``t``: the second measurement gives the velocity exactly from two points; later ones correct position
        by ``alpha`` and velocity by ``beta`` of the residual. A measurement at the same time only replaces
        the state."""
        dt = t - self._t[rows]
        x, v = self._x[rows], self._v[rows]
        if dt.min() > 0 and self._n[rows].min() > 1:  # the usual case: every filter has a velocity already
            residual = z - (x + v * dt[:, None])
            self._x[rows] = z - (1.0 - self.alpha) * residual
            self._v[rows] = v + (self.beta / dt)[:, None] * residual
            self._t[rows] = t
            self._n[rows] += 1
            return
        same = dt <= 0
        second = (self._n[rows] == 1) & ~same
        later = ~same & ~second
        safe = np.where(same, 1.0, dt)[:, None]
        predicted = x + v * np.where(same, 0.0, dt)[:, None]
        residual = z - predicted
        new_x = np.where(later[:, None], predicted + self.alpha * residual, z)
        corrected_v = np.where(later[:, None], v + (self.beta / safe) * residual, v)
        new_v = np.where(second[:, None], (z - x) / safe, corrected_v)
        self._x[rows] = new_x
        self._v[rows] = new_v
        moved = rows[~same]
        self._t[moved] = t
        self._n[moved] += 1

    @property
    def tracks(self) -> list[Track]:
        """The live tracks as of the last update (no detection indices)."""
        velocity = self._v[:, :2].tolist()
        return [_snapshot(track, None, velocity[i]) for i, track in enumerate(self._tracks)]


def _snapshot(track: _Live, detection: int | None, velocity: Sequence[float]) -> Track:
    return Track(
        track.track_id,
        track.label,
        track.box,
        track.score,
        track.first_seen,
        track.last_seen,
        track.hits,
        track.state,
        (velocity[0], velocity[1]),
        detection,
    )


def _greedy(
    cost: np.ndarray, rows: np.ndarray, cols: np.ndarray, limit: float, *, descending: bool
) -> list[tuple[int, int]]:
    """Pairs of (row, col) taken best first, each row and col once, within ``limit`` (>= if descending)."""
    if rows.size == 0 or cols.size == 0:
        return []
    sub = cost[np.ix_(rows, cols)]
    ok = sub >= limit if descending else sub <= limit
    r, c = np.nonzero(ok)
    if r.size == 0:
        return []
    values = sub[r, c]
    order = np.lexsort((c, r, -values if descending else values))  # best value, then row, then col
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:
        row, col = int(rows[r[k]]), int(cols[c[k]])
        if row in used_rows or col in used_cols:
            continue
        used_rows.add(row)
        used_cols.add(col)
        pairs.append((row, col))
    return pairs


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` (N, 4) with each of ``b`` (M, 4): (N, M)."""
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _centre_distance(predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Centre distance of each detection from each predicted (cx, cy, w, h), in predicted box diagonals."""
    if predicted.size == 0 or boxes.size == 0:
        return np.full((len(predicted), len(boxes)), np.inf)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    dx = cx[None, :] - predicted[:, None, 0]
    dy = cy[None, :] - predicted[:, None, 1]
    diagonal = np.hypot(predicted[:, 2], predicted[:, 3])
    return np.asarray(np.hypot(dx, dy) / diagonal[:, None])


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes (N, 4) as (cx, cy, w, h)."""
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def _to_corners(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


class TrackAnnotator:
    """A pipeline annotator (``Pipeline(annotators=[TrackAnnotator()])``, ``edge run --track``): one
    ``Tracker`` per source, and ``track_id`` on each detected object of the record that a track holds.

    Frames are timed by their ``media_time`` when they have one (a video file's timestamps, so a file decoded
    faster than it plays tracks as it was filmed; a timeline that starts over, a file played again, starts
    new tracks), else by the monotonic clock when their result is made (a wall clock can step back).
    Results of one source arrive in order, so its tracker sees its frames in time order. Thread-safe
    (per-source pipelines annotate from their own threads).
    """

    def __init__(self, **options: Any) -> None:
        Tracker(**options)  # the settings are checked now, not at the first detection
        self.options = options
        self._trackers: dict[str, Tracker] = {}
        self._media_sources: set[str] = set()  # sources whose frames carry media times
        self._lock = threading.Lock()

    def __call__(self, outcome: Any, record: dict[str, Any]) -> None:
        self.track(outcome, record)

    def _time_of(self, outcome: Any, tracker: Tracker) -> float:
        """The frame's time for its source's tracker: its media time (a frame without one in a source that
        has them keeps the last), else the monotonic clock. A media time going back by more than
        ``RESTART_S`` is a timeline starting over (a file played again): the tracker starts over too; less
        than that is timestamp jitter and is held at the last time."""
        media_time = getattr(outcome, "media_time", None)
        last = tracker.last_time
        source = outcome.source or ""
        if media_time is None:
            if source in self._media_sources and last is not None:
                return last
            return time.monotonic()
        t = float(media_time)
        if source not in self._media_sources:
            self._media_sources.add(source)
            tracker.reset()  # from the clock to the file's timeline
        elif last is not None and t < last:
            if last - t <= RESTART_S:
                return last
            tracker.reset()
        return t

    def timeline(self, source: str | None) -> float | None:
        """The media time the source's last frame was tracked at (jitter held, as ``_time_of`` keeps it),
        or None for a source on the clock."""
        source = source or ""
        with self._lock:
            tracker = self._trackers.get(source)
            return tracker.last_time if tracker is not None and source in self._media_sources else None

    def forget(self, source: str | None) -> None:
        """Forget the tracks of ``source`` (it went down: what comes back is not the same scene)."""
        with self._lock:
            tracker = self._trackers.get(source or "")
            if tracker is not None:
                tracker.reset()

    def track(self, outcome: Any, record: dict[str, Any]) -> list[Track] | None:
        """Update the source's tracker with this result and mark the record's objects; the live tracks, or
        None when the result has no objects to track (an error, another task)."""
        objects = getattr(outcome.result, "objects", None)
        if outcome.error is not None or objects is None or "objects" not in record:
            return None
        with self._lock:
            tracker = self._trackers.get(outcome.source or "")
            if tracker is None:
                tracker = self._trackers[outcome.source or ""] = Tracker(**self.options)
            tracks = tracker.update(objects, self._time_of(outcome, tracker))
        for item, track_id in zip(record["objects"], track_ids(tracks, len(objects)), strict=True):
            if track_id is not None:
                item["track_id"] = track_id
        return tracks
