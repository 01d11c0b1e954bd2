"""``edge run``: run a model on files, folders, a watched folder, a snapshot URL, video files, streams and
cameras (several at once, round-robin on one interpreter); results to sinks."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, sync_hooks, update_hooks
from edge.errors import ConfigError
from edge.fsutil import default_state_dir
from edge.settings import HomeAssistantSettings, ModelSettings, MqttSettings, RunSettings, UpdateSettings

NAME = "run"
HELP = (
    "run a model on images, video files, streams and cameras: files, folders, rtsp://, http(s):// MJPEG, "
    "/dev/videoN, picamera:N, --watch DIR or --url URL"
)
MODEL_SUFFIXES = (".tflite", ".edgepkg", ".zip")
log = logging.getLogger(__name__)
_STDERR_LOCK = threading.Lock()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="a .tflite file or model package; leave out to serve the active model of --state-dir's store",
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="*",
        help="image files or folders; video files (.mp4 .mkv .mov .avi .webm); stream URLs (rtsp://, "
        "rtsps://, rtmp://, http(s):// MJPEG or HLS; an http URL serving single images is polled as a "
        "snapshot); "
        "/dev/videoN; picamera:N",
    )
    parser.epilog = (
        "MODEL may be left out: a first path that is not a model (a folder, or a file not named "
        f"{'/'.join(MODEL_SUFFIXES)} and not starting like a TFLite model or a zip package) counts as an "
        "INPUT, and the model comes from the store in --state-dir (or model.path in --config): "
        "'edge run photo.jpg --state-dir /var/lib/edge'. A missing path named like a model is a "
        "'model not found' error."
    )
    parser.add_argument("--config", type=Path, help="device config file (TOML); flags given here win")
    parser.add_argument(
        "--profile",
        help="device profile (devices/*.toml); default: the one 'edge doctor' suggests; 'none': no profile",
    )
    parser.add_argument("--watch", type=Path, metavar="DIR", help="run on each new file dropped into DIR")
    parser.add_argument("--url", metavar="URL", help="poll a snapshot URL (http/https)")
    parser.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between snapshots")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N inputs")
    live = parser.add_argument_group("video files, streams and cameras (see docs/sources.md)")
    live.add_argument("--source-name", action="append", default=[], metavar="NAME",
                      help="name of the next stream/camera/video INPUT, in order (repeatable; default from "
                      "its host, device or file name)")
    live.add_argument("--fps", type=float, metavar="N", help="at most N inferences per second per source")
    live.add_argument("--motion", type=float, nargs="?", const=1.0, metavar="PERCENT",
                      help="infer only frames that changed in more than PERCENT of the picture since the "
                      "last inferred one (default 1.0 when given without a value)")
    live.add_argument("--realtime", action="store_true",
                      help="video files: pace at their own frame rate, newest frame only, as a camera")
    live.add_argument("--stall-timeout", type=float, default=10.0, metavar="S",
                      help="seconds without a frame before a stream is reopened (default 10)")
    live.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp",
                      help="RTSP transport (default tcp)")
    live.add_argument("--video-size", metavar="WxH", help="V4L2 cameras: capture size, e.g. 1280x720")
    live.add_argument("--video-fps", type=float, metavar="N", help="V4L2 cameras: capture frame rate")
    live.add_argument("--video-format", choices=("mjpeg", "yuyv"), help="V4L2 cameras: pixel format")
    live.add_argument("--interpreters", choices=("shared", "per-source"),
                      help="shared: one interpreter for every source, in turn (default); per-source: one "
                      "each, inferred in parallel (an accelerator or cores per camera)")
    parser.set_defaults(sources=[])  # [[source]] tables of --config
    parser.add_argument("--json", action="store_true", help="one JSON line per input on stdout")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also append JSON lines to FILE")
    parser.add_argument("--task", choices=("classification", "detection", "segmentation", "raw"),
                        help="override the task (default: the manifest's, else guessed from the outputs)")
    parser.add_argument("--labels", type=Path, metavar="FILE",
                        help="labels file, one per line or 'id label' lines (default: the model's own)")
    parser.add_argument("--label-offset", dest="label_offset", type=int, metavar="N",
                        help="class id k is label line k + N (default: from the labels against the classes: "
                        "a background first line is skipped when the model does not output it)")
    parser.add_argument("--metrics", metavar="[HOST:]PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (HOST default 127.0.0.1; "
                        "needs the metrics extra); see docs/metrics.md")
    parser.add_argument("--track", action="store_true", default=None,
                        help="detection: follow objects across frames, one tracker per source; each object "
                        "a track holds gets a track_id (see docs/tracking.md)")
    events = parser.add_argument_group("events: tracked objects, zones and snapshots (see docs/events.md)")
    events.add_argument("--events", action="store_true", default=None,
                        help="detection: track objects (as --track) and report events new/update/end, counts "
                        "per label and zone, and a snapshot of each event's best frame")
    events.add_argument("--zone", dest="zone_specs", action="append", default=[],
                        metavar="[SOURCE/]NAME=X,Y,...",
                        help="a zone: a polygon of at least 3 points, normalized 0..1 (x right, y down), on "
                        "SOURCE or every source; an object is in it when its box's bottom centre is")
    events.add_argument("--event-label", dest="event_labels", action="append", default=[], metavar="LABEL",
                        help="only objects of LABEL make events (repeat; default: every label)")
    events.add_argument("--min-score", dest="min_score", action="append", default=[], metavar="[LABEL=]SCORE",
                        help="score an object needs to start an event (default 0.5; repeat for labels)")
    events.add_argument("--min-area", dest="min_area", type=float, metavar="FRACTION",
                        help="box area an object needs to start an event, as a fraction of the frame")
    events.add_argument("--min-frames", dest="min_frames", type=int, metavar="N",
                        help="frames an object must be matched before its event starts (default 3)")
    events.add_argument("--event-update-interval", dest="event_update_interval", type=float, metavar="S",
                        help="seconds between two updates of one event (default 5; entering a zone: at once)")
    events.add_argument("--snapshots", action=argparse.BooleanOptionalAction, default=None,
                        help="publish a JPEG of each event's best frame, box drawn (default: on)")
    events.add_argument("--snapshot-size", dest="snapshot_size", type=int, metavar="PX",
                        help="longer side of a snapshot in pixels (default 640)")
    parser.set_defaults(zones=[])  # [[zone]] tables of --config
    parser.add_argument("--mask-dir", dest="mask_dir", type=Path, metavar="DIR",
                        help="segmentation: write each result's colour mask PNG into DIR")
    parser.add_argument(
        "--mean", type=float, nargs="+", help="input mean (pixel - mean) / std, 1 or 3 values"
    )
    parser.add_argument("--std", type=float, nargs="+", help="input std, 1 or 3 values")
    parser.add_argument("--top-k", dest="top_k", type=int, default=5, help="classes to report (default 5)")
    parser.add_argument("--threshold", type=float, default=0.0, help="minimum score to report (0..1)")
    parser.add_argument("--resize", choices=("stretch", "letterbox", "crop"), help="how images fit the model")
    parser.add_argument("--backend", default="auto", help="auto, litert, tflite-runtime or tensorflow")
    parser.add_argument(
        "--threads", type=int, help="interpreter threads (default: the profile's or 1 per core)"
    )
    parser.add_argument("--decode-workers", dest="decode_workers", type=int, metavar="N",
                        help="at most N threads decoding files ahead of the interpreter (default: the "
                        "profile's, else one per core; a run takes as many as its decode/invoke ratio needs)")
    parser.add_argument("--delegate", help="edgetpu, cpu, or a delegate library path")
    parser.add_argument("--device", help="Edge TPU device: usb, usb:N, pci, pci:N")
    parser.add_argument(
        "--require-accelerator", action="store_true", help="fail instead of falling back to the CPU"
    )
    sync_hooks.add_sync_arguments(parser)
    update_hooks.add_update_arguments(parser)


def _parser() -> argparse.ArgumentParser:
    from edge.cli import HelpFormatter

    parser = argparse.ArgumentParser(prog="edge run", formatter_class=HelpFormatter)
    add_arguments(parser)
    return parser


def is_model_path(path: Path) -> bool:
    """Whether ``edge run`` takes ``path`` as a MODEL: a model suffix, or a file starting like a model.

    A folder is never a model; a missing path is one only when named like one.
    """
    from edge.package import ZIP_MAGIC
    from edge.tflite_file import FILE_IDENTIFIER

    if path.suffix.lower() in MODEL_SUFFIXES and not path.is_dir():
        return True
    if not path.is_file():
        return False  # a folder of inputs, or a missing path: that input fails with its own error
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False  # unreadable: it fails as an input, with its own error
    return head[:4] == ZIP_MAGIC or head[4:8] == FILE_IDENTIFIER


def _first_path_as_input(args: argparse.Namespace) -> str | None:
    """Move MODEL to the inputs when it is not a model (``edge run IMAGE``); the path moved, or None."""
    if not args.model or is_model_path(Path(args.model)):
        return None
    moved = str(args.model)
    args.inputs = [moved, *args.inputs]
    args.model = None
    from edge.sources.base import mask_url

    log.info("%s is not a model: taken as an input; the model comes from the store", mask_url(moved))
    return moved


def _check_store_for(moved: str, settings: RunSettings) -> None:
    """A path taken as an input with nothing to serve from the store: say what was understood."""
    if settings.mqtt is not None and settings.updates.enabled:
        return  # edge run waits for a first pushed model
    from edge.sources.base import mask_url
    from edge.sources.feeds import is_source
    from edge.store import ModelStore

    state_dir = settings.state_dir
    if ModelStore(state_dir).active_path() is not None:
        return
    if is_source(moved):
        raise ConfigError(
            f"{mask_url(moved)} is a stream, camera or video, taken as an input, and the model store in "
            f"{state_dir} is empty; pass a MODEL before it: 'edge run model.edgepkg {mask_url(moved)}'"
        )
    if not Path(moved).exists():
        raise ConfigError(
            f"model not found: {moved}; check the path (the model store in {state_dir} is empty too)"
        )
    raise ConfigError(
        f"{moved} is not a model (a .tflite file or package), so it was taken as an input, and the model "
        f"store in {state_dir} is empty; pass a MODEL before the inputs, or --mqtt URL and --trust "
        "signing.pub to wait for one pushed with 'edge push-model'"
    )


def _apply_settings(args: argparse.Namespace) -> None:
    """Fill unset options from --config (and its profile) or --profile; command-line flags win.

    Without either, the profile ``edge doctor`` suggests for this machine gives threads, delegate and device.
    """
    if getattr(args, "config", None) is None and not getattr(args, "profile", None):
        _apply_suggested_profile(args)
        return
    if args.config is None and args.profile == "none":
        return
    from edge import config

    parser = _parser()
    if args.config is not None:
        config.apply_config(args, parser, args.config)
    else:
        config.apply_profile(args, parser, args.profile)


def _apply_suggested_profile(args: argparse.Namespace) -> None:
    from edge.errors import EdgeError
    from edge.profiles import explain_profile, load_profile

    try:
        name, why = explain_profile()
        profile = load_profile(name)
    except (EdgeError, OSError) as exc:
        log.warning("no device profile applied (%s); pass --profile or --threads", exc)
        return
    log.info("device profile %s (%s)", name, why)
    if args.threads is None:
        args.threads = profile.resolved_threads()
    if args.delegate is None and profile.delegate not in ("", "none"):
        args.delegate = profile.delegate
    if args.device is None and profile.device:
        args.device = profile.device
    if args.interpreters is None:
        args.interpreters = profile.interpreters
    if args.decode_workers is None:
        args.decode_workers = profile.resolved_decode_workers()


def _one(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def sources_settings(args: argparse.Namespace) -> Any:
    """Every input of the run, from the command line and ``--config``'s ``[[source]]`` tables, checked."""
    from edge.motion import check_threshold
    from edge.sources.feeds import SourceSpec, SourcesSettings, is_source, name_sources
    from edge.sources.options import FeedOptions, StreamOptions, check_options, parse_size

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise ConfigError(f"--fps must be a number more than 0, got {args.fps}")
    if args.motion is not None:
        check_threshold(args.motion)
    size = parse_size(args.video_size) if args.video_size else None
    stream = check_options(StreamOptions(
        rtsp_transport=args.rtsp_transport, video_size=size, video_fps=args.video_fps,
        video_format=args.video_format, realtime=bool(args.realtime), stall_timeout=args.stall_timeout,
        interval=args.interval,
    ))
    feed = FeedOptions(fps=args.fps, motion=args.motion)
    inputs = [str(i) for i in args.inputs or ()]
    targets = [i for i in inputs if is_source(i)]
    specs = [
        SourceSpec(target, name, stream, feed)
        for target, name in zip(targets, name_sources(targets, list(args.source_name)), strict=True)
    ]
    for table in args.sources or ():
        specs.append(_table_spec(table, stream, feed))
    return SourcesSettings(
        files=tuple(i for i in inputs if not is_source(i)),
        watch=args.watch,
        url=args.url,
        interval=args.interval,
        sources=tuple(specs),
    )


def _table_spec(table: dict[str, Any], stream: Any, feed: Any) -> Any:
    """A ``[[source]]`` table (checked by ``edge.config``) over the run's own stream and feed options."""
    from edge.sources.base import source_name_for
    from edge.sources.feeds import SourceSpec
    from edge.sources.options import FeedOptions, check_options, parse_size

    target = str(table["input"])
    keys = ("realtime", "stall_timeout", "rtsp_transport", "video_fps", "video_format")
    own_stream: dict[str, Any] = {k: table[k] for k in keys if k in table}
    if "video_size" in table:
        own_stream["video_size"] = parse_size(table["video_size"])
    own_feed = FeedOptions(fps=table.get("fps", feed.fps), motion=table.get("motion", feed.motion))
    return SourceSpec(
        target,
        table.get("name") or source_name_for(target),
        check_options(stream._replace(**own_stream)),
        own_feed,
        top_k=table.get("top_k"),
        threshold=table.get("threshold"),
        resize=table.get("resize"),
    )


def _kept(mux: Any, frames: Any) -> Iterator[Any]:
    """The mux's items, remembered by ``frames`` (an ``edge.events.FrameKeeper``) when there is one."""
    return iter(mux) if frames is None else frames.wrap(mux)


class _EventPrinter:
    """Events on the run's own output as they happen: a line each, or (``--json``) a JSON line with
    ``"kind": "event"``, through the stdout and ``--output`` sinks."""

    def __init__(self, as_json: bool, sinks: list[Any]) -> None:
        self.sinks = list(sinks)

    def on_event(self, event: Any) -> None:
        record = {"kind": "event", **event.to_json()}
        for sink in self.sinks:
            sink.emit(record)

    def on_snapshot(self, snapshot: Any) -> None:
        pass

    def on_counts(self, source: str, counts: dict[str, Any]) -> None:
        pass


def event_line(record: dict[str, Any]) -> str:
    """One readable line for an event record."""
    zones = f" in {', '.join(record['zones'])}" if record["zones"] else ""
    entered = [z for z in record["entered_zones"] if z not in record["zones"]]
    was = f" (was in {', '.join(entered)})" if entered else ""
    until = f", {record['end'] - record['start']:.1f} s" if record["end"] is not None else ""
    return (f"{record['source']}: event {record['type']} {record['label']} #{record['track_id']} "
            f"score {record['score']:.2f}{zones}{was}{until}")


def _limited(items: Iterator[Any], limit: int | None, stop: threading.Event) -> Iterator[Any]:
    items = itertools.takewhile(lambda _: not stop.is_set(), items)  # SIGTERM: take no more inputs
    return itertools.islice(items, limit) if limit else items


def _check(args: argparse.Namespace) -> None:
    """The run's own options (output and inputs), checked before the sources are."""
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.decode_workers is not None and args.decode_workers < 1:
        raise ConfigError(f"--decode-workers must be at least 1, got {args.decode_workers}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.url:
        from edge.sources.snapshot import check_url

        check_url(args.url)
        if not (math.isfinite(args.interval) and args.interval > 0):
            raise ConfigError(f"--interval must be more than 0 seconds, got {args.interval}")
    if args.watch is not None and not Path(args.watch).is_dir():
        raise ConfigError(f"--watch {args.watch}: not a folder; create it or check the path")


def settings_from(args: argparse.Namespace) -> RunSettings:
    """The run's settings, checked, from its flags as merged with ``--config`` and the profile.

    The only reader of ``args`` after the merge: every part of the run gets its piece of the result.
    Checks whose values only a part can judge (broker URL, device id, ``--trust`` keys, the model) stay
    with that part, so they fail where and when they did.
    """
    _check(args)
    sources = sources_settings(args)
    if sources.empty:
        raise ConfigError(
            "no input given; pass image files or folders, video files, stream URLs, /dev/videoN, "
            "--watch DIR or --url URL"
        )
    state_dir = Path(args.state_dir or default_state_dir())
    model = ModelSettings(
        path=args.model or None,
        backend=args.backend or "auto",
        threads=args.threads,
        task=args.task,
        mean=_one(args.mean),
        std=_one(args.std),
        delegate=args.delegate,
        device=args.device,
        require_accelerator=bool(args.require_accelerator),
        labels=args.labels,
        label_offset=args.label_offset,
    )
    mqtt = None
    if args.mqtt:
        mqtt = MqttSettings(
            url=args.mqtt,
            state_dir=state_dir,
            version=args.mqtt_version,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            prefix=args.prefix,
            device_id=args.device_id,
            telemetry_interval=args.telemetry_interval,
            keepalive=args.keepalive,
        )
    return RunSettings(
        model=model,
        sources=sources,
        updates=UpdateSettings(
            state_dir=state_dir,
            trust=tuple(args.trust or ()),
            groups=tuple(args.update_groups or ()),
            max_model_size_mb=args.max_model_size,
            health_inferences=args.health_inferences,
            health_seconds=args.health_seconds,
            shadow=update_hooks.shadow_settings(args.update_shadow, args.shadow_min_agreement,
                                                args.shadow_max_latency_ratio, args.shadow_budget),
            approve=args.updates_mode == "approve",
        ),
        mqtt=mqtt,
        homeassistant=HomeAssistantSettings(
            discovery=bool(args.ha_discovery),
            labels=tuple(args.ha_label or ()),
            off_delay=args.ha_off_delay,
            threshold=args.ha_threshold,
        ),
        json=bool(args.json),
        output=args.output,
        mask_dir=Path(args.mask_dir) if args.mask_dir else None,
        track=bool(args.track),
        events=events_settings(args, sources),
        top_k=args.top_k,
        threshold=args.threshold,
        resize=args.resize,
        limit=args.limit,
        interpreters=args.interpreters or "shared",
        decode_workers=args.decode_workers,
        metrics=_metrics_address(args.metrics),
    )


def events_settings(args: argparse.Namespace, sources: Any) -> Any:
    """The events' settings from ``--events`` and its flags, ``[events]``, ``[[zone]]`` and the sources' own
    filters; None when events are off (then event flags are an error: they would do nothing)."""
    flags = (("--zone", args.zone_specs or args.zones), ("--event-label", args.event_labels),
             ("--min-score", args.min_score), ("--min-area", args.min_area),
             ("--min-frames", args.min_frames), ("--event-update-interval", args.event_update_interval),
             ("--snapshot-size", args.snapshot_size))
    given = [flag for flag, value in flags if value not in (None, [])]
    if not args.events:
        if given:
            raise ConfigError(f"{given[0]} needs --events (events.enabled = true): events are off")
        return None
    from edge.events import EventSettings
    from edge.zones import ObjectFilter, parse_min_scores, parse_zone, zone_from_table

    def object_filter(labels: list[str], scores: list[str], area: float | None, frames: int | None,
                      base: ObjectFilter) -> ObjectFilter:
        default, per_label = parse_min_scores(scores)
        if area is not None and not 0.0 <= area <= 1.0:
            raise ConfigError(f"--min-area must be a fraction of the frame from 0 to 1, got {area}")
        if frames is not None and frames < 1:
            raise ConfigError(f"--min-frames must be at least 1, got {frames}")
        return ObjectFilter(
            labels=frozenset(labels) if labels else base.labels,
            min_score=base.min_score if default is None else default,
            label_min_score=per_label or base.label_min_score,
            min_area=base.min_area if area is None else area,
            min_frames=base.min_frames if frames is None else frames,
        )

    run_filter = object_filter(args.event_labels, args.min_score, args.min_area, args.min_frames,
                               ObjectFilter())
    per_source = tuple(
        (spec_name, object_filter(t.get("labels", []), t.get("min_score", []), t.get("min_area"),
                                  t.get("min_frames"), run_filter))
        for t, spec_name in _source_tables(args, sources)
        if any(k in t for k in ("labels", "min_score", "min_area", "min_frames"))
    )
    zones = tuple(zone_from_table(t) for t in args.zones or ())
    zones += tuple(parse_zone(z) for z in args.zone_specs)
    names = {spec.name for spec in sources.sources}
    for zone in zones:
        if zone.source is not None and names and zone.source not in names:
            raise ConfigError(f"zone {zone.name!r} is on source {zone.source!r}, which this run does not "
                              f"have; its sources: {', '.join(sorted(names))}")
    interval = args.event_update_interval
    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise ConfigError(f"--event-update-interval must be more than 0 seconds, got {interval}")
    size = args.snapshot_size
    if size is not None and size < 32:
        raise ConfigError(f"--snapshot-size must be at least 32 pixels, got {size}")
    return EventSettings(
        filter=run_filter,
        zones=zones,
        update_interval=5.0 if interval is None else interval,
        snapshots=args.snapshots is not False,
        snapshot_size=640 if size is None else size,
        source_filters=per_source,
    )


def _source_tables(args: argparse.Namespace, sources: Any) -> list[tuple[dict[str, Any], str]]:
    """Each ``[[source]]`` table with the name its source got."""
    tables = list(args.sources or ())
    named = list(sources.sources)[-len(tables):] if tables else []
    return [(table, spec.name) for table, spec in zip(tables, named, strict=True)]


def _metrics_address(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    from edge.metrics import parse_address

    return parse_address(value)


def human_line(record: dict[str, Any]) -> str:
    """One readable line for a result record."""
    if record.get("kind") == "event":
        return event_line(record)
    name = record["input"]
    if record.get("error"):
        return f"{name}: error: {record['error'].removeprefix(name + ': ')}"
    ms = record["timing_ms"]["total"]
    if "classes" in record:
        body = (
            ", ".join(f"{c['label']} {c['score']:.2f}" for c in record["classes"])
            or "(nothing above threshold)"
        )
    elif "segments" in record:
        shown = [s for s in record["segments"] if not s.get("background")]
        body = ", ".join(f"{s['label']} {100 * s['share']:.1f}%" for s in shown[:5]) or "(background only)"
    elif "objects" in record:
        objects = record["objects"]
        body = f"{len(objects)} object(s)" + "".join(
            f"; {o['label']} {o['score']:.2f} at {[round(v) for v in o['box']]}" for o in objects[:5]
        )
    else:
        body = ", ".join(f"{k}{list(_shape(v))}" for k, v in record.get("outputs", {}).items())
    return f"{name}: {body}  ({ms:.1f} ms)"


def _shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def run(args: argparse.Namespace) -> int:
    moved = _first_path_as_input(args)  # before --config, so that its model.path can fill MODEL
    _apply_settings(args)
    settings = settings_from(args)  # from here on only the settings travel, never args
    if moved is not None and not settings.model.path:
        _check_store_for(moved, settings)
    metrics = None
    if settings.metrics is not None:  # bound first: a busy port fails before the model loads
        from edge.metrics import MetricsServer

        metrics = MetricsServer(*settings.metrics).start()
    from edge import sdnotify
    from edge.pipeline import Pipeline, SourceModelOptions
    from edge.sinks import JsonlFileSink, StdoutSink
    from edge.sources.base import DOWN, SourceBoard
    from edge.sources.feeds import build_feeds
    from edge.sources.live import SourceMux

    stop = threading.Event()
    # Under systemd (Type=notify, WatchdogSec=): ready once started, watchdog pings while the run lasts.
    sdnotify.start_keepalive(lambda: not stop.is_set())
    sdnotify.ready("loading the model" if settings.model.path else "waiting for a model")
    model_path = settings.model.path or update_hooks.wait_for_active_model(
        settings.updates, settings.mqtt, settings.model
    )
    per_source = settings.interpreters == "per-source" and settings.sources.feed_count > 1
    model_settings = settings.model
    if per_source and model_settings.threads:  # the cores are split between the interpreters
        threads = max(1, model_settings.threads // settings.sources.feed_count)
        model_settings = model_settings._replace(threads=threads)
    model = model_settings.load(model_path)
    sinks: list[Any] = [StdoutSink() if settings.json else StdoutSink(formatter=human_line)]
    if settings.output is not None:
        sinks.append(JsonlFileSink(settings.output))
    board = SourceBoard()
    hint = (model.input.width, model.input.height) if model.input.is_image else None
    feeds = build_feeds(settings.sources, hint)
    groups = [[feed] for feed in feeds] if per_source else [feeds]
    muxes = [SourceMux(group, board, stop) for group in groups]
    board.subscribe(_print_state)
    models = [model, *(model_settings.load(model_path) for _ in muxes[1:])]
    # A live frame is taken when the interpreter is free (the newest); decoding ahead would queue old ones.
    annotators: list[Any] = []
    if settings.mask_dir is not None:
        from edge.tasks.segmentation import MaskWriter

        annotators.append(MaskWriter(settings.mask_dir))
    events = frames = None
    live = any(mux.live for mux in muxes)
    if settings.events is not None or (settings.mqtt is not None and live):
        from edge.events import FrameKeeper

        # snapshots of events and cmd/snapshot's latest frame; decoders run ahead of the annotation by up to
        # decode_workers + 2 frames, which must still be there when their result is annotated
        ahead = (settings.decode_workers or os.cpu_count() or 1) + 3
        frames = FrameKeeper(per_source=max(FrameKeeper().per_source, ahead))
    if settings.events is not None:
        from edge.events import EventAnnotator

        events = EventAnnotator(settings.events, frames)
        events.follow(board)  # a source that stalls, goes down or ends ends its events
        events.add_listener(_EventPrinter(settings.json, sinks))
        annotators.append(events)
    elif settings.track:
        from edge.tracking import TrackAnnotator

        annotators.append(TrackAnnotator())
    pipelines = [
        Pipeline(each, top_k=settings.top_k, threshold=settings.threshold, resize=settings.resize,
                 sinks=sinks, overlap=False if mux.live else None, annotators=annotators,
                 decode_workers=settings.decode_workers)
        for each, mux in zip(models, muxes, strict=True)
    ]
    del model, models  # the pipelines own them now: a hot swap must be able to free the first model
    pipeline: Any = pipelines[0]
    if per_source:
        from edge.pipelines import PipelineGroup

        pipeline = PipelineGroup(pipelines, copy_model=lambda new: model_settings.load(new.path))
        print(f"edge run: {len(pipelines)} interpreters, one per source", file=sys.stderr)
    for spec in settings.sources.sources:
        if spec.top_k is not None or spec.threshold is not None or spec.resize is not None:
            own = SourceModelOptions(spec.top_k, spec.threshold, spec.resize)
            pipeline.set_source_options(spec.name, own)
    session = sync_hooks.start_sync(settings, pipeline, board, events, frames)
    if session is not None:
        for sink in session.sinks:
            pipeline.add_sink(sink)
    if metrics is not None:
        from edge.metrics import LatencySink

        latency = LatencySink()
        pipeline.add_sink(latency)
        metrics.collector.attach(pipeline, board, latency, getattr(session, "outbox", None),
                                 getattr(session, "updates", None))
    sdnotify.notify(f"STATUS=serving {pipeline.model.name} v{pipeline.model.version}")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_term(signum: int, frame: Any) -> None:
        # Sources stop, the input in flight reaches every sink (stdout and the outbox alike), then sinks are
        # flushed and closed. A second Ctrl-C interrupts at once.
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in previous:
            signal.signal(sig, on_term)
    failed = total = 0
    answered: set[str | None] = set()  # sources that gave at least one result, failed or not
    interrupted = False
    try:
        if per_source:
            results = pipeline.run([_limited(_kept(mux, frames), None, stop) for mux in muxes], stop)
            results = itertools.islice(results, settings.limit) if settings.limit else results
        else:
            results = pipeline.run(_limited(_kept(muxes[0], frames), settings.limit, stop))
        for result in results:
            total += 1
            failed += result.error is not None
            answered.add(result.source)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        interrupted = interrupted or stop.is_set()
        stop.set()
        for mux in muxes:
            mux.close()
        sdnotify.stopping()
        if events is not None:
            events.close()  # every open event ends, through the outbox, before the session closes
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if session is not None:
            session.close()  # flushes and closes its own sinks
        for sink in sinks:
            sink.close()
        if metrics is not None:
            metrics.close()
    _summary(pipeline.stats(), total, failed, interrupted, pipeline.model)  # the model serving now
    snapshot = board.snapshot()
    _source_summary(snapshot, settings.sources)
    # a stream that never delivered a frame (wrong URL, camera off) failed, though it left no failed result
    failed += sum(1 for name, s in snapshot.items() if s["state"] == DOWN and name not in answered)
    if total == 0 and not interrupted:
        return EXIT_ERROR
    return EXIT_FAILED if failed else EXIT_OK


def _summary(stats: dict[str, Any], total: int, failed: int, interrupted: bool, model: Any) -> None:
    invoke, whole = stats["invoke"], stats["total"]
    note = " (stopped)" if interrupted else ""
    print(
        f"edge run: {total} input(s), {failed} failed{note}; "
        f"{model.name} v{model.version} on {model.backend_name}; "
        f"invoke p50 {invoke['p50']:.2f} ms p95 {invoke['p95']:.2f} ms; total p50 {whole['p50']:.2f} ms",
        file=sys.stderr,
    )
    log.debug("stats: %s", json.dumps(stats))


def _print_state(state: Any) -> None:
    """Each source's state changes on stderr: the run's own log of its cameras."""
    if state.kind in ("files", "watch"):
        return
    reason = f" ({state.reason})" if state.reason else ""
    with _STDERR_LOCK:  # capture threads report at once; one write per line keeps lines whole
        sys.stderr.write(f"edge run: source {state.name}: {state.state}{reason}\n")
        sys.stderr.flush()


def _source_summary(snapshot: dict[str, Any], settings: Any) -> None:
    if not settings.sources and not settings.url:
        return
    for name, s in snapshot.items():
        if s["kind"] in ("files", "watch"):
            continue
        print(
            f"edge run: source {name}: {s['captured']} frame(s) captured, {s['inferred']} inferred, "
            f"{s['skipped']} skipped for a newer one, {s['motion_skipped']} without motion, "
            f"{s['reconnects']} reconnect(s), {s['errors']} error(s); {s['state']}",
            file=sys.stderr,
        )
