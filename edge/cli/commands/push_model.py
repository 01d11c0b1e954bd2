"""``edge push-model``: sign a model package and deliver it to devices over MQTT (cloud side)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge.cli import EXIT_FAILED, EXIT_OK
from edge.cli.broker_options import PUSH_KEY_FLAG, add_broker_arguments, broker_settings
from edge.errors import ConfigError

NAME = "push-model"
HELP = "sign a model package, offer it to devices or a group over MQTT and serve its chunks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", metavar="PACKAGE", help="a model package (.edgepkg) from 'edge convert'")
    parser.add_argument("--key", metavar="KEY", help="signing.key from 'edge keygen' (not needed if signed)")
    add_broker_arguments(parser, required=True, key_flag=PUSH_KEY_FLAG)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", nargs="+", action="extend", metavar="ID", help="device id(s) to update")
    target.add_argument("--group", metavar="NAME", help="update every device started with --group NAME")
    parser.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="report progress; exit 1 if any device rejects or has not finished within S seconds",
    )
    parser.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="N",
        help="update N devices first; continue only when they report healthy",
    )
    parser.add_argument("--abort-on", type=int, metavar="K", help="stop the rollout after K failures")
    shadow = parser.add_argument_group("shadow stage: prove the model on each device's live inputs first")
    shadow.add_argument("--shadow", metavar="N|DURATION",
                        help="run it beside the active model on N live inputs (e.g. 200) or for a duration "
                        "(90s, 10m) before it serves; promoted only when it agrees (docs/updates.md)")
    shadow.add_argument("--min-agreement", type=float, metavar="X",
                        help="agreement with the active model it needs, 0..1 (default 0.9)")
    shadow.add_argument("--max-latency-ratio", type=float, metavar="R",
                        help="its invoke time at most R times the active model's (default 2)")
    shadow.add_argument("--shadow-budget", type=float, metavar="F",
                        help="its CPU time at most F times the active model's while shadowing (default 0.25)")
    parser.add_argument(
        "--chunk-size", type=int, default=64, metavar="KIB", help="chunk size (default 64 KiB)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="KIB_S", help="limit chunk bytes per second"
    )
    parser.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    parser.add_argument(
        "--keep-offer",
        action="store_true",
        help="leave the retained offer in place when the rollout stops early",
    )
    parser.add_argument("--json", action="store_true", help="print the final result as JSON")


def _check(args: argparse.Namespace) -> None:
    """Every option checked before the package is signed or the broker contacted."""
    from cloud_sync.errors import PayloadError
    from cloud_sync.update_protocol import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, check_topic_part

    if args.canary < 0 or (args.abort_on is not None and args.abort_on < 1):
        raise ConfigError("--canary must be 0 or more and --abort-on at least 1")
    if args.device and args.canary >= len(args.device):
        raise ConfigError(f"--canary {args.canary} needs more than {args.canary} --device ids")
    if args.wait is not None and args.wait <= 0:
        raise ConfigError(f"--wait must be more than 0 seconds, got {args.wait}")
    low, high = MIN_CHUNK_SIZE // 1024, MAX_CHUNK_SIZE // 1024
    if not low <= args.chunk_size <= high:
        raise ConfigError(f"--chunk-size must be {low} to {high} KiB, got {args.chunk_size}")
    if args.rate < 0:
        raise ConfigError(f"--rate must be 0 (no limit) or more KiB/s, got {args.rate:g}")
    try:
        for device in args.device or ():
            check_topic_part(device, "--device")
        if args.group is not None:
            check_topic_part(args.group, "--group")
    except PayloadError as exc:
        raise ConfigError(str(exc)) from None
    broker_settings(args)  # the broker URL and TLS files too
    shadow_policy(args)


def shadow_policy(args: argparse.Namespace) -> dict[str, Any] | None:
    """The offer's shadow stage from ``--shadow`` and its options, checked; None without ``--shadow``."""
    extra = [flag for flag, value in (("--min-agreement", args.min_agreement),
                                      ("--max-latency-ratio", args.max_latency_ratio),
                                      ("--shadow-budget", args.shadow_budget)) if value is not None]
    if args.shadow is None:
        if extra:
            raise ConfigError(f"{extra[0]} needs --shadow N|DURATION")
        return None
    from edge.shadow import ShadowPolicy

    policy = ShadowPolicy.for_length(args.shadow, min_agreement=args.min_agreement,
                                     max_latency_ratio=args.max_latency_ratio, budget=args.shadow_budget)
    return policy.to_json()


def run(args: argparse.Namespace) -> int:
    _check(args)
    from cloud_sync.connection import MqttConnection, unique_client_id
    from cloud_sync.publisher import DeviceProgress, Publisher, signed_package
    from cloud_sync.topics import check_prefix
    from edge.package import read_package

    package = read_package(args.package)
    data = Path(args.package).read_bytes()
    if args.key is None and package.signature is None:
        raise ConfigError(f"{args.package} is unsigned; pass --key signing.key (make one with 'edge keygen')")
    data = signed_package(data, args.key)
    broker = broker_settings(args)
    prefix = check_prefix(args.prefix)
    connection = MqttConnection(broker, unique_client_id("push")).start()
    try:
        publisher = Publisher(
            connection, data, prefix=prefix, chunk_size=args.chunk_size * 1024, rate=args.rate * 1024,
            shadow=shadow_policy(args),
        ).start()
    except BaseException:
        connection.close()
        raise
    offer = publisher.offer
    chatter = sys.stderr if args.json else sys.stdout
    print(
        f"offering {offer.name} v{offer.version}: {offer.size:,} bytes in {offer.chunks} chunk(s) of "
        f"{offer.chunk_size // 1024} KiB, signed by key {offer.key_id}",
        file=chatter,
        flush=True,
    )

    def show(progress: DeviceProgress) -> None:
        if args.wait is not None or progress.result != "pending":
            print(f"  {progress.device}: {progress.detail}", file=chatter, flush=True)

    timeout = args.wait if args.wait is not None else 7 * 24 * 3600.0
    started = time.monotonic()
    try:
        if args.device:
            rollout = publisher.run_rollout(list(args.device), args.canary, args.abort_on, timeout, show)
        else:
            rollout = publisher.run_group_rollout(
                args.group, args.canary, args.abort_on, timeout, on_change=show
            )
    except KeyboardInterrupt:
        print(
            "push-model: interrupted; the retained offer stays, devices finish when it is served again",
            file=sys.stderr,
        )
        publisher.close()
        connection.close()
        return 130
    except BaseException:
        publisher.close()
        connection.close()
        raise
    finally:
        elapsed = time.monotonic() - started
    publisher.close(withdraw=not rollout.ok() and not args.keep_offer)
    connection.close()
    _report(args, rollout, publisher, elapsed)
    return EXIT_OK if rollout.ok() else EXIT_FAILED


def shadow_line(shadow: dict[str, Any]) -> str:
    """The shadow figures in one line: the field's agreement beside the converter's."""
    converter = (shadow.get("converter") or {}).get("top1_agreement")
    beside = f" (converter's own: {converter:.3f})" if isinstance(converter, int | float) else ""
    recall = shadow.get("recall")
    worst = f", lowest recall {min(recall.values()):.2f}" if recall else ""
    return (f"agreement {shadow.get('agreement')} on {shadow.get('samples')} live inputs{beside}{worst}, "
            f"latency {shadow.get('latency_ratio')}x, CPU {shadow.get('budget_used')} of the active model's, "
            f"{shadow.get('failures')} failed, {shadow.get('skipped')} inputs skipped"
            + (f"; {shadow['reason']}" if shadow.get("reason") else ""))


def _shadow_of(progress: Any) -> dict[str, Any]:
    """The device's shadow figures, without the state it resumes from."""
    shadow = progress.status.shadow if progress.status is not None else None
    if not shadow:
        return {}
    return {"shadow": {k: v for k, v in shadow.items() if k not in ("state", "entry", "offer_at")}}


def _report(args: argparse.Namespace, rollout, publisher, elapsed: float) -> None:  # noqa: ANN001
    if args.json:
        print(
            json.dumps(
                {
                    "ok": rollout.ok(),
                    "aborted": rollout.aborted or None,
                    "name": publisher.offer.name,
                    "version": publisher.offer.version,
                    "sha256": publisher.offer.sha256,
                    "bytes_sent": publisher.bytes_sent,
                    "seconds": round(elapsed, 3),
                    "devices": {
                        d: {"result": p.result, "detail": p.detail, **_shadow_of(p)}
                        for d, p in sorted(rollout.devices.items())
                    },
                },
                indent=2,
            )
        )
        return
    for device, progress in sorted(rollout.devices.items()):
        print(f"{device}: {progress.result} ({progress.detail})")
        shadow = _shadow_of(progress).get("shadow")
        if shadow:
            print(f"  shadow: {shadow_line(shadow)}")
    if rollout.aborted:
        print(f"rollout stopped: {rollout.aborted}")
    print(f"{publisher.bytes_sent:,} chunk bytes sent in {elapsed:.1f} s")
