"""Composition root for ``edge run``: wires the MQTT side (cloud_sync) into the runtime.

Contract (``edge/cli/commands/run.py`` calls these):

- ``add_sync_arguments(parser)`` adds ``--mqtt``, ``--prefix``, ``--device-id``, ``--state-dir``, TLS and
  Home Assistant options to ``edge run``'s parser.
- ``start_sync(settings, pipeline, board=None)`` takes the run's ``edge.settings.RunSettings`` (built once
  from the flags and ``--config``; never argparse's ``Namespace``) and returns ``None`` when it has no
  ``mqtt``, else a ``SyncSession`` whose ``sinks`` receive every result record, whose ``connection`` is the
  live ``MqttConnection`` (shared with the update agent) and whose ``close()`` flushes and disconnects.
  With ``board`` (the run's ``edge.sources.SourceBoard``) every source state change is published
  (``<prefix>/<id>/sources/<name>/state``, retained), telemetry carries the sources and Home Assistant
  gets one connectivity binary_sensor per source. Set each source's final state (``finished`` or
  ``down``) *before* ``close()``: it publishes them, then the offline status.
- ``device_options(mqtt, homeassistant, inputs=(), watch=None)``: the checked ``DeviceOptions``.

Only this module (and ``update_hooks``) may import ``cloud_sync`` from ``edge``; it does so inside
``start_sync`` so ``edge --help`` never loads paho.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.cli.broker_options import add_broker_arguments, broker_from_settings
from edge.errors import ConfigError
from edge.fsutil import default_state_dir
from edge.sinks import Sink

if TYPE_CHECKING:
    from edge.settings import HomeAssistantSettings, ModelSettings, MqttSettings, RunSettings, UpdateSettings
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


def _keepalive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} must be 1 to 65535 seconds (MQTT's keep-alive range)")
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
    group.add_argument("--keepalive", type=_keepalive, default=30, metavar="SECONDS",
                       help="MQTT keep-alive; a link silent for 1.5 of them (half-open: no FIN) is closed "
                            "and reconnected (default: 30)")
    group.add_argument("--ha-discovery", action="store_true", help="announce the device to Home Assistant")
    group.add_argument("--ha-label", action="append", default=[], metavar="LABEL",
                       help="a binary_sensor that is ON while LABEL is seen (repeatable)")
    group.add_argument("--ha-off-delay", type=_positive, default=10.0, metavar="SECONDS",
                       help="seconds without LABEL before its binary_sensor goes OFF (default: 10)")
    group.add_argument("--ha-threshold", type=_positive, default=0.5, metavar="SCORE",
                       help="minimum score for LABEL to count as seen (default: 0.5)")


def device_options(
    mqtt: MqttSettings,
    homeassistant: HomeAssistantSettings,
    inputs: tuple[Path, ...] = (),
    watch: Path | None = None,
    updates: bool = False,
    approve: bool = False,
) -> Any:
    """``cloud_sync.device.DeviceOptions`` from the run's settings (validated: errors name the flag).

    ``inputs`` and ``watch``: the files, folders and watch folder of the run, what ``cmd/snapshot`` may read.
    """
    from cloud_sync.device import DeviceOptions
    from cloud_sync.topics import check_prefix, check_segment
    from edge.cli.update_hooks import _device_id

    ha = homeassistant
    if ha.threshold > 1:
        raise ConfigError(f"--ha-threshold {ha.threshold} is above 1; pass a score between 0 and 1")
    if ha.labels and not ha.discovery:
        raise ConfigError("--ha-label needs --ha-discovery; add --ha-discovery")
    return DeviceOptions(
        broker=broker_from_settings(mqtt),
        device_id=check_segment(_device_id(mqtt), "device id", "--device-id"),
        state_dir=mqtt.state_dir,  # the same folder as the model store's
        prefix=check_prefix(mqtt.prefix),
        protocol=mqtt.version,
        telemetry_interval_s=mqtt.telemetry_interval,
        keepalive=mqtt.keepalive,
        ha_discovery=ha.discovery,
        ha_labels=ha.labels,
        ha_off_delay_s=ha.off_delay,
        ha_threshold=ha.threshold,
        ha_updates=updates,
        ha_install=updates and approve,
        inputs=inputs,
        watch=watch,
    )


def _reloader(
    pipeline: Any, model: ModelSettings, updates: UpdateSettings, mqtt: MqttSettings | None
) -> Any:
    """The ``reload`` command: load the model again (same file and options) and hot-swap it in."""
    if not hasattr(pipeline, "swap_model"):
        return None

    def reload() -> None:
        from edge.cli.update_hooks import wait_for_active_model

        path = model.path or wait_for_active_model(updates, mqtt, model)
        pipeline.swap_model(model.load(path))

    return reload


def start_sync(
    settings: RunSettings,
    pipeline: Any,
    board: SourceBoard | None = None,
    events: Any = None,
    frames: Any = None,
) -> SyncSession | None:
    """Connect to MQTT when ``settings.mqtt`` is set; None otherwise. ``board``: the sources whose states to
    publish; ``events``/``frames``: the run's event annotator and frame keeper (events, snapshots, counts).

    A broker that refuses the credentials or the certificate raises ``BrokerError`` (one line, exit 2);
    an unreachable broker is only a warning: results wait in the outbox until it is back.
    """
    mqtt = settings.mqtt
    if mqtt is None:
        return None
    from cloud_sync.device import DeviceSync
    from edge.cli.update_hooks import check_update_options, start_updates

    # files and folders only: `cmd/snapshot` may read under them (never a stream URL with its password)
    inputs = tuple(Path(p) for p in settings.sources.files)
    options = device_options(mqtt, settings.homeassistant, inputs, settings.sources.watch,
                             updates=settings.updates.enabled, approve=settings.updates.approve)
    check_update_options(settings.updates)  # a bad --trust or --group fails before anything connects
    reload = _reloader(pipeline, settings.model, settings.updates, mqtt)
    sync = DeviceSync(options, pipeline, reload=reload, sources=board, events=events, frames=frames).start()
    try:
        sync.updates = start_updates(settings.updates, mqtt, settings.model, pipeline, sync.connection)
    except BaseException:
        sync.close(drain_timeout=0)
        raise
    return sync
