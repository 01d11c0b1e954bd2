"""Composition root for model updates inside ``edge run``.

- ``add_update_arguments(parser)`` adds ``--trust`` (repeatable), ``--group``, ``--max-model-size`` and the
  health-window options.

The rest take ``edge.settings`` objects (``edge run`` builds them once from its flags and ``--config``),
never argparse's ``Namespace``:

- ``check_update_options(updates)`` checks the health window, size and ``--group`` names and reads the
  ``--trust`` keys into a ``TrustStore``; None when updates are off (no key).
- ``wait_for_active_model(updates, mqtt, model)`` returns the path of the store's active model when
  ``edge run`` got no MODEL argument; while the store in ``updates.state_dir`` is empty it runs the update
  agent alone (no pipeline yet) until a first model is accepted. Meanwhile the device is visible: a
  retained ``online`` status with ``"phase": "waiting", "model": null`` (and the ``offline`` last will);
  a broker that is unreachable or a network that cuts the handshakes is only a warning, as in ``edge run``.
- ``start_updates(updates, mqtt, model, pipeline, connection)`` starts the update agent on the MQTT
  connection; returns an object with ``close()``, or None when updates are not configured (no ``--trust``).

``mqtt`` gives the broker, device id and topic prefix; ``model`` the backend and threads a new model loads
with.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError
from edge.fsutil import default_state_dir

if TYPE_CHECKING:
    from edge.settings import ModelSettings, MqttSettings, UpdateSettings

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
    group.add_argument(
        "--updates",
        dest="updates_mode",
        choices=("auto", "approve"),
        help="auto (default): a valid offer is taken at once; approve: each update of a serving device is "
        "held until approved (Install in Home Assistant, or any payload on <prefix>/<id>/model/install)",
    )
    group.add_argument(
        "--shadow",
        dest="update_shadow",
        metavar="N|DURATION",
        help="shadow-test every new model on N live inputs (200) or for a duration (10m) before it serves, "
        "unless its offer asks for its own (docs/updates.md)",
    )
    group.add_argument("--shadow-min-agreement", type=float, metavar="X",
                       help="with --shadow: agreement with the active model it needs (default 0.9)")
    group.add_argument("--shadow-max-latency-ratio", type=float, metavar="R",
                       help="with --shadow: at most R times the active model's invoke time (default 2)")
    group.add_argument("--shadow-budget", type=float, metavar="F",
                       help="with --shadow: its CPU time at most F times the active model's (default 0.25)")
    if "--state-dir" not in parser._option_string_actions:
        group.add_argument(
            "--state-dir", default=None, help=f"folder of the model store (default: {default_state_dir()})"
        )


def _device_id(mqtt: MqttSettings) -> str:
    """``--device-id``, else the host name."""
    from cloud_sync.topics import default_device_id

    return str(mqtt.device_id or default_device_id())


def check_update_options(updates: UpdateSettings) -> Any:
    """The update options, checked before anything connects: health window, size, ``--group`` names and the
    ``--trust`` key files (read into the returned ``TrustStore``); None when updates are off."""
    if not updates.enabled:
        return None
    from cloud_sync.errors import PayloadError
    from cloud_sync.update_protocol import check_topic_part
    from edge.signing import TrustStore

    if updates.health_inferences < 1 or updates.health_seconds <= 0:
        raise ConfigError("--health-inferences must be at least 1 and --health-seconds more than 0")
    if updates.max_model_size_mb <= 0:
        raise ConfigError(f"--max-model-size must be more than 0 MB, got {updates.max_model_size_mb}")
    try:
        for group in updates.groups:
            check_topic_part(group, "--group")
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None
    return TrustStore.from_files(updates.trust)


def _agent(
    updates: UpdateSettings, mqtt: MqttSettings, model: ModelSettings, pipeline: Any, connection: Any
) -> Any:
    from cloud_sync.update_agent import UpdateAgent
    from edge.activation import PipelineActivator
    from edge.health import HealthPolicy
    from edge.store import ModelStore

    trust = check_update_options(updates)
    store = ModelStore(updates.state_dir)
    policy = HealthPolicy(inferences=updates.health_inferences, seconds=updates.health_seconds)
    activator = PipelineActivator(
        pipeline, store, backend=model.backend, threads=model.threads, policy=policy
    )
    return UpdateAgent(
        connection,
        store,
        trust,
        activator,
        _device_id(mqtt),
        prefix=mqtt.prefix,
        groups=updates.groups,
        max_size=int(updates.max_model_size_mb * 1024 * 1024),
        shadow=updates.shadow,
        approve=updates.approve and pipeline is not None,  # an empty store takes its first model unasked
    ).start()


def shadow_settings(length: str | None, min_agreement: float | None, max_latency_ratio: float | None,
                    budget: float | None) -> Any:
    """The device's own shadow policy (``edge.shadow.ShadowPolicy``) from ``--shadow`` and its options;
    None without ``--shadow`` (then its options are an error: they would do nothing)."""
    given = [flag for flag, value in (("--shadow-min-agreement", min_agreement),
                                      ("--shadow-max-latency-ratio", max_latency_ratio),
                                      ("--shadow-budget", budget)) if value is not None]
    if length is None:
        if given:
            raise ConfigError(f"{given[0]} needs --shadow N|DURATION (updates.shadow)")
        return None
    from edge.shadow import ShadowPolicy

    return ShadowPolicy.for_length(str(length), min_agreement=min_agreement,
                                   max_latency_ratio=max_latency_ratio, budget=budget)


def wait_for_active_model(updates: UpdateSettings, mqtt: MqttSettings | None, model: ModelSettings) -> Path:
    """The active model of the store in ``updates.state_dir``; waits for a first update when it is empty."""
    from edge.store import ModelStore

    store = ModelStore(updates.state_dir)
    path = store.active_path()
    if path is not None:
        return path
    if mqtt is None or not updates.enabled:
        raise ConfigError(
            f"no MODEL given and the model store in {updates.state_dir} is empty; pass a MODEL, or --mqtt "
            "URL and --trust signing.pub to wait for one pushed with 'edge push-model'"
        )
    from cloud_sync.connection import MqttConnection, client_id_for
    from cloud_sync.device import waiting_status
    from cloud_sync.topics import DeviceTopics
    from edge.cli.broker_options import broker_from_settings

    check_update_options(updates)  # before connecting
    broker = broker_from_settings(mqtt)
    device_id = _device_id(mqtt)
    state_dir = mqtt.state_dir  # where the run's outbox lives (the seq and stream of the status)
    connection = MqttConnection(
        broker,
        client_id_for(device_id, "first-model"),
        protocol=mqtt.version,
        status_topic=DeviceTopics(mqtt.prefix, device_id).status,  # online while waiting; offline: the will
        status_extra=lambda: waiting_status(state_dir),
        keepalive=mqtt.keepalive,
    ).start(require=False)
    agent = _agent(updates, mqtt, model, None, connection)
    print(
        f"edge run: the model store in {updates.state_dir} is empty; waiting for a model pushed to "
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


def start_updates(
    updates: UpdateSettings, mqtt: MqttSettings, model: ModelSettings, pipeline: Any, connection: Any
) -> Any:
    """Start the update agent; None when updates are not configured."""
    if not updates.enabled:
        log.info("model updates are off: no --trust key given")
        return None
    return _agent(updates, mqtt, model, pipeline, connection)
