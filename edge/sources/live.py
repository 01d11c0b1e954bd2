"""Sources running side by side: each on its own thread, leaving items in a slot the inference loop takes.

A live source (a camera, a stream, a video file with ``--realtime``) keeps only its newest frame: a frame not
taken before the next one arrives is counted as skipped, never queued, so inference never builds a backlog.
A lossless source (files, the watch folder, a video file read frame by frame) waits for room instead.
``SourceMux`` takes from the slots in fair round-robin, applies each source's ``--fps`` cap and motion gate,
and ends when every source has finished. A source that fails to open is reopened with backoff
(``BACKOFF_START_S`` doubling to ``BACKOFF_MAX_S``) while the others carry on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from edge.errors import EdgeError, SourceError
from edge.sources.base import (
    CONNECTING,
    DOWN,
    FINISHED,
    STALLED,
    STREAMING,
    InputItem,
    SourceBoard,
    is_frame,
)
from edge.sources.options import FeedOptions

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
LOSSLESS_CAPACITY = 2  # items a lossless source may hold ready: enough to overlap, little memory


class SourceStalled(SourceError):
    """No frame arrived for the stall timeout."""


class Slot:
    """Where a source leaves items: the newest only (``latest``) or a small bounded queue (lossless)."""

    def __init__(self, wake: threading.Condition, latest: bool, capacity: int = LOSSLESS_CAPACITY) -> None:
        self._wake = wake
        self.latest = latest
        self._items: deque[InputItem] = deque()
        self._capacity = 1 if latest else capacity
        self.closed = False

    def put(self, item: InputItem, stop: threading.Event) -> int:
        """Leave ``item``; the number of older items it replaced (live) after waiting for room (lossless)."""
        with self._wake:
            dropped = 0
            if self.latest:
                dropped = len(self._items)
                self._items.clear()
            else:
                while len(self._items) >= self._capacity and not stop.is_set():
                    self._wake.wait(0.2)  # at a stop it is kept anyway: close() names what was not inferred
            self._items.append(item)
            self._wake.notify_all()
            return dropped

    def take(self) -> InputItem | None:
        """The next item, or None; the caller holds the shared condition."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._wake.notify_all()  # a lossless producer may be waiting for room
        return item

    def drain(self) -> list[InputItem]:
        """Take every item left (the caller holds the shared condition)."""
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        with self._wake:
            self.closed = True
            self._wake.notify_all()

    @property
    def done(self) -> bool:
        return self.closed and not self._items


class SourceContext:
    """What a running source uses: ``emit`` items, report its state, count, wait while not stopped."""

    def __init__(self, feed: Feed, board: SourceBoard, stop: threading.Event) -> None:
        self._feed = feed
        self.board = board
        self.stop = stop
        self.name = feed.name
        self._next_frame = 0

    @property
    def emitted(self) -> int:
        """Items handed over so far (frames, across reconnects)."""
        return self._next_frame

    def emit(self, item: InputItem) -> None:
        """Hand over one item (stamped with this source's name and its frame index)."""
        frame = self._next_frame
        self._next_frame += 1
        stamps: dict[str, Any] = {"source": self.name, "frame": frame}
        if not item.name:
            stamps["name"] = f"{self.name}#{frame}"
        if item.captured_at is None:
            stamps["captured_at"], stamps["captured_mono"] = time.time(), time.perf_counter()
        stamped = item._replace(**stamps)  # one copy per frame
        if item.error is None:
            self.board.count(self.name, "captured")
        dropped = self._feed.slot.put(stamped, self.stop)
        if dropped:
            self.board.count(self.name, "skipped", dropped)

    def set_state(self, state: str, reason: str | None = None) -> None:
        if not self.board.set_state(self.name, state, reason):
            return
        # INFO: edge run prints every change itself; Python callers read the board or its listeners
        log.info("source %s: %s%s", self.name, state, f" ({reason})" if reason else "")

    def count(self, field: str, n: int = 1) -> None:
        self.board.count(self.name, field, n)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the run is stopping."""
        return self.stop.wait(seconds)


Producer = Callable[[SourceContext], None]


class Feed:
    """One source: its name, kind and masked target, the producer that runs on its thread, its slot."""

    def __init__(
        self,
        name: str,
        kind: str,
        target: str,
        produce: Producer,
        latest: bool,
        options: FeedOptions | None = None,
    ) -> None:
        self.name, self.kind, self.target = name, kind, target
        self.produce = produce
        self.latest = latest
        self.options = options or FeedOptions()
        self.slot: Slot = Slot(threading.Condition(), latest)
        self.gate: Any = None
        if self.options.motion is not None:
            from edge.motion import MotionGate

            self.gate = MotionGate(self.options.motion)
        self.next_due = 0.0
        self.thread: threading.Thread | None = None

    def start(self, wake: threading.Condition, board: SourceBoard, stop: threading.Event) -> None:
        self.slot = Slot(wake, self.latest)
        context = SourceContext(self, board, stop)
        self.thread = threading.Thread(
            target=self._run, args=(context,), name=f"edge-source-{self.name}", daemon=True
        )
        self.thread.start()

    def _run(self, context: SourceContext) -> None:
        try:
            self.produce(context)
        except EdgeError as exc:  # a source that will not come back (a missing file or device)
            context.emit(InputItem(self.target, error=str(exc)))
            context.set_state(DOWN, str(exc))
        except Exception as exc:  # a broken source must not take the others down
            log.warning("source %s failed", self.name, exc_info=True)
            reason = f"{type(exc).__name__}: {exc}"
            context.emit(InputItem(self.target, error=f"source {self.name} failed ({reason})"))
            context.set_state(DOWN, reason)
        finally:
            if context.board.state(self.name).state != DOWN:
                context.set_state(FINISHED)
            self.slot.close()


def from_iterator(
    items: Callable[[threading.Event], Iterator[InputItem]], errors_are_down: bool = False
) -> Producer:
    """A producer for a source that is an iterator of items (files, the watch folder, snapshots).

    With ``errors_are_down`` (a snapshot URL) a failed item puts the source ``down`` until the next good one.
    """

    def produce(context: SourceContext) -> None:
        context.set_state(STREAMING)
        for item in items(context.stop):
            if context.stop.is_set():
                return
            if item.error is not None:
                context.count("errors")
            if errors_are_down and item.error is not None:
                context.set_state(DOWN, item.error)
            elif errors_are_down:
                context.set_state(STREAMING)
            context.emit(item)

    return produce


def reconnecting(session: Callable[[SourceContext], bool], retry: bool) -> Producer:
    """A producer that runs ``session`` (open, read until the end) again with backoff when it fails.

    ``session`` returns True when it delivered frames (the backoff starts again from its first step).
    With ``retry`` False (a file) the first end or failure finishes the source.
    """

    def produce(context: SourceContext) -> None:
        delay = BACKOFF_START_S
        first = True
        while not context.stop.is_set():
            if not first:
                context.count("reconnects")
            first = False
            context.set_state(CONNECTING)
            before = context.emitted
            try:
                delivered = session(context)
                if not retry or context.stop.is_set():
                    return
                if delivered or context.emitted > before:
                    delay = BACKOFF_START_S
                context.set_state(DOWN, "the stream ended")
            except SourceStalled as exc:
                if context.emitted > before:  # it was streaming: the backoff starts again
                    delay = BACKOFF_START_S
                context.set_state(STALLED, str(exc))
                if not retry:
                    raise
            except SourceError as exc:
                context.count("errors")
                if not retry:
                    raise
                if context.emitted > before:  # it streamed, then failed: the backoff starts again
                    delay = BACKOFF_START_S
                context.set_state(DOWN, f"{exc}; retrying in {delay:g} s")
            if context.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)

    return produce


class SourceMux:
    """Fair round-robin over running sources: one item at a time, from the next source that has one."""

    def __init__(self, feeds: list[Feed], board: SourceBoard, stop: threading.Event) -> None:
        if not feeds:
            raise SourceError("no source to run")
        self.feeds = feeds
        self.board = board
        self.stop = stop
        self._wake = threading.Condition()
        for feed in feeds:
            board.add(feed.name, feed.kind, feed.target)

    @property
    def live(self) -> bool:
        return any(feed.latest for feed in self.feeds)

    def __iter__(self) -> Iterator[InputItem]:
        for feed in self.feeds:
            feed.start(self._wake, self.board, self.stop)
        turn = 0
        count = len(self.feeds)
        while not self.stop.is_set():
            item: InputItem | None = None
            with self._wake:
                now = time.monotonic()
                wait_s = 0.5
                for step in range(count):
                    feed = self.feeds[(turn + step) % count]
                    if feed.next_due > now:
                        wait_s = min(wait_s, feed.next_due - now)
                        continue
                    item = feed.slot.take()
                    if item is None:
                        continue
                    if feed.gate is not None and not self._moved(feed, item):
                        item = None
                        continue
                    if feed.options.fps:
                        feed.next_due = now + 1.0 / feed.options.fps
                    turn = (turn + step + 1) % count
                    break
                if item is None:
                    if all(feed.slot.done for feed in self.feeds):
                        return
                    self._wake.wait(wait_s)
                    continue
            if item.error is None:
                self.board.count(item.source or "", "inferred")
            yield item

    def _moved(self, feed: Feed, item: InputItem) -> bool:
        if feed.gate is None or not is_frame(item.payload):
            return True
        if feed.gate.changed(item.payload):
            return True
        self.board.count(feed.name, "motion_skipped")
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Stop every source and wait (up to ``timeout`` in all) for their threads to end.

        Items a lossless source had read but not handed over yet (a file just dropped in the watch folder)
        are named in one warning: they were not inferred.
        """
        self.stop.set()
        with self._wake:
            self._wake.notify_all()
            left = [item.name for feed in self.feeds if not feed.latest for item in feed.slot.drain()]
        if left:
            shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            log.warning("stopped before inferring %d input(s) already read: %s", len(left), shown)
        deadline = time.monotonic() + timeout
        for feed in self.feeds:
            if feed.thread is not None:
                feed.thread.join(max(0.0, deadline - time.monotonic()))
