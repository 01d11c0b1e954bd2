"""Events: tracked objects turned into "a person entered the driveway at 07:31 ... left at 07:33".

``EventEngine`` (one per source, pure bookkeeping) reads each frame's tracks (``edge.tracking``) and says what
happened:

- ``new`` when a confirmed track with at least ``min_frames`` matched frames passes the filter (label of
  interest, minimum score for its label, minimum area);
- ``update`` at once when the object enters a zone it had not entered yet in this event, else at most every
  ``update_interval`` seconds when its zones or its best score changed;
- ``end`` when the tracker lets the track go (unseen for longer than its ``max_age``), or the run stops;
  ``end`` is the last time the object was seen.

Each event carries the best score and box so far (box normalized 0..1) and whether a snapshot was taken.
Counts of the objects with an open event, per label and per zone, are reported when they change.
``EventAnnotator`` wires a tracker and an engine per source into the pipeline (an annotator; ``edge run
--events``), renders snapshots (the best frame, box drawn, size-bounded JPEG, Pillow) and hands events,
snapshots and counts to its listeners (the console, the MQTT device). No MQTT here. Wire format:
``docs/events.md``.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import numpy as np

from edge.sources.base import DOWN, FINISHED, STALLED
from edge.tracking import CONFIRMED, Track, TrackAnnotator
from edge.zones import ObjectFilter, Zone, inside_many, zone_names

log = logging.getLogger(__name__)

NEW, UPDATE, END = "new", "update", "end"
SNAPSHOT_MAX_BYTES = 200_000  # a collector accepts 256 KiB payloads
FRAMES_KEPT = 4  # per source: the frames an annotation may still need (the one in flight and a few before)


@dataclass(frozen=True, slots=True)
class Event:
    """One event message: what happened to one tracked object."""

    type: str
    event_id: str
    source: str
    label: str
    track_id: int
    start: float
    end: float | None
    score: float
    box: tuple[float, float, float, float]  # normalized xmin, ymin, xmax, ymax of the best detection
    zones: tuple[str, ...]  # the zones it is in now (the last ones, for an end)
    entered_zones: tuple[str, ...]  # every zone it entered during the event, in order
    snapshot: bool  # a snapshot of this event has been published
    model_name: str = ""
    model_version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "event_id": self.event_id,
            "source": self.source,
            "label": self.label,
            "track_id": self.track_id,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "score": round(self.score, 4),
            "box": [round(v, 4) for v in self.box],
            "zones": list(self.zones),
            "entered_zones": list(self.entered_zones),
            "snapshot": self.snapshot,
            "model": {"name": self.model_name, "version": self.model_version},
        }


class Snapshot(NamedTuple):
    """A JPEG of the best frame of an event (box drawn), for ``<source>/<label>/snapshot``."""

    source: str
    label: str
    event_id: str
    jpeg: bytes


class EventSettings(NamedTuple):
    """What makes an event (filter and zones) and how often it is reported."""

    filter: ObjectFilter = ObjectFilter()
    zones: tuple[Zone, ...] = ()
    update_interval: float = 5.0
    snapshots: bool = True
    snapshot_size: int = 640  # the longer side of a snapshot, pixels
    source_filters: tuple[tuple[str, ObjectFilter], ...] = ()  # a source's own filter over ``filter``

    def filter_for(self, source: str) -> ObjectFilter:
        for name, own in self.source_filters:
            if name == source:
                return own
        return self.filter


class Step(NamedTuple):
    """What one frame changed: events, snapshots to take (event, frame token, pixel box), new counts."""

    events: list[Event]
    snapshots: list[tuple[Event, Any, tuple[float, float, float, float]]]
    counts: dict[str, Any] | None
    object_zones: dict[int, tuple[str, ...]]  # detection index -> zones it stands in


class _Open:
    """An event in progress (made once per event; a plain slots class)."""

    __slots__ = ("event_id", "label", "track_id", "start", "last_seen", "score", "box", "width", "height",
                 "zones", "entered", "last_sent", "dirty", "snapshot", "snapshot_at", "pending")

    def __init__(
        self, track: Track, now: float, width: int, height: int, zones: tuple[str, ...], source: str
    ) -> None:
        self.track_id, self.label = track.track_id, track.label
        self.start = now - max(0.0, track.last_seen - track.first_seen)
        self.event_id = f"{source}-{track.track_id}-{int(self.start * 1000)}"
        self.last_seen = now
        self.score, self.box = track.score, track.box
        self.width, self.height = width, height
        self.zones, self.entered = zones, list(zones)
        self.last_sent = now  # replaced by the engine's clock (see EventEngine.update)
        self.dirty = False
        self.snapshot = False
        self.snapshot_at = float("-inf")
        self.pending: Any = None  # the best frame's token while its snapshot waits for the interval


class EventEngine:
    """The events of one source; ``update`` once per frame with the tracker's tracks, in time order."""

    def __init__(self, source: str, settings: EventSettings | None = None) -> None:
        settings = settings or EventSettings()
        self.source = source
        self.settings = settings
        self.zones = tuple(z for z in settings.zones if z.applies_to(source))
        self.filter = settings.filter_for(source)
        self._open: dict[int, _Open] = {}
        self._labels_seen: dict[str, None] = dict.fromkeys(sorted(self.filter.labels))
        self._counts: dict[str, Any] | None = None
        self.model: tuple[str, int] = ("", 0)
        self.last_frame = time.monotonic()
        self.frames = 0
        self._media_epoch: float | None = None  # wall time at media time 0 of the current timeline
        self._media_last = 0.0
        self.frame_interval = 0.0  # a running mean of the time between this source's frames (from the 2nd)

    def update(self, tracks: Sequence[Track], width: int, height: int, now: float, frame: Any = None,
               clock: float | None = None) -> Step:
        """``tracks`` from ``Tracker.update`` for a frame of ``width`` x ``height`` seen at wall time ``now``;
        ``frame`` is an opaque token handed back with a snapshot to take. ``clock`` (default ``now``) times
        the intervals: a monotonic one, so that a wall clock set by NTP (a Pi has no RTC) neither ends nor
        freezes events; ``now`` only dates them."""
        clock = now if clock is None else clock
        events: list[Event] = []
        snapshots: list[tuple[Event, Any, tuple[float, float, float, float]]] = []
        object_zones: dict[int, tuple[str, ...]] = {}
        live: set[int] = set()
        interval, policy = self.settings.update_interval, self.filter
        in_zones = self._zones_of(tracks, width, height)
        for index, track in enumerate(tracks):
            live.add(track.track_id)
            matched = track.detection is not None
            zones = in_zones[index] if matched else ()
            if matched:
                object_zones[track.detection] = zones  # type: ignore[index]
            event = self._open.get(track.track_id)
            if event is None:
                if (matched and track.state == CONFIRMED and track.hits >= policy.min_frames
                        and policy.admits(track.label, track.score, track.box, width, height)):
                    event = self._open[track.track_id] = _Open(track, now, width, height, zones, self.source)
                    event.last_sent = clock
                    self._labels_seen.setdefault(track.label)
                    made = self._event(NEW, event)
                    events.append(made)
                    if self.settings.snapshots and frame is not None:
                        event.snapshot_at = clock
                        snapshots.append((made, frame, track.box))
                continue
            if not matched:
                continue
            event.last_seen = now
            entered = [z for z in zones if z not in event.entered]
            if zones != event.zones:
                event.zones, event.dirty = zones, True
            if track.score > event.score:
                event.score, event.box, event.width, event.height = track.score, track.box, width, height
                event.dirty = True
                if self.settings.snapshots and frame is not None:
                    event.pending = frame
            if event.pending is not None and clock - event.snapshot_at >= interval:
                snapshots.append((self._event(UPDATE, event), event.pending, event.box))
                event.snapshot_at, event.pending = clock, None
            if entered:
                event.entered.extend(entered)
            if entered or (event.dirty and clock - event.last_sent >= interval):
                events.append(self._event(UPDATE, event))
                event.last_sent, event.dirty = clock, False
        for track_id in [t for t in self._open if t not in live]:
            ended = self._end(track_id)
            events.append(ended[0])
            snapshots.extend(ended[1])
        return Step(events, snapshots, self._new_counts(), object_zones)

    def times(self, media_time: float | None, mono: float) -> tuple[float, float]:
        """(wall time, clock) of a frame: for one on a file's timeline (``media_time``, as the tracker
        took it: jitter held, so a step back is the file played again), its place on that timeline, dated
        from when it started here, so an event lasts as long as in the film however fast the file decodes;
        else now."""
        if media_time is None:
            return time.time(), mono
        if self._media_epoch is None or media_time < self._media_last:
            self._media_epoch = time.time() - media_time
        self._media_last = media_time
        return self._media_epoch + media_time, media_time

    def note_frame(self, mono: float) -> None:
        """A frame of this source arrived at ``mono`` (the monotonic clock): when it is quiet is measured
        from its last frame, against its usual interval between frames."""
        if self.frames:
            gap = mono - self.last_frame
            self.frame_interval = gap if self.frames == 1 else 0.8 * self.frame_interval + 0.2 * gap
        self.frames += 1
        self.last_frame = mono

    def close(self) -> Step:
        """End every open event (the run stops or the source went quiet)."""
        events: list[Event] = []
        snapshots: list[tuple[Event, Any, tuple[float, float, float, float]]] = []
        for track_id in list(self._open):
            ended = self._end(track_id)
            events.append(ended[0])
            snapshots.extend(ended[1])
        return Step(events, snapshots, self._new_counts(), {})

    def mark_snapshot(self, event_id: str) -> None:
        """A snapshot of ``event_id`` was published: its next messages say so."""
        for event in self._open.values():
            if event.event_id == event_id:
                event.snapshot = True

    @property
    def open_events(self) -> int:
        return len(self._open)

    def _end(self, track_id: int) -> tuple[Event, list[tuple[Event, Any, tuple[float, float, float, float]]]]:
        event = self._open.pop(track_id)
        pending = []
        if event.pending is not None:  # the best frame came during the interval: it is the snapshot
            pending.append((self._event(UPDATE, event), event.pending, event.box))
            event.pending = None
        return self._event(END, event, end=event.last_seen), pending

    def _zones_of(self, tracks: Sequence[Track], width: int, height: int) -> list[tuple[str, ...]]:
        """The zones each track stands in (by its box's bottom centre), all tracks at once."""
        if not self.zones or not tracks:
            return [()] * len(tracks)
        boxes = np.array([t.box for t in tracks], dtype=np.float64)
        x = (boxes[:, 0] + boxes[:, 2]) / (2 * width)
        y = boxes[:, 3] / height
        names: list[list[str]] = [[] for _ in tracks]
        for zone in self.zones:
            hits = inside_many(x, y, zone.points)
            for index in np.flatnonzero(hits).tolist():
                if (not zone.labels or tracks[index].label in zone.labels) and zone.name not in names[index]:
                    names[index].append(zone.name)
        return [tuple(n) for n in names]

    def _event(self, kind: str, event: _Open, end: float | None = None) -> Event:
        w, h = event.width or 1, event.height or 1
        x0, y0, x1, y1 = event.box
        box = (max(0.0, x0 / w), max(0.0, y0 / h), min(1.0, x1 / w), min(1.0, y1 / h))
        return Event(kind, event.event_id, self.source, event.label, event.track_id, event.start, end,
                     event.score, box, event.zones, tuple(event.entered), event.snapshot, *self.model)

    def _new_counts(self) -> dict[str, Any] | None:
        labels = dict.fromkeys(self._labels_seen, 0)
        zones: dict[str, dict[str, int]] = {name: {} for name in zone_names(self.zones)}
        for event in self._open.values():
            labels[event.label] = labels.get(event.label, 0) + 1
            for name in event.zones:
                zones[name][event.label] = zones[name].get(event.label, 0) + 1
        counts = {"labels": labels, "zones": zones}
        if counts == self._counts:
            return None
        self._counts = counts
        return counts


def tracker_options_for(settings: EventSettings, **given: Any) -> dict[str, Any]:
    """Tracker settings that let every object the filters admit start a track: a track starts only from a
    detection at or above ``high_score`` (0.5 by default), so a lower ``min_score`` lowers it too."""
    filters = [settings.filter, *(own for _, own in settings.source_filters)]
    lowest = min(min([f.min_score, *(s for _, s in f.label_min_score)]) for f in filters)
    options = dict(given)
    if "high_score" not in options and lowest < 0.5:
        options["high_score"] = lowest
        options.setdefault("low_score", min(0.1, lowest))
    return options


class EventListener(Protocol):
    """Receives what an ``EventAnnotator`` produces (called outside its lock); subclass it and override what
    you need, or match it."""

    def on_event(self, event: Event) -> None:
        pass

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_counts(self, source: str, counts: dict[str, Any]) -> None:
        pass


class FrameKeeper:
    """The last few inputs of each source by frame index, for snapshots (``wrap`` the items fed to a run)."""

    def __init__(self, per_source: int = FRAMES_KEPT) -> None:
        self.per_source = per_source
        self._frames: dict[str, OrderedDict[int, Any]] = {}
        self._lock = threading.Lock()

    def wrap(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.remember(item)
            yield item

    def remember(self, item: Any) -> None:
        source, frame, payload = getattr(item, "source", None), getattr(item, "frame", None), None
        if source is None or frame is None or getattr(item, "error", None) is not None:
            return
        payload = item.payload
        with self._lock:
            frames = self._frames.setdefault(source, OrderedDict())
            frames[frame] = payload
            while len(frames) > self.per_source:
                frames.popitem(last=False)

    def get(self, source: str | None, frame: int | None) -> Any:
        if source is None or frame is None:
            return None
        with self._lock:
            frames = self._frames.get(source)
            return frames.get(frame) if frames is not None else None

    def latest(self, source: str) -> Any:
        with self._lock:
            frames = self._frames.get(source)
            return next(reversed(frames.values())) if frames else None

    def sources(self) -> list[str]:
        with self._lock:
            return list(self._frames)


def frame_image(payload: Any, size: int) -> Any:
    """A PIL image of an input (a source's frame, a path, bytes, an array), upright, about ``size`` pixels on
    its longer side, and the upright size of the original; None when the payload cannot be read."""
    from edge.preprocess import load_upright
    from edge.sources.base import is_frame

    if payload is None:
        return None
    try:
        if is_frame(payload):
            from PIL import Image

            width, height = payload.size
            scale = min(1.0, size / max(width, height))
            scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
            return Image.fromarray(payload.to_array(*scaled)), (width, height)
        image, upright = load_upright(payload, (size, size), "letterbox")
        return image, upright
    except Exception as exc:  # a snapshot must never take a result down
        log.warning("cannot read a frame for a snapshot: %s", exc)
        return None


def render_jpeg(payload: Any, size: int, box: Sequence[float] | None = None, caption: str = "",
                max_bytes: int = SNAPSHOT_MAX_BYTES) -> bytes | None:
    """The frame as a JPEG at most ``size`` pixels on its longer side and ``max_bytes`` long, with ``box``
    (pixels of the original frame) drawn and captioned; None when the frame cannot be read."""
    from PIL import Image, ImageDraw

    opened = frame_image(payload, size)
    if opened is None:
        return None
    image, (width, height) = opened
    image = image.convert("RGB")
    if max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.BILINEAR)
    if box is not None:
        sx, sy = image.width / width, image.height / height
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        draw = ImageDraw.Draw(image)
        thick = max(2, round(max(image.size) / 200))
        draw.rectangle((x0, y0, x1, y1), outline=(255, 48, 48), width=thick)
        if caption:
            top = max(0.0, y0 - 12)
            draw.rectangle((x0, top, x0 + 6 * len(caption) + 4, top + 12), fill=(255, 48, 48))
            draw.text((x0 + 2, top), caption, fill=(255, 255, 255))
    for quality in (85, 70, 50, 30):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        image.thumbnail((image.width * 3 // 4, image.height * 3 // 4))
    return None


class EventAnnotator(TrackAnnotator):
    """A pipeline annotator: a tracker and an ``EventEngine`` per source; objects in the record get
    ``track_id`` and ``zones``; events, snapshots and counts go to the listeners. Thread-safe."""

    def __init__(self, settings: EventSettings | None = None, frames: FrameKeeper | None = None,
                 **tracker_options: Any) -> None:
        self.settings = settings or EventSettings()
        super().__init__(**tracker_options_for(self.settings, **tracker_options))
        self.frames = frames
        self.listeners: list[EventListener] = []
        self._engines: dict[str, EventEngine] = {}
        self._engine_lock = threading.Lock()
        self.quiet_after = max(2.0, float(tracker_options.get("max_age", 1.0)) * 2)
        self._followed: set[str] = set()  # sources whose state a SourceBoard reports (see follow)
        self._generations: dict[str, int] = {}  # per source, counts the times it went down

    def follow(self, board: Any) -> None:
        """End a live source's events when ``board`` (an ``edge.sources.SourceBoard``) says it stalled or
        went down, and not merely because it is quiet: the motion gate or ``--fps`` may hold its frames back
        for as long as the scene is still. A finished source (a video file's end) is ended as a quiet one
        once its last frames, still in the pipeline, have been annotated and another source's frame comes
        (alone, its events end when the run stops)."""
        board.subscribe(self._on_source_state)

    def _on_source_state(self, state: Any) -> None:
        if state.state == FINISHED:
            self._followed.discard(state.name)
            return
        self._followed.add(state.name)
        if state.state in (STALLED, DOWN):
            # its tracks go too, so frames still in the pipeline start over instead of reopening events;
            # a frame whose tracks were taken before this (its generation is older) is not counted
            with self._engine_lock:
                self._generations[state.name] = self._generations.get(state.name, 0) + 1
            self.forget(state.name)
            with self._engine_lock:
                engine = self._engines.get(state.name)
                steps = [(state.name, engine.close())] if engine is not None and engine.open_events else []
            self._deliver(steps)

    def add_listener(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def zone_names(self, source: str | None = None) -> list[str]:
        return zone_names(self.settings.zones, source)

    def __call__(self, outcome: Any, record: dict[str, Any]) -> None:
        source = outcome.source or ""
        generation = self._generations.get(source, 0)
        tracks = self.track(outcome, record)
        if tracks is None or outcome.image_size is None:
            return
        width, height = outcome.image_size
        token = self.frames.get(outcome.source, outcome.frame) if self.frames is not None else None
        mono, media_time = time.monotonic(), self.timeline(source)
        with self._engine_lock:
            if self._generations.get(source, 0) != generation:
                return  # its source went down while its tracks were made: they are gone
            engine = self._engines.get(source)
            if engine is None:
                engine = self._engines[source] = EventEngine(source, self.settings)
            engine.model = (outcome.model_name, outcome.model_version)
            engine.note_frame(mono)
            now, clock = engine.times(media_time, mono)
            steps = [(source, engine.update(tracks, width, height, now, token, clock))]
            steps += self._expire(mono)
        if steps[0][1].object_zones:
            for index, item in enumerate(record.get("objects", ())):
                zones = steps[0][1].object_zones.get(index)
                if zones is not None:
                    item["zones"] = list(zones)
        self._deliver(steps)

    def close(self) -> None:
        """End every open event (the run stops)."""
        with self._engine_lock:
            steps = [(name, engine.close()) for name, engine in self._engines.items()]
        self._deliver(steps)

    def _expire(self, clock: float) -> list[tuple[str, Step]]:
        """End the events of sources that sent no frame for a while (a camera that went down): for longer
        than ``quiet_after`` and than four of their usual frame intervals. Sources that ``follow`` hears of
        end by their state instead."""
        return [(name, engine.close()) for name, engine in self._engines.items()
                if engine.open_events and name not in self._followed
                and clock - engine.last_frame > max(self.quiet_after, 4 * engine.frame_interval)]

    def _deliver(self, steps: list[tuple[str, Step]]) -> None:
        for source, step in steps:
            taken: set[str] = set()  # snapshots first: an event says "snapshot" only once one was published
            for event, token, box in step.snapshots:
                caption = f"{event.label} {event.score:.0%}"
                jpeg = render_jpeg(token, self.settings.snapshot_size, box, caption)
                if jpeg is not None:
                    self._tell("on_snapshot", Snapshot(source, event.label, event.event_id, jpeg))
                    taken.add(event.event_id)
            if taken:
                with self._engine_lock:
                    engine = self._engines.get(source)
                    for event_id in taken:
                        if engine is not None:
                            engine.mark_snapshot(event_id)
            for event in step.events:
                self._tell("on_event", replace(event, snapshot=True) if event.event_id in taken else event)
            if step.counts is not None:
                for listener in self.listeners:
                    try:
                        listener.on_counts(source, step.counts)
                    except Exception as exc:
                        log.warning("event listener %r failed: %s", listener, exc)

    def _tell(self, method: str, value: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, method)(value)
            except Exception as exc:  # one broken listener must not lose events for the others
                log.warning("event listener %r failed: %s", listener, exc)
