"""Zones and object filters: which tracked objects count, and where they are.

A zone is a polygon in normalized image coordinates (0..1, x to the right, y down) on one source or on every
source, optionally for some labels only. An object is in a zone when the bottom centre of its box (where a
person or a car touches the ground, as Frigate does) lies inside the polygon. Pure functions and NamedTuples;
``edge.events`` uses them. Formats (config and command line): ``docs/events.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from edge.errors import ConfigError

Point = tuple[float, float]
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ZONE_HELP = "[SOURCE/]NAME=X,Y,X,Y,X,Y[,...] (normalized 0..1, at least 3 points)"


class Zone(NamedTuple):
    """A named polygon; ``source`` None: every source; ``labels`` empty: every label."""

    name: str
    points: tuple[Point, ...]
    source: str | None = None
    labels: frozenset[str] = frozenset()

    def applies_to(self, source: str | None) -> bool:
        return self.source is None or self.source == source

    def holds(self, label: str, box: Sequence[float], width: int, height: int) -> bool:
        """Whether an object of ``label`` with pixel ``box`` (xmin, ymin, xmax, ymax) stands in the zone."""
        if self.labels and label not in self.labels:
            return False
        x = (box[0] + box[2]) / 2 / width
        y = box[3] / height
        return inside(x, y, self.points)


class ObjectFilter(NamedTuple):
    """Which tracked objects make events and count: labels of interest (empty: all), a minimum score (per
    label over the default), a minimum box area as a fraction of the frame, and a minimum number of matched
    frames (debounce)."""

    labels: frozenset[str] = frozenset()
    min_score: float = 0.5
    label_min_score: tuple[tuple[str, float], ...] = ()
    min_area: float = 0.0
    min_frames: int = 3

    def score_for(self, label: str) -> float:
        for name, score in self.label_min_score:
            if name == label:
                return score
        return self.min_score

    def admits(self, label: str, score: float, box: Sequence[float], width: int, height: int) -> bool:
        """Whether a detection may start an event (label, score and area; ``min_frames`` is the caller's)."""
        if self.labels and label not in self.labels:
            return False
        if score < self.score_for(label):
            return False
        area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        return area >= self.min_area * width * height


def inside(x: float, y: float, polygon: Sequence[Point]) -> bool:
    """Point in polygon by ray casting (a point on an edge may fall either way)."""
    result = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result


def inside_many(x: np.ndarray, y: np.ndarray, polygon: Sequence[Point]) -> np.ndarray:
    """``inside`` for many points at once (arrays of x and y): a boolean array."""
    result = np.zeros(x.shape, dtype=bool)
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if yi != yj:
            crosses = (yi > y) != (yj > y)
            result ^= crosses & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
        j = i
    return result


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{what} {value!r} must be 1-64 letters, digits, '_', '-' or '.' (a topic level)")
    return value


def make_zone(name: str, coordinates: Iterable[Any], source: str | None = None,
              labels: Iterable[str] = ()) -> Zone:
    """A checked zone from flat ``[x, y, x, y, ...]`` or paired ``[[x, y], ...]`` coordinates."""
    where = f"zone {name!r}"
    check_name(name, "zone name")
    if source is not None:
        check_name(source, f"{where}: source")
    flat: list[Any] = []
    for item in coordinates:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    try:
        numbers = [float(v) for v in flat if not isinstance(v, bool)]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: points {list(coordinates)!r} must be numbers between 0 and 1") from None
    if len(numbers) != len(flat) or len(numbers) % 2 or len(numbers) < 6:
        raise ConfigError(f"{where}: needs at least 3 points as x,y pairs between 0 and 1, got {flat!r}")
    if any(not 0.0 <= v <= 1.0 for v in numbers):
        raise ConfigError(f"{where}: coordinates are fractions of the frame (0 to 1), got {numbers!r}")
    points = tuple((numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2))
    return Zone(name, points, source, frozenset(labels))


def parse_zone(text: str) -> Zone:
    """``--zone [SOURCE/]NAME=X,Y,X,Y,X,Y`` into a Zone."""
    head, sep, tail = text.partition("=")
    if not sep or not tail.strip():
        raise ConfigError(f"--zone {text!r}: expected {ZONE_HELP}")
    source, _, name = head.strip().rpartition("/")
    try:
        coordinates = [float(v) for v in tail.split(",")]
    except ValueError:
        raise ConfigError(f"--zone {text!r}: the points must be numbers; expected {ZONE_HELP}") from None
    return make_zone(name, coordinates, source or None)


def zone_from_table(table: Mapping[str, Any]) -> Zone:
    """One ``[[zone]]`` table: ``name``, ``points`` and optionally ``source`` and ``labels``."""
    unknown = set(table) - {"name", "points", "source", "labels"}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(f"unknown key(s) {names}; allowed: name, points, source, labels")
    if "name" not in table or "points" not in table:
        raise ConfigError("needs name = \"...\" and points = [[x, y], [x, y], [x, y], ...]")
    labels = table.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise ConfigError(f"labels is {labels!r}; expected a list of label names")
    points = table["points"]
    if not isinstance(points, list):
        raise ConfigError(f"points is {points!r}; expected [[x, y], [x, y], [x, y], ...]")
    return make_zone(table["name"], points, table.get("source"), labels)


def parse_min_scores(values: Iterable[str]) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """``--min-score 0.6 --min-score person=0.7``: the default (None: not given) and per-label scores."""
    default: float | None = None
    per_label: dict[str, float] = {}
    for text in values:
        label, sep, number = text.rpartition("=")
        try:
            score = float(number)
        except ValueError:
            score = -1.0
        if not 0.0 <= score <= 1.0:
            raise ConfigError(f"--min-score {text!r}: expected SCORE or LABEL=SCORE with SCORE from 0 to 1")
        if sep:
            per_label[label] = score
        else:
            default = score
    return default, tuple(per_label.items())


def zone_names(zones: Iterable[Zone], source: str | None = None) -> list[str]:
    """The names of the zones on ``source`` (all zones when None), in order, once each."""
    names: list[str] = []
    for zone in zones:
        if (source is None or zone.applies_to(source)) and zone.name not in names:
            names.append(zone.name)
    return names
