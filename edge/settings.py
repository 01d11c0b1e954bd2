"""Typed, frozen settings of ``edge run``: what its parts receive instead of argparse's ``Namespace``.

``edge/cli/commands/run.py`` merges the command line, ``--config`` and the device profile once
(``settings_from``) into one ``RunSettings``; from then on only these objects travel: ``ModelSettings`` to
the model loader, ``MqttSettings`` and ``HomeAssistantSettings`` to the MQTT side, ``UpdateSettings`` to the
update agent, ``edge.sources.feeds.SourcesSettings`` to the sources. Values are as merged (paths resolved,
defaults applied); the checks whose messages name a flag stay with the part that uses the value.

This module is core: it imports nothing from ``edge.cli``, ``cloud_sync`` or ``converter``. It also holds the
broker constants that the CLI's broker options and ``edge.config`` share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from edge.events import EventSettings
    from edge.model import Model
    from edge.shadow import ShadowPolicy
    from edge.sources.feeds import SourcesSettings

MQTT_VERSIONS = ("5", "3.1.1")
URL_HELP = "broker: mqtt://[user:pass@]host[:port] or mqtts://..."


class ModelSettings(NamedTuple):
    """Which model to serve and how to load it; ``path`` None: the model store's active model."""

    path: str | None = None
    backend: str = "auto"
    threads: int | None = None
    task: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    delegate: str | None = None
    device: str | None = None
    require_accelerator: bool = False
    labels: Path | None = None
    label_offset: int | None = None  # None: from the labels against the class count

    def load(self, path: str | Path) -> Model:
        """The model at ``path`` (``self.path``, or the store's active model) loaded with these options."""
        from edge.model import load_model

        return load_model(
            path,
            backend=self.backend,
            threads=self.threads,
            task=self.task,
            mean=self.mean,
            std=self.std,
            delegate=self.delegate,
            device=self.device,
            require_accelerator=self.require_accelerator,
            labels=self.labels,
            label_offset_override=self.label_offset,
        )


class MqttSettings(NamedTuple):
    """The broker and topics of a device (``--mqtt`` and the options beside it).

    ``device_id`` None: the host name; ``state_dir``: the folder of the outbox (and of the model store).
    """

    url: str  # it may carry the broker password: not in repr
    state_dir: Path
    version: str = MQTT_VERSIONS[0]
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    prefix: str = "edge"
    device_id: str | None = None
    telemetry_interval: float = 30.0
    keepalive: int = 30  # MQTT keep-alive, seconds; a silent link is closed after 1.5 of them (half-open)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
                          if name != "url")
        return f"MqttSettings({shown})"


class HomeAssistantSettings(NamedTuple):
    """Home Assistant discovery: on or off, the label binary_sensors, their off delay and score threshold."""

    discovery: bool = False
    labels: tuple[str, ...] = ()
    off_delay: float = 10.0
    threshold: float = 0.5


class UpdateSettings(NamedTuple):
    """Model updates: the trusted keys (none: updates off), groups, size limit, health window, the store."""

    state_dir: Path
    trust: tuple[str | Path, ...] = ()
    groups: tuple[str, ...] = ()
    max_model_size_mb: float = 256.0
    health_inferences: int = 20
    health_seconds: float = 30.0
    shadow: ShadowPolicy | None = None  # the shadow stage for offers that ask for none; None: no stage
    approve: bool = False  # --updates approve: each update of a serving device waits for approval

    @property
    def enabled(self) -> bool:
        """Whether updates are configured: at least one ``--trust`` key."""
        return bool(self.trust)


class RunSettings(NamedTuple):
    """Everything one ``edge run`` uses: the parts' settings and the output options.

    ``mqtt`` None: no broker (results go to stdout and ``output`` only); ``limit`` None: every input.
    """

    model: ModelSettings
    sources: SourcesSettings
    updates: UpdateSettings
    mqtt: MqttSettings | None = None
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    json: bool = False
    output: Path | None = None
    top_k: int = 5
    threshold: float = 0.0
    resize: str | None = None
    limit: int | None = None
    mask_dir: Path | None = None  # segmentation: each result's mask PNG is written here
    track: bool = False  # detection: track_id on objects, one tracker per source
    events: EventSettings | None = None  # detection: events, counts and snapshots (edge.events); None: off
    interpreters: str = "shared"  # or "per-source": one model instance per source, inferred in parallel
    decode_workers: int | None = None  # the most decoder threads ahead of the interpreter; None: one per core
    metrics: tuple[str, int] | None = None  # (host, port) of Prometheus' /metrics (--metrics); None: off

    @property
    def state_dir(self) -> Path:
        """The folder of the model store (and of the outbox)."""
        return self.updates.state_dir
