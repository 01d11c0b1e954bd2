"""The device configuration file (``edge run --config device.toml``), documented in ``docs/config.md``.

One TOML file holds what ``edge run`` needs on a device. ``KEYS`` maps every config key onto the ``dest`` of
the ``edge run`` option it stands for, so the file and the command line are one set of settings:
a flag given on the command line wins over the file, the file wins over the profile, the profile wins over
the built-in defaults. Relative paths in the file are relative to the file's folder.

Validation happens once, at load: unknown keys, wrong types and bad values are ``ConfigError`` naming the
key, the bad value and what is allowed. Files the config points to that do not exist are warnings
(``edge config check --strict`` makes them errors), since a config is often checked before it is deployed.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.broker import (
    CONFIG_NAMES,
    MQTT_VERSIONS,
    URL_HELP,
    BrokerUrlError,
    check_broker_url,
    tls_problems,
)
from edge.errors import ConfigError
from edge.manifest import TASKS
from edge.profiles import BACKENDS, DEVICE_PATTERN, INTERPRETERS, RESIZE_MODES, list_profiles, load_profile

NO_PROFILE = "none"  # `edge run --profile none`: no profile at all
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PREFIX_PATTERN = re.compile(r"^[^+#/\s]+(/[^+#/\s]+)*$")

# A check returns the value as ``edge run`` wants it, or raises ValueError with what is allowed.
Check = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: its ``edge run`` dest, how it is checked, whether it names files, and its doc line."""

    name: str
    dest: str
    check: Check
    doc: str
    paths: bool = False


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _choice(*allowed: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError("one of " + ", ".join(repr(a) for a in allowed))
        return str(value)
    return check


def _integer(low: int) -> Check:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"an integer >= {low}")
        return value
    return check


def _keepalive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError("a whole number of seconds from 1 to 65535")
    return value


def _number(low: float, high: float | None = None, strict: bool = False) -> Check:
    bound = (f"> {low}" if strict else f">= {low}") + (f" and <= {high}" if high is not None else "")

    def check(value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and (value < low or (strict and value == low) or (high is not None and value > high)):
            ok = False
        if not ok:
            raise ValueError(f"a number {bound}")
        return float(value)
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _pattern(regex: re.Pattern[str], allowed: str) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise ValueError(allowed)
        return value
    return check


def _url(*schemes: str) -> Check:
    def check(value: Any) -> str:
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in schemes or not parts.hostname:
            raise ValueError("a URL " + " or ".join(f"{s}://host..." for s in schemes))
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"a URL with a port from 1 to 65535 ({exc})") from exc
        return value
    return check


def _list(item: Check, what: str, lengths: tuple[int, ...] = ()) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list) or (lengths and len(value) not in lengths):
            size = f" of {' or '.join(map(str, lengths))} " if lengths else " of "
            raise ValueError(f"a list{size}{what}")
        try:
            return [item(v) for v in value]
        except ValueError as exc:
            raise ValueError(f"a list of {exc}") from exc
    return check


def _broker_url(value: Any) -> str:
    """A broker URL as ``edge.broker`` reads it (the one parser of the CLI, config and cloud_sync)."""
    try:
        check_broker_url(value)
    except BrokerUrlError as exc:
        detail = f" ({exc.problem})" if exc.problem else ""
        fix = "" if exc.fix.startswith("use ") else f"; {exc.fix}"
        form = "a URL mqtt://host[:port] or mqtts://host[:port], user:pass@ before host"
        raise ValueError(f"{form}{detail}{fix}") from None
    return str(value)


def _mqtt_version(value: Any) -> str:
    if value == 5 and not isinstance(value, bool):
        return "5"
    return _choice(*MQTT_VERSIONS)(value)


def _profile(value: Any) -> str:
    names = [*list_profiles(), NO_PROFILE]
    if value not in names:
        raise ValueError("one of " + ", ".join(names))
    return str(value)


def _motion(value: Any) -> float:
    if value is True:
        return 1.0
    return _number(0.0, 99.99)(value)


def _size(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", value):
        raise ValueError('WIDTHxHEIGHT, e.g. "1280x720"')
    return value


def _any_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("[[source]] tables")
    return value


def _metrics_address(value: Any) -> str:
    from edge.metrics import parse_address

    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('"[HOST:]PORT", e.g. "127.0.0.1:9100", or a port number')
    try:
        parse_address(value)
    except ConfigError as exc:
        raise ValueError(str(exc).split(": ", 1)[1]) from None
    return str(value)


_positive = _number(0, strict=True)


def _shadow_length(value: Any) -> str:
    from edge.shadow import parse_length

    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        parse_length(value if isinstance(value, str) else "")
    except ConfigError:
        raise ValueError('a number of samples (200) or a duration ("90s", "10m", "1h")') from None
    return str(value)


def _min_score(value: Any) -> list[str]:
    """A number (every label) or a table of label = score; as ``--min-score`` values ("0.5", "person=0.7")."""
    score = _number(0.0, 1.0)
    if isinstance(value, dict):
        return [f"{label}={score(v)}" for label, v in value.items()]
    try:
        return [str(score(value))]
    except ValueError:
        raise ValueError("a score from 0 to 1, or a table of label = score, e.g. { person = 0.7 }") from None


def _zone_tables(value: Any) -> list[Any]:
    """``[[zone]]`` tables, each checked as ``edge.zones`` reads it."""
    from edge.zones import zone_from_table

    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("zone must be [[zone]] tables, each with name and points")
    for number, table in enumerate(value, 1):
        try:
            zone_from_table(table)
        except ConfigError as exc:
            raise ValueError(f"zone[{number}]: {exc}") from None
    return value
KEYS: tuple[Key, ...] = (
    Key("profile", "profile", _profile, "device profile (devices/*.toml): threads, backend, delegate"),
    Key("state_dir", "state_dir", _string, "state folder: model store, outbox, update downloads", paths=True),
    Key("model.path", "model", _string, "a .tflite file or model package; omit to serve the store's model",
        paths=True),
    Key("input.paths", "inputs", _list(_string, "file or folder paths"), "files or folders to run once",
        paths=True),
    Key("input.watch", "watch", _string, "folder watched for new images", paths=True),
    Key("input.url", "url", _url("http", "https"), "snapshot URL polled every input.interval seconds"),
    Key("input.interval", "interval", _positive, "seconds between two snapshots of input.url"),
    Key("input.fps", "fps", _positive, "at most this many inferences per second per source"),
    Key("input.motion", "motion", _motion, "skip frames that changed less than this percent (true: 1.0)"),
    Key("input.realtime", "realtime", _boolean, "video files: paced at their frame rate, newest frame only"),
    Key("input.stall_timeout", "stall_timeout", _positive, "seconds without a frame: reopen the stream"),
    Key("input.rtsp_transport", "rtsp_transport", _choice("tcp", "udp"), "RTSP transport (default tcp)"),
    Key("input.video_size", "video_size", _size, "V4L2 cameras: capture size WIDTHxHEIGHT"),
    Key("input.video_fps", "video_fps", _positive, "V4L2 cameras: capture frame rate"),
    Key("input.video_format", "video_format", _choice("mjpeg", "yuyv"), "V4L2 cameras: pixel format"),
    Key("source", "sources", _any_list, "[[source]] tables: one named stream, camera or video file each",
        paths=False),
    Key("task.task", "task", _choice(*TASKS), "how outputs are decoded (default: the manifest's task)"),
    Key("task.labels", "labels", _string, "labels file, one per line (default: the manifest's)", paths=True),
    Key("task.label_offset", "label_offset", _integer(-1),
        "class id k is label line k + offset (default: from the labels against the class count)"),
    Key("task.track", "track", _boolean, "detection: follow objects across frames (track_id on each)"),
    Key("events.enabled", "events", _boolean, "detection: track objects and publish events and snapshots"),
    Key("events.labels", "event_labels", _list(_string, "label names"), "labels of interest (default: all)"),
    Key("events.min_score", "min_score", _min_score, "score an object needs to start an event (default 0.5)"),
    Key("events.min_area", "min_area", _number(0.0, 1.0), "box area an object needs, fraction of the frame"),
    Key("events.min_frames", "min_frames", _integer(1), "frames an object must be seen before its event"),
    Key("events.update_interval", "event_update_interval", _positive, "seconds between updates of an event"),
    Key("events.snapshots", "snapshots", _boolean, "a JPEG of each event's best frame (default true)"),
    Key("events.snapshot_size", "snapshot_size", _integer(32), "snapshot longer side, pixels (640)"),
    Key("zone", "zones", _zone_tables, "[[zone]] tables: name, points = [[x, y], ...], source, labels"),
    Key("task.top_k", "top_k", _integer(1), "classification: how many classes to report"),
    Key("task.threshold", "threshold", _number(0.0, 1.0), "minimum score of a reported class or object"),
    Key("task.resize", "resize", _choice(*RESIZE_MODES), "how an image is fitted to the model input"),
    Key("task.mean", "mean", _list(_number(-1e9), "numbers", (1, 3)),
        "input normalization (pixel - mean) / std, for models without a manifest"),
    Key("task.std", "std", _list(_number(0, strict=True), "numbers > 0", (1, 3)), "see task.mean"),
    Key("runtime.backend", "backend", _choice(*BACKENDS), "interpreter (default: the profile's)"),
    Key("runtime.threads", "threads", _integer(1), "interpreter threads (default: from the profile)"),
    Key("runtime.delegate", "delegate", _string, "edgetpu, cpu or a delegate library path"),
    Key("runtime.device", "device", _pattern(DEVICE_PATTERN, "usb, usb:N, pci or pci:N"),
        "which Edge TPU (default: the profile's)"),
    Key("runtime.decode_workers", "decode_workers", _integer(1),
        "at most this many threads decoding files ahead of the interpreter (default: the profile's)"),
    Key("runtime.interpreters", "interpreters", _choice(*INTERPRETERS),
        "shared: one interpreter for all sources; per-source: one each, in parallel"),
    Key("runtime.require_accelerator", "require_accelerator", _boolean,
        "fail when the accelerator is missing instead of falling back to the CPU"),
    Key("mqtt.url", "mqtt", _broker_url, URL_HELP),
    Key("mqtt.version", "mqtt_version", _mqtt_version, "MQTT protocol version: \"5\" or \"3.1.1\""),
    Key("mqtt.ca", "ca", _string, "CA certificate (PEM) that signed the broker's certificate", paths=True),
    Key("mqtt.cert", "cert", _string, "client certificate (PEM), with mqtt.key", paths=True),
    Key("mqtt.key", "key", _string, "client private key (PEM), with mqtt.cert", paths=True),
    Key("mqtt.prefix", "prefix", _pattern(PREFIX_PATTERN, "levels without +, #, spaces or empty levels"),
        "topic prefix: <prefix>/<device_id>/..."),
    Key("mqtt.device_id", "device_id", _pattern(NAME_PATTERN, "1-64 letters, digits, _, - or ."),
        "device id in topics (default: the host name)"),
    Key("mqtt.telemetry_interval", "telemetry_interval", _number(0.0),
        "seconds between telemetry messages; 0 turns them off"),
    Key("mqtt.keepalive", "keepalive", _keepalive, "MQTT keep-alive seconds; a half-open link is closed "
        "after 1.5 of them"),
    Key("homeassistant.discovery", "ha_discovery", _boolean, "publish Home Assistant MQTT discovery configs"),
    Key("homeassistant.labels", "ha_label", _list(_string, "label names"),
        "one binary_sensor per label, ON while the label is seen"),
    Key("homeassistant.off_delay", "ha_off_delay", _number(0.0), "seconds a label binary_sensor stays ON"),
    Key("homeassistant.threshold", "ha_threshold", _number(0.0, 1.0), "minimum score for a label to count"),
    Key("output.json", "json", _boolean, "print one JSON line per result on stdout (the journal)"),
    Key("output.file", "output", _string, "also append JSON lines to this file", paths=True),
    Key("output.mask_dir", "mask_dir", _string, "segmentation: write each result's colour mask PNG here",
        paths=True),
    Key("output.metrics", "metrics", _metrics_address,
        "serve Prometheus /metrics on [HOST:]PORT (HOST default 127.0.0.1)"),
    Key("updates.trust", "trust", _list(_string, "public key files"),
        "Ed25519 public keys whose signed models this device accepts", paths=True),
    Key("updates.groups", "update_groups", _list(_pattern(NAME_PATTERN, "group names"), "group names"),
        "also take model offers sent to these groups (edge push-model --group)"),
    Key("updates.max_model_size_mb", "max_model_size", _number(0, strict=True),
        "largest model package accepted, in MB"),
    Key("updates.health_inferences", "health_inferences", _integer(1),
        "health window after an update: first K inferences..."),
    Key("updates.mode", "updates_mode", _choice("auto", "approve"),
        "auto: take valid offers at once; approve: hold each update until approved (model/install)"),
    Key("updates.shadow", "update_shadow", _shadow_length,
        "shadow-test new models on N live inputs or for a duration (\"10m\") before they serve"),
    Key("updates.shadow_min_agreement", "shadow_min_agreement", _number(0.0, 1.0),
        "agreement with the active model a shadowed model needs (default 0.9)"),
    Key("updates.shadow_max_latency_ratio", "shadow_max_latency_ratio", _positive,
        "a shadowed model's invoke time at most this times the active model's (default 2)"),
    Key("updates.shadow_budget", "shadow_budget", _number(0.0, 4.0, strict=True),
        "a shadowed model's CPU time at most this times the active model's (default 0.25)"),
    Key("updates.health_seconds", "health_seconds", _positive, "...or T seconds, whichever ends first"),
)
KEY_BY_NAME = {key.name: key for key in KEYS}
# The keys of one [[source]] table: what it reads, its name, and options over the [input]/[task] ones.
SOURCE_KEYS: dict[str, tuple[Check, str]] = {
    "input": (_string, "stream URL, /dev/videoN, picamera:N or video file (required)"),
    "name": (_pattern(NAME_PATTERN, "1-64 letters, digits, _, - or ."), "its name in results and topics"),
    "fps": (_positive, "at most this many inferences per second"),
    "motion": (_motion, "motion gate threshold, percent (true: 1.0)"),
    "realtime": (_boolean, "video file: paced at its frame rate"),
    "stall_timeout": (_positive, "seconds without a frame before reopening"),
    "rtsp_transport": (_choice("tcp", "udp"), "RTSP transport"),
    "video_size": (_size, "V4L2: WIDTHxHEIGHT"),
    "video_fps": (_positive, "V4L2: frame rate"),
    "video_format": (_choice("mjpeg", "yuyv"), "V4L2: pixel format"),
    "top_k": (_integer(1), "classification: classes to report"),
    "threshold": (_number(0.0, 1.0), "minimum score reported"),
    "resize": (_choice(*RESIZE_MODES), "how a frame is fitted to the model input"),
    "labels": (_list(_string, "label names"), "events: labels of interest on this source"),
    "min_score": (_min_score, "events: score to start an event on this source"),
    "min_area": (_number(0.0, 1.0), "events: minimum box area, fraction of the frame"),
    "min_frames": (_integer(1), "events: frames before an event starts"),
}
SECTIONS = sorted({key.name.split(".")[0] for key in KEYS if "." in key.name})


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A validated config file: ``values`` maps each key present (``mqtt.url``) to its checked value."""

    path: Path
    values: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())

    def options(self) -> dict[str, Any]:
        """The values keyed by ``edge run`` dest."""
        return {KEY_BY_NAME[name].dest: value for name, value in self.values.items()}


def check_config(path: str | Path) -> tuple[DeviceConfig | None, list[str]]:
    """Validate a config file; every problem found, each naming the key, the value and what is allowed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ["no such file"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"cannot be read ({exc})"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"not valid TOML ({exc})"]
    errors: list[str] = []
    values: dict[str, Any] = {}
    for name, raw in _flatten(data, errors):
        key = KEY_BY_NAME.get(name)
        if key is None:
            errors.append(_unknown(name))
            continue
        if name == "source":
            values[name] = _check_sources(raw, path.parent, errors)
            continue
        if name == "zone":  # each table names its own problem
            try:
                values[name] = _zone_tables(raw)
            except ValueError as exc:
                errors.append(str(exc))
            continue
        try:
            value = key.check(raw)
        except ValueError as exc:
            errors.append(f"{name} is {raw!r} ({_kind(raw)}); allowed: {exc}")
            continue
        if key.paths:
            value = _resolve(value, path.parent)
        values[name] = value
    if not errors:
        errors.extend(_cross_checks(values))
    warnings = [] if errors else _missing_files(values) + _discovery_id(values)
    return DeviceConfig(path, values, tuple(warnings)), errors


def load_config(path: str | Path) -> DeviceConfig:
    """The validated config; the first problem is a ConfigError (``edge config check`` lists them all)."""
    config, errors = check_config(path)
    if errors or config is None:
        more = f" (and {len(errors) - 1} more; run 'edge config check {path}')" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {errors[0]}{more}")
    return config


def _flatten(data: dict[str, Any], errors: list[str]) -> Iterable[tuple[str, Any]]:
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                errors.append(f"{name} is {value!r} ({_kind(value)}); allowed: a table [{name}]")
                continue
            for sub, subvalue in value.items():
                yield f"{name}.{sub}", subvalue
        else:
            yield name, value


def _check_sources(raw: Any, base: Path, errors: list[str]) -> list[dict[str, Any]]:
    """The ``[[source]]`` tables, each key checked; problems named ``source[N].key`` (N from 1)."""
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        errors.append("source must be [[source]] tables, one per stream, camera or video file")
        return []
    tables = []
    for number, table in enumerate(raw, 1):
        checked: dict[str, Any] = {}
        for key, value in table.items():
            where = f"source[{number}].{key}"
            if key not in SOURCE_KEYS:
                close = difflib.get_close_matches(key, list(SOURCE_KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"unknown key {where!r}{hint}; allowed: {', '.join(SOURCE_KEYS)}")
                continue
            try:
                checked[key] = SOURCE_KEYS[key][0](value)
            except ValueError as exc:
                errors.append(f"{where} is {value!r} ({_kind(value)}); allowed: {exc}")
        if "input" not in table:
            errors.append(f"source[{number}] has no input; set input = a stream URL, /dev/videoN or a file")
        elif isinstance(checked.get("input"), str) and not _is_device_or_url(checked["input"]):
            checked["input"] = _resolve(checked["input"], base)
        tables.append(checked)
    return tables


def _is_device_or_url(target: str) -> bool:
    return "://" in target or target.startswith(("/dev/", "picamera:"))


def _unknown(name: str) -> str:
    section = name.split(".")[0] if "." in name else ""
    in_section = [k.name for k in KEYS if k.name.split(".")[0] == section] if section in SECTIONS else []
    candidates = in_section or [k.name for k in KEYS if "." not in k.name] + [f"[{s}]" for s in SECTIONS]
    close = difflib.get_close_matches(name, [k.name for k in KEYS], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"in [{section}]" if in_section else "at the top level"
    return f"unknown key {name!r}{hint}; allowed {where}: {', '.join(candidates)}"


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if not value or _is_device_or_url(value):
        return value
    return str((base / Path(value).expanduser()).absolute())


def _cross_checks(values: dict[str, Any]) -> list[str]:
    errors = []
    has = values.__contains__
    if not has("model.path") and not has("state_dir"):
        errors.append("model.path is not set; set model.path, or state_dir to serve the store's active model")
    for name in ("input.video_size", "input.video_fps", "input.video_format"):
        if has(name) and not _has_camera(values):
            errors.append(f"{name} is {values[name]!r} but no /dev/video camera is configured")
    if has("input.interval") and not has("input.url"):
        errors.append(f"input.interval is {values['input.interval']!r} without input.url; set input.url too")
    url = values.get("mqtt.url")
    errors.extend(
        tls_problems(
            check_broker_url(url).tls if url else True,  # without a URL, the error below says so
            url or "",
            ca=values.get("mqtt.ca"),
            cert=values.get("mqtt.cert"),
            key=values.get("mqtt.key"),
            names=CONFIG_NAMES,
        )
    )
    needs_mqtt = ["mqtt.version", "mqtt.ca", "mqtt.cert", "mqtt.key", "mqtt.prefix", "mqtt.device_id",
                  "mqtt.telemetry_interval", "homeassistant.discovery", "homeassistant.labels",
                  "homeassistant.off_delay", "homeassistant.threshold", "updates.trust", "updates.groups",
                  "updates.max_model_size_mb", "updates.health_inferences", "updates.health_seconds",
                  "updates.shadow", "updates.mode"]
    for name in needs_mqtt:
        if has(name) and not url:
            errors.append(f"{name} is {values[name]!r} but mqtt.url is not set; it needs an MQTT broker")
    if has("updates.groups") and not has("updates.trust"):
        errors.append("updates.groups is set but updates.trust is not; signed offers need a trusted key")
    if has("updates.trust") and not has("state_dir"):
        errors.append("updates.trust is set but state_dir is not; model updates are stored in state_dir")
    if values.get("homeassistant.labels") and not values.get("homeassistant.discovery"):
        errors.append("homeassistant.labels is set but homeassistant.discovery is not true; enable discovery")
    return errors


def _has_camera(values: dict[str, Any]) -> bool:
    inputs = [*values.get("input.paths", []), *(t.get("input", "") for t in values.get("source", []))]
    return any(str(target).startswith(("/dev/", "picamera:")) for target in inputs)


def _discovery_id(values: dict[str, Any]) -> list[str]:
    """Discovery replaces characters outside [A-Za-z0-9_-] in the node id; the ACL wants ``edge_<id>``."""
    device_id = values.get("mqtt.device_id")
    if values.get("homeassistant.discovery") and device_id and not re.fullmatch(r"[A-Za-z0-9_-]+", device_id):
        slug = re.sub(r"[^a-zA-Z0-9_-]+", "_", device_id).strip("_")
        return [
            f"mqtt.device_id {device_id!r}: Home Assistant discovery topics use 'edge_{slug}', which the "
            "ACL in devices/mosquitto/acl refuses; use letters, digits, - and _ only"
        ]
    return []


def _missing_files(values: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    for name, value in values.items():
        if name == "source":
            warnings.extend(
                f"source[{n}].input: {t['input']} does not exist (yet)"
                for n, t in enumerate(value, 1)
                if isinstance(t.get("input"), str) and not _is_device_or_url(t["input"])
                and not Path(t["input"]).exists()
            )
            continue
        if not KEY_BY_NAME[name].paths or name in ("state_dir", "input.watch", "output.file"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if not _is_device_or_url(item) and not Path(item).exists():
                warnings.append(f"{name}: {item} does not exist (yet)")
    return warnings


def explicit_dests(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    """Dests the user set on the command line: those whose value differs from what argparse gives unset."""
    explicit = set()
    for action in parser._actions:
        unset = parser.get_default(action.dest)
        if unset is None and not action.option_strings and action.nargs == "*":
            unset = []  # argparse turns an absent "*" positional into []
        if hasattr(args, action.dest) and getattr(args, action.dest) != unset:
            explicit.add(action.dest)
    return explicit


def fill_unset(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    options: dict[str, Any],
    keep: set[str],
) -> set[str]:
    """Set each dest in ``options`` on ``args`` unless it is in ``keep``; the dests set.

    Values pass through the option's argparse ``type`` (e.g. ``Path``) so they look as if parsed.
    """
    types = {action.dest: action.type for action in parser._actions}
    done = set()
    for dest, value in options.items():
        if dest in keep:
            continue
        convert = types.get(dest)
        if callable(convert) and value is not None:
            try:
                value = [convert(v) for v in value] if isinstance(value, list) else convert(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"option {dest} cannot take {value!r} ({exc})") from exc
        setattr(args, dest, value)
        done.add(dest)
    return done


def apply_profile(
    args: argparse.Namespace, parser: argparse.ArgumentParser, name: str, keep: set[str] | None = None
) -> argparse.Namespace:
    """Fill what profile ``name`` recommends where the user set nothing: threads, backend, delegate, device
    and resize mode for ``edge run``; ``mode`` and ``io_type`` for ``edge convert``.

    Only dests the command defines are touched; ``keep`` defaults to the flags given on the command line.
    """
    profile = load_profile(name)
    keep = explicit_dests(args, parser) if keep is None else keep
    options = {
        "threads": profile.resolved_threads(),
        "backend": profile.backend,
        "delegate": profile.delegate,
        "device": profile.device or None,
        "require_accelerator": profile.require_accelerator,
        "interpreters": profile.interpreters,
        "decode_workers": profile.resolved_decode_workers(),
        "mode": profile.convert_mode,
        "io_type": profile.io_type,
    }
    fill_unset(args, parser, {d: v for d, v in options.items() if hasattr(args, d)}, keep)
    return args


def apply_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, path: str | Path
) -> argparse.Namespace:
    """Fill ``args`` from the config file at ``path``, then from its profile; command-line flags win.

    A key whose ``edge run`` option does not exist in ``parser`` is a ConfigError (it would be ignored).
    """
    config = load_config(path)
    keep = explicit_dests(args, parser)
    options = config.options()
    known = {action.dest for action in parser._actions} | set(parser._defaults)
    for name, value in config.values.items():
        dest = KEY_BY_NAME[name].dest
        if dest not in known:
            raise ConfigError(f"{path}: {name} is {value!r} but this 'edge run' has no option for it")
    keep |= fill_unset(args, parser, options, keep)
    profile = getattr(args, "profile", None)
    if profile and profile != NO_PROFILE:
        apply_profile(args, parser, profile, keep)
    return args
