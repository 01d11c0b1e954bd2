"""``edge config check FILE``: validate a device configuration file without running anything."""

from __future__ import annotations

import argparse
import sys

from edge.cli import EXIT_FAILED, EXIT_OK

NAME = "config"
HELP = "check a device configuration file (edge run --config FILE) without running it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check", help="validate FILE: each problem names the key, value and what is allowed"
    )
    check.add_argument("file", metavar="FILE", help="the device configuration file (TOML)")
    check.add_argument("--strict", action="store_true", help="files the config names must exist")
    show = sub.add_parser("profiles", help="list the device profiles (devices/*.toml) and the suggested one")
    show.add_argument("name", nargs="?", metavar="NAME", help="show every field of one profile")


def run(args: argparse.Namespace) -> int:
    if args.action == "profiles":
        return show_profiles(args.name)
    from edge.config import check_config

    config, errors = check_config(args.file)
    warnings = list(config.warnings) if config else []
    if args.strict:
        errors, warnings = errors + warnings, []
    for line in errors:
        print(f"{args.file}: error: {line}", file=sys.stderr)
    for line in warnings:
        print(f"{args.file}: warning: {line}", file=sys.stderr)
    if errors or config is None:
        print(f"{args.file}: {len(errors)} problem(s)", file=sys.stderr)
        return EXIT_FAILED
    profile = config.values.get("profile", "none")
    print(f"{args.file}: ok ({len(config.values)} keys, profile {profile})")
    return EXIT_OK


def show_profiles(name: str | None) -> int:
    """One line per profile (threads, delegate, conversion), or every field of ``name``."""
    from dataclasses import asdict

    from edge.profiles import explain_profile, list_profiles, load_profile

    if name:
        for key, value in asdict(load_profile(name)).items():
            print(f"{key:<20} {value}")
        return EXIT_OK
    suggested, why = explain_profile()
    for profile in map(load_profile, list_profiles()):
        mark = "*" if profile.name == suggested else " "
        threads = profile.threads or "all"
        accel = f"{profile.delegate}:{profile.device}" if profile.device else profile.delegate
        print(
            f"{mark} {profile.name:<22} threads={threads:<4} delegate={accel:<13} "
            f"convert --mode {profile.convert_mode} --io {profile.io_type}"
        )
    print(f"* suggested for this machine ({why})")
    return EXIT_OK
