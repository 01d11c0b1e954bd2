"""Edge TPU: run ``edgetpu_compiler`` on a full-integer model when it is on PATH."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
TIMEOUT_S = 600


@dataclass(frozen=True)
class CompileResult:
    """What happened: ``ran`` is False when the compiler is not installed."""

    ran: bool
    ok: bool
    message: str
    model: bytes | None = None
    log: str = ""

    def to_json(self) -> dict[str, object]:
        return {"ran": self.ran, "ok": self.ok, "message": self.message}


def compile_for_edgetpu(
    model: bytes, compiler: str = COMPILER, timeout_s: float = TIMEOUT_S
) -> CompileResult:
    """Run ``edgetpu_compiler -s -o OUT model.tflite`` in a temp folder; collect the model and its log."""
    executable = shutil.which(compiler)
    if executable is None:
        return CompileResult(
            ran=False,
            ok=False,
            message=f"{compiler} is not on PATH: the package holds no Edge TPU compiled model; "
            "install it (Debian x86_64: apt install edgetpu-compiler) and convert again",
        )
    with tempfile.TemporaryDirectory(prefix="edge-edgetpu-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(model)
        out = folder / "out"
        out.mkdir()
        try:
            proc = subprocess.run(
                [executable, "-s", "-o", str(out), str(folder / "model.tflite")],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return CompileResult(ran=True, ok=False, message=f"{compiler} failed to run: {exc}")
        output = proc.stdout + proc.stderr
        compiled = out / "model_edgetpu.tflite"
        if proc.returncode != 0 or not compiled.is_file():
            last = output.strip().splitlines()[-1] if output.strip() else f"exit status {proc.returncode}"
            return CompileResult(
                ran=True, ok=False, message=f"{compiler} failed (exit {proc.returncode}): {last}", log=output
            )
        return CompileResult(
            ran=True,
            ok=True,
            message=f"{compiler} compiled the model",
            model=compiled.read_bytes(),
            log=output,
        )
