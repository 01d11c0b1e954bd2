"""``python -m demo [WORKDIR]``: the main job end to end, at this stage train -> convert -> report.

1. train the digits CNN on scikit-learn's bundled digits (``converter.digits``),
2. ``edge convert`` it to a full-integer (int8, uint8 I/O) model package with calibration data,
   labels and a held-out evaluation set,
3. print the validation report and what ``edge inspect`` sees in the package.

Each step is a function so later stages (device runtime, MQTT) can reuse them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_WORKDIR = Path("demo-out")


def train(workdir: Path) -> dict[str, Path]:
    """Train the digits CNN; write the model, calibration/eval data and labels into ``workdir``."""
    from converter.digits import save_digits_assets

    return save_digits_assets(workdir / "assets")


def convert_package(assets: dict[str, Path], workdir: Path, mode: str = "int8"):  # noqa: ANN201
    """Convert to a model package in ``workdir/models`` (next version each run). Returns the ConvertResult."""
    from converter.convert import ConvertOptions, convert

    models = workdir / "models"
    models.mkdir(parents=True, exist_ok=True)
    return convert(
        ConvertOptions(
            source=assets["model"],
            output=models,
            mode=mode,
            calib=assets["calib"],
            eval_data=assets["eval"],
            labels=assets["labels"],
            min_agreement=0.98,
        )
    )


def inspect_package(path: Path) -> str:
    """What a device sees in the package (``edge inspect``), without TensorFlow."""
    from edge.cli.commands.inspect import describe, render
    from edge.package import load_model_source

    return render(describe(load_model_source(path)))


def main(argv: list[str]) -> int:
    from converter.report import render
    from converter.tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    workdir = Path(argv[0]) if argv else DEFAULT_WORKDIR
    started = time.monotonic()
    print(f"[1/3] training the digits CNN on scikit-learn's bundled digits -> {workdir}/assets", flush=True)
    assets = train(workdir)
    print("[2/3] edge convert --mode int8 (calibration: 200 training images; eval: 450 held-out)", flush=True)
    result = convert_package(assets, workdir)
    print()
    print(render(result.report))
    print(
        f"\npackage    {result.output_path}  ({result.report['output_size_bytes']:,} B, "
        f"{result.report['output_ratio']:.3f} of the float32 model)"
    )
    print("\n[3/3] edge inspect " + str(result.output_path))
    print(inspect_package(result.output_path))
    print(f"\ndone in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
