"""Composition root for ``edge run``: wires the MQTT side (cloud_sync) into the runtime.

Contract (``edge/cli/commands/run.py`` calls these; the MQTT work fills them in):

- ``add_sync_arguments(parser)`` adds ``--mqtt``, ``--prefix``, ``--device-id``, ``--state-dir``, TLS and
  Home Assistant options to ``edge run``'s parser.
- ``start_sync(args, pipeline)`` returns ``None`` when no ``--mqtt`` was given, else a ``SyncSession``
  whose ``sinks`` receive every result record and whose ``close()`` flushes and disconnects.

Only this module (and ``update_hooks``) may import ``cloud_sync`` from ``edge``.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from edge.sinks import Sink


class SyncSession(Protocol):
    sinks: list[Sink]

    def close(self) -> None: ...


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the MQTT options to ``edge run``."""


def start_sync(args: argparse.Namespace, pipeline: Any) -> SyncSession | None:
    """Connect to MQTT when ``--mqtt`` is set; None otherwise."""
    return None
