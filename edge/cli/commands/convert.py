"""``edge convert``: Keras/SavedModel -> quantized, validated model package (composition root).

A ``.tflite`` SRC is packaged as it is, with the labels, normalization, name and version its standard TFLite
metadata gives (flags win). TensorFlow is imported only inside ``run``; ``edge --help`` and the device side
stay light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.cli import EXIT_FAILED, EXIT_OK
from edge.errors import ConfigError

NAME = "convert"
HELP = (
    "convert a Keras file or SavedModel folder into a quantized, self-describing model package "
    "(or package a .tflite with its metadata)"
)
MODES = ("float32", "float16", "dynamic", "int8", "edgetpu")
DEFAULT_MODE, DEFAULT_IO = "float32", "uint8"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or comma-separated numbers") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 224,224,3") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        type=Path,
        help="a .keras/.h5 file or a SavedModel folder; or a .tflite, packaged as it is (its standard TFLite "
        "metadata gives labels, mean/std, name and version unless flags do)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        required=True,
        help="output: NAME.edgepkg (package) or NAME.tflite (bare model, manifest embedded); "
        "a folder writes NAME-vVERSION.edgepkg in it",
    )
    parser.add_argument(
        "--mode", choices=MODES, help=f"conversion mode (default: the --profile's, else {DEFAULT_MODE})"
    )
    parser.add_argument(
        "--io",
        dest="io_type",
        choices=("float", "int8", "uint8"),
        help=f"input/output type of an int8 model (default: the --profile's, else {DEFAULT_IO}; "
        "edgetpu is always uint8)",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="device profile (devices/*.toml, e.g. raspberry-pi-4, coral-usb): its recommended --mode "
        "and --io, unless given",
    )
    parser.add_argument(
        "--calib",
        type=Path,
        metavar="PATH",
        help="calibration data: a folder of images or a .npy/.npz array in model-input space",
    )
    parser.add_argument(
        "--calib-samples", type=int, default=200, metavar="N", help="calibration samples to use (default 200)"
    )
    parser.add_argument(
        "--eval",
        dest="eval_data",
        type=Path,
        metavar="PATH",
        help="held-out data for the report: .npz with x (and y) or a folder with one "
        "subfolder of images per class (default: held-out calibration data)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="class labels, one per line (default: the labels the model holds, if any)",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation", "raw"),
        help="how to decode the outputs (default classification; a .tflite: guessed from its outputs)",
    )
    parser.add_argument("--name", help="model name (default: SRC's file or folder name)")
    parser.add_argument(
        "--version",
        type=int,
        help="model version, a positive integer that only grows "
        "(default: next after the highest of NAME in OUT's folder, else 1)",
    )
    parser.add_argument(
        "--mean",
        type=_floats,
        metavar="M[,M,M]",
        help="input normalization: the model takes (pixel - mean) / std (default 0; a .tflite: its "
        "metadata's, raw pixels for an integer input)",
    )
    parser.add_argument("--std", type=_floats, metavar="S[,S,S]", help="(default 1)")
    parser.add_argument(
        "--input-shape",
        type=_shape,
        metavar="D,D,...",
        help="fix dynamic input dimensions, e.g. 224,224,3 (with or without batch)",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        metavar="X",
        help="fail (exit 1, nothing written) when top-1 agreement is below X, e.g. 0.98",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def resolve_mode(mode: str | None, io_type: str | None, profile: str | None) -> tuple[str, str]:
    """--mode and --io: as given, else the profile's recommendation, else the defaults.

    The profile's I/O type comes with its mode: with another --mode given, --io defaults as without a profile.
    An unknown profile is a ConfigError listing the valid names (before TensorFlow loads).
    """
    if not profile:
        return mode or DEFAULT_MODE, io_type or DEFAULT_IO
    from edge.profiles import load_profile

    chosen = load_profile(profile)
    mode = mode or chosen.convert_mode
    return mode, io_type or (chosen.io_type if mode == chosen.convert_mode else DEFAULT_IO)


def _is_tflite(path: Path) -> bool:
    if path.suffix == ".tflite":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    if _is_tflite(Path(args.source)):
        for flag, value in (("--mode", args.mode), ("--io", args.io_type)):
            if value is not None:
                raise ConfigError(
                    f"{flag} {value} does not apply to a .tflite source: it is already converted, so edge "
                    "convert packages it as it is; drop the option, or convert the Keras/SavedModel it "
                    "came from"
                )
        if args.profile:
            print(f"edge convert: profile {args.profile}: a .tflite is packaged as it is", file=sys.stderr)
        args.mode, args.io_type, args.profile = DEFAULT_MODE, DEFAULT_IO, None
    args.mode, args.io_type = resolve_mode(args.mode, args.io_type, args.profile)
    if args.profile:
        chosen = f"--mode {args.mode} --io {args.io_type}"
        print(f"edge convert: profile {args.profile}: {chosen}", file=sys.stderr)
    from converter.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    from converter.convert import ConvertOptions, convert
    from converter.errors import ValidationError
    from converter.report import render

    if args.output.endswith(("/", os.sep)) and not Path(args.output).is_dir():
        raise ConfigError(f"-o {args.output}: that folder does not exist; create it or give a file name")
    options = ConvertOptions(
        source=args.source,
        output=Path(args.output),
        mode=args.mode,
        io_type=args.io_type,
        calib=args.calib,
        calib_samples=args.calib_samples,
        eval_data=args.eval_data,
        labels=args.labels,
        task=args.task,
        name=args.name,
        version=args.version,
        mean=args.mean,
        std=args.std,
        input_shape=args.input_shape,
        min_agreement=args.min_agreement,
    )
    try:
        result = convert(options)
    except ValidationError as exc:
        if exc.report is not None:
            print(
                json.dumps({"ok": False, "error": str(exc), "report": exc.report}, indent=2)
                if args.json
                else render(exc.report)
            )
        print(f"edge convert: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # a bug-free path never gets here; keep it one line for the user
        raise ConfigError(str(exc)) from exc
    manifest = result.manifest
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "output": str(result.output_path),
                    "name": manifest.name,
                    "version": manifest.version,
                    "report": result.report,
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(render(result.report))
    size = result.report["output_size_bytes"]
    ratio = (
        "packaged as it is"
        if result.report.get("packaged_as_is")
        else f"{result.report['output_ratio']:.3f} of float32"
    )
    print(f"\nwrote {result.output_path}  ({manifest.name} v{manifest.version}, {size:,} B, {ratio})")
    return EXIT_OK
