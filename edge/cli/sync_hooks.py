"""Composition root for ``edge run``: wires the MQTT side (cloud_sync) into the runtime.

Contract (``edge/cli/commands/run.py`` calls these):

- ``add_sync_arguments(parser)`` adds ``--mqtt``, ``--prefix``, ``--device-id``, ``--state-dir``, TLS and
  Home Assistant options to ``edge run``'s parser.
- ``start_sync(args, pipeline, board=None)`` returns ``None`` when no ``--mqtt`` was given, else a
  ``SyncSession`` whose ``sinks`` receive every result record, whose ``connection`` is the live
  ``MqttConnection`` (shared with the update agent) and whose ``close()`` flushes and disconnects.
  With ``board`` (the run's ``edge.sources.SourceBoard``) every source state change is published
  (``<prefix>/<id>/sources/<name>/state``, retained), telemetry carries the sources and Home Assistant
  gets one connectivity binary_sensor per source. Set each source's final state (``finished`` or
  ``down``) *before* ``close()``: it publishes them, then the offline status.

Only this module (and ``update_hooks``) may import ``cloud_sync`` from ``edge``; it does so inside
``start_sync`` so ``edge --help`` never loads paho.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.cli.broker_options import add_broker_arguments, broker_settings
from edge.errors import ConfigError
from edge.fsutil import default_state_dir
from edge.sinks import Sink

if TYPE_CHECKING:
    from edge.sources.base import SourceBoard


class SyncSession(Protocol):
    sinks: list[Sink]
    connection: Any

    def close(self) -> None: ...


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be 0 or more seconds")
    return number


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the MQTT options to ``edge run``."""
    group = parser.add_argument_group("MQTT sync")
    add_broker_arguments(group)
    group.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    group.add_argument("--device-id", help="device id in topics (default: the host name)")
    if "--state-dir" not in parser._option_string_actions:  # the model-update options may share it
        group.add_argument("--state-dir", default=None,
                           help=f"folder of the outbox and model store (default: {default_state_dir()})")
    group.add_argument("--telemetry-interval", type=_positive, default=30.0, metavar="SECONDS",
                       help="seconds between telemetry messages; 0 turns them off (default: 30)")
    group.add_argument("--ha-discovery", action="store_true", help="announce the device to Home Assistant")
    group.add_argument("--ha-label", action="append", default=[], metavar="LABEL",
                       help="a binary_sensor that is ON while LABEL is seen (repeatable)")
    group.add_argument("--ha-off-delay", type=_positive, default=10.0, metavar="SECONDS",
                       help="seconds without LABEL before its binary_sensor goes OFF (default: 10)")
    group.add_argument("--ha-threshold", type=_positive, default=0.5, metavar="SCORE",
                       help="minimum score for LABEL to count as seen (default: 0.5)")


def device_options(args: argparse.Namespace) -> Any:
    """``cloud_sync.device.DeviceOptions`` from parsed arguments (validated: errors name the flag)."""
    from cloud_sync.device import DeviceOptions
    from cloud_sync.topics import check_prefix, check_segment
    from edge.cli.update_hooks import _device_id, _state_dir
    from edge.sources.feeds import is_source

    if args.ha_threshold > 1:
        raise ConfigError(f"--ha-threshold {args.ha_threshold} is above 1; pass a score between 0 and 1")
    if args.ha_label and not args.ha_discovery:
        raise ConfigError("--ha-label needs --ha-discovery; add --ha-discovery")
    return DeviceOptions(
        broker=broker_settings(args),
        device_id=check_segment(_device_id(args), "device id", "--device-id"),
        state_dir=_state_dir(args),  # the same folder as the model store's
        prefix=check_prefix(args.prefix),
        protocol=args.mqtt_version,
        telemetry_interval_s=args.telemetry_interval,
        ha_discovery=args.ha_discovery,
        ha_labels=tuple(args.ha_label),
        ha_off_delay_s=args.ha_off_delay,
        ha_threshold=args.ha_threshold,
        # files and folders only: `cmd/snapshot` may read under them (never a stream URL with its password)
        inputs=tuple(Path(p) for p in getattr(args, "inputs", None) or () if not is_source(str(p))),
        watch=getattr(args, "watch", None),
    )


def _reloader(args: argparse.Namespace, pipeline: Any) -> Any:
    """The ``reload`` command: load the model again (same file and options) and hot-swap it in."""
    if not hasattr(pipeline, "swap_model"):
        return None

    def reload() -> None:
        from edge.cli.update_hooks import wait_for_active_model
        from edge.model import load_model

        def one(values: Any) -> Any:
            return None if values is None else tuple(values)

        path = getattr(args, "model", None) or wait_for_active_model(args)
        pipeline.swap_model(load_model(
            path,
            backend=getattr(args, "backend", None) or "auto",
            threads=getattr(args, "threads", None),
            task=getattr(args, "task", None),
            mean=one(getattr(args, "mean", None)),
            std=one(getattr(args, "std", None)),
            delegate=getattr(args, "delegate", None),
            device=getattr(args, "device", None),
            require_accelerator=bool(getattr(args, "require_accelerator", False)),
            labels=getattr(args, "labels", None),
        ))

    return reload


def start_sync(
    args: argparse.Namespace, pipeline: Any, board: SourceBoard | None = None
) -> SyncSession | None:
    """Connect to MQTT when ``--mqtt`` is set; None otherwise. ``board``: the sources whose states to publish.

    A broker that refuses the credentials or the certificate raises ``BrokerError`` (one line, exit 2);
    an unreachable broker is only a warning: results wait in the outbox until it is back.
    """
    if not getattr(args, "mqtt", None):
        return None
    from cloud_sync.device import DeviceSync
    from edge.cli.update_hooks import check_update_options, start_updates

    options = device_options(args)
    check_update_options(args)  # a bad --trust or --group fails before anything connects
    sync = DeviceSync(options, pipeline, reload=_reloader(args, pipeline), sources=board).start()
    try:
        sync.updates = start_updates(args, pipeline, sync.connection)
    except BaseException:
        sync.close(drain_timeout=0)
        raise
    return sync
