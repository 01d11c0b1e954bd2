"""Where results go. A sink takes each result record (the JSON-ready dict of one inference) in order.

Built-in sinks live here (stdout JSON lines, a JSON-lines file); the MQTT sink is in ``cloud_sync``.
"""

from __future__ import annotations

from typing import Any, Protocol


class Sink(Protocol):
    """Receives every result record; ``close`` flushes whatever it buffers."""

    def emit(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
