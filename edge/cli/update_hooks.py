"""Composition root for model updates inside ``edge run``.

- ``add_update_arguments(parser)`` adds ``--trust`` (repeatable), ``--group``, ``--max-model-size`` and the
  health-window options.
- ``wait_for_active_model(args)`` returns the path of the store's active model when ``edge run`` got no
  MODEL argument; while the store in ``--state-dir`` is empty it runs the update agent alone (no pipeline
  yet) until a first model is accepted.
- ``start_updates(args, pipeline, connection)`` starts the update agent on the MQTT connection; returns an
  object with ``close()``, or None when updates are not configured (no ``--trust``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.fsutil import default_state_dir

log = logging.getLogger(__name__)


def add_update_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model-update options to ``edge run``."""
    group = parser.add_argument_group("model updates (with --mqtt)")
    group.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="PUBKEY",
        help="accept models signed by this public key (signing.pub); repeat for key rotation",
    )
    group.add_argument(
        "--group",
        dest="update_groups",
        action="append",
        default=[],
        metavar="NAME",
        help="also take model offers sent to group NAME (repeatable)",
    )
    group.add_argument(
        "--max-model-size",
        type=float,
        default=256.0,
        metavar="MB",
        help="largest model package accepted (default 256 MB)",
    )
    group.add_argument(
        "--health-inferences",
        type=int,
        default=20,
        metavar="K",
        help="health window after an update: first K inferences (default 20)...",
    )
    group.add_argument(
        "--health-seconds",
        type=float,
        default=30.0,
        metavar="T",
        help="...or T seconds, whichever ends first (default 30)",
    )
    if "--state-dir" not in parser._option_string_actions:
        group.add_argument(
            "--state-dir", default=None, help=f"folder of the model store (default: {default_state_dir()})"
        )


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "state_dir", None) or default_state_dir())


def _device_id(args: argparse.Namespace) -> str:
    from cloud_sync.topics import default_device_id

    return str(getattr(args, "device_id", None) or default_device_id())


def check_update_options(args: argparse.Namespace) -> Any:
    """The update options, checked before anything connects: health window, size, ``--group`` names and the
    ``--trust`` key files (read into the returned ``TrustStore``); None when updates are off."""
    if not getattr(args, "trust", None):
        return None
    from cloud_sync.errors import PayloadError
    from cloud_sync.update_protocol import check_topic_part
    from edge.signing import TrustStore

    if args.health_inferences < 1 or args.health_seconds <= 0:
        raise ConfigError("--health-inferences must be at least 1 and --health-seconds more than 0")
    if args.max_model_size <= 0:
        raise ConfigError(f"--max-model-size must be more than 0 MB, got {args.max_model_size}")
    try:
        for group in args.update_groups:
            check_topic_part(group, "--group")
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None
    return TrustStore.from_files(args.trust)


def _agent(args: argparse.Namespace, pipeline: Any, connection: Any) -> Any:
    from cloud_sync.update_agent import UpdateAgent
    from edge.activation import PipelineActivator
    from edge.health import HealthPolicy
    from edge.store import ModelStore

    trust = check_update_options(args)
    store = ModelStore(_state_dir(args))
    policy = HealthPolicy(inferences=args.health_inferences, seconds=args.health_seconds)
    activator = PipelineActivator(
        pipeline,
        store,
        backend=getattr(args, "backend", None) or "auto",
        threads=getattr(args, "threads", None),
        policy=policy,
    )
    return UpdateAgent(
        connection,
        store,
        trust,
        activator,
        _device_id(args),
        prefix=getattr(args, "prefix", "edge"),
        groups=tuple(args.update_groups),
        max_size=int(args.max_model_size * 1024 * 1024),
    ).start()


def wait_for_active_model(args: argparse.Namespace) -> Path:
    """The active model of the store in ``--state-dir``; waits for a first update when the store is empty."""
    from edge.store import ModelStore

    store = ModelStore(_state_dir(args))
    path = store.active_path()
    if path is not None:
        return path
    if not getattr(args, "mqtt", None) or not getattr(args, "trust", None):
        raise ConfigError(
            f"no MODEL given and the model store in {_state_dir(args)} is empty; pass a MODEL, or --mqtt URL "
            "and --trust signing.pub to wait for one pushed with 'edge push-model'"
        )
    from cloud_sync.connection import MqttConnection, client_id_for
    from edge.cli.broker_options import broker_settings

    check_update_options(args)  # before connecting
    broker = broker_settings(args)
    connection = MqttConnection(
        broker, client_id_for(_device_id(args), "first-model"), protocol=getattr(args, "mqtt_version", "5")
    ).start(require=False)
    agent = _agent(args, None, connection)
    print(
        f"edge run: the model store in {_state_dir(args)} is empty; waiting for a model pushed to "
        f"device {agent.device_id}",
        flush=True,
    )
    try:
        while (path := store.active_path()) is None:
            time.sleep(0.2)
    finally:
        agent.close(settle=10)  # the store flips before the agent reports the outcome: let it publish that
        connection.close()
    return path


def start_updates(args: argparse.Namespace, pipeline: Any, connection: Any) -> Any:
    """Start the update agent; None when updates are not configured."""
    if not getattr(args, "trust", None):
        log.info("model updates are off: no --trust key given")
        return None
    return _agent(args, pipeline, connection)
