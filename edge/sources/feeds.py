"""From settings to running sources: what each INPUT is, and the feeds ``edge run`` multiplexes.

``kind_of`` tells a stream, camera, video file or Pi camera from files and folders; ``SourceSpec`` is one
named source with its own options (from an INPUT with the command-line flags, or a ``[[source]]`` table);
``build_feeds`` turns the settings of a run into feeds for ``SourceMux``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from edge.errors import ConfigError
from edge.sources.base import NAME_PATTERN, InputItem, kind_of, mask_url, source_name_for, unique_names
from edge.sources.options import FeedOptions, StreamOptions

if TYPE_CHECKING:
    from edge.sources.live import Feed

FILES, WATCH, SNAPSHOT = "files", "watch", "snapshot"


def is_source(target: str) -> bool:
    """Whether an INPUT is a stream, camera or video file (its own source) rather than an image path."""
    return kind_of(target) != FILES


class SourceSpec(NamedTuple):
    """One named source and how it is read and inferred."""

    target: str
    name: str
    stream: StreamOptions = StreamOptions()
    feed: FeedOptions = FeedOptions()
    top_k: int | None = None
    threshold: float | None = None
    resize: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.target)


class SourcesSettings(NamedTuple):
    """Every input of one run: image files and folders, a watch folder, a snapshot URL, named sources."""

    files: tuple[str, ...] = ()
    watch: Path | None = None
    url: str | None = None
    interval: float = 5.0
    sources: tuple[SourceSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.files or self.watch or self.url or self.sources)

    @property
    def feed_count(self) -> int:
        """How many sources (feeds) the run has: files, watch folder and snapshot URL count one each."""
        return bool(self.files) + (self.watch is not None) + bool(self.url) + len(self.sources)

    @property
    def live(self) -> bool:
        return any(spec.kind != "video" or spec.stream.realtime for spec in self.sources)


def name_sources(targets: list[str], names: list[str]) -> list[str]:
    """Names for ``targets``: ``names`` in order (``--source-name``), then names made from the targets."""
    if len(names) > len(targets):
        raise ConfigError(
            f"--source-name given {len(names)} times for {len(targets)} stream/camera/video input(s); "
            "give one name per source"
        )
    for name in names:
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"source name {name!r}: use 1-64 letters, digits, _, - or .")
    chosen = list(names) + [source_name_for(t) for t in targets[len(names):]]
    return unique_names(chosen)


def check_unique(specs: list[SourceSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"two sources are named {spec.name!r}; give each its own name")
        if spec.name in (FILES, WATCH, SNAPSHOT):
            raise ConfigError(f"source name {spec.name!r} is kept for the {spec.name} input; choose another")
        seen.add(spec.name)


def build_feeds(settings: SourcesSettings, decode_hint: tuple[int, int] | None = None) -> list[Feed]:
    """The feeds of a run, in order: files, watch folder, snapshot URL, then each named source.

    ``decode_hint`` (the model's input width and height) lets decoders that can scale (MJPEG) decode smaller.
    """
    # each kind's module is imported only when a run has that kind of source (start-up time)
    from edge.sources.live import Feed, from_iterator

    feeds: list[Feed] = []
    if settings.files:
        from edge.sources.files import expand_paths

        files = settings.files

        def listed(stop: threading.Event) -> Iterator[InputItem]:
            return expand_paths(files)

        feeds.append(Feed(FILES, FILES, ", ".join(files)[:200], from_iterator(listed), latest=False))
    if settings.watch is not None:
        from edge.sources.watch import watch_folder

        folder = settings.watch

        def watched(stop: threading.Event) -> Iterator[InputItem]:
            return watch_folder(folder, stop)

        feeds.append(Feed(WATCH, WATCH, str(folder), from_iterator(watched), latest=False))
    if settings.url:
        from edge.sources.snapshot import poll_url

        url, interval = settings.url, settings.interval

        def polled(stop: threading.Event) -> Iterator[InputItem]:
            return poll_url(url, interval, stop)

        producer = from_iterator(polled, errors_are_down=True)
        feeds.append(Feed(SNAPSHOT, SNAPSHOT, mask_url(url), producer, latest=True))
    check_unique(list(settings.sources))
    for spec in settings.sources:
        if spec.kind == "picamera":
            from edge.sources.picamera import picamera_feed

            feeds.append(picamera_feed(spec.name, spec.target, spec.stream.video_size, spec.stream.video_fps,
                                       spec.feed))
        else:

            from edge.sources.stream import stream_feed

            options = spec.stream._replace(decode_hint=decode_hint)
            feeds.append(stream_feed(spec.name, spec.target, options, spec.feed))
    return feeds
