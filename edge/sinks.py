"""Where results go. A sink takes each result record (the JSON-ready dict of one inference) in order.

Built-in sinks live here (stdout JSON lines, a JSON-lines file); the MQTT sink is in ``cloud_sync``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from edge.errors import ConfigError

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives every result record; ``close`` flushes whatever it buffers."""

    def emit(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class StdoutSink:
    """One line per result on stdout (or ``stream``): JSON unless a ``formatter`` is given; flushed at once.

    When the reader goes away (``edge run ... --json | head``) the sink goes quiet: one log line, no error
    per result, and the run goes on for its other sinks.
    """

    def __init__(
        self, stream: TextIO | None = None, formatter: Callable[[dict[str, Any]], str] | None = None
    ) -> None:
        self.stream = stream
        self.formatter = formatter or dumps  # e.g. a readable line instead of JSON
        self.broken = False
        self._lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        with self._lock:
            if self.broken:
                return
            try:
                stream.write(self.formatter(record) + "\n")
                stream.flush()
            except BrokenPipeError:
                self.broken = True
                _silence(stream)
                log.info("stdout was closed by its reader; JSON lines are no longer printed")

    def close(self) -> None:
        with self._lock:
            if not self.broken:
                (self.stream or sys.stdout).flush()


def _silence(stream: TextIO) -> None:
    """Point a stream whose reader is gone at /dev/null, so the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a StringIO in tests): nothing to do
        pass


class JsonlFileSink:
    """Appends one JSON line per result to a file; each line is flushed so a crash loses at most one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: TextIO | None = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot open results file {self.path}: {exc.strerror}; check the path"
            ) from exc
        self._lock = threading.Lock()

    def emit(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._handle is None:
                return
            self._handle.write(dumps(record) + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
