"""Composition root for model updates inside ``edge run`` (the model-update work fills these in).

- ``add_update_arguments(parser)`` adds ``--trust`` (repeatable) and related options.
- ``wait_for_active_model(args)`` returns the path of the store's active model when ``edge run`` got no
  MODEL argument (waiting while the store in ``--state-dir`` is empty).
- ``start_updates(args, pipeline, connection)`` starts the update agent on an MQTT connection; returns an
  object with ``close()``, or None when updates are not configured.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.errors import ConfigError


def add_update_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model-update options to ``edge run``."""


def wait_for_active_model(args: argparse.Namespace) -> Path:
    """The active model of the store in ``--state-dir``."""
    raise ConfigError("no MODEL given; pass a .tflite file or model package to 'edge run'")


def start_updates(args: argparse.Namespace, pipeline: Any, connection: Any) -> Any:
    """Start the update agent; None when updates are not configured."""
    return None
